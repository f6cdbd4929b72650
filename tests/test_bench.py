"""A tiny smoke run of the benchmark harness, ``tools/bench``.

The harness runs as a user runs it (a subprocess, from the repository root)
on a few dozen sessions and few contenders. These tests check the
shape of the JSON it writes, that each contender kept what it was given, and
that the plot's data (``tools.bench.plot.plot_data``, tested without
matplotlib) carries the run's figures; they never look at how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from filestore import FileSessionStore
from tools.bench.orders import FLOOR
from tools.bench.plot import LATENCY_KINDS, THREAD_SERIES, ScaleBar, plot_data

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "tools" / "bench"
CHEAP = "dict,floor-append-nosync,filestore-none,filestore-none-nocache,sqlite-normal"
PHASE_KEYS = {"ops", "seconds", "ops_per_s", "misses", "latency_us"}
LATENCY_KEYS = {"n", "p50", "p99", "mean", "max"}


def run_bench(tmp_path: Path, *arguments: str) -> dict[str, Any]:
    """Run the harness quickly into ``tmp_path`` and return the JSON it wrote."""
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--json",
            str(out),
            "--dir",
            str(tmp_path / "work"),
            *arguments,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "targets of issue 7" in completed.stdout
    document: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return document


def test_decode_section(tmp_path: Path) -> None:
    """The decode section times each codec against its raw encoder and reports the ratio and its target."""
    document = run_bench(tmp_path, "--sections", "decode")
    section = document["decode"]
    assert section["session_cbor_bytes"] > 1000
    assert set(section["pairs"]) == {"from_cbor", "from_json", "to_cbor", "to_json"}
    for pair in section["pairs"].values():
        assert pair["against"] in {"cbor2.loads", "json.loads", "cbor2.dumps", "json.dumps"}
        assert pair["model_us"] > 0
        assert pair["raw_us"] > 0
        assert pair["ratio"] > 0
        assert isinstance(pair["holds"], bool)
        assert pair["target"].startswith("<= ")
    get = section["get_without_cache"]
    assert get["filestore-none-nocache_us"] > 0
    assert get["sqlite-full_us"] > 0
    assert isinstance(get["holds"], bool)
    assert document["main"] == {}


def test_latency_section(tmp_path: Path) -> None:
    """The latency section times a stream of updates per store size and durability, with the
    tail percentiles, the calls a full collection fell in apart, and the p99.9 ratio of the
    largest size over the smallest against issue 15's target."""
    document = run_bench(tmp_path, "--sections", "latency", "--latency", "40,80", "--latency-updates", "600")
    section = document["latency"]
    assert section["updates"] == 600
    assert section["snapshot_every"] == 500
    assert [(row["sessions"], row["durability"]) for row in section["rows"]] == [
        (40, "none"),
        (40, "fsync"),
        (80, "none"),
        (80, "fsync"),
    ]
    for row in section["rows"]:
        assert 0 < row["p50_us"] <= row["p99_us"] <= row["p999_us"] <= row["max_us"]
        assert row["full_gcs"] >= 0
        assert len(row["p999_runs_us"]) == 1
    assert [ratio["durability"] for ratio in section["ratios"]] == ["none", "fsync"]
    for ratio in section["ratios"]:
        assert (ratio["small"], ratio["large"]) == (40, 80)
        assert ratio["p999_ratio"] > 0
        assert isinstance(ratio["holds"], bool)
    assert document["main"] == {}


def check_phase(phase: dict[str, Any], kinds: set[str]) -> None:
    assert set(phase) >= PHASE_KEYS
    assert set(phase["latency_us"]) >= kinds
    for summary in phase["latency_us"].values():
        assert set(summary) == LATENCY_KEYS
        assert summary["n"] > 0
    assert phase["misses"] == 0


