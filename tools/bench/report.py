"""The benchmark's report: ratios against issue 7's targets, and the text tables (the plot: ``plot``).

Every ratio is computed from figures of the same run, so machine noise that
hits all contenders alike cancels out.
"""

from __future__ import annotations

from typing import Any, Final

from tools.bench.asyncbench import async_text
from tools.bench.bulk import bulk_text
from tools.bench.decode import decode_text
from tools.bench.latency import latency_text
from tools.bench.orders import FLOOR, lookup, order_text
from tools.bench.text import cell as _cell
from tools.bench.text import table as _table
from tools.bench.writepath import write_path_text

NOTES: Final = [
    "Ratios are computed within one run; absolute times move with the machine's load.",
    "Throughput is calls over the wall time of the loop; latencies time each call alone.",
    "write = create, update and remove pooled; reopen is timed up to the first read.",
    "Main and concurrency runs repeat --rounds times in turn; each reports its median round "
    "(by mixed throughput), and spread is (max - min) / median of the rounds' throughputs.",
    "live bytes are the CBOR of the live sessions; disk bytes are allocated blocks (du).",
    "filestore keeps the last 10,000 sessions decoded (cache_size); filestore-none-nocache shows "
    "the read path without that cache.",
    "The interleaved table sends each call to every contender in a shuffled turn; its throughput is "
    "calls over the sum of the contender's own call times.",
    "sync busy: the fraction of a thread run's wall time during which an fdatasync is in flight.",
]

NOISY: Final = 0.5


def main_table(results: Any, payload: str = "1024") -> Any:
    tables = lookup(results, "main") or {}
    if payload in tables:
        return tables[payload]
    return next(iter(tables.values()), None) if payload == "1024" else None


def _throughput(table: Any, name: str) -> Any:
    return lookup(table, "contenders", name, "mixed", "ops_per_s")


def _p50(table: Any, name: str, kind: str) -> Any:
    return lookup(table, "contenders", name, "mixed", "latency_us", kind, "p50")


def concurrent_throughput(results: Any, name: str, unit: str, count: int) -> Any:
    for run in lookup(results, "concurrency", unit) or []:
        if (
            run.get("contender") == name
            and run.get(unit) == count
            and run.get("workload", "mixed") == "mixed"
        ):
            return run.get("ops_per_s")
    return None


def _scale_entry(results: Any, sessions: int = 100_000) -> Any:
    entries = lookup(results, "scale") or []
    exact = [entry for entry in entries if entry.get("sessions") == sessions]
    if exact:
        return exact[0]
    return max(entries, key=lambda entry: entry.get("sessions", 0), default=None)


def _ratio(
    ident: str,
    what: str,
    numerator: Any,
    denominator: Any,
    op: str | None = None,
    target: float | None = None,
) -> dict[str, object]:
    measured = None
    if isinstance(numerator, (int, float)) and isinstance(denominator, (int, float)) and denominator:
        measured = round(numerator / denominator, 3)
    holds = None
    if measured is not None and target is not None:
        holds = measured >= target if op == ">=" else measured <= target
    return {
        "id": ident,
        "what": what,
        "target": None if target is None else f"{op} {target}",
        "measured": measured,
        "holds": holds,
    }


