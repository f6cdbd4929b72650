"""The examples in README.md and docs/*.md run, so the docs stay true."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
FENCE = re.compile(r"^[ \t]*```(.*)$", re.MULTILINE)


def python_blocks(document: Path) -> list[str]:
    return PYTHON_BLOCK.findall(document.read_text(encoding="utf-8"))


# Only documents with examples: a document without one would "pass" having run nothing.
WITH_EXAMPLES = [document for document in DOCUMENTS if python_blocks(document)]
# Languages of blocks that are not Python examples; any other label (```py, ```pycon...) could be
# an example this test silently skips.
NOT_EXAMPLES = frozenset({"sh", "json", "text"})


@pytest.mark.parametrize("document", WITH_EXAMPLES, ids=lambda path: path.name)
def test_python_examples_run(document: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of a document runs, in order, in one namespace; and all of them run
    again in the same directory, over what the first run left, as a reader trying them twice would."""
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(document)
    for run in ("first", "second"):
        namespace: dict[str, object] = {"__name__": f"docs_{document.stem}"}
        ran = 0
        for block in blocks:
            exec(compile(block, str(document), "exec"), namespace)  # noqa: S102 - our own docs
            ran += 1
        assert ran == len(blocks) >= 1, run


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_code_block_is_an_example_or_labelled_otherwise(document: Path) -> None:
    """Each fenced block is labelled ```python (and run above) or with a language that is not Python."""
    labels = FENCE.findall(document.read_text(encoding="utf-8"))
    openings = labels[::2]
    assert len(labels) % 2 == 0, "an unclosed code block"
    assert all(label.strip() == "" for label in labels[1::2]), "a block opened inside another"
    assert set(openings) <= {"python", *NOT_EXAMPLES}, openings
    assert openings.count("python") == len(python_blocks(document)), "an indented ```python block"


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


def test_the_test_command_tests_an_installed_package() -> None:
    """The test command installs the checkout as a package (not editable) and runs pytest's own
    script, which with --import-mode=importlib does not put the checkout on sys.path: so what runs
    is what was installed (.ci/run runs the command with FILESTORE_TEST_INSTALLED=1, which checks)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = readme.split("<!-- test-command", 1)[1].split("```sh\n", 1)[1].split("\n", 1)[0]
    assert command == "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/pytest"
    with open(ROOT / "pyproject.toml", "rb") as file:
        addopts = tomllib.load(file)["tool"]["pytest"]["ini_options"]["addopts"]
    assert "--import-mode=importlib" in addopts.split()
