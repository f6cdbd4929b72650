"""Group commit: concurrent writers share one fdatasync, each returning only once durable.

Writers append their records under the store mutex (fast), then call
``wait_durable(seq)``. The first to find no sync in progress leads: it syncs
everything written so far, outside the store mutex, so others keep
appending meanwhile; they wait for the leader and are covered by its sync,
or lead the next one. A failed sync is remembered and raised to every
waiter: never retry an fsync.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from filestore.errors import StorePoisonedError


class GroupCommit:
    """Who is syncing, and how far the log is known durable."""

    def __init__(self) -> None:
        self._done = threading.Condition(threading.Lock())
        self._syncing = False
        self._durable_seq = 0
        self._error: StorePoisonedError | None = None

    def wait_durable(self, seq: int, sync_everything: Callable[[], int]) -> None:
        """Return once record ``seq`` is durable.

        ``sync_everything`` makes every record written so far durable and
        returns the last sequence number it covered; it raises
        ``StorePoisonedError`` on failure.
        """
        with self._done:
            while self._durable_seq < seq:
                if self._error is not None:
                    raise self._error
                if not self._syncing:
                    self._syncing = True
                    break
                self._done.wait()
            else:
                return
        try:
            covered = sync_everything()
        except StorePoisonedError as error:
            with self._done:
                self._syncing = False
                self._error = error
                self._done.notify_all()
            raise
        with self._done:
            self._durable_seq = max(self._durable_seq, covered)
            self._syncing = False
            self._done.notify_all()
