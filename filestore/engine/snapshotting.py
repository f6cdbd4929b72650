"""Writing the index snapshot off the writer's path, and deciding when the next one is due.

A snapshot of a big index takes long to encode and write (1.2 s at 819,000
sessions), so no write may wait for one. It is made in three steps:

1. **Captured** under the writer lock, caught up, in O(1) (``SnapshotSchedule.capture``):
   the index is frozen (copy-on-write: ``Index.freeze``) and the log position,
   last record number and that record's offset and CRC are taken with it, so the
   snapshot covers exactly the records its index holds, never one more.
2. **Encoded and written** to a fresh temp file, and synced, with no lock held
   (``SnapshotJob.write_temp``): on a thread of its own after a write, or by
   the caller that opens, closes or asks for it. Writers go on meanwhile; their
   changes go to the index's overlay.
3. **Installed** under the writer lock again: renamed over ``sessions.idx`` and
   the directory synced, but only if the log is still the generation it was
   captured from (a compaction meanwhile makes it worthless: it is dropped).

Two processes may each install one; either is self-consistent, and a stale
one only costs a longer replay on open. A failure at any step (a full disk,
EIO, another process's housekeeping removing the temp file) is a warning:
the snapshot is a cache. The next attempt waits an interval after the failed
one, and the temp file is removed.
"""

from __future__ import annotations

import logging

import attrs

from filestore.engine.chunkedcbor import CHUNK
from filestore.engine.fileio import FileIO
from filestore.engine.index import Index, IndexView
from filestore.engine.logfile import LogFile
from filestore.engine.snapshot import TempSnapshot, encode_snapshot_parts, write_snapshot_temp

logger = logging.getLogger("filestore")


@attrs.frozen(eq=False)
class SnapshotJob:
    """A snapshot captured under the writer lock: the frozen index and where in the log it stands."""

    index: Index
    view: IndexView
    log: LogFile
    position: int
    last_seq: int
    last_frame_offset: int
    last_frame_crc: int

    def write_temp(self, io: FileIO, directory: str, *, mode: int) -> TempSnapshot:
        """Encode the snapshot and write it to a synced, locked temp file (no writer lock needed)."""
        parts = encode_snapshot_parts(
            self.log.header,
            self.view,
            position=self.position,
            last_seq=self.last_seq,
            last_frame_offset=self.last_frame_offset,
            last_frame_crc=self.last_frame_crc,
        )
        return write_snapshot_temp(io, directory, parts, mode=mode)


class SnapshotSchedule:
    """What the last snapshot covers, when the next is due, and the one being written (at most one).

    Not thread-safe: every method runs under the store's mutex.
    """

    def __init__(self, *, every_records: int, every_bytes: int) -> None:
        self.every_records = every_records
        self.every_bytes = every_bytes
        self.job: SnapshotJob | None = None
        self.waiting = False  # captured, not yet handed to whoever writes it
        self.reset()

    def reset(self, position: int = 0, seq: int = 0) -> None:
        """A generation (re)loaded, its snapshot (if any) covering ``position`` / ``seq``."""
        self.position, self.seq = position, seq
        # Where the last failed attempt stood: the next waits an interval after it,
        # or a full disk would have every write try to rewrite the whole index.
        self._failed_position, self._failed_seq = position, seq

    def due(self, log: LogFile) -> bool:
        """Whether enough was written since the last snapshot (or failed attempt) for the next."""
        return (
            log.last_seq - max(self.seq, self._failed_seq) >= self.every_records
            or log.end - max(self.position, self._failed_position) >= self.every_bytes
        )

    def behind(self, log: LogFile) -> bool:
        """Whether the log holds records the last snapshot does not cover."""
        return log.last_seq > self.seq

    def capture(self, index: Index, log: LogFile, *, hand_out: bool) -> SnapshotJob | None:
        """Capture a snapshot of ``index`` as of ``log``'s end (writer lock held, caught up).

        ``None`` while another is being written. Unless ``hand_out``, the job
        waits for ``take``.
        """
        if self.job is not None:
            return None
        last_seq = log.last_seq
        self.job = SnapshotJob(
            index,
            index.freeze(),
            log,
            log.end,
            last_seq,
            log.last_frame_offset if last_seq else 0,
            log.frame_crc_at(log.last_frame_offset) if last_seq else 0,
        )
        self.waiting = not hand_out
        return self.job

    def take(self) -> SnapshotJob | None:
        """The job captured for a background writer, once."""
        if not self.waiting:
            return None
        self.waiting = False
        return self.job

    def installed(self, job: SnapshotJob) -> None:
        """``job``'s snapshot is now the one on disk."""
        self.position, self.seq = job.position, job.last_seq

    def failed(self, job: SnapshotJob, error: BaseException, path: str) -> None:
        """Writing ``job``'s snapshot failed: warn, and wait an interval before the next try."""
        self._failed_position, self._failed_seq = job.position, job.last_seq
        logger.warning(
            "filestore: could not write the index snapshot of %s (%s); the store works without it "
            "(opening replays more of the log), and it is tried again later",
            path,
            error,
        )

    def end(self, job: SnapshotJob) -> bool:
        """``job`` is over (written, dropped or failed): thaw its index, ``CHUNK`` changes a
        call; whether it is all thawed (call again, the mutex let go between, until it is)."""
        if not job.index.thaw(limit=CHUNK):
            return False
        if self.job is job:
            self.job = None
            self.waiting = False
        return True
