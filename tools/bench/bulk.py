"""Bulk loading (issue 16): ``filestore import`` against the same load through the Python API.

One input file of N sessions (JSON Lines, as ``filestore export`` writes
them), loaded four ways in one run, each into a fresh store:

- ``import``: ``import_sessions`` into a directory store (default durability),
  as the command line does: batches written together, one sync each;
- ``api-none``: the same sessions, already parsed, through ``import_session``
  on a ``durability="none"`` store, then one ``fdatasync`` of the log: the floor
  the issue names;
- ``one-sync-each``: the import as it was before batches, one ``import_session``
  (one fdatasync) a session, on the first ``--bulk-before`` sessions only
  (it is slow), compared as a rate;
- ``rerun``: ``import`` again into the store ``import`` made (everything already
  there), against ``read``: every session of that store read back (export to nowhere).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filestore import FileSessionStore
from filestore.contract import StoredSession, session_scope
from filestore.engine.layout import LOG_NAME
from filestore.ids import SessionKey
from filestore.transfer import export_sessions, import_sessions, parse_line, session_line
from tools.bench import workload as wl


class _OneAtATime:
    """A store seen without ``import_batch``: what ``copy_sessions`` did before batches."""

    def __init__(self, store: FileSessionStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        if name == "import_batch":
            raise AttributeError(name)
        return getattr(self._store, name)


def _sessions(population: wl.Population, count: int) -> Iterator[StoredSession]:
    for number in range(count):
        data = population.session(number, 0)
        yield StoredSession(
            SessionKey(f"bulk-{number:08d}"), session_scope(data.tenant_ctx, data), data, True
        )


def _timed(work: object) -> float:
    started = time.perf_counter()
    assert callable(work)
    work()
    return time.perf_counter() - started


def measure_bulk(root: Path, population: wl.Population, *, sessions: int, before: int) -> dict[str, object]:
    """Seconds and sessions per second of each way (see module docs), and the ratios."""
    root.mkdir(parents=True, exist_ok=True)
    source = root / "input.jsonl"
    with source.open("w", encoding="utf-8") as out:
        for stored in _sessions(population, sessions):
            out.write(session_line(stored) + "\n")
    parsed = [parse_line(line, number) for number, line in enumerate(source.open(encoding="utf-8"), 1)]

    def import_file(target: Path) -> None:
        with FileSessionStore(target) as store, source.open("rb") as lines:
            import_sessions(store, lines)

    def api_none() -> None:
        with FileSessionStore(root / "api-none", durability="none") as store:
            for stored in parsed:
                store.import_session(stored)
        fd = os.open(root / "api-none" / LOG_NAME, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def one_sync_each() -> None:
        with FileSessionStore(root / "one-each") as store, source.open("rb") as lines:
            import_sessions(_OneAtATime(store), (line for _, line in zip(range(before), lines, strict=False)))  # type: ignore[arg-type]

    def read_all() -> None:
        with FileSessionStore(root / "import") as store:
            export_sessions(store, io.StringIO())

    seconds = {
        "import": _timed(lambda: import_file(root / "import")),
        "api-none": _timed(api_none),
        "one-sync-each": _timed(one_sync_each),
        "rerun": _timed(lambda: import_file(root / "import")),
        "read": _timed(read_all),
    }
    counts = {"import": sessions, "api-none": sessions, "one-sync-each": min(before, sessions)}
    counts |= {"rerun": sessions, "read": sessions}
    rates = {name: counts[name] / max(spent, 1e-9) for name, spent in seconds.items()}
    return {
        "sessions": sessions,
        "one_sync_each_sessions": counts["one-sync-each"],
        "seconds": seconds,
        "sessions_per_s": rates,
        "import_over_api_none": seconds["import"] / seconds["api-none"],
        "import_speedup_over_one_sync_each": rates["import"] / rates["one-sync-each"],
        "rerun_over_read": seconds["rerun"] / seconds["read"],
    }


def bulk_text(results: Any) -> list[str]:
    """The bulk section as report lines (none if it did not run)."""
    section = results.get("bulk") if isinstance(results, dict) else None
    if not section:
        return []
    seconds, rates = section["seconds"], section["sessions_per_s"]
    rows = [
        f"  {name}: {seconds[name]:.2f} s, {rates[name]:,.0f} sessions/s"
        for name in ("import", "api-none", "one-sync-each", "rerun", "read")
    ]
    return [
        "",
        f"bulk: {section['sessions']:,} sessions of 1 KiB context_json "
        f"(one-sync-each on the first {section['one_sync_each_sessions']:,})",
        *rows,
        f"  import / api-none {section['import_over_api_none']:.2f}x (target <= 2); "
        f"import rate / one-sync-each {section['import_speedup_over_one_sync_each']:.1f}x (target >= 10); "
        f"rerun / read {section['rerun_over_read']:.2f}x",
    ]
