"""How busy group commit keeps the disk: writes per fdatasync and the time a sync is in flight.

Issue 15 (section 3) asks ``durability="group"`` with 4 threads for 3x SQLite
WAL FULL with 4 threads (a connection each, ``BEGIN IMMEDIATE`` per write),
8 threads for 4x, on the mixed workload and on updates alone; and asks for
the two figures that say why it falls short: writes per sync, and the
fraction of the run's wall time during which an ``fdatasync`` is in flight
(``sync_busy_fraction``). At 1.0 the disk never waits for the Python around
it; well below it, each sync waits for the leader's bookkeeping and the
covered threads' wake-ups.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable
from typing import Any, Final

from tools.bench.orders import lookup

WORKLOADS: Final = ("mixed", "updates")
"""The thread runs' workloads: the main table's mix, and updates alone (every call a durable write)."""


def busy_fraction(intervals: Iterable[tuple[int, int]], start: int, end: int) -> float:
    """The fraction of ``[start, end)`` covered by the union of ``intervals`` (clipped to it).

    Overlapping intervals count once: two threads syncing at the same time
    keep the disk busy once, not twice.
    """
    if end <= start:
        return 0.0
    covered = 0
    reach = start
    for began, ended in sorted(intervals):
        first, last = max(began, reach), min(ended, end)
        if last > first:
            covered += last - first
            reach = last
    return covered / (end - start)


def sync_figures(intervals: list[tuple[int, int]], writes: int, start: int, end: int) -> dict[str, object]:
    """The sync figures of one thread run: counts, writes per sync, mean sync, mean cycle, busy
    fraction, and the median gap from one sync's end to the next one's start (the Python
    between two syncs: noting one durable, taking the next point, waking the writers)."""
    syncs = len(intervals)
    if not syncs:
        return {}
    wall = end - start
    ordered = sorted(intervals)
    gaps = [max(0, later[0] - earlier[1]) for earlier, later in itertools.pairwise(ordered)]
    return {
        "sync_gap_p50_us": round(statistics.median(gaps) / 1000, 1) if gaps else None,
        "fdatasyncs": syncs,
        "writes_per_fdatasync": round(writes / syncs, 2),
        "sync_mean_us": round(sum(last - first for first, last in intervals) / syncs / 1000, 1),
        "sync_cycle_us": round(wall / syncs / 1000, 1),
        "sync_busy_fraction": round(busy_fraction(intervals, start, end), 3),
    }


def thread_run(results: Any, name: str, threads: int, workload: str = "mixed") -> Any:
    """The concurrency run of ``name`` with ``threads`` threads on ``workload`` (older runs: mixed)."""
    for run in lookup(results, "concurrency", "threads") or []:
        if (
            run.get("contender") == name
            and run.get("threads") == threads
            and run.get("workload", "mixed") == workload
        ):
            return run
    return None


def group_ratios(results: Any) -> list[dict[str, object]]:
    """Issue 15's group-commit targets: filestore-group over sqlite-full, same threads and workload."""
    rows: list[dict[str, object]] = []
    for threads, target in ((4, 3.0), (8, 4.0)):
        for workload in WORKLOADS:
            group = lookup(thread_run(results, "filestore-group", threads, workload), "ops_per_s")
            sqlite = lookup(thread_run(results, "sqlite-full", threads, workload), "ops_per_s")
            measured = None
            if isinstance(group, (int, float)) and isinstance(sqlite, (int, float)) and sqlite:
                measured = round(group / sqlite, 3)
            rows.append(
                {
                    "id": f"group-{threads}-threads-vs-sqlite-full-{workload}",
                    "what": f"{workload}, {threads} threads: filestore-group / sqlite-full",
                    "target": f">= {target}",
                    "measured": measured,
                    "holds": None if measured is None else measured >= target,
                }
            )
    return rows


def ratios_by_threads(results: Any) -> list[dict[str, object]]:
    """filestore-group over sqlite-full at every thread count both ran, per workload, with the
    sync figures beside: how the ratio grows with the writers sharing a sync."""
    rows: list[dict[str, object]] = []
    for workload in WORKLOADS:
        counts = sorted(
            {
                run["threads"]
                for run in lookup(results, "concurrency", "threads") or []
                if run.get("contender") == "filestore-group" and run.get("workload", "mixed") == workload
            }
        )
        for threads in counts:
            group = thread_run(results, "filestore-group", threads, workload)
            group_ops = lookup(group, "ops_per_s")
            sqlite = lookup(thread_run(results, "sqlite-full", threads, workload), "ops_per_s")
            if not isinstance(group_ops, (int, float)) or not isinstance(sqlite, (int, float)) or not sqlite:
                continue
            rows.append(
                {
                    "workload": workload,
                    "threads": threads,
                    "ratio": round(group_ops / sqlite, 3),
                    "writes_per_fdatasync": lookup(group, "writes_per_fdatasync"),
                    "sync_busy_fraction": lookup(group, "sync_busy_fraction"),
                }
            )
    return rows
