"""Shared fixtures: every contract and model test runs once per backend of ``support.backends``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from filestore import SessionStore

from .support.backends import ASYNC_BACKENDS, BACKENDS, Backend

# The modules whose ``backend`` tests also run on the async backends (through SyncOverAsync).
ASYNC_MODULES = frozenset({"test_contract", "test_waits"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each ``backend`` test once per registered backend (and async one, in ASYNC_MODULES)."""
    if "backend" in metafunc.fixturenames:
        names = sorted(BACKENDS)
        if metafunc.module.__name__.rsplit(".", 1)[-1] in ASYNC_MODULES:
            names += sorted(ASYNC_BACKENDS)
        metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each registered backend in turn (see ``pytest_generate_tests``)."""
    name = request.param
    return BACKENDS[name] if name in BACKENDS else ASYNC_BACKENDS[name]


@pytest.fixture
def store(backend: Backend, tmp_path: Path) -> Iterator[SessionStore]:
    """A fresh, empty store of each backend, closed after the test."""
    opened = backend.open(tmp_path / "store")
    try:
        yield opened
    finally:
        opened.close()
