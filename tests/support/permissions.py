"""Permission helpers: a process umask set for one block, and a path's permission bits."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block under ``mask`` (the umask is per process: restored afterwards, always)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: str | os.PathLike[str]) -> int:
    """The permission bits of ``path`` itself (a symlink is not followed)."""
    return stat.S_IMODE(os.lstat(path).st_mode)
