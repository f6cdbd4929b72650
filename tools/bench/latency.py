"""Latency vs size (issue 15, part 5): does a write wait longer on a bigger store?

A store of each size is built first (as the scale section builds them, but
with the periodic snapshot off, so a million sessions take two minutes and
not ten; the one written on close is what reopening loads). Then, in rounds
that visit every size and durability in turn (so they share the machine's
noise), the store is reopened and a long stream of updates of random
sessions is timed call by call with ``perf_counter_ns``, after a short
untimed warm-up. The stream crosses several snapshot intervals (one is due
every ``snapshot_every`` writes), so whatever a snapshot makes a writer wait
for (its capture, the GIL while it is encoded, its install) shows in the
tail: p99.9 and max, compared across sizes. Issue 15's target: p99.9 at the
largest size within 1.5x of the smallest.

The cyclic garbage collector is left on, as in a real process; since its
full collections walk every tracked object (three per session in today's
index), the calls one fell in are counted apart: ``full_gcs`` and
``max_without_full_gc_us``.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from pathlib import Path
from typing import Any

from filestore import FileSessionStore
from tools.bench import workload as wl

WARM_UP = 100
"""Untimed updates after each open: the first calls after an open fault pages in."""
TARGET = 1.5
"""Issue 15: p99.9 at the largest size at most this times p99.9 at the smallest."""


def build_store(path: Path, population: wl.Population, *, sessions: int) -> tuple[list[str], float]:
    """A store of ``sessions`` sessions at ``path`` (closed, its snapshot written): the keys in
    creation order, and the seconds it took."""
    started = time.perf_counter()
    keys: list[str] = []
    # One snapshot, on close: periodic ones would make a big build quadratic.
    store = FileSessionStore(
        path, durability="none", snapshot_every_records=1 << 40, snapshot_every_bytes=1 << 60
    )
    try:
        for number in range(sessions):
            ctx = population.ctx(number, remember=False)
            keys.append(store.create_session(ctx, population.session(number, 0, ctx=ctx)))
    finally:
        store.close()
    return keys, time.perf_counter() - started


class _FullCollections:
    """Counts the cyclic collector's full (generation 2) collections, and their durations."""

    def __init__(self) -> None:
        self.count = 0
        self.durations_ns: list[int] = []
        self._started = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter_ns()
        else:
            self.count += 1
            self.durations_ns.append(time.perf_counter_ns() - self._started)


def time_updates(
    path: Path,
    population: wl.Population,
    keys: list[str],
    *,
    updates: int,
    durability: str,
    seed: int,
    snapshot_every: int,
) -> dict[str, Any]:
    """Open the store at ``path`` and time ``updates`` updates of random sessions, one by one."""
    rng = random.Random(seed)
    numbers = [rng.randrange(len(keys)) for _ in range(WARM_UP + updates)]
    store = FileSessionStore(path, durability=durability, snapshot_every_records=snapshot_every)
    latencies = [0] * updates
    in_full_gc = [False] * updates
    collections = _FullCollections()
    clock = time.perf_counter_ns
    gc.collect()
    gc.callbacks.append(collections)
    try:
        for turn, number in enumerate(numbers[:WARM_UP]):
            store.update_session(keys[number], population.session(number, turn + 1))
        started = clock()
        for turn, number in enumerate(numbers[WARM_UP:]):
            data = population.session(number, WARM_UP + turn + 1)
            key = keys[number]
            seen = collections.count
            before = clock()
            store.update_session(key, data)
            latencies[turn] = clock() - before
            in_full_gc[turn] = collections.count != seen
        wall = clock() - started
    finally:
        gc.callbacks.remove(collections)
        store.close()
    ordered = sorted(latencies)
    clean = [latency for latency, collected in zip(latencies, in_full_gc, strict=True) if not collected]
    return {
        "seconds": round(wall / 1e9, 2),
        "p50_us": _us(wl.percentile(ordered, 0.50)),
        "p99_us": _us(wl.percentile(ordered, 0.99)),
        "p999_us": _us(wl.percentile(ordered, 0.999)),
        "max_us": _us(ordered[-1]),
        "max_without_full_gc_us": _us(max(clean)) if clean else None,
        "full_gcs": collections.count,
        "full_gc_max_ms": round(max(collections.durations_ns, default=0) / 1e6, 1),
    }


