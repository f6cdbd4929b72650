"""Group commit: concurrent writers share one fdatasync, each returning only once durable.

Writers append their records under the store mutex (fast), then call
``wait_durable(position)`` with where their record landed. The first to
find no sync in progress leads: it syncs everything written so far,
outside the store mutex, so others keep appending meanwhile; they wait for
the leader and are covered by its sync, or lead the next one. A failed sync is remembered and raised to every
waiter: never retry an fsync.

Durable state is a ``LogPosition``, a generation and a record number, not a
record number alone: a compaction numbers the new generation's records from
1 again, so "record 40 is durable" said of the old log says nothing of the
new log's record 40.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs

from filestore.errors import StorePoisonedError


@attrs.frozen(order=True)
class LogPosition:
    """Record ``seq`` of log generation ``generation``, ordered by generation, then number.

    A handle moves only to newer generations, and only once the old log ends
    in a seal its compaction fdatasync'd after every record before it: so a
    position in an older generation than the current one is always durable,
    and ordering generation first is what makes ``GroupCommit`` right.
    """

    generation: int
    seq: int


class GroupCommit:
    """Who is syncing, and how far the log is known durable."""

    def __init__(self) -> None:
        self._done = threading.Condition(threading.Lock())
        self._syncing = False
        self._durable = LogPosition(0, 0)
        self._error: StorePoisonedError | None = None

    def wait_durable(self, position: LogPosition, sync_everything: Callable[[], LogPosition]) -> None:
        """Return once the record at ``position`` is durable.

        ``sync_everything`` makes every record written so far durable and
        returns the position of the last one it covered (in the generation it
        synced); it raises ``StorePoisonedError`` on failure, which every
        waiter then gets. Anything else it raises (``KeyboardInterrupt``,
        ``SystemExit``, cancellation) ends only the leader's call: the leader
        gives up leading and wakes the others, one of which leads the next
        sync (an interrupted sync reported no error, so syncing again is no
        retry of a failed fsync). A waiter is never left waiting, and never
        told "durable" of a record no completed sync covered.
        """
        leading = False
        covered: LogPosition | None = None
        failed: StorePoisonedError | None = None
        try:
            with self._done:
                while self._durable < position:
                    if self._error is not None:
                        raise self._error
                    if not self._syncing:
                        self._syncing = leading = True
                        break
                    self._done.wait()
                else:
                    return
            try:
                covered = sync_everything()
            except StorePoisonedError as error:
                failed = error
                raise
        finally:
            if leading:
                # Whatever ended the sync, the leader lets go and says so: left set, the flag
                # would keep every later writer waiting for a sync that never ends.
                with self._done:
                    if covered is not None:
                        self._durable = max(self._durable, covered)
                    if failed is not None:
                        self._error = failed
                    self._syncing = False
                    self._done.notify_all()