def test_main_table_steps_and_scale(tmp_path: Path) -> None:
    """A quick run writes every section asked for: machine facts, steps, the main table, scale, ratios."""
    document = run_bench(
        tmp_path, "--n", "50", "--only", CHEAP, "--sections", "steps,main,scale", "--scale", "60"
    )
    assert document["schema"] == 1
    assert document["config"]["n"] == 50
    assert {"python", "cpus", "filesystem", "sqlite", "loadavg_start", "loadavg_end"} <= set(
        document["machine"]
    )
    assert {"SessionData.from_cbor", "pread + from_cbor", "append + fdatasync"} <= set(document["steps"])

    table = document["main"]["1024"]
    assert table["sessions"] == 50
    assert set(table["contenders"]) == set(CHEAP.split(","))
    for result in table["contenders"].values():
        check_phase(result["load"], {"create"})
        check_phase(result["mixed"], {"get", "update", "find_by_user", "write"})
        assert result["verified"] is True
        assert result["live_bytes"] > 0
    assert table["contenders"]["filestore-none"]["disk_bytes"] > 0

    (scale,) = document["scale"]
    assert scale["sessions"] == 60
    assert scale["reopen_snapshot_ms"] > 0
    assert scale["reopen_replay_ms"] > 0
    assert scale["heap_bytes_per_session"] > 0
    assert scale["fresh_reopen_snapshot_ms"] > 0
    assert scale["fresh_reopen_replay_ms"] > 0
    assert scale["fresh_heap_bytes_per_session"] > 0

    ratios = {ratio["id"]: ratio for ratio in document["ratios"]}
    assert {"mixed-fsync-vs-floor", "group-4-threads-vs-sqlite-full-4-threads", "find-vs-get"} <= set(ratios)
    # Contenders left out of a run give "not measured", never a made-up ratio.
    assert ratios["mixed-fsync-vs-floor"]["measured"] is None
    assert ratios["mixed-fsync-vs-floor"]["holds"] is None
    assert isinstance(ratios["none-vs-sqlite-normal"]["measured"], float)
    assert isinstance(ratios["reopen-snapshot-vs-replay"]["holds"], bool)


