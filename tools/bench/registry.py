"""Every contender of the benchmark, by name: filestore, the alternatives, the floors."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from tools.bench.alternatives import (
    DiskcacheContender,
    FilePerSessionContender,
    SqliteContender,
    SqliteLeanContender,
    diskcache_missing,
)
from tools.bench.contenders import Contender, FileStoreContender, Spec
from tools.bench.floors import DictFloor, LogFloor


def _filestore(**options: Any) -> Callable[[Path], Contender]:
    return lambda path: FileStoreContender(path, **options)


SPECS: Final[tuple[Spec, ...]] = (
    Spec(
        "filestore-fsync",
        "filestore",
        durable=True,
        description="FileSessionStore, durability='fsync' (default): one fdatasync per write",
        open=_filestore(durability="fsync"),
        filestore_options={"durability": "fsync"},
    ),
    Spec(
        "filestore-group",
        "filestore",
        durable=True,
        description="FileSessionStore, durability='group': concurrent writers share an fdatasync",
        open=_filestore(durability="group"),
        filestore_options={"durability": "group"},
    ),
    Spec(
        "filestore-none",
        "filestore",
        durable=False,
        description="FileSessionStore, durability='none': no fdatasync (survives a process crash)",
        open=_filestore(durability="none"),
        filestore_options={"durability": "none"},
    ),
    Spec(
        "filestore-none-nocache",
        "filestore",
        durable=False,
        description="as filestore-none, cache_size=0: every read is pread + verify + decode",
        open=_filestore(durability="none", cache_size=0),
        filestore_options={"durability": "none", "cache_size": 0},
    ),
    Spec(
        "sqlite-full",
        "alternative",
        durable=True,
        description="sqlite3, WAL, synchronous=FULL: key->CBOR table + unique user table",
        open=lambda path: SqliteContender(path, "FULL"),
    ),
    Spec(
        "sqlite-lean-full",
        "alternative",
        durable=True,
        description="sqlite3, WAL, synchronous=FULL: one key->blob table, no owner check or context fence",
        open=lambda path: SqliteLeanContender(path, "FULL"),
    ),
    Spec(
        "sqlite-normal",
        "alternative",
        durable=False,
        description="sqlite3, WAL, synchronous=NORMAL (not durable per commit)",
        open=lambda path: SqliteContender(path, "NORMAL"),
    ),
    Spec(
        "diskcache",
        "alternative",
        durable=False,
        description="diskcache.Cache (SQLite WAL, synchronous=NORMAL), one transact() per call",
        open=DiskcacheContender,
        missing=diskcache_missing,
    ),
    Spec(
        "file-per-session",
        "alternative",
        durable=True,
        description="one file per session: temp file, fsync, rename, fsync of the directory",
        open=FilePerSessionContender,
    ),
    Spec(
        "floor-append-fdatasync",
        "floor",
        durable=True,
        description="floor: raw append (file grows) + fdatasync; reads pread + decode",
        open=lambda path: LogFloor(path, "append-sync"),
    ),
    Spec(
        "floor-prezeroed-fdatasync",
        "floor",
        durable=True,
        description="floor: pwrite into pre-zeroed, pre-synced space + fdatasync (the durable floor)",
        open=lambda path: LogFloor(path, "prezeroed-sync"),
    ),
    Spec(
        "floor-append-nosync",
        "floor",
        durable=False,
        description="floor: raw append without sync; reads pread + decode",
        open=lambda path: LogFloor(path, "append-nosync"),
    ),
    Spec(
        "dict",
        "floor",
        durable=False,
        description="floor: a plain dict of SessionData objects",
        open=DictFloor,
    ),
)

SPEC_BY_NAME: Final = {spec.name: spec for spec in SPECS}


def select(only: str | None) -> list[Spec]:
    """The contenders ``--only`` names (names or globs, comma-separated); all of them for none."""
    if not only:
        return list(SPECS)
    patterns = [part.strip() for part in only.split(",") if part.strip()]
    chosen = [spec for spec in SPECS if any(fnmatch.fnmatchcase(spec.name, p) for p in patterns)]
    if not chosen:
        raise SystemExit(f"--only {only!r} matches no contender; known: {', '.join(SPEC_BY_NAME)}")
    return chosen
