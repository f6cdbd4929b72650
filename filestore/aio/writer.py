"""The async file store's writer: the writes of every coroutine, appended in order, made durable together.

Coroutines hand their write calls to ``BatchingFileStore.enqueue`` and await a
future. Two threads do the rest, so the event loop never waits for the disk:

- the **appender** takes every call queued so far as one batch and runs it
  through the engine (``Writing._append_calls``: each call decided and its
  records appended as a sync call's, under the writer lock after catching up
  with other processes, but none waiting for a sync);
- the **syncer** makes everything appended so far durable with one
  ``fdatasync`` (the engine's group commit), then resolves every future it
  covered, on each future's own loop.

The appender does not wait for the syncer: while one batch is being synced
the next is appended, and the next sync covers all of it. A call is
acknowledged only once the sync covering its records returned, as in
``durability="fsync"``. A call whose records could not be made durable gets
the engine's ``WriteInDoubtError``; a call the store refused (no such key,
another owner, too large, a full disk) gets its own error, as the sync call
would raise it.

Cancellation: a call whose await was cancelled before the appender took it is
dropped, never written; one already taken runs to its end (its outcome is
discarded). Either way it happened whole or not at all. ``close`` stops taking
calls, lets the threads finish every call queued (each future resolved or
failed), then closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import attrs

from filestore.engine.groupcommit import LogPosition
from filestore.engine.logview import SealAhead
from filestore.engine.store import FileSessionStore
from filestore.engine.writing import CallOutcome
from filestore.errors import StoreClosedError, WriteInDoubtError


@attrs.define(eq=False)
class Pending:
    """One write call waiting for the writer, and the future its coroutine awaits."""

    call: Callable[[], object]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    # Its await was cancelled before the appender took it: drop it (set under the queue lock).
    abandoned: bool = False


@attrs.define
class _Appended:
    """A batch the appender wrote: its calls that wrote records, their outcomes, where it ended."""

    calls: list[tuple[Pending, CallOutcome]]
    position: LogPosition


class BatchingFileStore(FileSessionStore):
    """A ``FileSessionStore`` whose writes arrive as queued calls (see the module docs).

    Opened as the ``FileSessionStore`` it is (``durability`` ``"group"`` or
    ``"none"``); ``close`` finishes every queued call before closing.
    """

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self._queue: deque[Pending] = deque()
        self._queued = threading.Condition(threading.Lock())
        self._appended: deque[_Appended] = deque()
        self._to_sync = threading.Condition(threading.Lock())
        self._stopping = False
        self._appending = True
        self._appender = threading.Thread(target=self._append_loop, name="filestore-aio-append", daemon=True)
        self._syncer = threading.Thread(target=self._sync_loop, name="filestore-aio-sync", daemon=True)
        self._appender.start()
        self._syncer.start()

    # -- the event loop's side ---------------------------------------------------------

    def enqueue(self, call: Callable[[], object], loop: asyncio.AbstractEventLoop) -> Pending:
        """Queue ``call`` (one write method of this store, its arguments bound); its outcome
        will be set on the returned ``Pending.future``, on ``loop``. ``StoreClosedError`` once
        closing has begun."""
        pending = Pending(call, loop, loop.create_future())
        with self._queued:
            if self._stopping:
                raise StoreClosedError(f"the store at {self.path} is closed")
            self._queue.append(pending)
            if len(self._queue) == 1:
                self._queued.notify()
        return pending

    def abandon(self, pending: Pending) -> None:
        """Drop ``pending`` if the appender has not taken it yet (its await was cancelled)."""
        with self._queued:
            pending.abandoned = True

    def read_now(self, read: Callable[[], object]) -> tuple[bool, object]:
        """``(True, read())`` if the store is free this instant, else ``(False, None)`` without
        waiting: the appender holds it for a call (perhaps waiting for another process's lock),
        or catching up met another process's compaction (following it waits for the writer lock)."""
        if not self._mutex.acquire(blocking=False):
            return False, None
        view = self._view
        view.defer_seals = True  # following another process's compaction waits for its lock
        try:
            return True, read()
        except SealAhead:
            return False, None
        finally:
            view.defer_seals = False
            self._mutex.release()

    def close(self) -> None:
        """Finish every queued call (each future resolved or failed), stop the threads, close."""
        with self._queued:
            self._stopping = True
            self._queued.notify()
        if self._appender is not threading.current_thread():
            self._appender.join()
            self._syncer.join()
        super().close()

    # -- the threads --------------------------------------------------------------------

    def _append_loop(self) -> None:
        while True:
            with self._queued:
                while not self._queue and not self._stopping:
                    self._queued.wait()
                batch = [pending for pending in self._queue if not pending.abandoned]
                self._queue.clear()
                if not batch and self._stopping:
                    break
            if batch:
                self._append_batch(batch)
        with self._to_sync:
            self._appending = False
            self._to_sync.notify()

    def _append_batch(self, batch: list[Pending]) -> None:
        try:
            outcomes, position = self._append_calls([self._guarded(pending.call) for pending in batch])
        except Exception as error:  # no call ran: the lock, catching up, or the handle refused
            _settle([(pending, CallOutcome(error=error)) for pending in batch])
            return
        done = list(zip(batch, outcomes, strict=True))
        if position is None:
            _settle(done)
            return
        # Calls that wrote nothing have nothing to wait for.
        _settle([(pending, outcome) for pending, outcome in done if not outcome.wrote])
        with self._to_sync:
            self._appended.append(_Appended([item for item in done if item[1].wrote], position))
            self._to_sync.notify()

    def _sync_loop(self) -> None:
        while True:
            with self._to_sync:
                while not self._appended and self._appending:
                    self._to_sync.wait()
                if not self._appended:
                    return
                appended = list(self._appended)
                self._appended.clear()
            calls = [item for batch in appended for item in batch.calls]
            try:
                self._sync_through(appended[-1].position)
            except Exception as error:  # the sync failed: every call it was to cover is in doubt
                calls = [(pending, CallOutcome(error=error, wrote=True)) for pending, _outcome in calls]
            except BaseException as error:  # an interrupt: see _guarded
                doubt = self._interrupted_here(error)
                calls = [(pending, CallOutcome(error=doubt, wrote=True)) for pending, _outcome in calls]
            _settle(calls)

    def _guarded(self, call: Callable[[], object]) -> Callable[[], object]:
        """``call`` for the appender: ``_yielding``, and an interrupt it raises turned into its error.

        An interrupt (``KeyboardInterrupt``, ``SystemExit``, ``CancelledError``: no
        ``Exception``) raised in one of these threads has nobody to catch it: let through,
        it would end the thread with the futures of its batch, and every later call's,
        never resolved, and ``close`` waiting for the other thread forever.
        """
        run = _yielding(call)

        def guarded() -> object:
            try:
                return run()
            except Exception:
                raise
            except BaseException as error:
                raise self._interrupted_here(error) from error

        return guarded

    def _interrupted_here(self, error: BaseException) -> WriteInDoubtError:
        """Poison the handle for an interrupt in a writer thread, as the engine does for one raised
        under the writer lock (the call's record may be written or not); the error its call gets."""
        self._interrupted(error)
        return WriteInDoubtError(
            f"writing to {self.path} was interrupted ({self._poisoned}); the write may or may not be "
            "stored: reopen and read it back before retrying. This handle refuses writes until the "
            "store is reopened",
            path=self.path,
            cause=str(self._poisoned),
        )


def _yielding(call: Callable[[], object]) -> Callable[[], object]:
    """``call``, then give up the CPU: the GIL is not fair (a thread back from a system call
    retakes it before a woken waiter runs), so without this the event loop, waking for a timer
    or a socket, can wait out the whole switch interval (5 ms) behind the appender's Python."""

    def run() -> object:
        try:
            return call()
        finally:
            os.sched_yield()

    return run


def _settle(done: list[tuple[Pending, CallOutcome]]) -> None:
    """Resolve each future with its outcome, on its own loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Pending, CallOutcome]]] = {}
    for item in done:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits these any more
            loop.call_soon_threadsafe(_resolve, items)


# Coroutines woken together run in one turn of the loop, before it looks at its timers and
# sockets again: a batch is woken this many at a time, a turn each, so one batch of a
# hundred writers cannot hold the loop for milliseconds.
WAKE_SLICE: Final = 8


def _resolve(items: list[tuple[Pending, CallOutcome]]) -> None:
    for pending, outcome in items[:WAKE_SLICE]:
        future = pending.future
        if future.done():  # cancelled while the writer had it
            continue
        if outcome.error is not None:
            future.set_exception(outcome.error)
        else:
            future.set_result(outcome.result)
    if len(items) > WAKE_SLICE:
        items[0][0].loop.call_soon(_resolve, items[WAKE_SLICE:])
