"""The examples in README.md and docs/*.md run, so the docs stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(document: Path) -> list[str]:
    return PYTHON_BLOCK.findall(document.read_text(encoding="utf-8"))


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_python_examples_run(document: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of a document runs, in order, in one namespace."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{document.stem}"}
    for block in python_blocks(document):
        exec(compile(block, str(document), "exec"), namespace)  # noqa: S102 - our own docs


def test_readme_has_an_example() -> None:
    """The README carries at least one runnable example."""
    assert python_blocks(ROOT / "README.md")


def test_readme_opens_with_the_two_commands() -> None:
    """The README's first two shell blocks are the demo command and the test command."""
    shell_blocks = re.findall(
        r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL
    )
    assert "filestore demo" in shell_blocks[0]
    assert "pytest" in shell_blocks[1]
