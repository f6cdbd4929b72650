"""One log file: creating it, reading its frames, recovering its tail, appending.

The format itself is in ``filestore.engine.framing``; this module applies its rules
to a file: where the log ends, what is a torn tail (cut, after copying the
bytes to a numbered side file ``sessions.log.trN``) and what is damage to
acknowledged records (``CorruptionError``), and how the file grows (in
zero-filled chunks synced ahead of time, so a durable append is one
``fdatasync`` of data blocks, with no file size change to commit).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Final

import attrs

from filestore.engine.fileio import FileIO
from filestore.engine.framing import (
    FILE_HEADER_SIZE,
    FLAG_SYNCED,
    FRAME_HEADER_SIZE,
    KIND_SEAL,
    ZERO_FRAME_HEADER,
    FileHeader,
    Frame,
    Probe,
    encode_frame,
    find_valid_frames,
    frame_crc,
    frame_length,
    is_zero,
    probe,
    verify_frame,
)
from filestore.engine.layout import LOG_NAME, side_file_name, temp_path
from filestore.engine.records import encode_seal
from filestore.errors import CorruptionError

READ_CHUNK: Final = 4 << 20

logger = logging.getLogger("filestore")


def _durable_after(known_durable: int, frame: Frame) -> int:
    """The highest record known durable once ``frame`` is read: its writer vouched for
    every record up to its ``synced_through``, and for itself if it is SYNCED."""
    return max(known_durable, frame.synced_through, frame.seq if frame.flags & FLAG_SYNCED else 0)


@attrs.frozen
class Resync:
    """What follows a bad frame: the bytes from it to the end of the file, and the frames
    among them that verify and are numbered at or above the one expected."""

    rest: bytes
    later: list[Frame]

    @property
    def cut(self) -> bytes:
        """The bytes a torn tail cut would keep: ``rest`` less the preallocated zeros at its end."""
        return self.rest.rstrip(b"\0")


@attrs.define
class ScanResult:
    """Where a scan stopped, and why."""

    end: int
    last_seq: int
    last_frame_offset: int
    known_durable: int
    stopped_at_bad: bool


class LogFile:
    """An open log file and what is known of it: its header and where the log ends.

    Not thread-safe; the store serialises access. Methods that change the
    file (``recover_tail``, ``append``, ``trim``) must run under the writer lock.
    """

    def __init__(
        self, io: FileIO, directory: str, fd: int, header: FileHeader, *, name: str = LOG_NAME
    ) -> None:
        self.io = io
        self.directory = directory
        self.name = name
        self.path = os.path.join(directory, name)
        self.fd = fd
        self.header = header
        self.salt = header.salt
        self.end = FILE_HEADER_SIZE
        self.last_seq = 0
        self.last_frame_offset = 0
        self.known_durable = 0

    # -- opening ----------------------------------------------------------

    @classmethod
    def create(
        cls, io: FileIO, directory: str, header: FileHeader, *, name: str = LOG_NAME, mode: int = 0o600
    ) -> LogFile:
        """Make a new, empty log durably: temp file with the header, sync, rename, sync directory."""
        path = os.path.join(directory, name)
        temp = temp_path(directory, name)
        io.write_file(temp, header.encode(), mode=mode)
        io.rename(temp, path)
        io.sync_dir(directory)
        return cls(io, directory, io.open(path), header, name=name)

    @classmethod
    def open(cls, io: FileIO, directory: str, *, name: str = LOG_NAME, readonly: bool = False) -> LogFile:
        """Open an existing log; ``CorruptionError`` if its header does not verify.

        ``readonly`` is for tools that must never change the store (stats).
        """
        path = os.path.join(directory, name)
        fd = io.open_readonly(path) if readonly else io.open(path)
        try:
            header = FileHeader.decode(io.pread(fd, FILE_HEADER_SIZE, 0))
        except BaseException:
            io.close(fd)
            raise
        if header is None:
            io.close(fd)
            raise CorruptionError(
                f"{path}: the file header is missing or damaged; run `filestore fsck`", path=path, offset=0
            )
        return cls(io, directory, fd, header, name=name)

    def close(self) -> None:
        self.io.close(self.fd)

    # -- reading ----------------------------------------------------------

    def read_frame(self, offset: int, size: int) -> Frame | None:
        """The verified frame of ``size`` bytes at ``offset``, or ``None``."""
        return verify_frame(self.salt, self.io.pread(self.fd, size, offset), offset)

    def frame_crc_at(self, offset: int) -> int:
        """The CRC field of the frame at ``offset`` (0 for the header offset: no frame)."""
        if offset < FILE_HEADER_SIZE:
            return 0
        return frame_crc(self.io.pread(self.fd, FRAME_HEADER_SIZE, offset))

    def frames(self, start: int, stop: int | None = None) -> Iterator[tuple[Probe, Frame | None, int]]:
        """Walk frames from ``start``: ``(FRAME, frame, offset)`` for each, then one final
        ``(END | BAD, None, offset)`` saying where and why the walk stopped.

        Reads in large chunks; a frame straddling a chunk is re-read whole.
        """
        size = self.io.size(self.fd) if stop is None else stop
        offset = start
        buffer = b""
        buffer_start = start
        while True:
            relative = offset - buffer_start
            available = len(buffer) - relative
            need = FRAME_HEADER_SIZE
            if available >= FRAME_HEADER_SIZE:
                total = frame_length(buffer[relative : relative + FRAME_HEADER_SIZE])
                need = total if total is not None else FRAME_HEADER_SIZE
            if available < need and buffer_start + len(buffer) < size:
                read_size = min(max(READ_CHUNK, need), size - offset)
                buffer = self.io.pread(self.fd, read_size, offset)
                buffer_start = offset
                relative = 0
            result, frame = probe(self.salt, buffer, relative, buffer_start)
            if result is not Probe.FRAME or frame is None:
                yield result, None, offset
                return
            yield result, frame, offset
            offset = frame.end

    def resync(self, offset: int, expected_seq: int) -> Resync:
        """Look past a bad frame at ``offset`` for valid records numbered ``expected_seq`` or above.

        Never trusts the damaged length field: every later record is found by
        its magic and kept only if its whole frame checksums (and, salted with
        this file's generation, it belongs here).
        """
        # A file cut short inside its header (fsck reads on with a rebuilt one) ends before ``offset``.
        rest = self.io.pread(self.fd, max(0, self.io.size(self.fd) - offset), offset)
        later = [
            frame for frame in find_valid_frames(self.salt, rest, 0, offset) if frame.seq >= expected_seq
        ]
        return Resync(rest, later)

    def scan(self, start: int, expected_seq: int, apply: Callable[[Frame], None]) -> ScanResult:
        """Apply every valid frame from ``start`` in sequence; stop at the end, a bad frame or a seal."""
        result = ScanResult(start, expected_seq - 1, self.last_frame_offset, self.known_durable, False)
        for kind, frame, offset in self.frames(start):
            in_sequence = frame is not None and frame.seq == result.last_seq + 1
            if kind is Probe.FRAME and frame is not None and in_sequence and frame.kind != KIND_SEAL:
                apply(frame)
                result.end = frame.end
                result.last_seq = frame.seq
                result.last_frame_offset = frame.offset
                result.known_durable = _durable_after(result.known_durable, frame)
                continue
            result.end = offset
            result.stopped_at_bad = kind is not Probe.END
            break
        return result

    def peek_new_frame(self) -> tuple[Probe, Frame | None]:
        """What follows ``end``: ``(FRAME, frame)`` if a complete record in sequence,
        ``(END, None)`` for zeros or end of file, ``(BAD, None)`` otherwise.

        The cheap check done before every call: one small ``pread`` that finds
        zeros (or the end of the file) when nothing new was written. ``BAD`` is
        "not yet" to a reader (a writer may be writing it) and a torn tail to a
        writer holding the lock.
        """
        header = self.io.pread(self.fd, FRAME_HEADER_SIZE, self.end)
        if not header or header == ZERO_FRAME_HEADER:
            return Probe.END, None
        total = frame_length(header)
        if total is None:
            return Probe.BAD, None
        frame = self.read_frame(self.end, total)
        if frame is None or frame.seq != self.last_seq + 1:
            return Probe.BAD, None
        return Probe.FRAME, frame

    def advance(self, frame: Frame) -> None:
        """Record that ``frame`` (the next in sequence) is part of the log."""
        self.end = frame.end
        self.last_seq = frame.seq
        self.last_frame_offset = frame.offset
        self.known_durable = _durable_after(self.known_durable, frame)

    def adopt(self, result: ScanResult) -> None:
        self.end = result.end
        self.last_seq = result.last_seq
        self.last_frame_offset = result.last_frame_offset
        self.known_durable = result.known_durable

    # -- recovering (writer lock held) ---------------------------------------

    def tail_is_clean(self) -> bool:
        """Whether everything after ``end`` is zeros (preallocated) or nothing."""
        size = self.io.size(self.fd)
        return size <= self.end or is_zero(self.io.pread(self.fd, size - self.end, self.end))

    def check_tail(self) -> tuple[int, bytes]:
        """Classify what follows ``end``: ``(cut_to, cut_bytes)``.

        ``cut_bytes`` is empty when the rest of the file is zeros (a clean
        end), else a torn tail to cut at ``end``: bad bytes with no record
        after them that verifies. A verified record after them (numbered on
        from ``end``'s) raises ``CorruptionError`` instead, in every
        durability mode: a torn write leaves no valid record behind it, so
        the bad bytes are damage in the middle. When a sync had vouched for
        the lost record, it was acknowledged data; when none had (``none``
        mode, whose records never claim a sync, or a ``group`` batch that a
        power loss left out of order) they may be either, but the records
        after them are intact, and cutting them would destroy what can be
        verified: ``filestore fsck --repair`` keeps every one of them.
        """
        expected = self.last_seq + 1
        after = self.resync(self.end, expected)
        if not after.cut:
            return self.end, b""
        for frame in after.later:
            # A record further on (not at ``end``, where a seal stops the scan).
            if frame.seq == expected and frame.offset == self.end:
                continue
            vouched = frame.synced_through >= expected or frame.flags & FLAG_SYNCED
            why = (
                "was written after it was made durable"
                if vouched
                else "follows it (damage, or an unsynced batch a power loss left out of order)"
            )
            raise CorruptionError(
                f"{self.path}: record {expected} at offset {self.end} is damaged, but valid record "
                f"{frame.seq} at offset {frame.offset} {why}; refusing to cut records that verify: "
                "run `filestore fsck --repair`, which keeps every intact record",
                path=self.path,
                offset=self.end,
            )
        return self.end, after.cut

    def recover_tail(self) -> str | None:
        """Cut a torn tail after ``end`` (keeping its bytes in a side file); the side file's path.

        ``CorruptionError`` (and nothing cut) if valid records follow: see ``check_tail``.
        """
        cut_to, cut = self.check_tail()
        if not cut:
            return None
        side = side_file_name(self.directory, self.name, os.path.exists)
        self.io.write_file(side, cut)
        self.io.sync_dir(self.directory)
        self.io.truncate(self.fd, cut_to)
        self.io.sync_data(self.fd)
        logger.warning(
            "filestore: cut a torn tail of %d bytes at offset %d of %s; the bytes are kept in %s",
            len(cut),
            cut_to,
            self.path,
            side,
        )
        return side

    # -- writing (writer lock held) -------------------------------------------

    def append(self, kind: int, payload: bytes, *, sync: bool, preallocate: int) -> Frame:
        """Write the next record at ``end``; ``sync`` makes it durable before returning.

        Raises ``OSError`` as the operating system does; the caller must then
        treat the handle as poisoned (the tail is in doubt).
        """
        seq = self.last_seq + 1
        flags = FLAG_SYNCED if sync else 0
        data = encode_frame(self.salt, kind, flags, seq, self.known_durable, payload)
        self._ensure_space(len(data), sync=sync, preallocate=preallocate)
        self.io.pwrite(self.fd, data, self.end)
        if sync:
            self.io.sync_data(self.fd)
        frame = Frame(self.end, kind, flags, seq, self.known_durable, payload)
        self.end = frame.end
        self.last_seq = seq
        self.last_frame_offset = frame.offset
        if sync:
            self.known_durable = seq
        return frame

    def _ensure_space(self, needed: int, *, sync: bool, preallocate: int) -> None:
        # Another process may have trimmed the file: ask its size, not our memory.
        allocated = self.io.size(self.fd)
        if self.end + needed <= allocated or preallocate <= 0:
            return
        target = self.end + needed + preallocate
        target -= target % 4096
        target = max(target, self.end + needed)
        self.io.pwrite(self.fd, bytes(target - max(allocated, self.end)), max(allocated, self.end))
        if sync:
            self.io.sync_data(self.fd)

    def append_seal(self, next_generation: int) -> Frame:
        """End this generation: a synced SEAL record naming the one that replaces it."""
        return self.append(KIND_SEAL, encode_seal(next_generation), sync=True, preallocate=0)

    def sync(self) -> None:
        """Make everything written so far durable (on open, close)."""
        self.io.sync_data(self.fd)
        self.known_durable = self.last_seq

    def sync_data(self) -> None:
        """fdatasync the log and nothing else: group commit runs it beside appends, then
        ``note_durable`` with the last record written before it began."""
        self.io.sync_data(self.fd)

    def note_durable(self, seq: int) -> None:
        """Record that every record up to ``seq`` is durable (a sync covered it)."""
        self.known_durable = max(self.known_durable, seq)

    def trim(self) -> None:
        """Give back the preallocated space after the log's end."""
        if self.io.size(self.fd) > self.end:
            self.io.truncate(self.fd, self.end)
            self.io.sync_data(self.fd)
