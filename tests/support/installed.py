"""The installed-package mode of the suite: proof that the tests import the wheel, not the checkout.

With ``FILESTORE_TEST_INSTALLED=1`` (set by .ci/run around the README's test
command) the suite refuses to start unless ``filestore`` was imported from the
interpreter's site-packages, as the ``greentic-filestore`` distribution installed
it (not editable), with the version its metadata states. A test run that
silently imported the source tree would hide a module or data file missing
from the wheel, or an import that only works from a checkout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Final

DISTRIBUTION: Final = "greentic-filestore"
ENVIRONMENT_FLAG: Final = "FILESTORE_TEST_INSTALLED"


def installed_mode() -> bool:
    """Whether the run must test the installed package (``FILESTORE_TEST_INSTALLED=1``)."""
    return os.environ.get(ENVIRONMENT_FLAG) == "1"


def installed_problems(package_file: str, package_version: str) -> list[str]:
    """What stops ``filestore`` (its ``__init__`` at ``package_file``) being the installed wheel."""
    init = Path(package_file).resolve()
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    if not init.is_relative_to(site_packages):
        return [f"filestore was imported from {init}, not from this interpreter's {site_packages}"]
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return [f"filestore is in {site_packages} but no {DISTRIBUTION} distribution is installed"]
    problems = []
    owned = {Path(str(dist.locate_file(entry))).resolve() for entry in dist.files or ()}
    if init not in owned:
        problems.append(f"{init} is not a file of the installed {DISTRIBUTION}")
    if dist.version != package_version:
        problems.append(
            f"{DISTRIBUTION} metadata says {dist.version}, filestore.__version__ {package_version}"
        )
    direct_url = dist.read_text("direct_url.json")
    if direct_url is not None and json.loads(direct_url).get("dir_info", {}).get("editable", False):
        problems.append(f"{DISTRIBUTION} is an editable install of a checkout, not a wheel")
    return problems


def register_tools(root: Path) -> None:
    """Make the checkout's ``tools/`` and ``examples/`` importable as ``tools`` and ``examples``
    (the bench, check_dist, the example runner) without putting the checkout on sys.path, where
    its ``filestore`` would shadow the installed one."""
    for name in ("tools", "examples"):
        if name in sys.modules:
            continue
        package = root / name
        spec = importlib.util.spec_from_file_location(
            name, package / "__init__.py", submodule_search_locations=[str(package)]
        )
        assert spec is not None, package
        assert spec.loader is not None, package
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def examples_only(root: Path, directory: Path) -> Path:
    """A directory holding only a link to the checkout's ``examples/``: put on a child's
    ``PYTHONPATH`` (and made its working directory), ``python -m examples.runner`` finds the
    example while ``filestore`` still comes from the interpreter, installed or not."""
    link = directory / "examples"
    if not link.exists():
        link.symlink_to(root / "examples", target_is_directory=True)
    return directory
