"""The base class every benchmark contender shares, its spec, and the filestore contender.

Every contender is a ``Contender``: the five calls of the contract with
plain-string keys, plus reopen, disk usage and compaction, with the calls
most of them would otherwise repeat written once. The alternatives are in
``alternatives``, the floors in ``floors``, and the list of them all in
``registry``.
"""

from __future__ import annotations

import abc
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from filestore import EnvId, FileSessionStore, SessionData, TeamId, TenantCtx, TenantId, UserId
from filestore.contract import lookup_scope
from filestore.engine.fileio import OsFileIO
from filestore.ids import SessionScope

_SEP: Final = "\x1f"


class Contender(abc.ABC):
    """What the benchmark calls: the contract's five calls with plain-string keys, reopen, disk, compaction.

    A contender holds its store under ``path``: ``open`` opens it (from
    ``__init__``, and again after ``close``) and ``close`` releases it. The
    rest is written once here for every contender that has nothing better:
    ``find_by_user`` looks up the user's key (``user_key``) then reads it with
    ``get``, ``reopen`` closes then opens, disk usage is the files under
    ``path``, and there is no compaction.
    """

    path: Path

    @abc.abstractmethod
    def open(self) -> None:
        """Open the store under ``path``, ready for calls (and a read straight after a reopen)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what ``open`` took; the store's contents stay for the next ``open``."""

    @abc.abstractmethod
    def create(self, ctx: TenantCtx, data: SessionData) -> str: ...

    @abc.abstractmethod
    def get(self, key: str) -> SessionData | None: ...

    @abc.abstractmethod
    def update(self, key: str, data: SessionData) -> None: ...

    @abc.abstractmethod
    def remove(self, key: str) -> None: ...

    def user_key(self, scope: SessionScope) -> str | None:
        """The key of the session the user of ``scope`` holds, if any (what ``find_by_user`` looks up)."""
        raise NotImplementedError(f"{type(self).__name__} defines neither user_key nor find_by_user")

    def find_by_user(self, ctx: TenantCtx, user: str) -> tuple[str, SessionData] | None:
        key = self.user_key(lookup_scope(ctx, user))
        if key is None:
            return None
        found = self.get(key)
        return None if found is None else (key, found)

    def reopen(self) -> None:
        """Close, then open the same directory again (ready for a read afterwards)."""
        self.close()
        self.open()

    def disk_bytes(self) -> tuple[int, int]:
        """The bytes the store's files hold: ``(allocated, apparent)``."""
        return directory_bytes(self.path)

    def compact(self) -> bool:
        """Reclaim dead space if the contender can; whether it did."""
        return False


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
    """The real file layer, counting ``fdatasync`` calls and when each ran.

    How many writes group commit shares a sync, and (from ``intervals``, the
    ``perf_counter_ns`` start and end of each) the fraction of a run a sync
    is in flight.
    """

    def __init__(self) -> None:
        self.syncs = 0
        self.intervals: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def sync_data(self, fd: int) -> None:
        started = time.perf_counter_ns()
        super().sync_data(fd)
        ended = time.perf_counter_ns()
        with self._lock:
            self.syncs += 1
            self.intervals.append((started, ended))


class FileStoreContender(Contender):
    """``FileSessionStore`` with the given options."""

    store: FileSessionStore

    def __init__(self, path: Path, **options: Any) -> None:
        self.path = path
        self._options = options
        self.open()

    def open(self) -> None:
        self.store = FileSessionStore(self.path, **self._options)

    def close(self) -> None:
        self.store.close()

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

    def compact(self) -> bool:
        self.store.compact()
        return True


def open_counting(spec: Spec, path: Path) -> tuple[Contender, SyncCounter | None]:
    """Open ``spec`` on ``path``; a filestore contender comes with a counter of its fdatasyncs."""
    if spec.filestore_options is None:
        return spec.open(path), None
    counter = SyncCounter()
    return FileStoreContender(path, io=counter, **spec.filestore_options), counter
