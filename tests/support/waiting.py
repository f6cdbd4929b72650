"""Support for the ``--wait`` tests: release a store exactly when someone has found it taken.

A test that closes the other handle after a fixed delay passes even if the
waiting call never waited (it may simply start after the close). Instead,
``release_once_blocked`` watches the open-registration ``flock`` calls of
``filestore.engine.locking`` and releases the holder (from another thread)
only once a call has found the lock taken. Without waiting, that call has
then already failed; with waiting, it must retry and succeed.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

import pytest

_LONGEST_TEST: Final = 60.0


class WatchedFcntl:
    """``fcntl`` as ``filestore.engine.locking`` sees it, noting every ``flock`` refused as busy."""

    LOCK_EX: Final = fcntl.LOCK_EX
    LOCK_SH: Final = fcntl.LOCK_SH
    LOCK_NB: Final = fcntl.LOCK_NB
    LOCK_UN: Final = fcntl.LOCK_UN

    def __init__(self, wake: threading.Event) -> None:
        self.blocked = False
        self._wake = wake

    def flock(self, fd: int, operation: int) -> None:
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            self.blocked = True
            self._wake.set()
            raise


@contextmanager
def release_once_blocked(release: Callable[[], None]) -> Iterator[WatchedFcntl]:
    """Within the block, call ``release`` (on another thread) as soon as an open registration
    (a store opening, or an offline tool) finds the store taken; on leaving, at the latest.

    Yields the watcher: ``watcher.blocked`` says whether anything found the store taken.
    """
    wake = threading.Event()
    watcher = WatchedFcntl(wake)

    def release_when_woken() -> None:
        wake.wait(_LONGEST_TEST)
        release()

    releaser = threading.Thread(target=release_when_woken)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("filestore.engine.locking.fcntl", watcher)
        releaser.start()
        try:
            yield watcher
        finally:
            wake.set()
            releaser.join(_LONGEST_TEST)