def target_ratios(results: Any) -> list[dict[str, object]]:
    """Issue 7's targets (1 KiB payload), each with the ratio this run measured."""
    table = main_table(results)
    scale = _scale_entry(results)
    scale_size = f"{scale['sessions']:,}" if scale else "100,000"
    disk = lookup(table, "contenders", "filestore-fsync")
    return [
        _ratio(
            "mixed-fsync-vs-floor",
            f"mixed throughput, 1 thread: filestore-fsync / {FLOOR}",
            _throughput(table, "filestore-fsync"),
            _throughput(table, FLOOR),
            ">=",
            0.9,
        ),
        _ratio(
            "mixed-fsync-vs-sqlite-full",
            "mixed throughput, 1 thread: filestore-fsync / sqlite-full (the issue's 'about 1.3x')",
            _throughput(table, "filestore-fsync"),
            _throughput(table, "sqlite-full"),
            ">=",
            1.3,
        ),
        _ratio(
            "write-p50-fsync-vs-floor",
            f"write p50: filestore-fsync / {FLOOR}",
            _p50(table, "filestore-fsync", "write"),
            _p50(table, FLOOR, "write"),
            "<=",
            1.15,
        ),
        _ratio(
            "group-4-threads-vs-sqlite-full-4-threads",
            "mixed throughput, 4 threads: filestore-group / sqlite-full",
            concurrent_throughput(results, "filestore-group", "threads", 4),
            concurrent_throughput(results, "sqlite-full", "threads", 4),
            ">=",
            3.0,
        ),
        _ratio(
            "none-vs-sqlite-normal",
            "mixed throughput: filestore-none / sqlite-normal",
            _throughput(table, "filestore-none"),
            _throughput(table, "sqlite-normal"),
            ">=",
            2.0,
        ),
        _ratio(
            "none-vs-diskcache",
            "mixed throughput: filestore-none / diskcache",
            _throughput(table, "filestore-none"),
            _throughput(table, "diskcache"),
            ">=",
            2.0,
        ),
        _ratio(
            "get-p50-vs-sqlite-full",
            "get p50: filestore-fsync / sqlite-full (both return validated SessionData)",
            _p50(table, "filestore-fsync", "get"),
            _p50(table, "sqlite-full", "get"),
            "<=",
            0.6,
        ),
        _ratio(
            "find-vs-get",
            "find_by_user p50 / get p50, filestore-fsync",
            _p50(table, "filestore-fsync", "find_by_user"),
            _p50(table, "filestore-fsync", "get"),
            "<=",
            1.2,
        ),
        _ratio(
            "reopen-snapshot-vs-replay",
            f"reopen of {scale_size} sessions: fresh snapshot / full replay",
            lookup(scale, "reopen_snapshot_ms"),
            lookup(scale, "reopen_replay_ms"),
            "<=",
            0.1,
        ),
        _ratio(
            "compacted-disk-vs-live",
            "after compaction: disk bytes / live bytes, filestore-fsync",
            lookup(disk, "compacted", "disk_bytes"),
            lookup(disk, "live_bytes"),
            "<=",
            1.1,
        ),
    ]


def info_ratios(results: Any) -> list[dict[str, object]]:
    """Ratios without a target that explain the ones with one."""
    table = main_table(results)
    rows = [
        _ratio(
            "floor-vs-sqlite-full",
            f"mixed: {FLOOR} / sqlite-full (issue 7 measured ~1.45x)",
            _throughput(table, FLOOR),
            _throughput(table, "sqlite-full"),
        ),
        _ratio(
            "append-floor-vs-sqlite-full",
            "mixed: floor-append-fdatasync / sqlite-full (issue 7 measured ~1.1x)",
            _throughput(table, "floor-append-fdatasync"),
            _throughput(table, "sqlite-full"),
        ),
        _ratio(
            "write-p50-fsync-vs-sqlite-full",
            "write p50: filestore-fsync / sqlite-full",
            _p50(table, "filestore-fsync", "write"),
            _p50(table, "sqlite-full", "write"),
        ),
        _ratio(
            "get-p50-nocache-vs-sqlite-full",
            "get p50 without the decoded cache: filestore-none-nocache / sqlite-full (issue 15's target)",
            _p50(table, "filestore-none-nocache", "get"),
            _p50(table, "sqlite-full", "get"),
            "<=",
            0.6,
        ),
        _ratio(
            "find-vs-get-nocache",
            "find_by_user p50 / get p50, filestore-none-nocache",
            _p50(table, "filestore-none-nocache", "find_by_user"),
            _p50(table, "filestore-none-nocache", "get"),
        ),
        _ratio(
            "none-vs-nosync-floor",
            "mixed: filestore-none / floor-append-nosync",
            _throughput(table, "filestore-none"),
            _throughput(table, "floor-append-nosync"),
        ),
        _ratio(
            "fsync-4-threads-vs-sqlite-full-4-threads",
            "mixed, 4 threads: filestore-fsync / sqlite-full",
            concurrent_throughput(results, "filestore-fsync", "threads", 4),
            concurrent_throughput(results, "sqlite-full", "threads", 4),
        ),
    ]
    one = concurrent_throughput(results, "filestore-group", "threads", 1)
    for run in lookup(results, "concurrency", "threads") or []:
        if (
            run["contender"] == "filestore-group"
            and run["threads"] > 1
            and run.get("workload", "mixed") == "mixed"
        ):
            rows.append(
                _ratio(
                    f"group-{run['threads']}-threads-vs-1",
                    f"mixed: filestore-group, {run['threads']} threads / 1 thread",
                    run["ops_per_s"],
                    one,
                )
            )
    for run in lookup(results, "concurrency", "processes") or []:
        rows.append(
            _ratio(
                f"fsync-{run['processes']}-processes-vs-1-thread",
                f"mixed: filestore-fsync, {run['processes']} processes / 1 process",
                run["ops_per_s"],
                concurrent_throughput(results, "filestore-fsync", "threads", 1),
            )
        )
    big = main_table(results, "16384")
    if big is not None:
        rows += [
            _ratio(
                "16k-fsync-vs-sqlite-full",
                "16 KiB mixed: filestore-fsync / sqlite-full",
                _throughput(big, "filestore-fsync"),
                _throughput(big, "sqlite-full"),
            ),
            _ratio(
                "16k-fsync-vs-floor",
                f"16 KiB mixed: filestore-fsync / {FLOOR}",
                _throughput(big, "filestore-fsync"),
                _throughput(big, FLOOR),
            ),
            _ratio(
                "16k-none-vs-sqlite-normal",
                "16 KiB mixed: filestore-none / sqlite-normal",
                _throughput(big, "filestore-none"),
                _throughput(big, "sqlite-normal"),
            ),
        ]
    return rows


