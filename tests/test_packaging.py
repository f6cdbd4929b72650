"""The distribution's metadata says what is true: its own name, one version, what it claims to support.

pyproject.toml, README.md and CHANGELOG.md are read as files; .ci/run builds
the wheel and sdist and checks their contents with ``tools/check_dist.py``.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Final

import pytest

import filestore
from filestore import main
from filestore._version import __version__

ROOT: Final = Path(__file__).resolve().parent.parent
PYTHON_CLASSIFIER: Final = re.compile(r"^Programming Language :: Python :: (3\.\d+)$")


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    """pyproject.toml's [project] table."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        table: dict[str, Any] = tomllib.load(file)["project"]
    return table


def test_the_distribution_has_a_name_of_its_own(project: dict[str, Any]) -> None:
    """The distribution is greentic-filestore (`filestore` on the index is another project's)."""
    assert project["name"] == "greentic-filestore"


def test_the_version_is_written_once(project: dict[str, Any]) -> None:
    """pyproject takes the version from filestore/_version.py, which filestore.__version__ is."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        dynamic = tomllib.load(file)["tool"]["setuptools"]["dynamic"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    assert dynamic["version"] == {"attr": "filestore._version.__version__"}
    assert filestore.__version__ == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_version_option_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`filestore --version` prints `filestore VERSION` and exits 0."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"filestore {__version__}\n"


def test_the_changelog_has_the_version() -> None:
    """CHANGELOG.md has a heading for the version (released, or marked unreleased)."""
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), re.MULTILINE)
    assert __version__ in headings


def test_only_the_tested_python_is_claimed(project: dict[str, Any]) -> None:
    """The classifiers claim CPython 3.11, the one version CI installs and tests, and this run is on it."""
    claimed = {m.group(1) for c in project["classifiers"] if (m := PYTHON_CLASSIFIER.match(c))}
    assert claimed == {"3.11"}
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in claimed
    assert project["requires-python"] == ">=3.11"


def test_linux_typed_and_licensed(project: dict[str, Any]) -> None:
    """The metadata says Linux, typed, and ships the MIT license file; py.typed is package data."""
    assert "Operating System :: POSIX :: Linux" in project["classifiers"]
    assert "Typing :: Typed" in project["classifiers"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert (ROOT / "filestore" / "py.typed").is_file()
    assert project["keywords"]
    assert all(url.startswith("https://") for url in project["urls"].values())


def test_every_extra_is_documented(project: dict[str, Any]) -> None:
    """Each extra of pyproject is named in the README, and every extra the README names exists
    (pip only warns when asked for one that does not)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    extras = set(project["optional-dependencies"])
    assert {"redis", "bench", "test", "cluster", "runner"} <= extras
    assert [
        extra for extra in sorted(extras) if f"`[{extra}]`" not in readme and f"[{extra}]`" not in readme
    ] == []
    named = set(re.findall(r"`(?:greentic-filestore)?\[([a-z]+)\]`", readme))
    assert named <= extras, named - extras


def test_the_readme_installs_by_the_distribution_name() -> None:
    """The README's first command installs the checkout and runs the demo (true before the first
    release, which .ci/run proves with the built wheel); it names `pip install greentic-filestore`
    for the package index, and warns of the other `filestore`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"^```sh\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    assert first is not None
    assert "pip install . && .venv/bin/filestore demo" in first.group(1)
    assert "`pip install greentic-filestore`" in readme
    assert "FastAPI upload toolkit" in readme
