"""``FileSessionStore``: the SessionStore contract on an append-only log in one directory.

Directory layout::

    filestore.json   identity (format, store UUID); written once, after the log
    sessions.log     the log (see filestore.engine.framing for its format)
    sessions.idx     the index snapshot (a verified cache; see filestore.engine.snapshot)
    LOCK             the writer lock file (never deleted)
    OPEN             the open-registration lock file (never deleted)
    sessions.log.trN bytes cut from a torn tail, kept as evidence

Every mutation is one record, appended under the writer lock after catching
up with records other processes appended, and (by default) fdatasync'd
before the call returns. Reads come from the in-memory index and one
positioned read.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import TypeVar

from filestore.contract import (
    DEFAULT_MAX_RECORD_SIZE,
    ClosesOnExit,
    check_context_fence,
    check_ctx_preserved,
    check_record_size,
    check_session_data,
    points_lookup,
    session_scope,
)
from filestore.engine.directory import (
    check_filesystem,
    check_trusted,
    needs_housekeeping,
    open_existing_log,
    open_or_create_log,
    prepare_directory,
    refuse_links,
    require_directory,
    require_store,
)
from filestore.engine.fileio import OS_IO, FileIO
from filestore.engine.groupcommit import GroupCommit
from filestore.engine.locking import Registration, WriterLock
from filestore.engine.logfile import NO_SPACE, LogFile
from filestore.engine.logview import LogView, SessionCache, close_quietly
from filestore.engine.options import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_PREALLOCATE,
    DEFAULT_SNAPSHOT_BYTES,
    DEFAULT_SNAPSHOT_RECORDS,
    Durability,
    count,
    flag,
    parse_durability,
    permission_bits,
    seconds,
    store_path,
)
from filestore.engine.records import Put, Record, Remove
from filestore.engine.rewrite import RewriteResult
from filestore.engine.snapshotwriter import SnapshotWriter
from filestore.engine.waiting import WaitRouting, live_entry
from filestore.engine.writing import Writing
from filestore.errors import (
    FilestoreError,
    SessionNotFoundError,
    StoreClosedError,
    StorePoisonedError,
    StoreReadOnlyError,
)
from filestore.ids import SessionKey, check_key
from filestore.model import SessionData, TenantCtx
from filestore.waits import Clock, check_clock, is_expired, system_clock

logger = logging.getLogger("filestore")


def _expired(view: LogView, now: int) -> set[SessionKey]:
    return {key for key, entry in view.timed() if is_expired(entry.deadline, now)}


_T = TypeVar("_T")


# Handles created before a fork() must not be used in the child: mark them.
_OPEN_STORES: weakref.WeakSet[FileSessionStore] = weakref.WeakSet()


def _mark_forked() -> None:
    for store in list(_OPEN_STORES):
        store._forked = True


os.register_at_fork(after_in_child=_mark_forked)


class FileSessionStore(Writing, WaitRouting, ClosesOnExit):
    """A crash-safe session store in one directory; several threads and processes may share it.

    ``durability`` (see ``Durability``): ``"fsync"`` (default) returns from a
    write only once its record is fdatasync'd, and fsyncs the directory after
    every file create or rename; ``"group"`` does the same but lets
    concurrent threads share one fdatasync; ``"none"`` leaves flushing to the
    OS (a process crash loses nothing, a power loss may lose recent writes).

    The index is snapshotted to ``sessions.idx`` every ``snapshot_every_records``
    records or ``snapshot_every_bytes`` bytes of log, and on close, so opening
    replays only the log's tail. A record larger than ``max_record_size``
    bytes is refused with ``InvalidInputError``. Waiting longer than
    ``lock_timeout`` seconds for the writer lock raises ``LockTimeoutError``.
    The last ``cache_size`` sessions read or written are kept decoded
    (sessions are immutable, so a cached one is returned as is; 0 disables).

    An ``OSError`` while writing, syncing or renaming poisons the handle: the
    call raises ``StorePoisonedError`` and every later write does too, until
    the store is reopened (which re-verifies the log's tail). A write call
    that raised it stored nothing, unless it raised the subclass
    ``WriteInDoubtError`` (its record was written whole, the sync after it
    failed: it may be stored). A disk with no room for the record is
    ``StoreFullError``: nothing stored, the handle not poisoned. The index
    snapshot is a cache: failing to write it is a logged warning, retried later.
    Network file systems are refused unless ``allow_network_filesystem`` is set.

    A directory (or a store file in it) owned by another uid, or writable by
    group or others where ``dir_mode`` / ``file_mode`` would not make it so,
    is refused with ``UntrustedDirectoryError``, as ssh's StrictModes refuses
    such a key; ``trust_directory=True`` opts out for a deliberately shared one.
    A symbolic link at a store file's name is refused the same way, always.

    ``clock`` gives unix milliseconds: a session whose TTL deadline it has
    reached is invisible to every call (see ``filestore.engine.waiting``).

    ``read_only=True`` opens an existing store to read it and never changes a
    byte of it: no directory or file is made (lock files aside, where the
    directory lets them be made), a torn tail or a compaction's dead seal is
    read up to rather than cut, no snapshot is written, and every write raises
    ``StoreReadOnlyError``. It works on a read-only file system or a store
    this account may only read, and beside writers, whose records it follows.

    Every argument is checked before anything is created: a path that is not
    text (``bytes`` included), holds NUL or a lone surrogate, or is too long
    for the file system (``filestore.engine.options.store_path``), a bool or
    out-of-range value for any option, or a ``file_mode`` / ``dir_mode`` that
    does not let the owner read and write, raises ``InvalidInputError``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability | str = Durability.FSYNC,
        snapshot_every_records: int = DEFAULT_SNAPSHOT_RECORDS,
        snapshot_every_bytes: int = DEFAULT_SNAPSHOT_BYTES,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
        lock_timeout: float = 10.0,
        preallocate_bytes: int = DEFAULT_PREALLOCATE,
        cache_size: int = DEFAULT_CACHE_SIZE,
        file_mode: int = 0o600,
        dir_mode: int = 0o700,
        allow_network_filesystem: bool = False,
        trust_directory: bool = False,
        io: FileIO = OS_IO,
        clock: Clock = system_clock,
        read_only: bool = False,
    ) -> None:
        self._clock = check_clock(clock)
        self.read_only = flag("read_only", read_only)
        self.durability = parse_durability(durability)
        # Asked on every write, decided once (an enum member lookup is not free).
        self._sync_each = self.durability is Durability.FSYNC
        # Group commit syncs a batch's last record after the call; any before it, now.
        self._sync_early = self.durability is not Durability.NONE
        self.snapshot_every_records = count("snapshot_every_records", snapshot_every_records, minimum=1)
        self.snapshot_every_bytes = count("snapshot_every_bytes", snapshot_every_bytes, minimum=1)
        self.max_record_size = count("max_record_size", max_record_size, minimum=1)
        self.preallocate_bytes = count("preallocate_bytes", preallocate_bytes, minimum=0)
        self.lock_timeout = seconds("lock_timeout", lock_timeout)
        cache = SessionCache(count("cache_size", cache_size, minimum=0))
        trusted = flag("trust_directory", trust_directory)
        allow_network = flag("allow_network_filesystem", allow_network_filesystem)
        self.file_mode = file_mode = permission_bits("file_mode", file_mode, owner_needs=0o600)
        dir_mode = permission_bits("dir_mode", dir_mode, owner_needs=0o700)
        self.path = store_path(path)
        self._io = io
        self._mutex = threading.RLock()
        self._closed = True
        self._released = True  # nothing held yet
        self._forked = False
        self._poisoned: str | None = None
        self._group = GroupCommit()
        if self.read_only:
            require_directory(self.path)
        else:
            prepare_directory(self._io, self.path, dir_mode)
        refuse_links(self.path)
        if not trusted:
            check_trusted(self.path, dir_mode=dir_mode, file_mode=file_mode)
        check_filesystem(self.path, allow=allow_network)
        self._open(file_mode, cache)
        self._snapshots = SnapshotWriter(
            self._io,
            self.path,
            mode=file_mode,
            mutex=self._mutex,
            lock=self._lock,
            view=self._view,
            healthy=lambda: self._poisoned is None,
        )
        # Opening replays the log anyway: the snapshot it wants is written now, in this
        # thread, but without the writer lock (other processes keep writing).
        job = self._view.take_snapshot_job()
        if job is not None:
            self._snapshots.run(job)
        self._closed = self._released = False
        self._pid = os.getpid()
        _OPEN_STORES.add(self)

    def _open(self, file_mode: int, cache: SessionCache) -> None:
        """Register, open (or create) the log and build the index; undo it all on failure."""
        # A read-only handle reads a directory it may not write even where the lock files
        # are missing (a backup's files): see WriterLock's ``optional``.
        optional = self.read_only
        self._registration = Registration(
            self.path, exclusive=False, wait=self.lock_timeout, mode=file_mode, optional=optional
        )
        try:
            self._lock = WriterLock(self.path, timeout=self.lock_timeout, mode=file_mode, optional=optional)
            try:
                # Opening an existing store needs no lock unless its tail must be
                # repaired, so readers can open while another process writes.
                if self.read_only:
                    log = self._open_to_read()
                elif needs_housekeeping(self.path):
                    with self._lock:
                        log = open_or_create_log(self._io, self.path, file_mode)
                else:
                    log = open_existing_log(self._io, self.path, file_mode)
                self._view = LogView(
                    self._io,
                    self.path,
                    log,
                    self._lock,
                    cache,
                    self._guard_io,
                    self._io_error,
                    file_mode=file_mode,
                    snapshot_every_records=self.snapshot_every_records,
                    snapshot_every_bytes=self.snapshot_every_bytes,
                    read_only=self.read_only,
                )
                try:
                    self._view.load()
                except BaseException:
                    self._view.close_files(close_quietly)
                    raise
            except BaseException:
                self._lock.close()
                raise
        except BaseException:
            self._registration.close()
            raise

    def _open_to_read(self) -> LogFile:
        """The log of the store at ``path``, for reading only (a read-only handle makes no store)."""
        require_store(self.path, "read_only opens an existing store only")
        return open_existing_log(self._io, self.path, self.file_mode, readonly=True)

    # -- the contract ----------------------------------------------------------

    def create_session(self, ctx: TenantCtx, data: SessionData) -> SessionKey:
        check_context_fence(ctx, data)
        data_cbor = data.to_cbor()
        check_record_size(len(data_cbor), self.max_record_size, None)  # no key to name yet
        key = SessionKey(str(uuid.uuid4()))
        record = Put(key, session_scope(ctx, data), data_cbor)
        self._write(lambda: record, data)
        return key

    def update_session(self, key: SessionKey | str, data: SessionData) -> None:
        checked = check_key(key)
        data_cbor = check_session_data(data).to_cbor()

        def build() -> Record:
            entry = live_entry(self._view, checked, self._clock())
            if entry is None:
                raise SessionNotFoundError(f"no session with key {checked}", key=checked)
            check_ctx_preserved(self._view.read_session(checked, entry), data)
            # A PUT that does not point the lookup is the on-disk form of a user-less update:
            # replay (Index.apply), snapshots and compaction then keep the lookup where it was.
            # The wait and the deadline stay (a KEEPTTL update): the entry's current ones.
            return Put(checked, entry.scope, data_cbor, points_lookup(data), entry.wait, entry.deadline)

        self._write(build, data)

    def remove_session(self, key: SessionKey | str) -> None:
        checked = check_key(key)

        def build() -> Record:
            if live_entry(self._view, checked, self._clock()) is None:
                raise SessionNotFoundError(f"no session with key {checked}", key=checked)
            return Remove(checked)

        self._write(build)

    def close(self) -> None:
        """Snapshot the index if it is behind, give back preallocated space, release locks.

        Durability never depends on ``close``: every acknowledged write is
        already on disk (in the fsync and group modes). The log descriptors and
        both lock files are let go whatever is raised meanwhile (an interrupt
        included, which is then raised); one a close left open (interrupted
        while closing it) is closed by the next ``close``.
        """
        with self._mutex:
            if self._released:
                return
            if not self._forked:
                # Nobody closes from inside a write: a lock this thread holds was left by an
                # interrupt. (Never in a forked child: its flock is the parent's too.)
                self._lock.release_leaked()
            first = not self._closed
            self._closed = True
            _OPEN_STORES.discard(self)
        if not self._forked:
            self._snapshots.wait()  # outside the mutex, which the snapshot thread needs
        with self._mutex:
            if self._forked:
                # The parent still uses these descriptors' locks: only drop our copies.
                self._release()
                return
            try:
                if first and self._poisoned is None and not self.read_only:
                    self._tidy_up()
            finally:
                self._release()

    def _release(self) -> None:
        """Close the log descriptors, the writer lock and the registration, each even if closing
        one before it raised (issue 20: an interrupt while closing the log left both locks held
        for the life of the process); released only once all three are closed."""
        try:
            self._view.close_files(close_quietly)
        finally:
            try:
                close_quietly(self._lock.close)
            finally:
                close_quietly(self._registration.close)
        self._released = True

    def _tidy_up(self) -> None:
        try:
            with self._lock:
                self._view.catch_up(locked=True)
                job = self._view.capture_snapshot(only_if_behind=True)
            if job is not None:
                self._snapshots.run(job)
            with self._lock:
                self._view.catch_up(locked=True)
                self._view.tidy_up(sync=self.durability is Durability.NONE)
        except (OSError, FilestoreError) as error:
            logger.warning("filestore: could not tidy up %s on close: %s", self.path, error)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._view)} sessions"
        if self.read_only:
            state += ", read-only"
        return f"FileSessionStore({self.path!r}, durability={self.durability.value!r}, {state})"

    # -- maintenance -------------------------------------------------------------

    def write_snapshot(self) -> None:
        """Write the index snapshot now (it is also written periodically and on close).

        Waits for one being written in the background, then writes a fresh one,
        holding the writer lock only to capture it and to rename it in place.
        ``StoreFullError`` if the disk has no room (the handle goes on); any
        other ``OSError`` poisons the handle, as before.
        """
        while True:
            self._snapshots.wait()
            job = self._change(lambda view: view.capture_snapshot())
            if job is not None:
                break
        try:
            self._snapshots.run(job, explicit=True)
        except OSError as error:
            raise self._explicit_snapshot_error(error) from error

    def compact(self, *, keep_old: bool = False) -> RewriteResult:
        """Compact online: rewrite the live sessions as a new generation while others keep it open.

        Holds the writer lock throughout (writers wait; readers go on from the
        old generation until they meet its seal, then reload). Sessions expired
        by the store's clock are dropped. Crash-safe at
        every step: see ``filestore.engine.rewrite``. The offline tool
        ``filestore.offline.compact.compact`` does the same with nobody else attached.

        Returns if and only if the store advanced to the new generation (steps
        after the switch that failed, or a ``KeyboardInterrupt`` there, are in
        the result's ``warnings``); a failure or any interrupt before it undoes
        the rewrite and is raised. ``SystemExit`` or cancellation after the
        switch is raised too, the handle having stepped back before its seal
        (its next call follows it to the new generation). If the directory
        fsync after the switch failed, the handle is poisoned: a power loss
        could still bring back the old generation.
        """
        keep = flag("keep_old", keep_old)
        result = self._change(lambda view: view.compact(keep_old=keep, now=self._clock()))
        if not result.switch_durable:
            self._poisoned = "the directory fsync after a compaction's switch failed"
        return result

    def __len__(self) -> int:
        """The number of live, unexpired sessions (after catching up with other processes)."""
        return self._read(lambda view: len(view) - len(_expired(view, self._clock())))

    def session_keys(self) -> list[SessionKey]:
        """The keys of every live, unexpired session (after catching up), in no particular order."""

        def read(view: LogView) -> list[SessionKey]:
            expired = _expired(view, self._clock())
            return [key for key in LogView.keys(view) if key not in expired]

        return self._read(read)

    # -- internals -----------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the store at {self.path} is closed")
        if self._forked:
            raise StoreClosedError(
                f"this handle on {self.path} was opened before fork(); open a new one in the child"
            )

    def _check_writable(self) -> None:
        self._check_usable()
        if self.read_only:
            raise StoreReadOnlyError(
                f"this handle on {self.path} was opened read_only; open the store without it to write",
                path=self.path,
            )
        if self._poisoned is not None:
            raise StorePoisonedError(
                f"an earlier write to {self.path} failed ({self._poisoned}); this handle refuses "
                "writes until the store is reopened",
                path=self.path,
                cause=self._poisoned,
            )

    # Callables rather than context managers: a generator-based one costs more
    # than a cached read itself.
    def _read(self, read: Callable[[LogView], _T]) -> _T:
        """``read`` the latest state: under the mutex, the handle usable, caught up."""
        with self._mutex:
            self._check_usable()
            self._view.catch_up()
            result = read(self._view)
            if self._view.snapshot_waiting:  # catching up may have loaded a new generation
                self._snapshots.start()
            return result

    def _change(self, change: Callable[[LogView], _T]) -> _T:
        """Run ``change`` under the mutex and the writer lock, the handle writable, caught up
        (a torn tail left by a crashed writer recovered); then start the snapshot it made due."""
        with self._mutex:
            self._check_writable()
            try:
                with self._lock:
                    self._view.catch_up(locked=True)
                    result = change(self._view)
            except (FilestoreError, OSError):
                raise
            except BaseException:
                self._lock.release_leaked()  # an interrupt just after taking it (see there)
                raise
            if self._view.snapshot_waiting:
                self._snapshots.start()
            return result

    def _explicit_snapshot_error(self, error: OSError) -> FilestoreError:
        if error.errno in NO_SPACE:
            return self._view.full(error)
        return self._poison(error)
