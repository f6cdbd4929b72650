"""A store handle's view of its log: the current generation, the index built from it, the
decoded-session cache, and the index snapshot's bookkeeping.

``LogView`` keeps that view true as other processes write: ``catch_up``
applies the records they appended (one small read when there are none),
follows a seal to the generation a compaction switched to, and, under the
writer lock, recovers a torn tail. ``load`` builds the index from a verified
snapshot plus the log's tail, or by replaying the whole log.

Not thread-safe: ``FileSessionStore`` serialises every call under its mutex
and owns the locks; the view only takes the writer lock it is given.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, TypeVar

import attrs

from filestore.engine.directory import open_existing_log
from filestore.engine.fileio import FileIO
from filestore.engine.framing import KIND_PUT, KIND_SEAL, Frame, Probe
from filestore.engine.groupcommit import LogPosition
from filestore.engine.index import Entry, Index
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME
from filestore.engine.locking import WriterLock
from filestore.engine.logfile import LogFile, NoRoomError, UnsyncedRecordError, as_error
from filestore.engine.records import Record, RecordDecodeError, RecordMismatchError, decode_session
from filestore.engine.rewrite import RewriteResult, live_frames, rewrite_generation
from filestore.engine.snapshot import TempSnapshot, discard_snapshot_temp, install_snapshot, load_snapshot
from filestore.engine.snapshotting import SnapshotJob, SnapshotSchedule
from filestore.errors import CorruptionError, FilestoreError, LockTimeoutError, StoreFullError
from filestore.ids import SessionKey, SessionScope
from filestore.model import SessionData

logger = logging.getLogger("filestore")
_T = TypeVar("_T")


class SessionCache:
    """A bounded LRU map of key -> (record offset, session). Not thread-safe: the store locks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[SessionKey, tuple[int, SessionData]] = OrderedDict()

    def get(self, key: SessionKey, offset: int) -> SessionData | None:
        """The session decoded from the record at ``offset``, if cached."""
        cached = self._entries.get(key)
        if cached is None or cached[0] != offset:
            return None
        self._entries.move_to_end(key)
        return cached[1]

    def put(self, key: SessionKey, offset: int, session: SessionData) -> None:
        if self.size == 0:
            return
        self._entries[key] = (offset, session)
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, key: SessionKey) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


class IOGuard(Protocol):
    """Runs a file operation so that an ``OSError`` poisons the store handle (and re-raises)."""

    def __call__(self, operation: Callable[[], _T], /) -> _T: ...


def close_quietly(close: Callable[[], None]) -> None:
    """Run ``close``; an ``OSError`` is logged, not raised (nothing is lost by it: every
    descriptor closed this way is one whose writes were already synced, or never made)."""
    try:
        close()
    except OSError as error:
        logger.warning("filestore: error while closing: %s", error)


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


class SealAhead(Exception):
    """Catching up met a compaction's seal while ``LogView.defer_seals`` was set: following it
    waits for the writer lock and reloads the log, which a caller on an event loop must not do
    there. The frames before the seal are applied; the next catch-up follows it."""


