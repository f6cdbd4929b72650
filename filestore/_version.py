"""The package's version, in the one place it is written.

pyproject.toml reads it at build time (``[tool.setuptools.dynamic]``), so the
distribution's metadata, ``filestore.__version__`` and ``filestore --version``
cannot disagree; CHANGELOG.md has a heading for each released version.
"""

from __future__ import annotations

from typing import Final

__version__: Final = "0.1.0"
