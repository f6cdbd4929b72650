"""The backend registry every contract and model test runs on.

A backend is a factory that opens a store on a directory. Durable backends
can be reopened on the same directory; the stateful tests use that to check
that what was acknowledged survives a close and reopen. ``conftest.py`` turns
the registry into the ``backend`` and ``store`` fixtures.

``open_with_clock`` opens a store whose TTLs run on a clock the test gives
(a ``ManualClock``), so a TTL expires when the test says so. Redis keeps
time by its server (PEXPIRE), so it takes none: ``takes_clock`` is false and
the tests that need one skip it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from filestore import FileSessionStore, InMemorySessionStore, RedisSessionStore, SessionStore
from filestore.aio import AsyncFileSessionStore, AsyncInMemorySessionStore, AsyncRedisSessionStore
from filestore.waits import Clock

from .aio import SyncOverAsync, SyncOverAsyncFile


@attrs.frozen
class Backend:
    """How to open one kind of store on a directory (and, unless ``clocked`` is None, with a clock)."""

    name: str
    open: Callable[[Path], SessionStore]
    durable: bool
    clocked: Callable[[Path, Clock], SessionStore] | None = None

    @property
    def takes_clock(self) -> bool:
        """Whether the store's TTLs can run on a clock the test advances."""
        return self.clocked is not None

    def open_with_clock(self, path: Path, clock: Clock) -> SessionStore:
        """A store on ``path`` whose TTL deadlines read ``clock``; skips the test on a backend without."""
        if self.clocked is None:
            pytest.skip(f"{self.name} keeps time by its server: no manual clock")
        return self.clocked(path, clock)


def _redis_store(path: Path) -> SessionStore:
    from .redis_server import redis_url  # noqa: PLC0415 - starts the server on first use

    # One namespace per store directory: tests are isolated without flushing the server.
    return RedisSessionStore(redis_url(), namespace=f"test:{abs(hash(str(path)))}")


def _file_store_with_clock(path: Path, clock: Clock, **options: Any) -> SessionStore:
    return FileSessionStore(path, clock=clock, **options)


def _file(name: str, **options: Any) -> Backend:
    return Backend(
        name,
        functools.partial(FileSessionStore, **options),
        durable=True,
        clocked=functools.partial(_file_store_with_clock, **options),
    )


BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend(
            "memory",
            lambda _path: InMemorySessionStore(),
            durable=False,
            clocked=lambda _path, clock: InMemorySessionStore(clock=clock),
        ),
        _file("file"),
        _file("file-group", durability="group"),
        # A tiny snapshot interval, so snapshots are written (and reloaded) all the time.
        _file("file-none-snapshots", durability="none", snapshot_every_records=3),
        Backend("redis", _redis_store, durable=True),
    )
}


def _aio_file(path: Path, clock: Clock | None = None) -> SessionStore:
    options: dict[str, Any] = {} if clock is None else {"clock": clock}

    async def opened() -> AsyncFileSessionStore:
        return AsyncFileSessionStore(path, **options)

    return SyncOverAsyncFile.opening(opened)


def _aio_redis(path: Path) -> SessionStore:
    from .redis_server import redis_url  # noqa: PLC0415 - starts the server on first use

    async def opened() -> AsyncRedisSessionStore:
        return AsyncRedisSessionStore(redis_url(), namespace=f"test:aio:{abs(hash(str(path)))}")

    return SyncOverAsync.opening(opened)


def _aio_memory(clock: Clock | None = None) -> SessionStore:
    options: dict[str, Any] = {} if clock is None else {"clock": clock}

    async def opened() -> AsyncInMemorySessionStore:
        return AsyncInMemorySessionStore(**options)

    return SyncOverAsync.opening(opened)


# The async backends (filestore.aio), each behind SyncOverAsync: the contract, wait and
# state-machine tests run on them too (conftest adds them for the modules in ASYNC_MODULES).
ASYNC_BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend(
            "aio-memory",
            lambda _path: _aio_memory(),
            durable=False,
            clocked=lambda _path, clock: _aio_memory(clock),
        ),
        Backend("aio-file", _aio_file, durable=True, clocked=_aio_file),
        Backend("aio-redis", _aio_redis, durable=True),
    )
}
