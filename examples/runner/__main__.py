"""``python -m examples.runner``: see ``examples.runner.server``."""

from __future__ import annotations

import sys

from examples.runner.server import main

sys.exit(main())
