"""The public surface: everything users import comes from filestore, sorted and complete."""

from __future__ import annotations

from pathlib import Path

import filestore


def test_all_is_sorted() -> None:
    """__all__ is sorted, so additions are easy to review."""
    assert filestore.__all__ == sorted(filestore.__all__)


def test_every_public_name_is_importable() -> None:
    """Every name in __all__ exists on the package."""
    for name in filestore.__all__:
        assert hasattr(filestore, name), name


def test_the_stores_and_model_are_public() -> None:
    """The three backends, the contract and the model are all in the public surface."""
    expected = {
        "FileSessionStore",
        "InMemorySessionStore",
        "RedisSessionStore",
        "SessionStore",
        "SessionData",
        "TenantCtx",
        "SessionCursor",
        "FilestoreError",
    }
    assert expected <= set(filestore.__all__)


def test_package_ships_py_typed() -> None:
    """The package marks itself as typed (PEP 561)."""
    assert (Path(filestore.__file__).parent / "py.typed").is_file()
