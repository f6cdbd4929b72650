"""tools/check_dist.py finds what a release artifact lacks, and an install that is not the wheel.

Run on small artifacts made here (a real build is .ci/run's, with network):
each check passes on a complete one and names the file when one is missing or differs.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tools import check_dist

DIST_INFO = "greentic_filestore-0.1.0.dist-info"
METADATA = "Metadata-Version: 2.4\nName: greentic-filestore\nVersion: 0.1.0\nClassifier: Typing :: Typed\n\n"


def make_root(root: Path) -> Path:
    """A checkout: the package (version 0.1.0), the test suite, docs, tools and top-level files."""
    for name, text in {
        "filestore/__init__.py": "",
        "filestore/_version.py": '__version__: Final = "0.1.0"\n',
        "filestore/engine/__init__.py": "",
        "filestore/py.typed": "",
        "tests/test_x.py": "",
        "docs/index.md": "# docs\n",
        "tools/t.py": "",
        **{name: name for name in check_dist.SDIST_FILES},
    }.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "tests" / "__pycache__").mkdir()
    (root / "tests" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    return root


def record_line(name: str, content: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(content)}"


def make_wheel(path: Path, root: Path, leave_out: str = "", metadata_text: str = METADATA) -> Path:
    """A wheel of ROOT's package with its METADATA, LICENSE and RECORD, less ``leave_out``."""
    files = {
        name.relative_to(root).as_posix(): name.read_bytes()
        for name in (root / "filestore").rglob("*")
        if name.is_file()
    }
    files[f"{DIST_INFO}/METADATA"] = metadata_text.encode()
    files[f"{DIST_INFO}/licenses/LICENSE"] = b"MIT License"
    files.pop(leave_out, None)
    record = [record_line(name, content) for name, content in files.items()] + [f"{DIST_INFO}/RECORD,,"]
    files[f"{DIST_INFO}/RECORD"] = "\n".join(record).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def make_sdist(path: Path, root: Path, leave_out: str = "") -> Path:
    """An sdist of everything in ROOT but caches, under one top directory, less ``leave_out``."""
    with tarfile.open(path, "w:gz") as archive:
        for name in sorted(root.rglob("*")):
            relative = name.relative_to(root).as_posix()
            if name.is_file() and relative != leave_out and "__pycache__" not in relative:
                content = name.read_bytes()
                member = tarfile.TarInfo(f"greentic_filestore-0.1.0/{relative}")
                member.size = len(content)
                archive.addfile(member, io.BytesIO(content))
    return path


def test_complete_artifacts_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A wheel with every module, py.typed and the LICENSE, and an sdist with the tests, docs and
    tools: no problems, exit 0 (caches in the checkout are not expected in either)."""
    root = make_root(tmp_path / "root")
    wheel = make_wheel(tmp_path / "w.whl", root)
    sdist = make_sdist(tmp_path / "s.tar.gz", root)
    assert check_dist.main(["artifacts", str(root), str(wheel), str(sdist)]) == 0
    assert "0 problems" in capsys.readouterr().out


@pytest.mark.parametrize(
    "missing", ["filestore/engine/__init__.py", "filestore/py.typed", f"{DIST_INFO}/licenses/LICENSE"]
)
def test_a_wheel_without_a_module_py_typed_or_license_fails(missing: str, tmp_path: Path) -> None:
    """Each file the wheel must carry, when left out, is named."""
    root = make_root(tmp_path / "root")
    wheel = make_wheel(tmp_path / "w.whl", root, leave_out=missing)
    assert check_dist.wheel_problems(root, wheel) == [f"w.whl lacks {missing}"]


def test_a_wheel_of_another_name_version_or_untyped_fails(tmp_path: Path) -> None:
    """METADATA must name greentic-filestore at the source's version and declare it typed."""
    root = make_root(tmp_path / "root")
    wrong = METADATA.replace("Version: 0.1.0", "Version: 0.0.9").replace("Classifier: Typing :: Typed\n", "")
    wheel = make_wheel(tmp_path / "w.whl", root, metadata_text=wrong)
    assert check_dist.wheel_problems(root, wheel) == [
        "w.whl is greentic-filestore 0.0.9, not greentic-filestore 0.1.0",
        "w.whl does not declare itself typed (classifier Typing :: Typed)",
    ]


def test_a_module_only_in_the_wheel_fails(tmp_path: Path) -> None:
    """A module the source no longer has (a stale build directory) is named."""
    root = make_root(tmp_path / "root")
    wheel = make_wheel(tmp_path / "w.whl", root)
    (root / "filestore" / "engine" / "__init__.py").unlink()
    assert check_dist.wheel_problems(root, wheel) == [
        "w.whl has filestore/engine/__init__.py, which the source does not"
    ]


@pytest.mark.parametrize("missing", ["tests/test_x.py", "docs/index.md", "tools/t.py", "LICENSE"])
def test_an_sdist_without_the_suite_docs_tools_or_license_fails(missing: str, tmp_path: Path) -> None:
    """The sdist must carry what the test suite needs to run from it."""
    root = make_root(tmp_path / "root")
    sdist = make_sdist(tmp_path / "s.tar.gz", root, leave_out=missing)
    assert check_dist.sdist_problems(root, sdist) == [f"s.tar.gz lacks {missing}"]


def install(wheel: Path, site: Path, change: str = "") -> metadata.Distribution:
    """Unpack WHEEL into SITE as pip would (RECORD plus pip's own files), with ``change`` altered."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # noqa: S202 - the archive this test just made
        record = archive.read(f"{DIST_INFO}/RECORD").decode()
    (site / DIST_INFO / "INSTALLER").write_text("pip\n", encoding="utf-8")
    extra = "\nfilestore/__pycache__/__init__.cpython-311.pyc,,\n../../../bin/filestore,sha256=abc,10"
    (site / DIST_INFO / "RECORD").write_text(record + extra + f"\n{DIST_INFO}/INSTALLER,,", encoding="utf-8")
    if change:
        lines = (site / DIST_INFO / "RECORD").read_text(encoding="utf-8").splitlines()
        changed = [record_line(change, b"other") if line.startswith(f"{change},") else line for line in lines]
        (site / DIST_INFO / "RECORD").write_text("\n".join(changed), encoding="utf-8")
    return metadata.PathDistribution(site / DIST_INFO)


def test_an_install_of_the_wheel_matches_it(tmp_path: Path) -> None:
    """The wheel's files installed as they are: no problems (pip's own files and scripts aside)."""
    root = make_root(tmp_path / "root")
    wheel = make_wheel(tmp_path / "w.whl", root)
    assert check_dist.installed_problems(wheel, install(wheel, tmp_path / "site")) == []


def test_an_install_of_other_bytes_is_named(tmp_path: Path) -> None:
    """An installed file whose hash is not the wheel's (another build) is named."""
    root = make_root(tmp_path / "root")
    wheel = make_wheel(tmp_path / "w.whl", root)
    installed = install(wheel, tmp_path / "site", change="filestore/_version.py")
    assert check_dist.installed_problems(wheel, installed) == [
        "installed filestore/_version.py differs from the wheel's"
    ]


def test_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a known check the tool prints its usage and exits 2."""
    assert check_dist.main(["what"]) == 2
    assert "check_dist.py artifacts ROOT WHEEL SDIST" in capsys.readouterr().err
