"""The benchmark's adapter protocol, its contender spec, and the filestore contender.

Every contender sits behind ``Contender``: the five calls of the contract
with plain-string keys, plus reopen, disk usage and compaction. The
alternatives are in ``alternatives``, the floors in ``floors``,
and the list of them all in ``registry``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import attrs

from filestore import EnvId, FileSessionStore, SessionData, TeamId, TenantCtx, TenantId, UserId
from filestore.engine.fileio import OsFileIO
from filestore.ids import SessionScope

_SEP: Final = "\x1f"


class Contender(Protocol):
    """The calls the benchmark makes; keys are plain strings."""

    def create(self, ctx: TenantCtx, data: SessionData) -> str: ...

    def get(self, key: str) -> SessionData | None: ...

    def update(self, key: str, data: SessionData) -> None: ...

    def remove(self, key: str) -> None: ...

    def find_by_user(self, ctx: TenantCtx, user: str) -> tuple[str, SessionData] | None: ...

    def close(self) -> None: ...

    def reopen(self) -> None:
        """Close, then open the same directory again (ready for a read afterwards)."""
        ...

    def disk_bytes(self) -> tuple[int, int]:
        """The bytes the store's files hold: ``(allocated, apparent)``."""
        ...

    def compact(self) -> bool:
        """Reclaim dead space if the contender can; whether it did."""
        ...


@attrs.frozen
class Spec:
    """A contender: how to open it on a directory, and what it is."""

    name: str
    family: str
    """``filestore``, ``alternative`` or ``floor``."""
    durable: bool
    description: str
    open: Callable[[Path], Contender]
    missing: Callable[[], str | None] = lambda: None
    """Why it cannot run here (a package not installed), or ``None``."""
    filestore_options: Mapping[str, Any] | None = None
    """For filestore contenders, the ``FileSessionStore`` options (to open one that counts syncs)."""


def directory_bytes(path: Path) -> tuple[int, int]:
    """``(allocated, apparent)`` bytes of the regular files under ``path``."""
    allocated = apparent = 0
    for root, _, files in os.walk(path):
        for name in files:
            info = os.lstat(os.path.join(root, name))
            allocated += info.st_blocks * 512
            apparent += info.st_size
    return allocated, apparent


def scope_text(scope: SessionScope) -> str:
    return _SEP.join("" if part is None else str(part) for part in scope)


def parse_scope(text: str) -> SessionScope:
    """The scope ``scope_text`` wrote."""
    return scope_from_parts(*text.split(_SEP))


def scope_from_parts(env: str, tenant: str, team: str, user: str) -> SessionScope:
    """A scope from its four parts, an empty team or user meaning none."""
    return SessionScope(
        EnvId(env), TenantId(tenant), TeamId(team) if team else None, UserId(user) if user else None
    )


# -- filestore ----------------------------------------------------------------------


class SyncCounter(OsFileIO):
    """The real file layer, counting ``fdatasync`` calls (how many writes group commit shares one)."""

    def __init__(self) -> None:
        self.syncs = 0
        self._lock = threading.Lock()

    def sync_data(self, fd: int) -> None:
        super().sync_data(fd)
        with self._lock:
            self.syncs += 1


class FileStoreContender:
    """``FileSessionStore`` with the given options."""

    def __init__(self, path: Path, **options: Any) -> None:
        self._path = path
        self._options = options
        self.store = FileSessionStore(path, **options)

    def create(self, ctx: TenantCtx, data: SessionData) -> str:
        return self.store.create_session(ctx, data)

    def get(self, key: str) -> SessionData | None:
        return self.store.get_session(key)

    def update(self, key: str, data: SessionData) -> None:
        self.store.update_session(key, data)

    def remove(self, key: str) -> None:
        self.store.remove_session(key)

    def find_by_user(self, ctx: TenantCtx, user: str) -> tuple[str, SessionData] | None:
        return self.store.find_by_user(ctx, user)

    def close(self) -> None:
        self.store.close()

    def reopen(self) -> None:
        self.store.close()
        self.store = FileSessionStore(self._path, **self._options)

    def disk_bytes(self) -> tuple[int, int]:
        return directory_bytes(self._path)

    def compact(self) -> bool:
        self.store.compact()
        return True


def open_counting(spec: Spec, path: Path) -> tuple[Contender, SyncCounter | None]:
    """Open ``spec`` on ``path``; a filestore contender comes with a counter of its fdatasyncs."""
    if spec.filestore_options is None:
        return spec.open(path), None
    counter = SyncCounter()
    return FileStoreContender(path, io=counter, **spec.filestore_options), counter
