"""Benchmark filestore against what a user would pick instead, and against the floors (issue 7).

Run from the repository root (``pip install -e '.[bench]'`` adds diskcache and matplotlib)::

    python tools/bench.py --profile --plot docs/benchmarks.png --json docs/benchmarks.json

prints a table and writes JSON (``--json``, default ``bench-results/latest.json``).
``--quick`` is a small smoke run; ``--only`` picks contenders of the main table
by name or glob; ``--sections`` picks sections; ``--big`` adds 1M sessions to
the scale section; ``--profile`` adds a cProfile of filestore's calls;
``--report FILE`` prints (and ``--plot``s) the JSON of an earlier run.

Sections:

- ``steps``: single steps (decode, pread, dict, fdatasync) as p50 microseconds;
- ``main``: per payload, every contender loads N sessions, runs the mixed
  phase (50% get, 30% update, 10% find_by_user, 5% create, 5% remove),
  reopens (timed up to the first read), then disk bytes against live bytes
  (the CBOR of the live sessions), before and after compaction if it has one;
- ``concurrency``: filestore group commit with 1, 2, 4, 8 threads, fsync and
  SQLite FULL with 1 and 4 threads, and 2 and 4 processes on one store;
- ``scale``: reopen with a fresh snapshot and by full replay, and Python heap
  per session, at 10k and 100k sessions (and 1M with ``--big``).

JSON (``schema`` 1): ``machine``, ``config``, ``steps``, ``main`` (payload ->
``contenders`` name -> ``load``/``mixed`` phases with ``ops_per_s`` and
``latency_us`` per kind {n, p50, p99, mean, max}, ``reopen_ms``,
``disk_bytes``, ``live_bytes``, ``disk_over_live``, ``compacted``,
``verified``, ``rounds_ops_per_s``; and ``skipped`` name -> reason),
``concurrency`` (``threads`` and ``processes`` lists; filestore thread runs
also count ``writes_per_fdatasync``), ``scale`` (list), ``profile``, ``ratios`` and
``ratios_info`` (lists of {id, what, target, measured, holds}), ``notes``.

Main and concurrency runs are repeated ``--rounds`` times (default 5), the
contenders taking turns; each reports its median round by mixed throughput,
with every round's throughput in ``rounds_ops_per_s``. Timings are noisy on
shared machines: compare ratios from one run, never absolute times across
runs. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import bench_plot
import bench_report
import bench_sections as sections
import bench_workload as wl
from bench_registry import SPEC_BY_NAME, SPECS
from bench_stores import Spec

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("steps", "main", "concurrency", "scale")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, help="sessions loaded in the main table (default 10000; quick 300)")
    parser.add_argument("--ops", type=int, help="calls in the mixed phase (default: --n)")
    parser.add_argument("--payload", help="context_json sizes in bytes, comma-separated (default 1024,16384)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (seconds, not minutes)")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bench-results" / "latest.json", help="JSON output"
    )
    parser.add_argument("--plot", type=Path, help="write a PNG plot here (needs matplotlib)")
    parser.add_argument("--only", help="contenders of the main table: names or globs, comma-separated")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {SECTIONS}")
    parser.add_argument("--threads", help="thread counts for group commit (default 1,2,4,8; quick 1,2)")
    parser.add_argument("--processes", help="process counts on one store (default 2,4; quick 2; '' for none)")
    parser.add_argument("--concurrency-ops", type=int, help="calls per concurrency run (default 6000)")
    parser.add_argument("--scale", help="store sizes for the scale section (default 10000,100000)")
    parser.add_argument("--big", action="store_true", help="add 1,000,000 sessions to the scale section")
    parser.add_argument("--profile", action="store_true", help="cProfile filestore's get/find/update")
    parser.add_argument(
        "--rounds", type=int, help="repeat main and concurrency runs, keep the median (default 5)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, help="where stores are made (default bench-results/work)")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    parser.add_argument(
        "--report", type=Path, help="run nothing: print (and --plot) the JSON of an earlier run"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.n = args.n or (300 if quick else 10_000)
    args.ops = args.ops or args.n
    args.rounds = args.rounds or (1 if quick else 5)
    args.payloads = _ints(args.payload or ("1024" if quick else "1024,16384"))
    args.thread_counts = _ints(args.threads or ("1,2" if quick else "1,2,4,8"))
    args.process_counts = _ints(args.processes if args.processes is not None else ("2" if quick else "2,4"))
    args.concurrency_ops = args.concurrency_ops or (60 if quick else 6000)
    args.scale_sizes = _ints(args.scale or (str(args.n) if quick else "10000,100000"))
    if args.big:
        args.scale_sizes.append(1_000_000)
    args.section_set = {name.strip() for name in args.sections.split(",") if name.strip()}
    unknown = args.section_set - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    args.dir = args.dir or ROOT / "bench-results" / "work"
    return args


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def selected_specs(only: str | None) -> list[Spec]:
    if not only:
        return list(SPECS)
    patterns = [part.strip() for part in only.split(",") if part.strip()]
    chosen = [spec for spec in SPECS if any(fnmatch.fnmatchcase(spec.name, p) for p in patterns)]
    if not chosen:
        raise SystemExit(f"--only {only!r} matches no contender; known: {', '.join(SPEC_BY_NAME)}")
    return chosen


# -- the machine --------------------------------------------------------------------


def machine_facts(work: Path) -> dict[str, object]:
    """What the numbers were measured on (read from the machine, not assumed)."""
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "memory": _proc_field("/proc/meminfo", "MemTotal"),
        "filesystem": _filesystem(work),
        "sqlite": sqlite3.sqlite_version,
        "packages": {name: _version(name) for name in ("filestore", "cbor2", "diskcache", "matplotlib")},
        "git": _git_state(),
        "loadavg_start": [round(value, 2) for value in os.getloadavg()],
    }


def _proc_field(path: str, field: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip() == field:
                    return value.strip()
    except OSError:
        return None
    return None


def _filesystem(path: Path) -> dict[str, str] | None:
    """The mount holding ``path``: the longest mount point that is a prefix of it."""
    target = os.path.realpath(path)
    best: dict[str, str] | None = None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, point, kind, *_ = line.split()
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) > len(best["mount"])):
                    best = {"type": kind, "mount": point, "device": device}
    except OSError:
        return None
    return best


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_state() -> dict[str, object] | None:
    git = shutil.which("git")
    if git is None:
        return None
    head = subprocess.run(
        [git, "rev-parse", "--short", "HEAD"], check=False, cwd=ROOT, capture_output=True, text=True
    )
    status = subprocess.run(
        [git, "status", "--porcelain"], check=False, cwd=ROOT, capture_output=True, text=True
    )
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


# -- the main table --------------------------------------------------------------------


def run_contender(spec: Spec, path: Path, load: wl.Plan, mixed: wl.Plan) -> dict[str, object]:
    """Load, mixed phase, reopen, disk against live bytes, compaction, and a check of the contents."""
    contender = spec.open(path)
    try:
        keys: dict[int, str] = {}
        load_timings = wl.run_plan(contender, load.ops, keys)
        mixed_timings = wl.run_plan(contender, mixed.ops, keys)
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


def run_main(args: argparse.Namespace, work: Path, payload: int) -> dict[str, object]:
    """Every selected contender, ``--rounds`` times in turn; each reports its median round."""
    population = wl.Population(payload, args.seed)
    load = wl.plan_load(population, range(args.n))
    mixed = wl.plan_mixed(
        population, load.expected, ops=args.ops, new_numbers=range(args.n, args.n + args.ops), seed=args.seed
    )
    rounds: dict[str, list[dict[str, object]]] = {}
    skipped: dict[str, str] = {}
    for number in range(args.rounds):
        for spec in selected_specs(args.only):
            reason = spec.missing()
            if reason is not None:
                skipped[spec.name] = reason
                continue
            path = work / f"main-{payload}-{spec.name}"
            started = time.perf_counter()
            rounds.setdefault(spec.name, []).append(run_contender(spec, path, load, mixed))
            _remove(path)
            print(f"  round {number + 1}: {spec.name} {time.perf_counter() - started:.1f} s", flush=True)
    for name, reason in skipped.items():
        print(f"  {name}: skipped ({reason})", flush=True)
    contenders: dict[str, object] = {name: median_round(results) for name, results in rounds.items()}
    return {
        "sessions": args.n,
        "ops": args.ops,
        "rounds": args.rounds,
        "contenders": contenders,
        "skipped": skipped,
    }


def run_concurrency(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """Threads on one handle and processes on one store, each configuration ``--rounds`` times."""
    population = wl.Population(1024, args.seed)
    preload = max(min(args.n // 5, 2000), 20)
    runs = [("filestore-group", count) for count in args.thread_counts]
    four = 4 if 4 in args.thread_counts or not args.thread_counts else max(args.thread_counts)
    runs += [("filestore-fsync", count) for count in sorted({1, four})]
    runs += [("sqlite-full", count) for count in sorted({1, four})]
    thread_rounds: dict[tuple[str, int], list[dict[str, object]]] = {}
    process_rounds: dict[int, list[dict[str, object]]] = {}
    for number in range(args.rounds):
        for name, count in runs:
            path = work / f"threads-{name}-{count}"
            print(f"  round {number + 1}: {name} x {count} threads", flush=True)
            thread_rounds.setdefault((name, count), []).append(
                sections.run_threads(
                    SPEC_BY_NAME[name],
                    path,
                    population,
                    preload=preload,
                    ops=args.concurrency_ops,
                    threads=count,
                    seed=args.seed,
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


def run(args: argparse.Namespace) -> dict[str, object]:
    """Every section asked for, then the ratios: the JSON document."""
    started = time.perf_counter()
    steps: dict[str, float] = {}
    tables: dict[str, object] = {}
    concurrency: dict[str, object] = {"threads": [], "processes": []}
    scale: list[dict[str, object]] = []
    profile: dict[str, object] = {}
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
        if "main" in args.section_set:
            for payload in args.payloads:
                print(f"main table, {payload}-byte context_json, N={args.n}", flush=True)
                tables[str(payload)] = run_main(args, work, payload)
        if "concurrency" in args.section_set:
            print("concurrency", flush=True)
            concurrency = run_concurrency(args, work)
        if "scale" in args.section_set:
            print("scale", flush=True)
            scale = run_scale(args, work)
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
            "profile": args.profile,
            "argv": sys.argv[1:],
        },
        "steps": steps,
        "main": tables,
        "concurrency": concurrency,
        "scale": scale,
        "profile": profile,
    }
    results["ratios"] = bench_report.target_ratios(results)
    results["ratios_info"] = bench_report.info_ratios(results)
    results["notes"] = bench_report.NOTES
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        results = json.loads(args.report.read_text(encoding="utf-8"))
        print(bench_report.format_report(results))
        if args.plot is not None and bench_plot.plot(results, args.plot):
            print(f"plot written to {args.plot}")
        return 0
    results = run(args)
    print()
    print(bench_report.format_report(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"\nJSON written to {args.json}")
    if args.plot is not None:
        if bench_plot.plot(results, args.plot):
            print(f"plot written to {args.plot}")
        else:
            print("no plot: matplotlib is not installed (pip install -e '.[bench]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
