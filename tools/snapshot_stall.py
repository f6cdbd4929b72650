"""``python tools/snapshot_stall.py``: how long the slowest single write takes in a big store.

Issue 13, #14: every ``snapshot_every_records``-th write used to rewrite the
whole index snapshot inside the write call, under the writer lock (1.2 s at
819,000 sessions). This fills a store with ``--sessions`` sessions (in
``durability="none"``, to be quick), reopens it in the mode asked for, and
times ``--writes`` single updates one by one, spanning several snapshots.
It prints the slowest write (and how much of it the cyclic garbage collector
took), the slowest of the writes no collection fell in, the 99.9th and 50th
percentiles, and the writes at which each snapshot fell due. Timings, never a pass/fail test; compare
runs on one machine, before and after a change (set ``PYTHONPATH`` to the
tree to measure).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from filestore import FileSessionStore, SessionCursor, SessionData, SessionKey, TenantCtx


def _session(user: str, step: int) -> SessionData:
    tenant = TenantCtx.new("dev", "acme").with_user(user)
    return SessionData(
        tenant_ctx=tenant,
        flow_id="onboarding.flow",
        cursor=SessionCursor(node_pointer=f"node.{step}", wait_reason="input"),
        context_json=f'{{"step":{step}}}',
    )


def fill(directory: Path, sessions: int) -> list[tuple[SessionKey, str]]:
    """A store of ``sessions`` sessions, one per user; their keys and users."""
    made: list[tuple[SessionKey, str]] = []
    with FileSessionStore(directory, durability="none", snapshot_every_records=sessions + 1) as store:
        for number in range(sessions):
            user = f"user{number}"
            made.append((store.create_session(_session(user, 0).tenant_ctx, _session(user, 0)), user))
    return made


class GcClock:
    """Seconds spent in Python's cyclic garbage collector, on any thread, since it was made.

    Its full passes pause every thread for a time that grows with the heap; they
    are no part of the snapshot, so the figures say which writes one fell in.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started

    def close(self) -> None:
        gc.callbacks.remove(self._note)


def measure(
    directory: Path, made: list[tuple[SessionKey, str]], *, writes: int, every: int, durability: str
) -> dict[str, object]:
    """Time ``writes`` updates of random sessions, one at a time."""
    rng = random.Random(14)
    latencies: list[float] = []
    in_gc: list[float] = []
    clock = GcClock()
    try:
        with FileSessionStore(directory, durability=durability, snapshot_every_records=every) as store:
            for step in range(1, writes + 1):
                key, user = made[rng.randrange(len(made))]
                session = _session(user, step)
                gc_before = clock.total
                started = time.perf_counter()
                store.update_session(key, session)
                latencies.append(time.perf_counter() - started)
                in_gc.append(clock.total - gc_before)
    finally:
        clock.close()
    ordered = sorted(latencies)
    slowest = max(range(len(latencies)), key=latencies.__getitem__)
    without_gc = [latency for latency, gc_time in zip(latencies, in_gc, strict=True) if gc_time == 0]
    return {
        "sessions": len(made),
        "writes": writes,
        "snapshot_every_records": every,
        "durability": durability,
        "max_ms": round(ordered[-1] * 1000, 3),
        "slowest_write": slowest + 1,
        "gc_in_slowest_ms": round(in_gc[slowest] * 1000, 3),
        "max_without_gc_ms": round(max(without_gc) * 1000, 3),
        "p999_ms": round(ordered[int(len(ordered) * 0.999) - 1] * 1000, 3),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        # The writes that made a snapshot due (closing the filled store wrote one).
        "at_snapshots_ms": [
            round(latency * 1000, 3) for step, latency in enumerate(latencies, start=1) if step % every == 0
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--writes", type=int, default=30_000)
    parser.add_argument("--every", type=int, default=10_000, help="snapshot_every_records")
    parser.add_argument("--durability", default="none", choices=["fsync", "group", "none"])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="snapshot-stall-") as scratch:
        directory = Path(scratch) / "store"
        started = time.perf_counter()
        made = fill(directory, args.sessions)
        filled = time.perf_counter() - started
        figures = measure(directory, made, writes=args.writes, every=args.every, durability=args.durability)
    figures["fill_s"] = round(filled, 1)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
