"""Shared fixtures: every contract and model test runs once per backend of ``support.backends``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

import filestore
from filestore import SessionStore

from .support.backends import ASYNC_BACKENDS, BACKENDS, Backend
from .support.installed import installed_mode, installed_problems, register_tools


def pytest_configure(config: pytest.Config) -> None:
    """With FILESTORE_TEST_INSTALLED=1, refuse to run unless filestore is the installed wheel."""
    register_tools(Path(__file__).resolve().parent.parent)
    if installed_mode():
        problems = installed_problems(filestore.__file__, filestore.__version__)
        if problems:
            raise pytest.UsageError("FILESTORE_TEST_INSTALLED=1: " + "; ".join(problems))


# No per-example deadline: it is a timing assertion, and these machines are shared (an example
# took 425 ms on a loaded machine and 0.7 ms on its re-run). Hangs are caught by pytest-timeout.
settings.register_profile("filestore", deadline=None)
settings.load_profile("filestore")


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
