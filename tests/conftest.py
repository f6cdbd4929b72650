"""Shared fixtures: every contract and model test runs once per backend of ``support.backends``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

import filestore
from filestore import SessionStore

from .support.backends import BACKENDS, Backend
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
