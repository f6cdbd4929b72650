"""What a process holds open: its descriptors, and the deleted logs of a store among them (Linux)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")


def held_files(directory: Path) -> tuple[int, list[str]]:
    """How many descriptors this process holds, and the deleted logs of ``directory`` they point at."""
    fds = os.listdir("/proc/self/fd")
    targets = []
    for fd in fds:
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the descriptor listdir itself used, closed since
            continue
    logs = [target for target in targets if target.startswith(f"{directory}/sessions.log")]
    return len(fds), [log for log in logs if log.endswith(" (deleted)")]
