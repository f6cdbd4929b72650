"""Peak memory of the offline tools (fsck, fsck --repair, stats, compact) against the log's size.

Builds a store of ``--sessions`` sessions (``durability="none"``), then runs
each tool in a fresh subprocess and reports its peak resident set
(``VmHWM``) and, with ``--tracemalloc``, the peak of the Python heap it
allocated. ``fsck --repair`` runs on a copy whose record 3 has a flipped
byte, so the repair reads past damage and rewrites the whole log::

    python -m tools.fsck_memory --sessions 200000 --tracemalloc
    python -m tools.fsck_memory --sessions 1000000

Prints one JSON document. Nothing is asserted: the mechanism is pinned by
``tests/test_fsck_memory.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from filestore import FileSessionStore, SessionCursor, SessionData, TenantCtx
from filestore.engine.framing import FILE_HEADER_SIZE, FRAME_HEADER_SIZE
from filestore.offline.compact import compact
from filestore.offline.fsck import fsck
from filestore.offline.stats import stats

_TOOLS = ("fsck", "fsck-damaged", "fsck-repair", "stats", "compact")


def build(path: Path, sessions: int, context_bytes: int) -> None:
    """A store of ``sessions`` sessions, each with a ``context_bytes`` context."""
    store = FileSessionStore(path, durability="none")
    try:
        for number in range(sessions):
            ctx = TenantCtx.new("prod", "acme").with_team("support").with_user(f"user-{number}")
            store.create_session(
                ctx,
                SessionData(
                    tenant_ctx=ctx,
                    flow_id="onboarding.flow",
                    cursor=SessionCursor(node_pointer="ask.name", wait_reason="user-input"),
                    context_json=json.dumps({"n": number, "history": "x" * context_bytes}),
                ),
            )
    finally:
        store.close()


def damage_record(path: Path, number: int) -> None:
    """Flip one payload byte of record ``number`` (damage in the middle of the log)."""
    log = path / "sessions.log"
    with log.open("r+b") as handle:
        offset = FILE_HEADER_SIZE
        for _ in range(number - 1):
            handle.seek(offset + 20)
            length = int.from_bytes(handle.read(4), "little")
            offset += FRAME_HEADER_SIZE + length
        handle.seek(offset + FRAME_HEADER_SIZE + 2)
        byte = handle.read(1)
        handle.seek(offset + FRAME_HEADER_SIZE + 2)
        handle.write(bytes([byte[0] ^ 0xFF]))


def run_tool(tool: str, path: str, trace: bool) -> dict[str, object]:
    """Run ``tool`` on ``path`` in this process (the child): its result and peak memory."""
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    outcome: object
    if tool == "compact":
        outcome = compact(path).live_records
    elif tool == "stats":
        outcome = stats(path).sessions
    else:
        outcome = fsck(path, repair=tool == "fsck-repair").exit_code
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    return {
        "result": outcome,
        "seconds": round(seconds, 2),
        "tracemalloc_peak_bytes": peak,
        "peak_rss_bytes": _peak_rss(),
    }


def _peak_rss() -> int:
    """This process's peak resident set: Linux's VmHWM, which (unlike ``ru_maxrss``) does not
    carry over the parent's peak across fork and exec; ``ru_maxrss`` elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(tool: str, path: Path, trace: bool) -> dict[str, object]:
    """Run ``tool`` in a fresh interpreter, so its peak is its own."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.fsck_memory", "--child", tool, str(path)]
        + (["--tracemalloc"] if trace else []),
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--context-bytes", type=int, default=200)
    parser.add_argument("--tracemalloc", action="store_true", help="also trace the Python heap (slower)")
    parser.add_argument("--tools", default=",".join(_TOOLS), help=f"comma-separated, of {', '.join(_TOOLS)}")
    parser.add_argument("--child", nargs=2, metavar=("TOOL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_tool(args.child[0], args.child[1], args.tracemalloc)))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch) / "store"
        started = time.perf_counter()
        build(store, args.sessions, args.context_bytes)
        report: dict[str, object] = {
            "sessions": args.sessions,
            "build_seconds": round(time.perf_counter() - started, 1),
            "log_bytes": (store / "sessions.log").stat().st_size,
            "snapshot_bytes": (store / "sessions.idx").stat().st_size,
        }
        for tool in args.tools.split(","):
            target = Path(scratch) / tool
            shutil.copytree(store, target)
            if tool in {"fsck-damaged", "fsck-repair"}:
                damage_record(target, 3)
            report[tool] = measure(tool, target, args.tracemalloc)
            shutil.rmtree(target)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
