"""One benchmark run: the sections in order, the main table, and the JSON document they make.

The package docstring describes the sections and the document; ``cli`` parses
the options this module reads from its ``argparse.Namespace``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tools.bench import asyncbench, bulk, decode, latency, orders, report, sections, syncs, writepath
from tools.bench import workload as wl
from tools.bench.contenders import Contender, Spec
from tools.bench.machine import machine_facts
from tools.bench.registry import SPEC_BY_NAME, select

SECTIONS = (
    "steps",
    "decode",
    "writepath",
    "main",
    "interleaved",
    "concurrency",
    "scale",
    "latency",
    "bulk",
    "async",
)


# -- the main table --------------------------------------------------------------------


def run_contender(spec: Spec, path: Path, load: wl.Plan, mixed: wl.Plan) -> dict[str, object]:
    """Load, mixed phase, reopen, disk against live bytes, compaction, and a check of the contents."""
    contender = spec.open(path)
    try:
        keys: dict[int, str] = {}
        load_timings = wl.run_plan(contender, load.ops, keys)
        mixed_timings = wl.run_plan(contender, mixed.ops, keys)
    except BaseException:
        contender.close()
        raise
    return finish_contender(spec, contender, keys, mixed, load_timings, mixed_timings)


def finish_contender(
    spec: Spec,
    contender: Contender,
    keys: dict[int, str],
    mixed: wl.Plan,
    load_timings: wl.Timings,
    mixed_timings: wl.Timings,
) -> dict[str, object]:
    """After the timed phases: reopen, disk against live bytes, compaction, the check; then close."""
    try:
        probe = keys[next(iter(mixed.expected))] if mixed.expected else None

        def reopen() -> None:
            contender.reopen()
            if probe is not None:
                contender.get(probe)

        reopen_ns = wl.time_call(reopen)
        live = sum(len(data.to_cbor()) for data in mixed.expected.values())
        allocated, apparent = contender.disk_bytes()
        compacted: dict[str, object] | None = None
        if spec.durable and contender.compact():
            contender.reopen()
            after, after_apparent = contender.disk_bytes()
            compacted = {
                "disk_bytes": after,
                "apparent_bytes": after_apparent,
                "disk_over_live": round(after / live, 3),
            }
        wrong = sum(contender.get(keys[n]) != data for n, data in mixed.expected.items())
        resurrected = sum(contender.get(keys[n]) is not None for n in mixed.removed)
    finally:
        contender.close()
    return {
        "description": spec.description,
        "family": spec.family,
        "durable": spec.durable,
        "load": wl.phase_result(load_timings),
        "mixed": wl.phase_result(mixed_timings),
        "reopen_ms": round(reopen_ns / 1e6, 2),
        "disk_bytes": allocated,
        "apparent_bytes": apparent,
        "live_bytes": live,
        "disk_over_live": round(allocated / live, 3) if spec.durable or allocated else None,
        "compacted": compacted,
        "verified": wrong == 0 and resurrected == 0,
        "wrong_after_reopen": wrong,
        "removed_but_found": resurrected,
    }


def run_interleaved_round(
    specs: Sequence[Spec], work: Path, load: wl.Plan, mixed: wl.Plan, *, seed: int
) -> dict[str, dict[str, object]]:
    """Every contender open at once, each call of the plans sent to all of them in a shuffled turn.

    Reopen, disk and the check then run per contender, as in ``run_contender``.
    """
    paths = [work / f"interleaved-{spec.name}" for spec in specs]
    contenders: list[Contender] = []
    try:
        for spec, path in zip(specs, paths, strict=True):
            contenders.append(spec.open(path))
        keys: list[dict[int, str]] = [{} for _ in specs]
        loads = wl.run_interleaved(contenders, load.ops, keys, seed=seed)
        mixes = wl.run_interleaved(contenders, mixed.ops, keys, seed=seed + 1)
    except BaseException:
        for contender in contenders:
            contender.close()
        raise
    results: dict[str, dict[str, object]] = {}
    try:
        for spec, contender, mine, load_timings, mixed_timings in zip(
            specs, contenders, keys, loads, mixes, strict=True
        ):
            results[spec.name] = finish_contender(spec, contender, mine, mixed, load_timings, mixed_timings)
    except BaseException:
        # finish_contender closed the one that failed; the ones after it are still open.
        for contender in contenders[len(results) + 1 :]:
            contender.close()
        raise
    for path in paths:
        _remove(path)
    return results


def median_round(rounds: list[dict[str, object]]) -> dict[str, object]:
    """The round with the median throughput, carrying every round's throughput as ``rounds_ops_per_s``."""
    speeds = [_speed(result) for result in rounds]
    chosen = dict(sorted(rounds, key=_speed)[len(rounds) // 2])
    chosen["rounds_ops_per_s"] = speeds
    return chosen


def _speed(result: dict[str, object]) -> float:
    phase = result.get("mixed", result)
    value = phase.get("ops_per_s") if isinstance(phase, dict) else None
    return float(value) if isinstance(value, (int, float)) else 0.0


def _plans(args: argparse.Namespace, payload: int) -> tuple[wl.Plan, wl.Plan]:
    """The main table's load and mixed plans for ``payload`` (the same for every contender and order)."""
    population = wl.Population(payload, args.seed)
    load = wl.plan_load(population, range(args.n))
    mixed = wl.plan_mixed(
        population, load.expected, ops=args.ops, new_numbers=range(args.n, args.n + args.ops), seed=args.seed
    )
    return load, mixed


def _available(only: str | None) -> tuple[list[Spec], dict[str, str]]:
    """The selected contenders that can run here, and why the others cannot."""
    specs: list[Spec] = []
    skipped: dict[str, str] = {}
    for spec in select(only):
        reason = spec.missing()
        if reason is None:
            specs.append(spec)
        else:
            skipped[spec.name] = reason
    for name, reason in skipped.items():
        print(f"  {name}: skipped ({reason})", flush=True)
    return specs, skipped


def _table(
    args: argparse.Namespace, order: str, rounds: dict[str, list[dict[str, object]]], skipped: dict[str, str]
) -> dict[str, object]:
    contenders: dict[str, object] = {name: median_round(results) for name, results in rounds.items()}
    return {
        "sessions": args.n,
        "ops": args.ops,
        "rounds": args.rounds,
        "order": order,
        "contenders": contenders,
        "skipped": skipped,
    }


def run_main(args: argparse.Namespace, work: Path, payload: int) -> dict[str, object]:
    """Every selected contender, ``--rounds`` times in turn; each reports its median round."""
    load, mixed = _plans(args, payload)
    specs, skipped = _available(args.only)
    rounds: dict[str, list[dict[str, object]]] = {}
    for number in range(args.rounds):
        for spec in specs:
            path = work / f"main-{payload}-{spec.name}"
            started = time.perf_counter()
            rounds.setdefault(spec.name, []).append(run_contender(spec, path, load, mixed))
            _remove(path)
            print(f"  round {number + 1}: {spec.name} {time.perf_counter() - started:.1f} s", flush=True)
    return _table(args, "sequential", rounds, skipped)


def run_main_interleaved(args: argparse.Namespace, work: Path, payload: int) -> dict[str, object]:
    """The main table with every call sent to all contenders in a shuffled turn, ``--rounds`` times.

    Round ``r`` shuffles with seed ``--seed`` + 2r (load) and + 2r + 1 (mixed).
    """
    load, mixed = _plans(args, payload)
    specs, skipped = _available(args.only)
    rounds: dict[str, list[dict[str, object]]] = {}
    for number in range(args.rounds):
        started = time.perf_counter()
        results = run_interleaved_round(specs, work, load, mixed, seed=args.seed + 2 * number)
        for name, result in results.items():
            rounds.setdefault(name, []).append(result)
        print(
            f"  round {number + 1}: {len(specs)} contenders {time.perf_counter() - started:.1f} s", flush=True
        )
    return _table(args, "interleaved", rounds, skipped)


def run_concurrency(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """Threads on one handle and processes on one store, each configuration ``--rounds`` times."""
    population = wl.Population(1024, args.seed)
    preload = max(min(args.n // 5, 2000), 20)
    runs = [("filestore-group", count, "mixed") for count in args.thread_counts]
    four = 4 if 4 in args.thread_counts or not args.thread_counts else max(args.thread_counts)
    runs += [("filestore-fsync", count, "mixed") for count in sorted({1, four})]
    # SQLite FULL at every thread count (issue 15's group-commit targets name 4 and 8), both workloads.
    compared = sorted({1, four} | set(args.thread_counts))
    runs += [("sqlite-full", count, "mixed") for count in compared]
    runs += [(name, count, "updates") for name in ("filestore-group", "sqlite-full") for count in compared]
    thread_rounds: dict[tuple[str, int, str], list[dict[str, object]]] = {}
    process_rounds: dict[int, list[dict[str, object]]] = {}
    for number in range(args.rounds):
        for name, count, workload in runs:
            path = work / f"threads-{name}-{count}-{workload}"
            print(f"  round {number + 1}: {name} x {count} threads, {workload}", flush=True)
            thread_rounds.setdefault((name, count, workload), []).append(
                sections.run_threads(
                    SPEC_BY_NAME[name],
                    path,
                    population,
                    preload=preload,
                    ops=args.concurrency_ops,
                    threads=count,
                    seed=args.seed,
                    workload=workload,
                )
            )
            _remove(path)
        for count in args.process_counts:
            path = work / f"processes-{count}"
            print(f"  round {number + 1}: filestore-fsync x {count} processes", flush=True)
            process_rounds.setdefault(count, []).append(
                sections.run_processes(
                    path,
                    population,
                    seed=args.seed,
                    preload=preload,
                    ops=args.concurrency_ops,
                    processes=count,
                    durability="fsync",
                )
            )
            _remove(path)
    return {
        "preload": preload,
        "ops": args.concurrency_ops,
        "rounds": args.rounds,
        "threads": [median_round(results) for results in thread_rounds.values()],
        "processes": [median_round(results) for results in process_rounds.values()],
    }


def run_scale(args: argparse.Namespace, work: Path) -> list[dict[str, object]]:
    population = wl.Population(1024, args.seed)
    results = []
    for size in args.scale_sizes:
        path = work / f"scale-{size}"
        print(f"  {size} sessions", flush=True)
        repeats = 3 if size <= 100_000 else 2
        results.append(
            sections.run_scale(path, population, sessions=size, repeats=repeats, replays=repeats - 1)
        )
        _remove(path)
    return results


def run_latency(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """Latency vs size: its stores are removed afterwards, however it ends (a million is 1.3 GB)."""
    path = work / "latency"
    path.mkdir()
    try:
        return latency.run_latency(
            path,
            wl.Population(1024, args.seed),
            sizes=args.latency_sizes,
            updates=args.latency_updates,
            durabilities=("none", "fsync"),
            rounds=args.latency_rounds,
            seed=args.seed,
            snapshot_every=500 if args.quick else 10_000,
        )
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def work_directory(path: Path, *, keep: bool) -> Iterator[Path]:
    if path.exists():
        _remove(path)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        if not keep:
            _remove(path)


# -- the run ------------------------------------------------------------------------------


def run_decode(args: argparse.Namespace, work: Path) -> dict[str, object]:
    print("decode", flush=True)
    population = wl.Population(1024, args.seed)
    decoding = decode.measure_decode(
        population, sessions=100 if args.quick else 1000, rounds=5 if args.quick else 100
    )
    decoding["get_without_cache"] = decode.measure_get_without_cache(
        work / "decode",
        population,
        sessions=100 if args.quick else 2000,
        rounds=5 if args.quick else 60,
    )
    return decoding


def run_write_path(args: argparse.Namespace, work: Path) -> dict[str, object]:
    print("write path", flush=True)
    return writepath.measure_write_path(
        work / "writepath",
        wl.Population(1024, args.seed),
        sessions=200 if args.quick else 2000,
        batch=50 if args.quick else 200,
        rounds=5 if args.quick else 60,
    )


def run_bulk(args: argparse.Namespace, work: Path) -> dict[str, object]:
    print(f"bulk, {args.bulk} sessions", flush=True)
    return bulk.measure_bulk(
        work / "bulk", wl.Population(1024, args.seed), sessions=args.bulk, before=args.bulk_before
    )


def run_async(args: argparse.Namespace, work: Path) -> dict[str, object]:
    print(f"async, {asyncbench.COROUTINES} coroutines, {args.async_ops} calls", flush=True)
    return asyncbench.measure_async(
        work / "async",
        wl.Population(1024, args.seed),
        preload=args.async_preload,
        ops=args.async_ops,
        rounds=args.rounds,
        seed=args.seed,
    )


def _tail_sections(args: argparse.Namespace, work: Path) -> dict[str, dict[str, object]]:
    """The bulk and async sections, each ``{}`` unless asked for."""
    return {
        "bulk": run_bulk(args, work) if "bulk" in args.section_set else {},
        "async": run_async(args, work) if "async" in args.section_set else {},
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    """Every section asked for, then the ratios: the JSON document."""
    started = time.perf_counter()
    steps: dict[str, float] = {}
    tables: dict[str, object] = {}
    interleaved: dict[str, object] = {}
    concurrency: dict[str, object] = {"threads": [], "processes": []}
    scale: list[dict[str, object]] = []
    profile: dict[str, object] = {}
    decoding: dict[str, object] = {}
    write_path: dict[str, object] = {}
    latencies: dict[str, object] = {}
    with work_directory(args.dir, keep=args.keep) as work:
        machine = machine_facts(work)
        if "steps" in args.section_set:
            print("steps", flush=True)
            steps = sections.measure_steps(
                work / "steps",
                wl.Population(1024, args.seed),
                rounds=5 if args.quick else 50,
                syncs=10 if args.quick else 200,
            )
        if "decode" in args.section_set:
            decoding = run_decode(args, work)
        if "writepath" in args.section_set:
            write_path = run_write_path(args, work)
        if "main" in args.section_set:
            for payload in args.payloads:
                print(f"main table, {payload}-byte context_json, N={args.n}", flush=True)
                tables[str(payload)] = run_main(args, work, payload)
        if "interleaved" in args.section_set:
            for payload in args.payloads:
                print(f"main table interleaved, {payload}-byte context_json, N={args.n}", flush=True)
                interleaved[str(payload)] = run_main_interleaved(args, work, payload)
        if "concurrency" in args.section_set:
            print("concurrency", flush=True)
            concurrency = run_concurrency(args, work)
        if "scale" in args.section_set:
            print("scale", flush=True)
            scale = run_scale(args, work)
        if "latency" in args.section_set:
            print("latency vs size", flush=True)
            latencies = run_latency(args, work)
        tail = _tail_sections(args, work)
        if args.profile:
            print("profile", flush=True)
            profile = sections.profile_filestore(
                work / "profile", wl.Population(1024, args.seed), sessions=min(args.n, 10_000), top=12
            )
    machine["loadavg_end"] = [round(value, 2) for value in os.getloadavg()]
    results: dict[str, object] = {
        "schema": 1,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": round(time.perf_counter() - started, 1),
        "machine": machine,
        "config": {
            "n": args.n,
            "ops": args.ops,
            "payloads": args.payloads,
            "quick": args.quick,
            "seed": args.seed,
            "rounds": args.rounds,
            "only": args.only,
            "sections": sorted(args.section_set),
            "threads": args.thread_counts,
            "processes": args.process_counts,
            "concurrency_ops": args.concurrency_ops,
            "scale": args.scale_sizes,
            "latency": args.latency_sizes,
            "profile": args.profile,
            "argv": sys.argv[1:],
        },
        "steps": steps,
        "decode": decoding,
        "write_path": write_path,
        "bulk": tail["bulk"],
        "async": tail["async"],
        "main": tables,
        "main_interleaved": interleaved,
        "concurrency": concurrency,
        "scale": scale,
        "latency": latencies,
        "profile": profile,
    }
    results["ratios"] = report.target_ratios(results)
    results["ratios_info"] = report.info_ratios(results)
    results["ratios_by_order"] = orders.order_ratios(results)
    results["ratios_group"] = syncs.group_ratios(results)
    results["ratios_group_by_threads"] = syncs.ratios_by_threads(results)
    results["notes"] = report.NOTES
    return results