class LogView:
    """The index and cache of one generation of the log, kept in step with the file.

    Everything ``FileSessionStore`` needs goes through the methods below;
    the log, index and cache themselves stay inside.
    """

    # Set (under the store's mutex) by a caller that must not wait: see SealAhead.
    defer_seals: bool = False

    def __init__(
        self,
        io: FileIO,
        path: str,
        log: LogFile,
        lock: WriterLock,
        cache: SessionCache,
        guard: IOGuard,
        io_error: Callable[[OSError], FilestoreError],
        *,
        file_mode: int,
        snapshot_every_records: int,
        snapshot_every_bytes: int,
        read_only: bool = False,
    ) -> None:
        self._io = io
        # A read-only view never changes a byte of the store: it reads up to a torn
        # tail or a dead seal rather than cutting it, and never syncs or snapshots.
        self._read_only = read_only
        self._path = path
        self._log = log
        self._index = Index()
        self._cache = cache
        self._file_mode = file_mode
        self._snapshots = SnapshotSchedule(
            every_records=snapshot_every_records, every_bytes=snapshot_every_bytes
        )
        self._lock = lock
        self._guard = guard
        self._io_error = io_error
        # The log a group-commit sync is running on, outside the store's mutex;
        # a compaction meanwhile retires it, but it stays open until the sync ends.
        self._syncing: LogFile | None = None
        self._retired: list[LogFile] = []

    # -- building the index --------------------------------------------------

    def load(self) -> None:
        """Build the index: from a verified snapshot plus the log tail, else by full replay."""
        log = self._log
        snapshot, why = load_snapshot(
            self._io, os.path.join(self._path, SNAPSHOT_NAME), log.fd, log.header, self._io.size(log.fd)
        )
        if snapshot is not None:
            self._index = snapshot.index
            log.end = snapshot.position
            log.last_seq = snapshot.last_seq
            log.last_frame_offset = snapshot.last_frame_offset
            self._snapshots.reset(snapshot.position, snapshot.last_seq)
        elif why != "no snapshot":
            logger.warning(
                "filestore: ignoring the index snapshot of %s (%s); replaying the log", self._path, why
            )
        log.adopt(log.scan(log.end, log.last_seq + 1, self._apply_frame))
        if not log.tail_is_clean():
            # Torn, damaged, or a record being written right now: look again
            # under the writer lock, where an incomplete record is a torn tail.
            with self._lock:
                self.catch_up(locked=True)
                if not self._log.tail_is_clean():
                    # Non-zero bytes after a zeroed frame header: intact records
                    # there mean damage (CorruptionError); anything else is cut,
                    # and kept in a side file, before close() could trim it away
                    # (a read-only view checks the same, and reads up to the cut).
                    if self._read_only:
                        self._log.check_tail()
                    else:
                        self._log.recover_tail()
        if self._read_only:
            return
        # One sync makes whatever a crashed process left in the page cache
        # durable, so our records may claim everything before them is. Of the
        # current log: catching up may have followed a compaction to a new
        # generation, and closed the log this load began on.
        log = self._log
        log.sync()
        stale = log.last_seq - self._snapshots.seq >= self._snapshots.every_records
        if (snapshot is None and log.last_seq > 0) or stale:
            # Captured here, written by whoever takes the job (never under the lock).
            try:
                with self._lock:
                    self.catch_up(locked=True)
                    self._snapshots.capture(self._index, self._log, hand_out=False)
            except LockTimeoutError:
                logger.warning("filestore: %s is busy; the index snapshot is rewritten later", self._path)

    def _apply_frame(self, frame: Frame) -> None:
        self._index.apply_frame(frame, self._log.path)

    # -- keeping up with other processes ---------------------------------------

    def catch_up(self, *, locked: bool = False) -> None:
        """Apply records other processes appended since we last looked.

        Without the writer lock an incomplete record is "not yet" (a live
        writer may be writing it); under the lock it is a torn tail to recover.
        """
        while True:
            found, frame = self._log.peek_new_frame()
            if frame is None:
                break
            if frame.kind == KIND_SEAL:
                if self.defer_seals:
                    raise SealAhead(self._path)
                if self._follow_seal():
                    continue
                break  # read-only, at the seal of a compaction that died: the log ends here
            self._apply_frame(frame)
            self._log.advance(frame)
        if locked and found is Probe.BAD and not self._read_only:
            self._guard(self._log.recover_tail)

    def _follow_seal(self) -> bool:
        """Our log was sealed by a compaction: reload the generation that replaced it.

        Taking the writer lock waits for that compaction to finish its switch.
        If the current log is still the sealed one, the compaction died before
        switching: the seal is cut (kept in a side file) and work goes on; a
        read-only view leaves it and stops there (``False``; a writer cuts it later).
        """
        if self._read_only and self._sealed_log_is_current():
            # A dead seal, or a compaction yet to switch (which holds the writer lock, so no
            # write after the seal was acknowledged): the log ends here for now. Looked at
            # again at the next call, without waiting for the lock or reopening the log.
            return False
        with self._lock:
            current = open_existing_log(self._io, self._path, self._file_mode, readonly=self._read_only)
            same_store = current.header.store_uuid == self._log.header.store_uuid
            if same_store and current.header.generation > self._log.header.generation:
                self._adopt_generation(current)
                return True
            current.close()
            if self._read_only:
                return False
            self._guard(self._log.recover_tail)
            return True

    def _sealed_log_is_current(self) -> bool:
        """Whether the store's log is still the file this view reads (no switch since its seal)."""
        named = os.stat(os.path.join(self._path, LOG_NAME), follow_symlinks=False)
        return os.path.samestat(named, os.fstat(self._log.fd))

    def _adopt_generation(self, log: LogFile) -> None:
        """Switch to ``log`` (a newer generation) and rebuild the index from it.

        All or nothing: if loading fails, the view stays on the generation it
        had (and ``log`` is closed).
        """
        before = (self._log, self._index, self._snapshots.position, self._snapshots.seq)
        self._log = log
        self._index = Index()
        self._cache.clear()
        self._snapshots.reset()
        try:
            self.load()
        except BaseException:
            self._log, self._index = before[0], before[1]
            self._snapshots.reset(before[2], before[3])
            close_quietly(log.close)
            raise
        self._retired.append(before[0])
        self._close_retired()

    # -- reading (caught up first) ---------------------------------------------------

    def __len__(self) -> int:
        """The number of live sessions."""
        return len(self._index)

    def keys(self) -> list[SessionKey]:
        """The key of every live session, in no particular order."""
        # Keys loaded from a snapshot are plain str: hand out the public type.
        return [SessionKey(key) for key in self._index.live_keys()]

    def entry(self, key: SessionKey) -> Entry | None:
        """Where the live session ``key`` is, and its owner; ``None`` if there is none."""
        return self._index.get(key)

    def lookup(self, scope: SessionScope) -> SessionKey | None:
        """The key the user lookup ``scope`` points at (expired or not), if any."""
        return self._index.lookup(scope)

    def pointed_wait(self, owner: SessionScope, scope_hash: str) -> SessionKey | None:
        """The key the scope entry ``(owner, scope_hash)`` points at (expired or not), if any."""
        return self._index.pointed_wait(owner, scope_hash)

    def waits_of(self, owner: SessionScope) -> list[SessionKey]:
        """The keys ``owner``'s scope entries point at (expired or not)."""
        return self._index.waits_of(owner)

    def timed(self) -> list[tuple[SessionKey, Entry]]:
        """Every live session with a deadline (none at all, cheaply, while no session has one)."""
        if not self._index.timed:
            return []
        return self._index.timed_items()

    def is_active(self, key: SessionKey, entry: Entry) -> bool:
        """Whether the user lookup of ``entry``'s owner points at ``key``."""
        return self._index.lookup(entry.scope) == key

    def read_session(self, key: SessionKey, entry: Entry) -> SessionData:
        """The session ``entry`` points at: from the cache if it holds that very record."""
        session = self._cache.get(key, entry.offset)
        if session is None:
            session = self._decode_session(key, entry)
            self._cache.put(key, entry.offset, session)
        return session

    def _decode_session(self, key: SessionKey, entry: Entry) -> SessionData:
        """Read, verify and decode the record ``entry`` points at, which must be ``key``'s.

        Only here, on a cache miss: a cached session was checked the same way
        when it was read (or is the one this handle wrote), so a hit costs nothing more.
        """
        log = self._log
        frame = log.read_frame(entry.offset, entry.size)
        if frame is None or frame.kind != KIND_PUT:
            raise CorruptionError(
                f"{log.path}: the record at offset {entry.offset} no longer verifies; run `filestore fsck`",
                path=log.path,
                offset=entry.offset,
            )
        try:
            if not entry.matches(frame):
                raise RecordMismatchError(
                    f"it holds record {frame.seq}, not {key}'s newest, record {entry.seq}"
                )
            return decode_session(frame.payload, key, entry.scope)
        except RecordMismatchError as error:
            raise CorruptionError(
                f"{log.path}: the record at offset {entry.offset} is not the one the index expects "
                f"there ({error}; a misdirected write?); run `filestore fsck`",
                path=log.path,
                offset=entry.offset,
            ) from None
        except RecordDecodeError as error:
            raise CorruptionError(
                f"{log.path}: the record at offset {entry.offset} does not decode ({error})",
                path=log.path,
                offset=entry.offset,
            ) from None

    # -- writing (writer lock held, caught up) -------------------------------------

    def write(
        self,
        record: Record,
        parts: tuple[bytes, ...],
        length: int,
        session: SessionData | None,
        *,
        sync: bool,
        preallocate: int,
    ) -> LogPosition:
        """Append our own ``record`` (its payload encoded as ``parts``, ``length`` bytes: see
        ``Put.encode_parts``) and apply it to the index; where it landed.

        ``session`` is the data a PUT stores, kept in the read cache. When
        enough was written since the last snapshot, captures the next (see
        ``take_snapshot_job``): it is written later, outside the writer lock.
        An ``OSError`` poisons the handle (the error is the guard's), but for
        a full disk, ``StoreFullError``.
        """
        log = self._log
        try:
            offset, size, seq = log.append_parts(
                record.kind, parts, length, sync=sync, preallocate=preallocate
            )
        except NoRoomError as error:
            raise self.full(error) from error
        except OSError as error:
            # What the guard would raise, without a closure per write.
            raise self._io_error(error) from error
        self._index.apply(record, offset, size, seq)
        if session is not None:
            self._cache.put(record.key, offset, session)
        else:
            self._cache.drop(record.key)
        if self._snapshots.due(log):
            # O(1) here; the snapshot is written after the call, off the writer's path,
            # and its failing can never fail the call whose record is written.
            self._snapshots.capture(self._index, log, hand_out=False)
        return LogPosition(log.header.generation, seq)

    def full(self, error: OSError) -> StoreFullError:
        """The error for a write (or explicit snapshot) that found no room: nothing stored."""
        return StoreFullError(
            f"no room on the disk of {self._path} ({error.strerror}); nothing was stored: "
            "free some space and write again",
            path=self._path,
            cause=f"{type(error).__name__}: {error}",
        )

    def sync_point(self) -> SyncPoint:
        """What a sync now would make durable (group commit; see ``SyncPoint``).

        Its log stays open, even if a compaction replaces it meanwhile, until
        ``end_sync``; group commit runs one sync at a time.
        """
        self._syncing = self._log
        return SyncPoint(self._log, self._log.last_seq)

    def end_sync(self, point: SyncPoint, *, durable: bool) -> None:
        """The sync of ``point`` ended: note what it made ``durable`` (if it did), and close its
        log if a compaction replaced it meanwhile."""
        if durable:
            point.log.note_durable(point.seq)
        self._syncing = None
        self._close_retired()

    def compact(self, *, keep_old: bool, now: int) -> RewriteResult:
        """Rewrite the live sessions as the next generation, switch to it, and reload from it.

        Crash-safe at every step: see ``filestore.engine.rewrite``. An
        ``OSError`` before the switch poisons the handle (through the guard);
        after it only an interrupt other than ``KeyboardInterrupt`` raises: if
        reloading fails or is interrupted, this handle steps back before its
        seal and follows it at its next call, as other handles do.
        Sessions expired at ``now`` are dropped.
        """
        log = self._log
        frames = live_frames(log, self._index, now=now)
        try:
            result = self._guard(
                lambda: rewrite_generation(
                    self._io,
                    self._path,
                    log.header,
                    frames,
                    keep_old=keep_old,
                    seal=log,
                    file_mode=self._file_mode,
                )
            )
        except BaseException:
            if log.sealed:
                self._complete_interrupted_switch(log)
            raise
        try:
            self._adopt_generation(open_existing_log(self._io, self._path, self._file_mode))
        except BaseException as error:
            # Never write on past our own seal: the next call follows it, as other handles do.
            log.forget_seal()
            if not isinstance(error, (Exception, KeyboardInterrupt)):
                raise  # SystemExit, cancellation: the switch is done, the caller stops
            logger.warning(
                "filestore: %s switched to generation %d; reloading it failed (%s), retried at the next call",
                self._path,
                result.generation,
                error,
            )
        return result

    def _complete_interrupted_switch(self, log: LogFile) -> None:
        """A rewrite raised with our seal still ending ``log``: an interrupt other than
        ``KeyboardInterrupt`` after its switch (or while it undid its work).

        The handle steps back before its seal (so it never writes after it: the
        next call follows the seal to the new generation, or cuts a seal no
        switch followed), and the directory is synced, so the switch is durable
        before anything is written to the new generation; a failed sync poisons
        the handle. (issue 20: the handle used to go on appending to the
        replaced log, and every write made after that was lost.)
        """
        log.forget_seal()
        self._guard(lambda: self._io.sync_dir(self._path))

    def tidy_up(self, *, sync: bool) -> None:
        """Before closing (its snapshot written): ``sync`` the log if asked (durability
        ``none``), give back the preallocated space."""
        if sync:
            self._log.sync()
        self._log.trim()

    # -- the snapshot ---------------------------------------------------------------

    def capture_snapshot(self, *, only_if_behind: bool = False) -> SnapshotJob | None:
        """Capture a snapshot for the caller to write now (writer lock held, caught up); ``None``
        if one is being written already, or if ``only_if_behind`` and the last one covers all."""
        if only_if_behind and not self._snapshots.behind(self._log):
            return None
        return self._snapshots.capture(self._index, self._log, hand_out=True)

    def take_snapshot_job(self) -> SnapshotJob | None:
        """The snapshot a write or a load captured, for a background writer; each job once."""
        return self._snapshots.take()

    @property
    def snapshot_waiting(self) -> bool:
        """Whether a captured snapshot waits for ``take_snapshot_job`` (cheap: checked per call)."""
        return self._snapshots.waiting

    def install_snapshot(self, job: SnapshotJob, temp: TempSnapshot) -> bool:
        """Put ``job``'s snapshot, written to ``temp``, in place (writer lock held, caught up),
        if the log is still the one it covers; else drop it. Whether it was installed.

        ``temp`` is gone afterwards either way, or after anything raised.
        """
        if job.log is not self._log:
            # A compaction switched generations meanwhile: the snapshot would be refused
            # on open (and reported by fsck), so it never replaces the new one's.
            discard_snapshot_temp(self._io, temp)
            return False
        if self._log.known_durable < job.last_seq:
            # Durability none and group may not have synced what it covers yet: a
            # snapshot a power loss leaves ahead of the log is refused at every open,
            # and fsck flags it until a later one replaces it. A failed sync poisons
            # the handle, as for a write: an fsync is never retried.
            try:
                self._guard(self._log.sync)
            except BaseException:
                discard_snapshot_temp(self._io, temp)  # an interrupt too (issue 20)
                raise
        install_snapshot(self._io, self._path, temp)
        self._snapshots.installed(job)
        return True

    def snapshot_failed(self, job: SnapshotJob, error: BaseException) -> None:
        """Writing ``job``'s snapshot failed: a warning; the next try waits an interval."""
        self._snapshots.failed(job, error, self._path)

    def end_snapshot(self, job: SnapshotJob) -> bool:
        """``job`` is over, written or not: its index takes the changes made meanwhile, a chunk
        a call; whether that is done (call again until it is, letting others run between)."""
        return self._snapshots.end(job)

    # -- closing --------------------------------------------------------------------------

    def _close_retired(self) -> None:
        """Close the logs of replaced generations, but one a group-commit sync still runs on:
        a handle holds at most its current log and that one, however many compactions pass."""
        kept = [log for log in self._retired if log is self._syncing]
        for log in self._retired:
            if log is not self._syncing:
                close_quietly(log.close)
        self._retired = kept

    def close_files(self, close: Callable[[Callable[[], None]], None]) -> None:
        """Close every log descriptor this view opened, through ``close`` (which may swallow
        errors), each even if closing one before it raised; one left open (an interrupted close)
        is closed by the next call."""
        retired, self._retired = self._retired, []  # a sync ending later must not close them again
        raised: BaseException | None = None
        for log in [*retired, self._log]:
            try:
                close(log.close)
            except BaseException as error:
                raised = raised or error
        if raised is not None:
            self._retired = [log for log in retired if log.fd >= 0]
            raise raised
