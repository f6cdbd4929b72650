"""The public surface: everything users import comes from filestore, sorted, complete and typed."""

from __future__ import annotations

import ast
import importlib.util
import re
import typing
from pathlib import Path
from typing import Final

import filestore

ROOT: Final = Path(__file__).resolve().parent.parent
DOCUMENTS: Final = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGE_DIR: Final = ROOT / "filestore"
# Every module and subpackage name directly under filestore/ (``filestore.X`` in a doc would be one).
SUBMODULES: Final = {
    path.stem for path in PACKAGE_DIR.iterdir() if path.suffix == ".py" or (path / "__init__.py").is_file()
} - {"__init__"}


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
        "ReplyScope",
        "SessionCursor",
        "SessionData",
        "SessionKey",
        "SessionNotFoundError",
        "SessionStore",
        "TeamId",
        "TenantCtx",
        "TenantId",
        "UserId",
        "WaitScope",
        "canonical_session_key",
        "telegram_update_to_session_key",
        "webhook_to_session_key",
    }
    assert expected <= set(filestore.__all__)


def test_the_tools_are_public_with_typed_results() -> None:
    """open_store, migrate, fsck, compact, stats, export/import and main come from filestore, each
    annotated with a result type that is itself public."""
    results = {
        "compact": "CompactReport",
        "export_sessions": "int",
        "fsck": "FsckReport",
        "import_sessions": "ImportReport",
        "main": "int",
        "migrate": "MigrateReport",
        "open_store": "MovableStore",
        "stats": "StatsReport",
    }
    for name, result in results.items():
        assert name in filestore.__all__
        returned = typing.get_type_hints(getattr(filestore, name))["return"]
        assert returned is (int if result == "int" else getattr(filestore, result)), name
        assert result == "int" or result in filestore.__all__
    finding = typing.get_type_hints(filestore.FsckReport)["findings"]
    assert typing.get_args(finding) == (filestore.FsckFinding,)
    assert typing.get_type_hints(filestore.FsckFinding)["severity"] is filestore.FsckSeverity
    assert typing.get_type_hints(filestore.FsckFinding)["action"] is filestore.FsckAction


def test_subpackages_say_they_are_implementation() -> None:
    """Each subpackage's docstring opens with "Implementation", pointing users at filestore."""
    for init in sorted(PACKAGE_DIR.glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert docstring.startswith("Implementation"), init
        assert "``filestore``" in docstring, init


def test_docs_import_only_from_filestore() -> None:
    """README.md and docs/*.md import nothing but filestore in their examples, and name no submodule."""
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for block in re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
            for node in ast.walk(ast.parse(block)):
                if isinstance(node, ast.ImportFrom) and node.module is not None:
                    assert not node.module.startswith("filestore."), (document.name, node.module)
                elif isinstance(node, ast.Import):
                    assert not [a.name for a in node.names if a.name.startswith("filestore.")], document.name
        named = {match for match in re.findall(r"\bfilestore\.(\w+)", text) if match in SUBMODULES}
        assert not named, (document.name, named)


def test_package_ships_py_typed() -> None:
    """The package directory holds the PEP 561 py.typed marker, so type checkers use our hints."""
    package_dir = Path(filestore.__file__).parent
    assert (package_dir / "py.typed").is_file()
    spec = importlib.util.find_spec("filestore")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    assert any((Path(location) / "py.typed").is_file() for location in spec.submodule_search_locations)