def test_main_table_interleaved_beside_the_sequential_one(tmp_path: Path) -> None:
    """The interleaved section writes a second main table: same contenders, plans and checks as the first.

    Both orders run every call of the plan on every contender (the same op
    counts per kind), every contender holds what the plan leaves, and the
    side-by-side ratios (``ratios_by_order``) carry a figure for both orders.
    """
    only = f"{CHEAP},sqlite-lean-full,sqlite-full"
    document = run_bench(
        tmp_path,
        "--n",
        "40",
        "--ops",
        "200",
        "--only",
        only,
        "--sections",
        "main,interleaved",
        "--rounds",
        "2",
    )
    sequential = document["main"]["1024"]
    interleaved = document["main_interleaved"]["1024"]
    assert (sequential["order"], interleaved["order"]) == ("sequential", "interleaved")
    assert set(sequential["contenders"]) == set(interleaved["contenders"]) == set(only.split(","))
    for name, result in interleaved["contenders"].items():
        check_phase(result["load"], {"create"})
        check_phase(result["mixed"], {"get", "update", "find_by_user", "write"})
        assert result["verified"] is True
        assert len(result["rounds_ops_per_s"]) == 2
        for phase in ("load", "mixed"):
            counts = {kind: s["n"] for kind, s in result[phase]["latency_us"].items()}
            mine = sequential["contenders"][name][phase]["latency_us"]
            assert counts == {kind: s["n"] for kind, s in mine.items()}
    by_order = {ratio["id"]: ratio for ratio in document["ratios_by_order"]}
    lean = by_order["sqlite-lean-vs-full"]
    assert isinstance(lean["sequential"], float)
    assert isinstance(lean["interleaved"], float)
    assert len(lean["interleaved_rounds"]) == len(lean["sequential_rounds"]) == 2
    assert by_order["fsync-vs-floor"]["sequential"] is None  # neither contender ran

    report = subprocess.run(
        [sys.executable, str(BENCH), "--report", str(tmp_path / "bench.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert report.returncode == 0, report.stderr
    assert "main (interleaved call by call)" in report.stdout
    assert "the same ratios from both main tables" in report.stdout


def test_threads_and_processes(tmp_path: Path) -> None:
    """The concurrency section runs threads on one handle and processes on one store, with no lost reads."""
    document = run_bench(
        tmp_path,
        "--n",
        "50",
        "--sections",
        "concurrency",
        "--threads",
        "1,2",
        "--processes",
        "2",
        "--concurrency-ops",
        "40",
    )
    threads = document["concurrency"]["threads"]
    assert {(run["contender"], run["threads"]) for run in threads} >= {
        ("filestore-group", 1),
        ("filestore-group", 2),
        ("sqlite-full", 2),
    }
    (processes,) = document["concurrency"]["processes"]
    assert processes["processes"] == 2
    for run in [*threads, processes]:
        assert run["ops"] > 0
        assert run["misses"] == 0
    group = [run for run in threads if run["contender"] == "filestore-group"]
    assert all(run["writes_per_fdatasync"] > 0 for run in group)
    assert all(0 < run["sync_busy_fraction"] <= 1 for run in group)
    assert all(run["fdatasyncs"] > 0 and run["sync_mean_us"] > 0 for run in group)
    # Updates alone, group against SQLite FULL at the compared counts (here 1 and 2).
    updates = {(run["contender"], run["threads"]) for run in threads if run["workload"] == "updates"}
    assert updates == {(name, count) for name in ("filestore-group", "sqlite-full") for count in (1, 2)}
    for run in threads:
        if run["workload"] == "updates":
            assert set(run["latency_us"]) == {"update", "write"}
    assert {ratio["id"] for ratio in document["ratios_group"]} == {
        f"group-{count}-threads-vs-sqlite-full-{workload}"
        for count in (4, 8)
        for workload in ("mixed", "updates")
    }
    assert document["main"] == {}

    report = subprocess.run(
        [sys.executable, str(BENCH), "--report", str(tmp_path / "bench.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert report.returncode == 0, report.stderr
    assert "writes/fdatasync" in report.stdout


def test_plot_data_reads_every_panel_from_a_run(tmp_path: Path) -> None:
    """The plot's four panels carry the run's own figures, in their order, with both target lines.

    ``plot_data`` is what ``--plot`` draws, so this runs without matplotlib.
    """
    document = run_bench(
        tmp_path,
        "--n",
        "30",
        "--only",
        f"dict,filestore-none,{FLOOR}",
        "--sections",
        "main,concurrency,scale",
        "--threads",
        "1,4",
        "--processes",
        "2",
        "--concurrency-ops",
        "40",
        "--scale",
        "40",
    )
    data = plot_data(document)
    contenders = document["main"]["1024"]["contenders"]

    assert "N=30," in data.title
    assert f"{document['machine']['cpus']} cores" in data.title
    speeds = {name: result["mixed"]["ops_per_s"] for name, result in contenders.items()}
    assert [bar.name for bar in data.throughput] == sorted(speeds, key=speeds.__getitem__)
    assert {bar.name: bar.value for bar in data.throughput} == speeds
    colours = {bar.name: bar.colour for bar in data.throughput}
    assert colours["filestore-none"] != colours["dict"] == colours[FLOOR]
    assert data.floor_target == pytest.approx(0.9 * speeds[FLOOR])

    writes = {name: result["mixed"]["latency_us"]["write"]["p50"] for name, result in contenders.items()}
    assert list(data.latency_names) == sorted(writes, key=writes.__getitem__)
    assert [kind for kind, _ in data.latency_p50] == list(LATENCY_KINDS)
    for kind, values in data.latency_p50:
        expected = [contenders[name]["mixed"]["latency_us"][kind]["p50"] for name in data.latency_names]
        assert list(values) == expected

    # The panel plots the mixed workload; the updates-only runs stay in the text report.
    threads = [run for run in document["concurrency"]["threads"] if run["workload"] == "mixed"]
    assert [series.name for series in data.thread_series] == list(THREAD_SERIES)
    for series in data.thread_series:
        mine = sorted(
            (run["threads"], run["ops_per_s"]) for run in threads if run["contender"] == series.name
        )
        assert list(series.points) == mine
        assert [count for count, _ in series.points] == [1, 4]
    (processes,) = document["concurrency"]["processes"]
    assert data.process_points == ((2, processes["ops_per_s"]),)
    sqlite_four = next(run for run in threads if run["contender"] == "sqlite-full" and run["threads"] == 4)
    assert data.group_target == pytest.approx(3 * sqlite_four["ops_per_s"])
    assert data.worker_counts == (1, 2, 4)

    (scale,) = document["scale"]
    assert data.scale == (
        ScaleBar(40, scale["reopen_snapshot_ms"], scale["reopen_replay_ms"], scale["heap_bytes_per_session"]),
    )


def test_plot_data_of_an_empty_run_has_empty_panels_and_no_targets() -> None:
    """A run that measured nothing (``--report`` of a partial JSON) gets empty panels and no targets."""
    data = plot_data({})
    assert data.throughput == ()
    assert data.latency_names == ()
    assert all(values == () for _, values in data.latency_p50)
    assert data.thread_series == ()
    assert data.process_points == ()
    assert data.worker_counts == ()
    assert data.scale == ()
    assert data.floor_target is None
    assert data.group_target is None
    assert "N=0," in data.title


def test_plot_data_orders_bars_by_throughput_and_latency_by_write_p50() -> None:
    """Throughput bars go slowest first and latency rows by write p50: two orders, neither the input's."""

    def contender(family: str, ops_per_s: float, get: float, write: float) -> dict[str, Any]:
        latency = {"get": {"p50": get}, "find_by_user": {"p50": get + 1}, "write": {"p50": write}}
        return {"family": family, "mixed": {"ops_per_s": ops_per_s, "latency_us": latency}}

    table = {
        "sessions": 3,
        "contenders": {
            "a": contender("filestore", 300, get=3, write=10),
            "b": contender("floor", 100, get=1, write=30),
            "c": contender("alternative", 200, get=2, write=20),
        },
    }
    data = plot_data({"main": {"1024": table}})
    assert [bar.name for bar in data.throughput] == ["b", "c", "a"]
    assert [bar.value for bar in data.throughput] == [100, 200, 300]
    assert len({bar.colour for bar in data.throughput}) == 3
    assert data.latency_names == ("a", "c", "b")
    assert dict(data.latency_p50) == {"get": (3, 2, 1), "find_by_user": (4, 3, 2), "write": (10, 20, 30)}


def test_write_path_section(tmp_path: Path) -> None:
    """The writepath section reports filestore's and the floor's CPU time per update, the system
    calls and to_cbor inside them, the Python left, the floor/filestore ratio and the target."""
    document = run_bench(tmp_path, "--sections", "writepath")
    section = document["write_path"]
    assert set(section["us_per_write"]) == {
        "filestore-none",
        "floor-append-nosync",
        "filestore_syscalls",
        "floor_syscalls",
        "to_cbor",
    }
    assert all(value > 0 for value in section["us_per_write"].values())
    assert section["ratio"] > 0
    assert section["target"] == "python_us <= 10"
    assert isinstance(section["holds"], bool)
    assert isinstance(section["python_us"], float)
    assert document["main"] == {}


def test_bulk_section(tmp_path: Path) -> None:
    """The bulk section times the import, the Python API floor, one sync each, a re-run and a read
    of the same sessions, with their ratios; every store it made holds what it was given."""
    document = run_bench(tmp_path, "--sections", "bulk", "--bulk", "40", "--bulk-before", "10", "--keep")
    section = document["bulk"]
    ways = {"import", "api-none", "one-sync-each", "rerun", "read"}
    assert set(section["seconds"]) == set(section["sessions_per_s"]) == ways
    assert all(value > 0 for value in section["seconds"].values())
    assert (section["sessions"], section["one_sync_each_sessions"]) == (40, 10)
    for ratio in ("import_over_api_none", "import_speedup_over_one_sync_each", "rerun_over_read"):
        assert section[ratio] > 0
    work = tmp_path / "work" / "bulk"
    for name, expected in [("import", 40), ("api-none", 40), ("one-each", 10)]:
        with FileSessionStore(work / name) as store:
            assert len(store) == expected, name
    assert document["main"] == {}


def test_async_section(tmp_path: Path) -> None:
    """The async section runs the three contenders on the same plans (no read misses: every store
    held what it was given), with the loop's lag, writes per fdatasync and issue 17's ratios."""
    document = run_bench(tmp_path, "--sections", "async", "--async-ops", "128", "--async-preload", "64")
    section = document["async"]
    assert section["coroutines"] == 64
    runs = section["contenders"]
    expected = {"filestore-async", "filestore-fsync-1", *({"aiosqlite-full"} - set(section["skipped"]))}
    assert set(runs) == expected
    for name, run in runs.items():
        assert run["misses"] == 0, name
        assert run["ops"] == 128
        assert run["ops_per_s"] > 0
    for name in expected - {"filestore-fsync-1"}:
        assert runs[name]["lag_p99_ms"] >= runs[name]["lag_p50_ms"] > -1
    assert runs["filestore-async"]["writes_per_fdatasync"] > 0
    ids = {row["id"] for row in section["ratios"]}
    assert {"async/filestore-fsync-1", "async/loop-lag"} <= ids
    assert all(isinstance(row["holds"], bool) for row in section["ratios"])
    assert document["main"] == {}
