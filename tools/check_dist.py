"""Check the release artifacts .ci/run builds: what they contain, and what an install of them holds.

``python tools/check_dist.py artifacts ROOT WHEEL SDIST``: the wheel holds every
module of ROOT's ``filestore/`` (no more), ``py.typed`` and the LICENSE, and
its metadata names the distribution and the version of ``filestore/_version.py``;
the sdist holds the package, the test suite, the docs, the tools and the examples as they are
in ROOT, so the suite can run from it.

``python tools/check_dist.py installed WHEEL`` (run by the interpreter of the
environment to check): the installed ``greentic-filestore`` is WHEEL's files,
byte for byte (by the sha256 both RECORDs state), so a suite run against that
install ran against the wheel CI built.

Standard library only: it runs in environments that have nothing else.
"""

from __future__ import annotations

import ast
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Final

DISTRIBUTION: Final = "greentic-filestore"
PACKAGE: Final = "filestore"
# What the sdist must carry besides the package for the wheel built from it to be testable.
SDIST_TREES: Final = ("tests", "docs", "tools", "examples")
SDIST_FILES: Final = ("README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "MANIFEST.in")
# Files pip writes at install time, which no wheel carries.
INSTALL_ONLY: Final = frozenset({"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"})
SKIPPED_PARTS: Final = frozenset({"__pycache__", ".hypothesis", ".pytest_cache", ".mypy_cache"})


def source_version(root: Path) -> str:
    """The version written in ROOT's ``filestore/_version.py``."""
    tree = ast.parse((root / PACKAGE / "_version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Constant):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(target, ast.Name) and target.id == "__version__" for target in targets):
                return str(node.value.value)
    raise ValueError(f"{root / PACKAGE / '_version.py'} assigns no __version__")


def tree_files(root: Path, top: str, suffix: str = "") -> set[str]:
    """Relative POSIX paths of the files under ROOT/TOP ending in ``suffix``, caches left out."""
    found = set()
    for path in (root / top).rglob(f"*{suffix}"):
        relative = path.relative_to(root)
        if path.is_file() and not SKIPPED_PARTS & set(relative.parts) and path.suffix != ".pyc":
            found.add(relative.as_posix())
    return found


def wheel_problems(root: Path, wheel: Path) -> list[str]:
    """What the wheel lacks or states wrongly, measured against ROOT."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = [name for name in names if name.endswith(".dist-info/METADATA")]
        if len(info) != 1:
            return [f"{wheel.name}: {len(info)} METADATA files"]
        fields = HeaderParser().parsestr(archive.read(info[0]).decode("utf-8"))
    dist_info = info[0].removesuffix("METADATA")
    problems = []
    modules = {name for name in names if name.startswith(f"{PACKAGE}/") and name.endswith(".py")}
    expected = tree_files(root, PACKAGE, ".py")
    problems += [f"{wheel.name} lacks {name}" for name in sorted(expected - modules)]
    problems += [f"{wheel.name} has {name}, which the source does not" for name in sorted(modules - expected)]
    for required in (f"{PACKAGE}/py.typed", f"{dist_info}licenses/LICENSE"):
        if required not in names:
            problems.append(f"{wheel.name} lacks {required}")
    version = source_version(root)
    if fields["Name"] != DISTRIBUTION or fields["Version"] != version:
        problems.append(f"{wheel.name} is {fields['Name']} {fields['Version']}, not {DISTRIBUTION} {version}")
    if "Typing :: Typed" not in fields.get_all("Classifier", []):
        problems.append(f"{wheel.name} does not declare itself typed (classifier Typing :: Typed)")
    return problems


def sdist_problems(root: Path, sdist: Path) -> list[str]:
    """What the sdist lacks of ROOT's package, tests, docs, tools and top-level files."""
    with tarfile.open(sdist) as archive:
        members = [PurePosixPath(member.name) for member in archive.getmembers() if member.isfile()]
    inside = {PurePosixPath(*member.parts[1:]).as_posix() for member in members if len(member.parts) > 1}
    expected = set(SDIST_FILES).union(*(tree_files(root, top) for top in (PACKAGE, *SDIST_TREES)))
    return [f"{sdist.name} lacks {name}" for name in sorted(expected - inside)]


def record_hashes(lines: Iterable[str]) -> dict[str, str]:
    """path -> hash from RECORD lines (``path,sha256=...,size``), install-time files left out."""
    hashes = {}
    for line in lines:
        path, digest, _size = line.rsplit(",", 2)
        if digest and PurePosixPath(path).name not in INSTALL_ONLY:
            hashes[path] = digest
    return hashes


def installed_problems(wheel: Path, installed: metadata.Distribution) -> list[str]:
    """Where the installed distribution's files differ from the wheel's, by RECORD hash."""
    with zipfile.ZipFile(wheel) as archive:
        record = [name for name in archive.namelist() if name.endswith(".dist-info/RECORD")]
        if len(record) != 1:
            return [f"{wheel.name}: {len(record)} RECORD files"]
        built = record_hashes(archive.read(record[0]).decode("utf-8").splitlines())
    there = {
        str(entry): f"{entry.hash.mode}={entry.hash.value}"
        for entry in installed.files or ()
        # Scripts pip generated from the entry points live outside site-packages (``../../../bin``).
        if entry.hash is not None and entry.name not in INSTALL_ONLY and entry.parts[0] != ".."
    }
    problems = [
        f"installed {path} differs from the wheel's"
        for path in sorted(built)
        if there.get(path) != built[path]
    ]
    problems += [f"installed {path} is not in the wheel" for path in sorted(set(there) - set(built))]
    return problems


def main(argv: list[str]) -> int:
    """Run one check; print each problem and exit 1 if there is any."""
    match argv:
        case ["artifacts", root, wheel, sdist]:
            problems = wheel_problems(Path(root), Path(wheel)) + sdist_problems(Path(root), Path(sdist))
        case ["installed", wheel]:
            problems = installed_problems(Path(wheel), metadata.distribution(DISTRIBUTION))
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"check_dist {argv[0]}: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
