"""Writing to the log: the one path every mutation of ``FileSessionStore`` takes.

A call's records are decided under the writer lock, caught up with other
processes, checked whole (each PUT's data against ``max_record_size``)
before the first is written, then appended; in the fsync and group modes
each is made durable before the call returns (group commit shares one
fdatasync among concurrent writers; a bulk batch shares one among its
records). An ``OSError`` poisons the handle: the error raised says what the
failed call stored (see ``_guard_io``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs

from filestore.contract import check_record_size
from filestore.engine.framing import KIND_PUT
from filestore.engine.groupcommit import GroupCommit, LogPosition
from filestore.engine.locking import WriterLock
from filestore.engine.logfile import UnsyncedRecordError
from filestore.engine.logview import LogView
from filestore.engine.options import Durability
from filestore.engine.records import Put, Record, Remove
from filestore.engine.snapshotwriter import SnapshotWriter
from filestore.engine.waiting import Build
from filestore.errors import StorePoisonedError, WriteInDoubtError
from filestore.model import SessionData

_T = TypeVar("_T")
_RECORD_TYPES = (Put, Remove)


@attrs.define
class CallOutcome:
    """What one write call of a batch did: its ``result`` or ``error``, and whether it ``wrote``
    records (which then need the batch's sync before the call is acknowledged)."""

    result: object = None
    error: Exception | None = None
    wrote: bool = False


@attrs.define
class _Batch:
    """The batch ``Writing._append_calls`` runs: its thread, and where its last record landed."""

    thread: int
    position: LogPosition | None = None


class Writing:
    """``FileSessionStore``'s write path (a mixin: the store sets these attributes when it opens)."""

    path: str
    durability: Durability
    max_record_size: int
    preallocate_bytes: int
    _mutex: threading.RLock
    _lock: WriterLock
    _view: LogView
    _snapshots: SnapshotWriter
    _group: GroupCommit
    _closed: bool
    _forked: bool
    _poisoned: str | None
    _sync_each: bool
    _sync_early: bool
    # Set while _append_calls runs; only its own thread's writes defer their sync to it.
    _batch: _Batch | None = None

    def _check_writable(self) -> None:
        raise NotImplementedError  # pragma: no cover - FileSessionStore's

    def _write(self, build: Build, session: SessionData | None = None) -> None:
        """Append the record(s) ``build`` returns, deciding and writing under the writer lock.

        ``build`` runs after catching up with other processes, so its checks
        (does the key exist, who owns it) see the latest state; it returns
        ``None`` (or no records) when there is nothing to write. ``session`` is
        the data a PUT stores, kept in the read cache. Several records are one
        batch under the lock (each prefix of it is a state the store may be left
        in: see ``filestore.engine.waiting``); in the fsync and group modes each
        is synced before the next is written, so a power loss cannot keep a later
        record without an earlier one (which opening would refuse as damage in
        the middle).
        """
        # The body of _change, inline: no closure per write.
        with self._mutex:
            if self._closed or self._forked or self._poisoned is not None:
                self._check_writable()  # raises
            lock = self._lock
            lock.acquire()
            try:
                self._view.catch_up(locked=True)
                position = self._append(build(), session)
            finally:
                lock.release()
            if self._view.snapshot_waiting:
                self._snapshots.start()
        if position is None:
            return
        batch = self._batch
        if batch is not None and batch.thread == threading.get_ident():
            batch.position = position  # the batch's one sync comes after it (_sync_through)
            return
        if self.durability is Durability.GROUP:
            self._group.wait_durable(position, self._sync_everything)

    def _write_bulk(self, build: Callable[[], list[Record]]) -> None:
        """Append the records ``build`` returns (under the writer lock, caught up, as ``_write``)
        with no sync between them, then make them all durable with one sync (fsync and
        group modes): bulk loading at the disk's speed rather than one fdatasync a record.

        The price, told to ``import_batch``'s callers: a power loss during the batch may
        keep a later record of it without an earlier one, which opening refuses as damage
        in the middle until ``fsck --repair`` (which keeps every record that was written).
        """
        with self._mutex:
            self._check_writable()
            with self._lock:
                self._view.catch_up(locked=True)
                position = self._append(build(), None, each_synced=False)
            if self._view.snapshot_waiting:
                self._snapshots.start()
        if position is None or self.durability is Durability.NONE:
            return
        if self.durability is Durability.GROUP:
            self._group.wait_durable(position, self._sync_everything)
        else:
            self._sync_everything()

    def _append_calls(
        self, calls: Sequence[Callable[[], object]]
    ) -> tuple[list[CallOutcome], LogPosition | None]:
        """Run write ``calls`` (each calls one write method of this store) in order as one batch:
        each decided and appended as ``_write`` does (under the writer lock, caught up with other
        processes), none waiting for a sync. Returns each call's outcome and where the batch's
        last record landed: ``_sync_through`` it before acknowledging any call that wrote (the
        async store's group commit across coroutines; see ``filestore.aio``).

        A call's refusal (unknown key, another owner, too large, a full disk, the lock not
        taken in time) is its own outcome and the others go on, as separate calls would; once a
        call poisons the handle, the calls after it are refused with ``StorePoisonedError``,
        nothing of theirs stored. The mutex and the writer lock are taken call by call, as by
        separate calls, so readers get in between. A call of several records syncs each but its
        last before the next, as ``_write`` does in the group mode.
        """
        outcomes: list[CallOutcome] = []
        self._batch = batch = _Batch(threading.get_ident())
        try:
            for call in calls:
                before = batch.position
                outcome = CallOutcome()
                try:
                    outcome.result = call()
                except Exception as error:  # the call's own outcome, raised to its caller
                    outcome.error = error
                outcome.wrote = batch.position is not before
                outcomes.append(outcome)
        finally:
            self._batch = None
        return outcomes, batch.position

    def _sync_through(self, position: LogPosition) -> None:
        """Return once every record up to ``position`` is durable (group commit: one fdatasync
        shared with any other waiter; ``StorePoisonedError`` or ``WriteInDoubtError`` if it fails)."""
        if self.durability is not Durability.NONE:
            self._group.wait_durable(position, self._sync_everything)

    def _append(
        self, built: Record | list[Record] | None, session: SessionData | None, *, each_synced: bool = True
    ) -> LogPosition | None:
        """Write the records ``build`` returned (writer lock held, caught up); where the last landed.

        Every record is encoded, and checked against ``max_record_size``, before
        the first is written: a refused batch writes nothing. Unless
        ``each_synced`` is false, in the fsync and group modes each record is
        synced before the next (the last in fsync mode only: group commit syncs it).
        """
        records = [built] if isinstance(built, _RECORD_TYPES) else built or []
        limit = self.max_record_size
        for record in records:
            if isinstance(record, Put):
                check_record_size(len(record.data_cbor), limit, record.key)
        encoded = [record.encode_parts() for record in records]
        last = len(records) - 1
        position = None
        for number, record in enumerate(records):
            parts, length = encoded[number]
            kept = session if record.kind == KIND_PUT else None
            now = each_synced and (self._sync_each if number == last else self._sync_early)
            preallocate = self.preallocate_bytes
            position = self._view.write(record, parts, length, kept, sync=now, preallocate=preallocate)
        return position

    def _sync_everything(self) -> LogPosition:
        """Group commit's sync: everything written so far, outside the mutex; the last record
        covered (in the generation current when the sync began)."""
        with self._mutex:
            point = self._view.sync_point()
        durable = False
        try:
            self._guard_io(point.sync)
            durable = True
        finally:
            with self._mutex:
                self._view.end_sync(point, durable=durable)
        return point.position

    def _guard_io(self, operation: Callable[[], _T]) -> _T:
        """Run a file operation; an ``OSError`` poisons the handle (never retry an fsync).

        The error raised says what the failed call stored: ``StorePoisonedError``
        for a write call means its record is not stored, ``WriteInDoubtError``
        that it was written whole but its sync failed, so it may be.
        """
        try:
            return operation()
        except OSError as error:
            raise self._io_error(error) from error

    def _io_error(self, error: OSError) -> StorePoisonedError:
        """Poison the handle for a failed file operation; the error to raise (see ``_guard_io``)."""
        if isinstance(error, UnsyncedRecordError):
            self._poisoned = f"OSError: {error}"
            return WriteInDoubtError(
                f"writing to {self.path}: the record was written but its sync failed ({self._poisoned}); "
                "it may or may not be stored: reopen and read it back before retrying. This handle "
                "refuses writes until the store is reopened",
                path=self.path,
                cause=self._poisoned,
            )
        return self._poison(error)

    def _poison(self, error: OSError) -> StorePoisonedError:
        """Poison the handle for ``error``; the error to raise."""
        self._poisoned = f"{type(error).__name__}: {error}"
        return StorePoisonedError(
            f"writing to {self.path} failed ({self._poisoned}); this handle refuses writes "
            "until the store is reopened",
            path=self.path,
            cause=self._poisoned,
        )
