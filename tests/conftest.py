"""Shared fixtures: every contract and model test runs once per backend of ``support.backends``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from filestore import SessionStore

from .support.backends import BACKENDS, Backend


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
