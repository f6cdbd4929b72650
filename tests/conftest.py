"""Shared fixtures: the backend registry every contract and model test runs on.

A backend is a factory that opens a store on a directory. Durable backends
can be reopened on the same directory; the stateful tests use that to check
that what was acknowledged survives a close and reopen.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from filestore import InMemorySessionStore, SessionStore


@attrs.frozen
class Backend:
    """How to open one kind of store on a directory."""

    name: str
    open: Callable[[Path], SessionStore]
    durable: bool


BACKENDS: dict[str, Backend] = {
    "memory": Backend("memory", lambda _path: InMemorySessionStore(), durable=False),
}


def register_backend(backend: Backend) -> None:
    """Make ``backend`` part of every contract and model test run."""
    BACKENDS[backend.name] = backend


def _file_backend() -> None:
    try:
        from filestore import FileSessionStore  # noqa: PLC0415 - the engine may not exist yet
    except ImportError:
        return
    register_backend(Backend("file", FileSessionStore, durable=True))
    register_backend(
        Backend("file-group", functools.partial(FileSessionStore, durability="group"), durable=True)
    )
    # A tiny snapshot interval, so snapshots are written (and reloaded) all the time.
    register_backend(
        Backend(
            "file-none-snapshots",
            functools.partial(FileSessionStore, durability="none", snapshot_every_records=3),
            durable=True,
        )
    )


_file_backend()


def _redis_store(path: Path) -> SessionStore:
    from filestore import RedisSessionStore  # noqa: PLC0415
    from tests.redis_server import redis_url  # noqa: PLC0415 - starts the server on first use

    # One namespace per store directory: tests are isolated without flushing the server.
    return RedisSessionStore(redis_url(), namespace=f"test:{abs(hash(str(path)))}")


register_backend(Backend("redis", _redis_store, durable=True))


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each registered backend in turn."""
    return BACKENDS[request.param]


@pytest.fixture
def store(backend: Backend, tmp_path: Path) -> Iterator[SessionStore]:
    """A fresh, empty store of each backend, closed after the test."""
    opened = backend.open(tmp_path / "store")
    try:
        yield opened
    finally:
        opened.close()
