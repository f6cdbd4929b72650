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

from filestore.engine.directory import open_existing_log
from filestore.engine.fileio import FileIO
from filestore.engine.framing import KIND_PUT, KIND_SEAL, Frame, Probe
from filestore.engine.index import Entry, Index
from filestore.engine.layout import SNAPSHOT_NAME
from filestore.engine.locking import WriterLock
from filestore.engine.logfile import LogFile
from filestore.engine.records import RecordDecodeError, decode_session
from filestore.engine.snapshot import encode_snapshot, load_snapshot, write_snapshot
from filestore.errors import CorruptionError, LockTimeoutError
from filestore.ids import SessionKey
from filestore.model import SessionData

logger = logging.getLogger("filestore")


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


class LogView:
    """The index and cache of one generation of the log, kept in step with the file."""

    def __init__(
        self,
        io: FileIO,
        path: str,
        log: LogFile,
        lock: WriterLock,
        cache: SessionCache,
        guard: Callable[[Callable[[], object]], object],
        *,
        file_mode: int,
        snapshot_every_records: int,
        snapshot_every_bytes: int,
    ) -> None:
        self.io = io
        self.path = path
        self.log = log
        self.index = Index()
        self.cache = cache
        self.file_mode = file_mode
        self.snapshot_every_records = snapshot_every_records
        self.snapshot_every_bytes = snapshot_every_bytes
        self._lock = lock
        # Runs a file operation so that an OSError poisons the store handle.
        self._guard = guard
        self._snapshot_position = 0
        self._snapshot_seq = 0
        # Group commit may still sync through an old generation's descriptor.
        self._retired: list[LogFile] = []

    # -- building the index --------------------------------------------------

    def load(self) -> None:
        """Build the index: from a verified snapshot plus the log tail, else by full replay."""
        log = self.log
        snapshot, why = load_snapshot(
            self.io, os.path.join(self.path, SNAPSHOT_NAME), log.fd, log.header, self.io.size(log.fd)
        )
        if snapshot is not None:
            self.index = snapshot.index
            log.end = snapshot.position
            log.last_seq = snapshot.last_seq
            log.last_frame_offset = snapshot.last_frame_offset
            self._snapshot_position = snapshot.position
            self._snapshot_seq = snapshot.last_seq
        elif why != "no snapshot":
            logger.warning(
                "filestore: ignoring the index snapshot of %s (%s); replaying the log", self.path, why
            )
        log.adopt(log.scan(log.end, log.last_seq + 1, self._apply_frame))
        if not log.tail_is_clean():
            # Torn, damaged, or a record being written right now: look again
            # under the writer lock, where an incomplete record is a torn tail.
            with self._lock:
                self.catch_up(locked=True)
                if not self.log.tail_is_clean():
                    # Non-zero bytes after a zeroed frame header: intact records
                    # there mean damage (CorruptionError); anything else is cut,
                    # and kept in a side file, before close() could trim it away.
                    self.log.recover_tail()
        # One sync makes whatever a crashed process left in the page cache
        # durable, so our records may claim everything before them is.
        log.sync()
        stale = log.last_seq - self._snapshot_seq >= self.snapshot_every_records
        if (snapshot is None and log.last_seq > 0) or stale:
            try:
                with self._lock:
                    self.catch_up(locked=True)
                    self.write_snapshot()
            except LockTimeoutError:
                logger.warning("filestore: %s is busy; the index snapshot is rewritten later", self.path)

    def _apply_frame(self, frame: Frame) -> None:
        self.index.apply_frame(frame, self.log.path)

    # -- keeping up with other processes ---------------------------------------

    def catch_up(self, *, locked: bool = False) -> None:
        """Apply records other processes appended since we last looked.

        Without the writer lock an incomplete record is "not yet" (a live
        writer may be writing it); under the lock it is a torn tail to recover.
        """
        while True:
            found, frame = self.log.peek_new_frame()
            if frame is None:
                break
            if frame.kind == KIND_SEAL:
                self._follow_seal()
                continue
            self._apply_frame(frame)
            self.log.advance(frame)
        if locked and found is Probe.BAD:
            self._guard(self.log.recover_tail)

    def _follow_seal(self) -> None:
        """Our log was sealed by a compaction: reload the generation that replaced it.

        Taking the writer lock waits for that compaction to finish its switch.
        If the current log is still the sealed one, the compaction died before
        switching: the seal is cut (kept in a side file) and work goes on.
        """
        with self._lock:
            current = open_existing_log(self.io, self.path, self.file_mode)
            same_store = current.header.store_uuid == self.log.header.store_uuid
            if same_store and current.header.generation > self.log.header.generation:
                self.adopt_generation(current)
                return
            current.close()
            self._guard(self.log.recover_tail)

    def adopt_generation(self, log: LogFile) -> None:
        """Switch to ``log`` (a newer generation) and rebuild the index from it."""
        self._retired.append(self.log)
        self.log = log
        self.index = Index()
        self.cache.clear()
        self._snapshot_position = 0
        self._snapshot_seq = 0
        self.load()

    # -- reading ------------------------------------------------------------------

    def read_session(self, key: SessionKey, entry: Entry) -> SessionData:
        """The session ``entry`` points at: from the cache if it holds that very record."""
        session = self.cache.get(key, entry.offset)
        if session is None:
            session = self._decode_session(entry)
            self.cache.put(key, entry.offset, session)
        return session

    def _decode_session(self, entry: Entry) -> SessionData:
        frame = self.log.read_frame(entry.offset, entry.size)
        if frame is None or frame.kind != KIND_PUT:
            raise CorruptionError(
                f"{self.log.path}: the record at offset {entry.offset} no longer verifies; "
                "run `filestore fsck`",
                path=self.log.path,
                offset=entry.offset,
            )
        try:
            return decode_session(frame.payload)
        except RecordDecodeError as error:
            raise CorruptionError(
                f"{self.log.path}: the record at offset {entry.offset} does not decode ({error})",
                path=self.log.path,
                offset=entry.offset,
            ) from None

    # -- the snapshot ---------------------------------------------------------------

    def snapshot_behind(self) -> bool:
        """Whether records were written since the last snapshot."""
        return self.log.last_seq > self._snapshot_seq

    def snapshot_due(self) -> bool:
        """Whether enough was written since the last snapshot to write the next one."""
        log = self.log
        return (
            log.last_seq - self._snapshot_seq >= self.snapshot_every_records
            or log.end - self._snapshot_position >= self.snapshot_every_bytes
        )

    def write_snapshot(self) -> None:
        """Snapshot the index as of the log's end (the writer lock must be held)."""
        log = self.log
        data = encode_snapshot(
            log.header,
            self.index,
            position=log.end,
            last_seq=log.last_seq,
            last_frame_offset=log.last_frame_offset if log.last_seq else 0,
            last_frame_crc=log.frame_crc_at(log.last_frame_offset) if log.last_seq else 0,
        )
        write_snapshot(self.io, self.path, data, mode=self.file_mode)
        self._snapshot_position = log.end
        self._snapshot_seq = log.last_seq

    # -- closing --------------------------------------------------------------------------

    def close_files(self, close: Callable[[Callable[[], None]], None]) -> None:
        """Close every log descriptor this view opened, through ``close`` (which may swallow errors)."""
        for retired in self._retired:
            close(retired.close)
        close(self.log.close)
