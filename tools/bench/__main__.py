"""``python tools/bench``: run the benchmark (the package docstring says what it measures)."""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:
    # Run as a directory, Python put tools/bench itself first on sys.path. The
    # package's modules import each other as tools.bench.*, so the repository
    # root takes that place instead (also keeping the working tree's filestore first).
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from tools.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
