"""The benchmark's command line: its options and the entry point (``python tools/bench --help``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import tools.bench
from tools.bench import plot, report
from tools.bench.machine import ROOT
from tools.bench.run import SECTIONS, run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tools/bench", description=(tools.bench.__doc__ or "").split("\n\n")[0]
    )
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
    parser.add_argument(
        "--latency", help="store sizes for the latency section (default 10000,100000; quick N,4N)"
    )
    parser.add_argument("--latency-updates", type=int, help="timed updates per latency run (default 50000)")
    parser.add_argument("--latency-rounds", type=int, help="latency rounds, median kept (default 3; quick 1)")
    parser.add_argument(
        "--big", action="store_true", help="add 1,000,000 sessions to the scale and latency sections"
    )
    parser.add_argument(
        "--bulk", type=int, help="sessions the bulk section imports (default 200000; quick 300)"
    )
    parser.add_argument(
        "--bulk-before",
        type=int,
        help="sessions imported one sync each, for comparison (default 2000; quick 50)",
    )
    _async_options(parser)
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
    args.bulk = args.bulk or (300 if quick else 200_000)
    args.bulk_before = args.bulk_before or (50 if quick else 2000)
    args.async_ops, args.async_preload = _async_sizes(args.async_ops, args.async_preload, quick=quick)
    args.scale_sizes = _ints(args.scale or (str(args.n) if quick else "10000,100000"))
    args.latency_sizes = _ints(args.latency or (f"{args.n},{4 * args.n}" if quick else "10000,100000"))
    args.latency_updates = args.latency_updates or (2000 if quick else 50_000)
    args.latency_rounds = args.latency_rounds or (1 if quick else 3)
    if args.big:
        args.scale_sizes.append(1_000_000)
        args.latency_sizes.append(1_000_000)
    args.section_set = {name.strip() for name in args.sections.split(",") if name.strip()}
    unknown = args.section_set - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    args.dir = args.dir or ROOT / "bench-results" / "work"
    return args


def _async_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--async-ops", type=int, help="calls the 64 coroutines of the async section make (default 12800)"
    )
    parser.add_argument(
        "--async-preload", type=int, help="sessions the async section starts with (default 2000; quick 128)"
    )


def _async_sizes(ops: int | None, preload: int | None, *, quick: bool) -> tuple[int, int]:
    return ops or (256 if quick else 12_800), preload or (128 if quick else 2000)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        results = json.loads(args.report.read_text(encoding="utf-8"))
        print(report.format_report(results))
        if args.plot is not None and plot.plot(results, args.plot):
            print(f"plot written to {args.plot}")
        return 0
    results = run(args)
    print()
    print(report.format_report(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"\nJSON written to {args.json}")
    if args.plot is not None:
        if plot.plot(results, args.plot):
            print(f"plot written to {args.plot}")
        else:
            print("no plot: matplotlib is not installed (pip install -e '.[bench]')")
    return 0