# -- text ----------------------------------------------------------------------------------


def _spread_ratio(result: Any) -> float:
    """How far apart the rounds' throughputs were: (max - min) / median (0 for a single round)."""
    speeds = sorted(result.get("rounds_ops_per_s") or [])
    if len(speeds) < 2 or not speeds[len(speeds) // 2]:
        return 0.0
    return float((speeds[-1] - speeds[0]) / speeds[len(speeds) // 2])


def _spread(result: Any) -> str:
    return f"{_spread_ratio(result):.0%}" if len(result.get("rounds_ops_per_s") or []) > 1 else "-"


def _latency(result: Any, kind: str, field: str = "p50") -> str:
    return _cell(lookup(result, "mixed", "latency_us", kind, field), 1)


def main_rows(table: Any) -> list[list[str]]:
    rows = []
    for name, result in (lookup(table, "contenders") or {}).items():
        compacted = lookup(result, "compacted", "disk_over_live")
        rows.append(
            [
                name,
                "yes" if result["durable"] else "no",
                _cell(lookup(result, "load", "ops_per_s")),
                _cell(lookup(result, "mixed", "ops_per_s")),
                _spread(result),
                f"{_latency(result, 'get')} / {_latency(result, 'get', 'p99')}",
                _latency(result, "find_by_user"),
                f"{_latency(result, 'update')} / {_latency(result, 'update', 'p99')}",
                _latency(result, "write"),
                _cell(result["reopen_ms"], 1),
                _cell(result["disk_over_live"], 2) + ("" if compacted is None else f" ({compacted:.2f})"),
                _cell(result["verified"]),
            ]
        )
    return rows


MAIN_HEADER: Final = [
    "contender",
    "durable",
    "load/s",
    "mixed/s",
    "spread",
    "get p50/p99 us",
    "find p50",
    "update p50/p99 us",
    "write p50",
    "reopen ms",
    "disk/live (compacted)",
    "ok",
]


def format_report(results: Any) -> str:
    """The whole run as text: machine, steps, main tables, concurrency, scale, ratios, profile."""
    out: list[str] = []
    machine = lookup(results, "machine") or {}
    fs = machine.get("filesystem") or {}
    out.append(
        f"machine: {machine.get('cpus')} cpus ({machine.get('cpu_model')}), {machine.get('python')}, "
        f"{fs.get('type')} at {fs.get('mount')}, SQLite {machine.get('sqlite')}, "
        f"load average {machine.get('loadavg_start')} -> {machine.get('loadavg_end')}"
    )
    steps = lookup(results, "steps") or {}
    if steps:
        out += [
            "",
            "single steps (p50 us)",
            _table(["step", "us"], [[k, _cell(v, 2)] for k, v in steps.items()]),
        ]
    out += decode_text(results)
    out += write_path_text(results)
    out += bulk_text(results)
    mains = [("main", "one contender after another"), ("main_interleaved", "interleaved call by call")]
    for key, order in mains:
        out += _main_text(lookup(results, key) or {}, order)
    out += _concurrency_text(results)
    out += _scale_text(results)
    out += latency_text(results)
    out += async_text(results)
    titles = (
        ("targets of issue 7", "ratios"),
        ("group commit, issue 15", "ratios_group"),
        ("other ratios", "ratios_info"),
    )
    for title, key in titles:
        rows = [
            [r["what"], r["target"] or "", _cell(r["measured"], 3), _holds(r["holds"], r["target"])]
            for r in lookup(results, key) or []
        ]
        if rows:
            out += ["", title, _table(["ratio", "target", "measured", "holds"], rows)]
    out += order_text(results)
    for name, profile in (lookup(results, "profile") or {}).items():
        out += ["", f"profile: {name}, {profile['us_per_call_profiled']} us/call under cProfile"]
        rows = [
            [
                e["function"],
                _cell(e["ncalls"]),
                _cell(e["tottime_us_per_call"], 2),
                _cell(e["cumtime_us_per_call"], 2),
            ]
            for e in profile["top"]
        ]
        out.append(_table(["function", "ncalls", "tottime us/call", "cumtime us/call"], rows))
    return "\n".join(out)


def _main_text(tables: Any, order: str) -> list[str]:
    out: list[str] = []
    for payload, table in tables.items():
        out += [
            "",
            f"main ({order}): {payload}-byte context_json, N={table['sessions']:,}, "
            f"{table['ops']:,} mixed calls",
        ]
        out.append(_table(MAIN_HEADER, main_rows(table)))
        noisy = [name for name, result in table["contenders"].items() if _spread_ratio(result) > NOISY]
        if noisy:
            out.append(
                f"  noisy (rounds spread > {NOISY:.0%}): {', '.join(noisy)}; rerun on a quieter machine"
            )
        for name, reason in table["skipped"].items():
            out.append(f"  skipped {name}: {reason}")
    return out


def _holds(holds: Any, target: Any) -> str:
    if target is None:
        return ""
    return "not measured" if holds is None else ("yes" if holds else "NO")


def _concurrency_text(results: Any) -> list[str]:
    rows = []
    for unit in ("threads", "processes"):
        for run in lookup(results, "concurrency", unit) or []:
            latency = run["latency_us"]
            rows.append(
                [
                    run["contender"],
                    f"{run[unit]} {unit}",
                    run.get("workload", "mixed"),
                    _cell(run["ops_per_s"]),
                    _spread(run),
                    _cell(lookup(latency, "write", "p50"), 1),
                    _cell(lookup(latency, "write", "p99"), 1),
                    _cell(lookup(latency, "get", "p50"), 1),
                    _cell(run.get("writes_per_fdatasync"), 2),
                    _cell(run.get("sync_busy_fraction"), 2),
                    _cell(run["misses"]),
                ]
            )
    if not rows:
        return []
    header = [
        "contender",
        "workers",
        "workload",
        "calls/s",
        "spread",
        "write p50 us",
        "write p99 us",
        "get p50 us",
        "writes/fdatasync",
        "sync busy",
        "misses",
    ]
    return ["", "concurrency (1 KiB)", _table(header, rows)]


def _scale_text(results: Any) -> list[str]:
    rows = [
        [
            _cell(entry["sessions"]),
            _cell(entry["build_s"], 1),
            _cell(entry["log_bytes"] / 2**20, 1),
            _cell(entry["reopen_snapshot_ms"], 1),
            _cell(entry["reopen_replay_ms"], 1),
            _cell(entry["snapshot_over_replay"], 3),
            _cell(entry.get("fresh_reopen_snapshot_ms"), 1),
            _cell(entry.get("fresh_reopen_replay_ms"), 1),
            _cell(entry.get("fresh_snapshot_over_replay"), 3),
            _cell(entry["heap_bytes_per_session"]),
            _cell(entry.get("fresh_heap_bytes_per_session")),
        ]
        for entry in lookup(results, "scale") or []
    ]
    if not rows:
        return []
    header = [
        "sessions",
        "build s",
        "log MiB",
        "reopen snapshot ms",
        "reopen replay ms",
        "ratio",
        "fresh process: snapshot ms",
        "replay ms",
        "ratio",
        "heap B/session",
        "fresh process",
    ]
    return ["", "scale (1 KiB, durability none to build)", _table(header, rows)]
