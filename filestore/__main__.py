"""``python -m filestore``: the command line."""

from __future__ import annotations

import sys

from filestore.cli import main

if __name__ == "__main__":
    sys.exit(main())
