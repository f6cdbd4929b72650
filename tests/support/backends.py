"""The backend registry every contract and model test runs on.

A backend is a factory that opens a store on a directory. Durable backends
can be reopened on the same directory; the stateful tests use that to check
that what was acknowledged survives a close and reopen. ``conftest.py`` turns
the registry into the ``backend`` and ``store`` fixtures.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import attrs

from filestore import FileSessionStore, InMemorySessionStore, RedisSessionStore, SessionStore


@attrs.frozen
class Backend:
    """How to open one kind of store on a directory."""

    name: str
    open: Callable[[Path], SessionStore]
    durable: bool


def _redis_store(path: Path) -> SessionStore:
    from .redis_server import redis_url  # noqa: PLC0415 - starts the server on first use

    # One namespace per store directory: tests are isolated without flushing the server.
    return RedisSessionStore(redis_url(), namespace=f"test:{abs(hash(str(path)))}")


BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend("memory", lambda _path: InMemorySessionStore(), durable=False),
        Backend("file", FileSessionStore, durable=True),
        Backend("file-group", functools.partial(FileSessionStore, durability="group"), durable=True),
        # A tiny snapshot interval, so snapshots are written (and reloaded) all the time.
        Backend(
            "file-none-snapshots",
            functools.partial(FileSessionStore, durability="none", snapshot_every_records=3),
            durable=True,
        ),
        Backend("redis", _redis_store, durable=True),
    )
}
