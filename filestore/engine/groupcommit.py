"""Group commit: concurrent writers share one fdatasync, each returning only once durable.

Writers append their records under the store mutex (fast), then call
``wait_durable(position)`` with where their record landed. One sync runs at
a time, outside the store mutex, so others keep appending meanwhile; who
runs it holds the *token*:

- a writer that finds the disk idle takes the token and syncs for itself
  (a lone writer pays no thread hand-off);
- when a sync returns, its runner notes it durable, and, under the same
  store mutex, takes the next sync's point if records were appended
  meanwhile. A writer hands that next sync to the handle's sync thread and
  returns; the sync thread runs it, and the next, until nothing is pending,
  then gives the token back. So under load the next fdatasync starts as soon
  as the previous one returns, without waiting for any woken writer to run.

Waiters sleep in a *batch*: the one of the sync in flight if its point
covers their record, else the one of the next sync. A batch is woken once,
when its sync ends, so only the writers a sync covered wake. A failed sync is
remembered and raised to every waiter, covered or pending, and nobody syncs
again: never retry an fsync.

Durable state is a ``LogPosition``, a generation and a record number, not a
record number alone: a compaction numbers the new generation's records from
1 again, so "record 40 is durable" said of the old log says nothing of the
new log's record 40. And only syncs group commit ran itself move it: a
record another process flagged synced may still be inside that process's
fdatasync, so what the log file claims is durable never releases a waiter.

The sync thread is started at the first hand-off and holds its
``GroupCommit`` only weakly while idle: a handle dropped without ``close``
stops it through ``weakref.finalize`` (see ``FileSessionStore``), and
``stop`` (on close) syncs whatever is pending, then ends it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

import attrs

from filestore.engine.logfile import LogFile, UnsyncedRecordError, as_error
from filestore.errors import StorePoisonedError, WriteInDoubtError

logger = logging.getLogger("filestore")
GATHER_FRACTION = float(os.environ.get("FS_GATHER", "0"))
GATHER_CAP = 0.001


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


@attrs.frozen
class SyncPoint:
    """What one group-commit sync covers: the log as written so far, up to record ``seq``.

    ``sync`` runs outside the store's mutex (an fdatasync does not disturb
    appends on the same descriptor); ``LogView.end_sync`` then runs under it.
    """

    log: LogFile
    seq: int

    @property
    def position(self) -> LogPosition:
        """The last record this sync covers, in its log's generation."""
        return LogPosition(self.log.header.generation, self.seq)

    def sync(self) -> None:
        try:
            self.log.sync_data()
        except OSError as error:
            # The records it was to cover are written whole: they may survive or not.
            raise as_error(UnsyncedRecordError, error) from error


class Syncer(Protocol):
    """The log side of group commit (``LogView``). ``sync`` runs outside the store mutex, the
    rest under it."""

    @property
    def written_position(self) -> LogPosition:
        """The last record written so far."""
        ...

    def sync_point(self) -> SyncPoint:
        """What a sync now would cover; ``end_sync`` must follow it."""
        ...

    def sync(self, point: SyncPoint) -> None:
        """fdatasync what ``point`` covers; ``StorePoisonedError`` (the handle poisoned) if it fails."""
        ...

    def end_sync(self, point: SyncPoint, *, durable: bool) -> None:
        """The sync of ``point`` ended (``durable`` if it succeeded)."""
        ...


class _Batch:
    """The writers one sync covers: woken together, once, when it ends."""

    __slots__ = ("done", "ready", "writers")

    def __init__(self, lock: threading.Lock) -> None:
        self.ready = threading.Condition(lock)
        self.done = False
        self.writers = 0

    def wake(self) -> None:
        self.done = True
        self.ready.notify_all()


class _Mailbox:
    """Where a writer hands the next sync to the sync thread (which holds only this strongly)."""

    def __init__(self, lock: threading.Lock) -> None:
        self.work = threading.Condition(lock)
        self.point: SyncPoint | None = None
        self.stopping = False
        self.pid = os.getpid()

    def stop(self) -> None:
        """Ask the sync thread to end once idle; a no-op in a forked child (no thread there, and
        the lock may have been held at the fork)."""
        if os.getpid() != self.pid:
            return
        with self.work:
            self.stopping = True
            self.work.notify()


