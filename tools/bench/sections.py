"""The benchmark's sections beyond the main table: single steps, threads, processes, scale, profile.

Each returns plain JSON-ready dicts. None asserts anything about timings.
"""

from __future__ import annotations

import cProfile
import gc
import itertools
import multiprocessing
import os
import pstats
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filestore import FileSessionStore, SessionData
from tools.bench import syncs
from tools.bench import workload as wl
from tools.bench.contenders import FileStoreContender, Spec, open_counting

# -- single steps -------------------------------------------------------------------


def _per_call_ns(call: Callable[[], object], *, batch: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean time per call in a batch (for sub-microsecond steps)."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(batch):
            call()
        samples.append((time.perf_counter_ns() - started) / batch)
    return statistics.median(samples)


def measure_steps(root: Path, population: wl.Population, *, rounds: int, syncs: int) -> dict[str, float]:
    """p50 microseconds of the single steps a store's calls are made of (the read floors)."""
    data = population.session(0, 0)
    blob = data.to_cbor()
    root.mkdir(parents=True, exist_ok=True)
    path = root / "steps.bin"
    path.write_bytes(blob * 64)
    fd = os.open(path, os.O_RDWR)
    table = {"k": data}
    try:
        steps = {
            "SessionData.to_cbor": data.to_cbor,
            "SessionData.from_cbor": lambda: SessionData.from_cbor(blob),
            "os.pread": lambda: os.pread(fd, len(blob), 0),
            "pread + from_cbor": lambda: SessionData.from_cbor(os.pread(fd, len(blob), 0)),
            "dict.get": lambda: table.get("k"),
            "str(uuid4())": lambda: str(uuid.uuid4()),
        }
        result = {
            name: round(_per_call_ns(call, batch=100, rounds=rounds) / 1000, 3)
            for name, call in steps.items()
        }
        result["append + fdatasync"] = _sync_step(path.with_name("append.bin"), blob, syncs, prezero=False)
        result["pwrite pre-zeroed + fdatasync"] = _sync_step(
            path.with_name("prezeroed.bin"), blob, syncs, prezero=True
        )
    finally:
        os.close(fd)
    return result


def _sync_step(path: Path, blob: bytes, count: int, *, prezero: bool) -> float:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if prezero:
            os.pwrite(fd, bytes(len(blob) * (count + 1)), 0)
            os.fsync(fd)
        samples = []
        for number in range(count):
            started = time.perf_counter_ns()
            os.pwrite(fd, blob, number * len(blob))
            os.fdatasync(fd)
            samples.append(time.perf_counter_ns() - started)
    finally:
        os.close(fd)
    return round(statistics.median(samples) / 1000, 2)


# -- threads --------------------------------------------------------------------------


def run_threads(
    spec: Spec,
    path: Path,
    population: wl.Population,
    *,
    preload: int,
    ops: int,
    threads: int,
    seed: int,
    workload: str = "mixed",
) -> dict[str, object]:
    """``threads`` threads share one handle (SQLite: a connection each) and run ``workload``.

    ``workload`` is ``mixed`` (the main table's mix) or ``updates`` (updates
    alone). Each thread owns the sessions whose number is its index modulo
    ``threads``, so no two threads touch one session. A filestore run also
    reports its fdatasyncs (``syncs.sync_figures``).
    """
    mix = wl.UPDATES_ONLY if workload == "updates" else wl.MIX
    contender, counter = open_counting(spec, path)
    try:
        load = wl.plan_load(population, range(preload))
        keys: dict[int, str] = {}
        wl.run_plan(contender, load.ops, keys)
        plans = [
            wl.plan_mixed(
                population,
                {n: d for n, d in load.expected.items() if n % threads == t},
                ops=ops // threads,
                new_numbers=itertools.count(preload + t, threads),
                seed=seed + t,
                mix=mix,
            )
            for t in range(threads)
        ]
        own_keys = [{n: k for n, k in keys.items() if n % threads == t} for t in range(threads)]
        results: list[tuple[int, int, wl.Timings] | BaseException] = [RuntimeError("not run")] * threads
        barrier = threading.Barrier(threads)

        def work(index: int) -> None:
            try:
                barrier.wait()
                started = time.perf_counter_ns()
                timings = wl.run_plan(contender, plans[index].ops, own_keys[index], collect=False)
                results[index] = (started, time.perf_counter_ns(), timings)
            except BaseException as error:
                results[index] = error

        gc.collect()
        syncs_before = len(counter.intervals) if counter is not None else 0
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        intervals = [] if counter is None else counter.intervals[syncs_before:]
    finally:
        contender.close()
    combined = _combine(spec.name, "threads", threads, results)
    combined["workload"] = workload
    if intervals:
        writes = sum(op.kind in wl.WRITES for plan in plans for op in plan.ops)
        done = [result for result in results if isinstance(result, tuple)]
        start, end = min(r[0] for r in done), max(r[1] for r in done)
        combined.update(syncs.sync_figures(intervals, writes, start, end))
    return combined


def _combine(
    name: str, unit: str, count: int, results: list[tuple[int, int, wl.Timings] | BaseException]
) -> dict[str, object]:
    merged = wl.Timings()
    starts, ends = [], []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        started, ended, timings = result
        starts.append(started)
        ends.append(ended)
        merged.merge(timings)
    return {"contender": name, unit: count, **wl.phase_result(merged, max(ends) - min(starts))}


# -- processes ------------------------------------------------------------------------


def process_worker(
    path: str,
    payload: int,
    seed: int,
    owned: list[tuple[int, str]],
    first_new: int,
    step: int,
    ops: int,
    durability: str,
    barrier: Any,
    queue: Any,
) -> None:
    """One process of the multi-process run: open the store, wait for the others, run, report."""
    try:
        population = wl.Population(payload, seed)
        start = {number: population.session(number, 0) for number, _ in owned}
        plan = wl.plan_mixed(
            population, start, ops=ops, new_numbers=itertools.count(first_new, step), seed=seed + first_new
        )
        keys = dict(owned)
        contender = FileStoreContender(Path(path), durability=durability)
        try:
            gc.collect()
            barrier.wait()
            started = time.perf_counter_ns()
            timings = wl.run_plan(contender, plan.ops, keys, collect=False)
            ended = time.perf_counter_ns()
        finally:
            contender.close()
        queue.put((started, ended, timings.latencies, timings.ops, timings.misses))
    except BaseException as error:
        queue.put(repr(error))
        raise


def run_processes(
    path: Path,
    population: wl.Population,
    *,
    seed: int,
    preload: int,
    ops: int,
    processes: int,
    durability: str,
) -> dict[str, object]:
    """``processes`` processes, each with its own handle on one store, run the mixed phase."""
    loader = FileStoreContender(path, durability="none")
    try:
        load = wl.plan_load(population, range(preload))
        keys: dict[int, str] = {}
        wl.run_plan(loader, load.ops, keys)
    finally:
        loader.close()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    queue = context.Queue()
    children = [
        context.Process(
            target=process_worker,
            args=(
                str(path),
                population.payload,
                seed,
                [(n, k) for n, k in keys.items() if n % processes == p],
                preload + p,
                processes,
                ops // processes,
                durability,
                barrier,
                queue,
            ),
        )
        for p in range(processes)
    ]
    for child in children:
        child.start()
    results: list[tuple[int, int, wl.Timings] | BaseException] = []
    try:
        for _ in children:
            reply = queue.get(timeout=600)
            if isinstance(reply, str):
                results.append(RuntimeError(f"a benchmark process failed: {reply}"))
                continue
            started, ended, latencies, count, misses = reply
            results.append((started, ended, wl.Timings(latencies, ended - started, count, misses)))
    finally:
        for child in children:
            child.join(timeout=60)
    return _combine(f"filestore-{durability}", "processes", processes, results)


# -- scale: reopen and memory ---------------------------------------------------------------


def _open_and_read(path: Path, key: str, **options: Any) -> int:
    started = time.perf_counter_ns()
    store = FileSessionStore(path, durability="none", **options)
    store.get_session(key)
    elapsed = time.perf_counter_ns() - started
    store.close()
    return elapsed


# Run in a fresh interpreter: open the store, read one session, print the ns it took (and,
# with "heap", the Python heap the open allocated); nothing cached from the build helps it.
_FRESH_OPEN = """
import sys, time, tracemalloc
from filestore import FileSessionStore
path, key, heap = sys.argv[1], sys.argv[2], sys.argv[3] == "heap"
if heap:
    tracemalloc.start()
started = time.perf_counter_ns()
store = FileSessionStore(path, durability="none")
store.get_session(key)
elapsed = time.perf_counter_ns() - started
print(elapsed, tracemalloc.get_traced_memory()[0] if heap else 0)
store.close()
"""


def _fresh_open(path: Path, key: str, *, heap: bool = False) -> tuple[int, int]:
    """``(ns to open and read one session, heap bytes the open allocated)`` in a new process."""
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_OPEN, str(path), key, "heap" if heap else "time"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    elapsed, allocated = done.stdout.split()
    return int(elapsed), int(allocated)


def run_scale(
    path: Path, population: wl.Population, *, sessions: int, repeats: int, replays: int
) -> dict[str, object]:
    """Build a store of ``sessions`` sessions, then time opening it with its snapshot and by replay,
    in this process and in fresh ones.

    Opening is timed up to the first read. Memory is the Python heap the open
    allocates (tracemalloc), divided by the sessions, here and in a fresh process.
    """
    store = FileSessionStore(path, durability="none")
    started = time.perf_counter_ns()
    first = ""
    for number in range(sessions):
        ctx = population.ctx(number, remember=False)
        key = store.create_session(ctx, population.session(number, 0, ctx=ctx))
        first = first or key
    build_ns = time.perf_counter_ns() - started
    store.close()
    snapshot_file = path / "sessions.idx"
    log_bytes = (path / "sessions.log").stat().st_size
    snapshot_bytes = snapshot_file.stat().st_size

    gc.collect()
    with_snapshot = [_open_and_read(path, first) for _ in range(repeats)]

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    opened = FileSessionStore(path, durability="none")
    heap = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    opened.close()

    fresh_snapshot = [_fresh_open(path, first)[0] for _ in range(repeats)]
    fresh_heap = _fresh_open(path, first, heap=True)[1]
    fresh_replay = []
    for _ in range(replays):
        snapshot_file.unlink()
        fresh_replay.append(_fresh_open(path, first)[0])

    replayed = []
    for _ in range(replays):
        snapshot_file.unlink()
        gc.collect()
        replayed.append(_open_and_read(path, first))
    snapshot_ms = statistics.median(with_snapshot) / 1e6
    replay_ms = statistics.median(replayed) / 1e6
    fresh_snapshot_ms = statistics.median(fresh_snapshot) / 1e6
    fresh_replay_ms = statistics.median(fresh_replay) / 1e6
    return {
        "sessions": sessions,
        "build_s": round(build_ns / 1e9, 2),
        "log_bytes": log_bytes,
        "snapshot_bytes": snapshot_bytes,
        "reopen_snapshot_ms": round(snapshot_ms, 2),
        "reopen_snapshot_runs_ms": [round(value / 1e6, 2) for value in with_snapshot],
        "reopen_replay_ms": round(replay_ms, 2),
        "reopen_replay_runs_ms": [round(value / 1e6, 2) for value in replayed],
        "snapshot_over_replay": round(snapshot_ms / replay_ms, 4),
        "heap_bytes_per_session": round(heap / sessions, 1),
        "fresh_reopen_snapshot_ms": round(fresh_snapshot_ms, 2),
        "fresh_reopen_replay_ms": round(fresh_replay_ms, 2),
        "fresh_snapshot_over_replay": round(fresh_snapshot_ms / fresh_replay_ms, 4),
        "fresh_heap_bytes_per_session": round(fresh_heap / sessions, 1),
    }


# -- profile ----------------------------------------------------------------------------


def profile_filestore(path: Path, population: wl.Population, *, sessions: int, top: int) -> dict[str, object]:
    """cProfile of get (cache hits and cache off), find_by_user and update, durability 'none'."""
    contender = FileStoreContender(path, durability="none")
    keys: dict[int, str] = {}
    wl.run_plan(contender, wl.plan_load(population, range(sessions)).ops, keys)
    updates = [(keys[n], population.session(n, 1)) for n in range(sessions)]
    contender.close()

    def get_all(store: FileSessionStore) -> None:
        for key in keys.values():
            store.get_session(key)

    def find_all(store: FileSessionStore) -> None:
        for number in keys:
            store.find_by_user(population.ctx(number), population.user(number))

    def update_all(store: FileSessionStore) -> None:
        for key, data in updates:
            store.update_session(key, data)

    cases: list[tuple[str, int, Callable[[FileSessionStore], None]]] = [
        ("get_session (cache hits)", sessions, get_all),
        ("get_session (cache_size=0)", 0, get_all),
        ("find_by_user (cache hits)", sessions, find_all),
        ("find_by_user (cache_size=0)", 0, find_all),
        ("update_session", sessions, update_all),
    ]
    profiles: dict[str, object] = {}
    for name, cache_size, call in cases:
        store = FileSessionStore(path, durability="none", cache_size=cache_size)
        if cache_size:
            get_all(store)  # warm the cache: the profile then sees hits only
        profiler = cProfile.Profile()
        started = time.perf_counter_ns()
        profiler.enable()
        call(store)
        profiler.disable()
        elapsed = time.perf_counter_ns() - started
        store.close()
        profiles[name] = {
            "calls": sessions,
            "us_per_call_profiled": round(elapsed / sessions / 1000, 2),
            "top": _top_entries(profiler, sessions, top),
        }
    return profiles


def _top_entries(profiler: cProfile.Profile, calls: int, top: int) -> list[dict[str, object]]:
    stats = pstats.Stats(profiler)
    rows: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    ordered = sorted(rows.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [
        {
            "function": f"{os.path.basename(file)}:{line}({function})",
            "ncalls": ncalls,
            "tottime_us_per_call": round(tottime * 1e6 / calls, 2),
            "cumtime_us_per_call": round(cumtime * 1e6 / calls, 2),
        }
        for (file, line, function), (_, ncalls, tottime, cumtime, _) in ordered
    ]
