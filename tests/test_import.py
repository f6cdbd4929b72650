"""The public surface: everything users import comes from filestore, sorted, complete and typed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import filestore


def test_all_is_sorted() -> None:
    """__all__ is sorted (case-sensitively), so additions are easy to review."""
    assert filestore.__all__ == sorted(filestore.__all__)


def test_all_has_no_duplicates() -> None:
    """Each public name is listed once."""
    assert len(set(filestore.__all__)) == len(filestore.__all__)


def test_every_public_name_is_importable() -> None:
    """Every name in __all__ imports from filestore (`from filestore import name`) and is not None."""
    namespace: dict[str, object] = {}
    for name in filestore.__all__:
        exec(f"from filestore import {name}", namespace)  # noqa: S102 - names come from __all__
        assert namespace[name] is getattr(filestore, name)
        assert namespace[name] is not None


def test_star_import_gives_exactly_all() -> None:
    """`from filestore import *` binds exactly the names in __all__."""
    namespace: dict[str, object] = {}
    exec("from filestore import *", namespace)  # noqa: S102 - the import under test
    assert set(namespace) - {"__builtins__"} == set(filestore.__all__)


def test_public_names_are_not_private() -> None:
    """No public name starts with an underscore."""
    assert not [name for name in filestore.__all__ if name.startswith("_")]


def test_the_model_errors_and_helpers_are_public() -> None:
    """The model, ids, errors, key helpers, contract and stores are all in the public surface."""
    expected = {
        "EnvId",
        "ErrorCode",
        "FilestoreError",
        "FileSessionStore",
        "FlowId",
        "Impersonation",
        "InMemorySessionStore",
        "InvalidInputError",
        "InvocationDeadline",
        "LockTimeoutError",
        "PackId",
        "SessionCursor",
        "SessionData",
        "SessionKey",
        "SessionNotFoundError",
        "SessionStore",
        "TeamId",
        "TenantCtx",
        "TenantId",
        "UserId",
        "telegram_update_to_session_key",
        "webhook_to_session_key",
    }
    assert expected <= set(filestore.__all__)


def test_package_ships_py_typed() -> None:
    """The package directory holds the PEP 561 py.typed marker, so type checkers use our hints."""
    package_dir = Path(filestore.__file__).parent
    assert (package_dir / "py.typed").is_file()
    spec = importlib.util.find_spec("filestore")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    assert any((Path(location) / "py.typed").is_file() for location in spec.submodule_search_locations)