def _sync_loop(mailbox: _Mailbox, owner: weakref.ref[GroupCommit]) -> None:
    """The sync thread: run each handed-over sync and those after it, until asked to stop."""
    while True:
        with mailbox.work:
            while mailbox.point is None and not mailbox.stopping:
                mailbox.work.wait()
            point, mailbox.point = mailbox.point, None
        if point is None:
            return
        group = owner()
        if group is None:
            return
        group.run_from(point)
        del group  # hold the handle only weakly while idle


class GroupCommit:
    """Who syncs, who waits for which sync, and how far the log is known durable."""

    def __init__(self, mutex: AbstractContextManager[object], syncer: Syncer, *, path: str) -> None:
        self._mutex = mutex
        self._syncer = syncer
        self._path = path
        self._lock = threading.Lock()
        self._busy = False  # the token: a sync is running, or its next point is being taken
        self._durable = LogPosition(0, 0)
        self._error: StorePoisonedError | None = None
        self._in_flight: _Batch | None = None
        self._in_flight_position: LogPosition | None = None
        self._next = _Batch(self._lock)
        self._mailbox: _Mailbox = _Mailbox(self._lock)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._free = threading.Condition(self._lock)
        self._gathered = threading.Condition(self._lock)
        self._gather_target = 0

    def stopper(self) -> Callable[[], None]:
        """Ends the sync thread once idle, holding nothing of the handle: for ``weakref.finalize``
        on a handle dropped without ``close``."""
        return self._mailbox.stop

    def wait_durable(self, position: LogPosition) -> None:
        """Return once the record at ``position`` is durable.

        Raises the ``StorePoisonedError`` of a failed sync that covered it, or
        that failed before one could.
        """
        with self._lock:
            while True:
                if self._durable >= position:
                    return
                if self._error is not None:
                    raise self._error
                if not self._busy:
                    self._busy = True
                    break
                covering = self._in_flight_position
                batch = self._in_flight
                if batch is None or covering is None or position > covering:
                    batch = self._next
                    if self._gather_target and batch.writers + 1 >= self._gather_target:
                        self._gathered.notify()
                batch.writers += 1
                while not batch.done:
                    batch.ready.wait()
        self._lead()

    def _lead(self) -> None:
        """Sync for ourselves (we hold the token); hand any sync pending after it to the thread."""
        with self._mutex:
            point = self._begin()
        try:
            self._syncer.sync(point)
        except BaseException as error:
            self._failed(point, error)
            raise
        following = self._finish(point)
        if following is not None:
            self._hand_over(following)

    def run_from(self, point: SyncPoint) -> None:
        """The sync thread's work: sync ``point`` and every one pending after it, then give the
        token back (or, on failure, keep it: nobody syncs again)."""
        following: SyncPoint | None = point
        while following is not None:
            started = time.perf_counter()
            try:
                self._syncer.sync(following)
            except BaseException as error:  # raised to the waiters; the thread lives on
                self._failed(following, error)
                if not isinstance(error, StorePoisonedError):
                    logger.error("filestore: group commit's sync failed unexpectedly", exc_info=error)
                return
            if GATHER_FRACTION:
                patience = min(GATHER_CAP, (time.perf_counter() - started) * GATHER_FRACTION)
                following = self._gather(following, patience)
            else:
                following = self._finish(following)

    def _gather(self, point: SyncPoint, patience: float) -> SyncPoint | None:
        with self._mutex:
            self._syncer.end_sync(point, durable=True)
            with self._lock:
                self._durable = max(self._durable, point.position)
                done = self._in_flight
                woken = 0
                if done is not None:
                    woken = done.writers
                    done.wake()
                self._in_flight, self._in_flight_position = None, None
                target = woken + self._next.writers if woken else 0
                self._gather_target = target
        if target:
            with self._lock:
                if self._next.writers < target:
                    self._gathered.wait(patience)
                self._gather_target = 0
        with self._mutex:
            if self._syncer.written_position > self._durable:
                return self._begin()
            self._publish(None)
            return None

    def _begin(self, finished: SyncPoint | None = None) -> SyncPoint:
        """Take the next sync's point (store mutex held): the next batch becomes the one in
        flight; the writers ``finished`` (the sync just ended) covered wake.

        Under the mutex, so every writer already in the next batch appended
        before the point was taken: it covers them all.
        """
        point = self._syncer.sync_point()
        with self._lock:
            if finished is not None:
                self._durable = max(self._durable, finished.position)
                if self._in_flight is not None:
                    self._in_flight.wake()
            self._in_flight, self._next = self._next, _Batch(self._lock)
            self._in_flight_position = point.position
        return point

    def _finish(self, point: SyncPoint) -> SyncPoint | None:
        """``point``'s sync succeeded: note it, take the next point if records are pending (else
        give the token back), then wake the writers it covered. The next point, if any."""
        with self._mutex:
            self._syncer.end_sync(point, durable=True)
            if self._syncer.written_position > point.position:
                return self._begin(point)
            self._publish(point)
            return None

    def _publish(self, point: SyncPoint | None, *, keep_token: bool = False) -> None:
        """Nothing is pending (store mutex held): ``point``'s sync, if any, covered every record
        written. Wake every waiter and give the token back (unless ``keep_token``)."""
        with self._lock:
            if point is not None:
                self._durable = max(self._durable, point.position)
            self._wake_all()
            self._busy = keep_token
            if self._stopped:
                self._free.notify_all()

    def _wake_all(self) -> None:
        """Wake every waiter, in flight or next (lock held): they look again at what is durable."""
        for batch in (self._in_flight, self._next):
            if batch is not None:
                batch.wake()
        self._in_flight, self._in_flight_position = None, None
        self._next = _Batch(self._lock)

    def _failed(self, point: SyncPoint, error: BaseException) -> None:
        """``point``'s sync raised ``error``. A ``StorePoisonedError`` (the handle is poisoned)
        goes to every waiter and the token is never given back; anything else (not an I/O
        failure: no fsync ran) gives it back, and the waiters try again."""
        with self._mutex:
            self._syncer.end_sync(point, durable=False)
            with self._lock:
                if isinstance(error, StorePoisonedError):
                    self._error = error
                else:
                    self._busy = False
                self._wake_all()
                if self._stopped:
                    self._free.notify_all()

    def _hand_over(self, point: SyncPoint) -> None:
        """Give the token, with the next sync's ``point``, to the sync thread (started if need be)."""
        with self._lock:
            self._mailbox.point = point
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_sync_loop,
                    args=(self._mailbox, weakref.ref(self)),
                    name=f"filestore group commit {self._path}",
                    daemon=True,
                )
                self._thread.start()
            else:
                self._mailbox.work.notify()

    def stop(self) -> None:
        """On close (no write starts any more): wait for the sync running, sync whatever is
        pending, wake every waiter, and end the sync thread. Later waiters find their record
        durable (or the error). A failed last sync poisons the handle, as any sync does; it
        is raised to the waiters, not here."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            while self._busy and self._error is None:
                self._free.wait()
            drain = self._error is None
            self._busy = True  # for good: nobody leads a sync after this one
        self._mailbox.stop()
        if self._thread is not None:
            self._thread.join()
        if not drain:
            return
        point = None
        try:
            with self._mutex:
                if self._syncer.written_position > self._durable:
                    point = self._begin()
            if point is not None:
                self._syncer.sync(point)
        except BaseException as error:
            if point is not None:
                self._failed(point, self._as_poison(error))
            if not isinstance(error, StorePoisonedError):
                raise
            logger.warning("filestore: the last group-commit sync of %s failed: %s", self._path, error)
            return
        with self._mutex:
            if point is not None:
                self._syncer.end_sync(point, durable=True)
            self._publish(point, keep_token=True)

    def _as_poison(self, error: BaseException) -> StorePoisonedError:
        """``error`` as what the waiters of an interrupted last sync raise: in doubt, not stored."""
        if isinstance(error, StorePoisonedError):
            return error
        return WriteInDoubtError(
            f"closing {self._path} interrupted the sync of the last writes ({error!r}); "
            "reopen and read them back",
            path=self._path,
            cause=repr(error),
        )
