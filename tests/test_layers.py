"""The package's import graph runs one way: model, contract, engine and stores, offline tools, transfer, app.

Read from the source (AST), so an import added anywhere, even under
``TYPE_CHECKING`` or inside a function, is checked. The tests' own graph
is checked too: test modules share code only through ``tests/support/``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

PACKAGE: Final = Path(__file__).resolve().parent.parent / "filestore"

# (rank, group, modules): a module may import its own group or a group of lower rank.
# Two groups of one rank are siblings and may not import each other.
LAYERS: Final = (
    (
        0,
        "model",
        {"errors", "progress", "serdejson", "strictcbor", "ids", "fields", "model", "fastdecode", "mapping"},
    ),
    (1, "contract", {"contract", "waits"}),
    (2, "engine", {"engine"}),
    (2, "stores", {"memory", "redis_store", "redis_scripts", "redis_layout", "redis_connect", "redis_steps"}),
    (3, "offline", {"offline"}),
    (4, "transfer", {"backends", "transfer"}),
    # asyncio twins of the stores, and their opening (which shares open_store's targets).
    (5, "aio", {"aio"}),
    (6, "app", {"cli", "clibars", "cliendings", "demo", "__main__", "__init__", "_version"}),
)
# The engine implements the contract in one place; its lower layers know only the model.
CONTRACT_USERS_IN_ENGINE: Final = {"engine.store", "engine.waiting", "engine.writing"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts)


def _group(module: str) -> tuple[int, str]:
    head = module.split(".", 1)[0]
    for rank, group, members in LAYERS:
        if head in members:
            return rank, group
    raise AssertionError(f"filestore.{module} is in no layer: add it to LAYERS")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module inside filestore) for every import of the package in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(
                (node.lineno, alias.name.removeprefix("filestore."))
                for alias in node.names
                if alias.name.startswith("filestore.")
            )
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if node.module == "filestore":
                # ``from filestore import x``: a submodule if there is one, else the package itself.
                for alias in node.names:
                    submodule = (PACKAGE / f"{alias.name}.py").exists() or (PACKAGE / alias.name).is_dir()
                    found.append((node.lineno, alias.name if submodule else "__init__"))
            elif node.module.startswith("filestore."):
                found.append((node.lineno, node.module.removeprefix("filestore.")))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}:{node.lineno}: relative import; spell the module out")
    return found


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module.endswith(".__init__"):
            module = module.removesuffix(".__init__")
        rank, group = _group(module)
        for line, imported in _imports(path):
            target_rank, target_group = _group(imported)
            where = f"filestore/{path.relative_to(PACKAGE)}:{line}"
            if target_group != group and target_rank >= rank:
                problems.append(f"{where}: {group} imports {target_group} (filestore.{imported})")
            elif group == "engine" and target_group == "contract" and module not in CONTRACT_USERS_IN_ENGINE:
                problems.append(f"{where}: engine's lower layers import the contract (filestore.{imported})")
    return problems


def test_no_import_runs_back_up_a_layer() -> None:
    """The model imports no engine, the engine no offline tool, CLI or backend, and so on up."""
    assert _violations() == []


def test_every_module_is_in_a_layer() -> None:
    """A new module must be placed in a layer, so the check above cannot skip it."""
    modules = [_module_name(path) for path in PACKAGE.rglob("*.py")]
    assert len(modules) > 30
    for module in modules:
        _group(module)


@pytest.mark.parametrize(
    ("module", "imported", "expected"),
    [
        ("model", "engine.store", "model imports engine"),
        ("engine/records", "contract", "engine's lower layers import the contract"),
        ("engine/store", "offline.compact", "engine imports offline"),
        ("engine/store", "redis_store", "engine imports stores"),
        ("memory", "engine.index", "stores imports engine"),
        ("offline/fsck", "cli", "offline imports app"),
    ],
)
def test_the_checker_catches_an_upward_import(
    module: str, imported: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planting one upward import makes the check fail and name it (the check can fail)."""
    target = PACKAGE / f"{module}.py"
    original = _imports

    def planted(path: Path) -> list[tuple[int, str]]:
        found = original(path)
        return [*found, (1, imported)] if path == target else found

    monkeypatch.setattr(f"{__name__}._imports", planted)
    problems = _violations()
    assert len(problems) == 1
    assert expected in problems[0]


TESTS: Final = Path(__file__).resolve().parent


def _imports_of_test_modules(source: str) -> list[str]:
    """The test modules (``test_*``, ``conftest``) that ``source`` imports."""
    imported = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            name = node.module.removeprefix("tests.").rsplit(".", 1)[-1]
            if name.startswith("test_") or name == "conftest":
                imported.append(node.module)
    return imported


def test_test_modules_share_code_only_through_support() -> None:
    """No test module imports another test module or conftest; what they share lives in tests/support/."""
    offenders = {
        path.name: found
        for path in sorted(TESTS.rglob("*.py"))
        if (found := _imports_of_test_modules(path.read_text()))
    }
    assert offenders == {}
    assert _imports_of_test_modules("from .test_contract import ctx\nfrom .support import data\n") == [
        "test_contract"
    ]
