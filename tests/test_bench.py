"""A tiny smoke run of the benchmark harness, ``tools/bench``.

The harness runs as a user runs it (a subprocess, from the repository root)
on a few dozen sessions and only cheap contenders. These tests check the
shape of the JSON it writes and that each contender kept what it was given;
they never look at how fast anything was.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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

    ratios = {ratio["id"]: ratio for ratio in document["ratios"]}
    assert {"mixed-fsync-vs-floor", "group-4-threads-vs-sqlite-full-4-threads", "find-vs-get"} <= set(ratios)
    # Contenders left out of a run give "not measured", never a made-up ratio.
    assert ratios["mixed-fsync-vs-floor"]["measured"] is None
    assert ratios["mixed-fsync-vs-floor"]["holds"] is None
    assert isinstance(ratios["none-vs-sqlite-normal"]["measured"], float)
    assert isinstance(ratios["reopen-snapshot-vs-replay"]["holds"], bool)


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


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is in the bench extra")
def test_plot_is_written(tmp_path: Path) -> None:
    """With matplotlib installed, --plot writes a PNG."""
    plot = tmp_path / "bench.png"
    run_bench(
        tmp_path, "--n", "30", "--only", "dict,filestore-none", "--sections", "main", "--plot", str(plot)
    )
    assert plot.read_bytes().startswith(b"\x89PNG")