def _us(nanoseconds: int) -> float:
    return round(nanoseconds / 1000, 1)


def run_latency(
    work: Path,
    population: wl.Population,
    *,
    sizes: list[int],
    updates: int,
    durabilities: tuple[str, ...],
    rounds: int,
    seed: int,
    snapshot_every: int,
) -> dict[str, Any]:
    """Build a store per size, then ``rounds`` rounds of the timed stream over every size and
    durability; per (size, durability) the median round of each figure, and per durability the
    largest size's p99.9 (and max) over the smallest's."""
    stores: list[tuple[int, Path, list[str], float]] = []
    for size in sizes:
        print(f"  building {size:,} sessions", flush=True)
        path = work / f"latency-{size}"
        keys, build_s = build_store(path, population, sessions=size)
        stores.append((size, path, keys, build_s))
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for round_number in range(rounds):
        print(f"  round {round_number + 1} of {rounds}", flush=True)
        for size, path, keys, _ in stores:
            for durability in durabilities:
                result = time_updates(
                    path,
                    population,
                    keys,
                    updates=updates,
                    durability=durability,
                    seed=seed + round_number,
                    snapshot_every=snapshot_every,
                )
                runs.setdefault((size, durability), []).append(result)
    rows = []
    for size, _, _, build_s in stores:
        for durability in durabilities:
            results = runs[(size, durability)]
            row: dict[str, Any] = {"sessions": size, "durability": durability, "build_s": round(build_s, 1)}
            for field in results[0]:
                values = [result[field] for result in results if result[field] is not None]
                row[field] = statistics.median(values) if values else None
            row["p999_runs_us"] = [result["p999_us"] for result in results]
            row["max_runs_us"] = [result["max_us"] for result in results]
            rows.append(row)
    return {
        "updates": updates,
        "warm_up": WARM_UP,
        "snapshot_every": snapshot_every,
        "rounds": rounds,
        "rows": rows,
        "ratios": _ratios(rows, sizes, durabilities),
    }


def _ratios(
    rows: list[dict[str, Any]], sizes: list[int], durabilities: tuple[str, ...]
) -> list[dict[str, Any]]:
    if len(sizes) < 2:
        return []
    small, large = min(sizes), max(sizes)
    ratios = []
    for durability in durabilities:
        first = next(r for r in rows if r["sessions"] == small and r["durability"] == durability)
        last = next(r for r in rows if r["sessions"] == large and r["durability"] == durability)
        p999 = last["p999_us"] / first["p999_us"]
        ratios.append(
            {
                "durability": durability,
                "small": small,
                "large": large,
                "p999_ratio": round(p999, 2),
                "max_ratio": round(last["max_us"] / first["max_us"], 2),
                "target": f"<= {TARGET}",
                "holds": p999 <= TARGET,
            }
        )
    return ratios


def latency_text(results: Any) -> list[str]:
    """The latency-vs-size section as report lines (none if it did not run)."""
    section = results.get("latency") if isinstance(results, dict) else None
    if not section:
        return []
    lines = [
        "",
        f"latency vs size: {section['updates']:,} updates of random sessions per run (a snapshot due "
        f"every {section['snapshot_every']:,}), median of {section['rounds']} interleaved rounds, us",
        f"  {'sessions':>10} {'durability':<10} {'p50':>8} {'p99':>8} {'p99.9':>9} {'max':>10} "
        f"{'max w/o full gc':>15} {'full gcs':>8} {'gc max ms':>9}",
    ]
    for row in section["rows"]:
        clean = row["max_without_full_gc_us"]
        lines.append(
            f"  {row['sessions']:>10,} {row['durability']:<10} {row['p50_us']:>8.1f} {row['p99_us']:>8.1f} "
            f"{row['p999_us']:>9.1f} {row['max_us']:>10.1f} {'' if clean is None else f'{clean:.1f}':>15} "
            f"{row['full_gcs']:>8g} {row['full_gc_max_ms']:>9.1f}"
        )
    for ratio in section["ratios"]:
        holds = "yes" if ratio["holds"] else "NO"
        lines.append(
            f"  {ratio['durability']}: p99.9 {ratio['large']:,} / {ratio['small']:,} = "
            f"{ratio['p999_ratio']:.2f}x (max {ratio['max_ratio']:.2f}x)  target {ratio['target']}: {holds}"
        )
    return lines
