"""One log file: creating it, reading its frames, recovering its tail, appending.

The format itself is in ``filestore.engine.framing``; this module applies its rules
to a file: where the log ends, what is a torn tail (cut, after copying the
bytes to a numbered side file ``sessions.log.trN``) and what is damage to
acknowledged records (``CorruptionError``), and how the file grows (in
zero-filled chunks synced ahead of time, so a durable append is one
``fdatasync`` of data blocks, with no file size change to commit).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Final

import attrs

from filestore.engine.fileio import FileIO, is_plain, replace_file, write_side_file
from filestore.engine.framing import (
    FILE_HEADER_SIZE,
    FLAG_SYNCED,
    FRAME_HEADER_SIZE,
    KIND_SEAL,
    RECORD_MAGIC,
    ZERO_FRAME_HEADER,
    FileHeader,
    Frame,
    FrameRef,
    Probe,
    checksum_matches,
    encode_frame_parts,
    frame_crc,
    frame_length,
    probe,
    verify_frame,
)
from filestore.engine.layout import LOG_NAME
from filestore.engine.locking import READ_ONLY
from filestore.engine.records import encode_seal
from filestore.errors import CorruptionError, StoreReadOnlyError

READ_CHUNK: Final = 4 << 20
NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


class NoRoomError(OSError):
    """The disk had no room for a record, and nothing of it is left in the log: the log is
    exactly as it was before the append, so nothing is in doubt."""


class SealedLogError(OSError):
    """An append to a log this handle has sealed: refused (nothing written), since no handle
    may write after a seal; the handle is poisoned until reopened (issue 20)."""


class UnsyncedRecordError(OSError):
    """A record was written whole, then the fdatasync that would make it durable failed: it
    may survive or not (never retry the sync)."""


def _same_file(fd: int, identity: os.stat_result) -> bool:
    """Whether ``fd`` is still open on the file ``identity`` describes."""
    try:
        return os.path.samestat(os.fstat(fd), identity)
    except OSError:
        return False


def as_error(kind: type[OSError], error: OSError) -> OSError:
    """``error`` as an instance of ``kind`` (an ``OSError`` subclass that says more)."""
    return kind(error.errno, error.strerror, error.filename)


logger = logging.getLogger("filestore")
# What the look before every call finds nearly always: made once (an enum member lookup is not free).
_NOTHING_NEW: Final[tuple[Probe, None]] = (Probe.END, None)


def _durable_after(known_durable: int, frame: Frame) -> int:
    """The highest record known durable once ``frame`` is read: its writer vouched for
    every record up to its ``synced_through``, and for itself if it is SYNCED."""
    return max(known_durable, frame.synced_through, frame.seq if frame.flags & FLAG_SYNCED else 0)


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
        # Decided once: the hot path calls os itself for what the seam does not
        # override, so a double that records or fails these still sees every call.
        self._plain_pwrite = is_plain(io, "pwrite")
        self._plain_pread = is_plain(io, "pread")
        self._plain_size = is_plain(io, "size")
        # Where the log ended before a seal this handle appended (and the seal's
        # length), so a rewrite that fails before its switch can take it back.
        self._before_seal: tuple[int, int, int, int, int] | None = None
        # Whether ``end`` is past a seal this handle appended: nothing may be appended then.
        self.sealed = False

    # -- opening ----------------------------------------------------------

    @classmethod
    def create(
        cls, io: FileIO, directory: str, header: FileHeader, *, name: str = LOG_NAME, mode: int = 0o600
    ) -> LogFile:
        """Make a new, empty log durably: temp file with the header, sync, rename, sync directory."""
        replace_file(io, directory, name, header.encode(), mode=mode)
        return cls(io, directory, io.open(os.path.join(directory, name)), header, name=name)

    @classmethod
    def open(cls, io: FileIO, directory: str, *, name: str = LOG_NAME, readonly: bool = False) -> LogFile:
        """Open an existing log; ``CorruptionError`` if its header does not verify.

        ``readonly`` is for tools that must never change the store (stats).
        """
        path = os.path.join(directory, name)
        try:
            fd = io.open_readonly(path) if readonly else io.open(path)
        except OSError as error:
            if readonly or error.errno not in READ_ONLY:
                raise
            raise StoreReadOnlyError(
                f"{path} cannot be opened for writing ({error.strerror}): writing to this store "
                "needs write access to its directory and files; checking and reading need none "
                "(fsck without --repair, stats, export, migrate from it, or "
                "FileSessionStore(read_only=True))",
                path=path,
            ) from None
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
        """Close the descriptor; once, however often called.

        An interrupted close keeps the descriptor for the next call only if it
        is still this file's (the interrupt came before the close was done).
        """
        fd = self.fd
        if fd < 0:
            return
        try:
            identity = os.fstat(fd)
        except OSError:
            identity = None
        try:
            self.io.close(fd)
        except OSError:
            self.fd = -1  # the descriptor is released even when close reports an error
            raise
        except BaseException:
            if identity is None or not _same_file(fd, identity):
                self.fd = -1
            raise
        self.fd = -1

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
            # At most two reads: the chunk holding the frame's header, then, when the
            # header announces a frame longer than that chunk, the whole frame.
            for _ in range(2):
                relative = offset - buffer_start
                available = len(buffer) - relative
                need = FRAME_HEADER_SIZE
                if available >= FRAME_HEADER_SIZE:
                    total = frame_length(buffer[relative : relative + FRAME_HEADER_SIZE])
                    need = total if total is not None else FRAME_HEADER_SIZE
                if available >= need or buffer_start + len(buffer) >= size:
                    break
                buffer = self.io.pread(self.fd, min(max(READ_CHUNK, need), size - offset), offset)
                buffer_start = offset
            relative = offset - buffer_start
            result, frame = probe(self.salt, buffer, relative, buffer_start)
            if result is not Probe.FRAME or frame is None:
                yield result, None, offset
                return
            yield result, frame, offset
            offset = frame.end

    def frames_at(self, refs: Iterable[FrameRef], *, chunk: int = READ_CHUNK) -> Iterator[Frame]:
        """The verified frames at ``refs`` (found by an earlier walk), read ``chunk`` bytes at a
        time (at least a frame).

        ``CorruptionError`` if one no longer verifies: the file changed under a
        tool that holds it exclusively.
        """
        buffer = b""
        buffer_start = 0
        for ref in refs:
            relative = ref.offset - buffer_start
            if relative < 0 or relative + ref.size > len(buffer):
                buffer = self.io.pread(self.fd, max(chunk, ref.size), ref.offset)
                buffer_start, relative = ref.offset, 0
            frame = verify_frame(self.salt, buffer[relative : relative + ref.size], ref.offset)
            if frame is None or frame.seq != ref.seq or frame.kind != ref.kind:
                raise CorruptionError(
                    f"{self.path}: record {ref.seq} at offset {ref.offset} verified, then no longer "
                    "did: the file changed while it was being read",
                    path=self.path,
                    offset=ref.offset,
                )
            yield frame

    def valid_frames(self, offset: int) -> Iterator[Frame]:
        """Every frame that verifies at or after ``offset``, found by its magic, in file order.

        The resynchronisation scan after a bad frame (``find_valid_frames``'
        rule: a damaged length field is never trusted, only a magic pair whose
        whole frame checksums; the search goes on after each frame found),
        reading a chunk at a time rather than the rest of the file.
        """
        size = self.io.size(self.fd)
        position = offset
        while position + FRAME_HEADER_SIZE <= size:
            chunk = self.io.pread(self.fd, min(READ_CHUNK, size - position), position)
            # The next chunk starts one byte back (a magic pair may straddle the
            # boundary), but never inside a frame already found.
            resume = position + len(chunk) - 1
            at = chunk.find(RECORD_MAGIC)
            while at != -1:
                frame = self._candidate(chunk, position, at, size)
                if frame is None:
                    at = chunk.find(RECORD_MAGIC, at + 1)
                    continue
                yield frame
                resume = max(resume, frame.end)
                at = chunk.find(RECORD_MAGIC, frame.end - position) if frame.end < resume else -1
            position = resume

    def _candidate(self, chunk: bytes, chunk_start: int, at: int, size: int) -> Frame | None:
        """The frame at ``chunk[at:]`` if it verifies (read on past the chunk if it is longer)."""
        offset = chunk_start + at
        header = chunk[at : at + FRAME_HEADER_SIZE]
        if len(header) < FRAME_HEADER_SIZE:
            header = self.io.pread(self.fd, FRAME_HEADER_SIZE, offset)
        total = frame_length(header)
        if total is None or offset + total > size:
            return None
        if at + total <= len(chunk):
            result, frame = probe(self.salt, chunk, at, chunk_start)
            return frame if result is Probe.FRAME else None
        if total > READ_CHUNK and not checksum_matches(
            self.salt, header, self._pieces(offset + FRAME_HEADER_SIZE, offset + total)
        ):
            return None  # garbage announcing a huge frame: never read it whole
        return self.read_frame(offset, total)

    def _pieces(self, start: int, stop: int) -> Iterator[bytes]:
        for at in range(start, stop, READ_CHUNK):
            yield self.io.pread(self.fd, min(READ_CHUNK, stop - at), at)

    def data_end(self, offset: int) -> int:
        """Where the bytes after ``offset`` that are not preallocated zeros end (``offset`` if
        none): what a torn-tail cut keeps ends there. Read backwards a chunk at a time."""
        end = self.io.size(self.fd)
        while end > offset:
            start = max(offset, end - READ_CHUNK)
            kept = len(self.io.pread(self.fd, end - start, start).rstrip(b"\0"))
            if kept:
                return start + kept
            end = start
        return offset

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
        if self._plain_pread:
            header = os.pread(self.fd, FRAME_HEADER_SIZE, self.end)
            if 0 < len(header) < FRAME_HEADER_SIZE:  # short: the seam's loop reads the rest
                header = self.io.pread(self.fd, FRAME_HEADER_SIZE, self.end)
        else:
            header = self.io.pread(self.fd, FRAME_HEADER_SIZE, self.end)
        if not header or header == ZERO_FRAME_HEADER:
            return _NOTHING_NEW
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
        return self.data_end(self.end) == self.end

    def check_tail(self, *, cut_copies: bool = False) -> tuple[int, bytes]:
        """Classify what follows ``end``: ``(cut_to, cut_bytes)``.

        ``cut_bytes`` is empty when the rest of the file is zeros (a clean
        end), else a torn tail to cut at ``end``: bad bytes with no record
        after them that verifies. A verified record after them (numbered on
        from ``end``'s) raises ``CorruptionError`` instead, in every
        durability mode: a torn write leaves no valid record behind it, so
        the bad bytes are damage in the middle. So is an earlier record that
        verifies at ``end`` (a copy written over the last record), but with
        ``cut_copies`` (fsck's repair, whose walk of the whole log found it a
        copy of a record kept in place). When a sync had vouched for
        the lost record, it was acknowledged data; when none had (``none``
        mode, whose records never claim a sync, or a ``group`` batch that a
        power loss left out of order) they may be either, but the records
        after them are intact, and cutting them would destroy what can be
        verified: ``filestore fsck --repair`` keeps every one of them.
        """
        expected = self.last_seq + 1
        data_end = self.data_end(self.end)
        if data_end == self.end:
            return self.end, b""
        for frame in self.valid_frames(self.end):
            if frame.offset == self.end and frame.seq < expected and not cut_copies:
                # Records are numbered in file order: an earlier one verifying where the
                # next belongs is a copy (a misdirected write over the last record), never
                # a torn write, and cutting it would silently roll that record's session back.
                raise CorruptionError(
                    f"{self.path}: offset {self.end} holds a valid copy of record {frame.seq} where "
                    f"record {expected} belongs (a misdirected write?); refusing to cut it as a "
                    "torn tail: run `filestore fsck --repair`, which keeps every intact record",
                    path=self.path,
                    offset=self.end,
                )
            # A record further on (not at ``end``, where a seal stops the scan).
            if frame.seq < expected or (frame.seq == expected and frame.offset == self.end):
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
        return self.end, self.io.pread(self.fd, data_end - self.end, self.end)

    def recover_tail(self, *, cut_copies: bool = False) -> str | None:
        """Cut a torn tail after ``end`` (keeping its bytes in a side file); the side file's path.

        ``CorruptionError`` (and nothing cut) if valid records follow: see ``check_tail``.
        """
        cut_to, cut = self.check_tail(cut_copies=cut_copies)
        if not cut:
            return None
        side = write_side_file(self.io, self.directory, self.name, cut)
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
        """Write the next record at ``end`` (see ``append_parts``); the frame written."""
        offset = self.end
        flags = FLAG_SYNCED if sync else 0
        synced_through = self.known_durable
        _, _, seq = self.append_parts(kind, (payload,), len(payload), sync=sync, preallocate=preallocate)
        return Frame(offset, kind, flags, seq, synced_through, payload)

    def append_parts(
        self, kind: int, parts: tuple[bytes, ...], length: int, *, sync: bool, preallocate: int
    ) -> tuple[int, int, int]:
        """Write the next record, whose payload is ``parts`` joined (``length`` bytes), at ``end``;
        its offset, size and sequence number. ``sync`` makes it durable before returning.

        Raises ``NoRoomError`` when the disk has no room and the log is left as
        it was (nothing stored; the handle may go on), ``UnsyncedRecordError``
        when the record was written whole but its sync failed (it may be
        stored), and any other ``OSError`` as the operating system does (not
        stored). After the last two the caller must treat the handle as
        poisoned (the tail is in doubt).
        """
        if self.sealed:
            raise SealedLogError(f"{self.path} is sealed (a compaction replaced it): nothing is appended")
        seq = self.last_seq + 1
        offset = self.end
        data = encode_frame_parts(
            self.salt, kind, FLAG_SYNCED if sync else 0, seq, self.known_durable, parts, length
        )
        size = len(data)
        # Another process may have trimmed the file: ask its size, not our memory.
        allocated = os.lseek(self.fd, 0, os.SEEK_END) if self._plain_size else self.io.size(self.fd)
        if offset + size > allocated and preallocate > 0:
            self._preallocate(allocated, size, sync=sync, preallocate=preallocate)
        try:
            if self._plain_pwrite:
                written = os.pwrite(self.fd, data, offset)
                if written < size:  # a short write: the seam's loop finishes it
                    self.io.pwrite(self.fd, data[written:], offset + written)
            else:
                self.io.pwrite(self.fd, data, offset)
        except OSError as error:
            if error.errno not in NO_SPACE:
                raise
            # Cut what part of the record landed, so the log is as it was: the
            # call then stores nothing, certainly, and the handle can go on.
            self.io.truncate(self.fd, offset)
            raise as_error(NoRoomError, error) from error
        if sync:
            try:
                self.io.sync_data(self.fd)
            except OSError as error:
                raise as_error(UnsyncedRecordError, error) from error
            self.known_durable = seq
        self.end = offset + size
        self.last_seq = seq
        self.last_frame_offset = offset
        return offset, size, seq

    def _preallocate(self, allocated: int, needed: int, *, sync: bool, preallocate: int) -> None:
        """Zero-fill (and ``sync``) the space for ``needed`` bytes at ``end`` and ``preallocate`` more."""
        target = self.end + needed + preallocate
        target -= target % 4096
        target = max(target, self.end + needed)
        try:
            self.io.pwrite(self.fd, bytes(target - max(allocated, self.end)), max(allocated, self.end))
        except OSError as error:
            # Zeros after the log's end are no record: whatever part of them
            # landed leaves the log as it was.
            if error.errno in NO_SPACE:
                raise as_error(NoRoomError, error) from error
            raise
        if sync:
            self.io.sync_data(self.fd)

    def append_seal(self, next_generation: int) -> Frame:
        """End this generation: a synced SEAL record naming the one that replaces it."""
        payload = encode_seal(next_generation)
        length = FRAME_HEADER_SIZE + len(payload)
        self._before_seal = (self.end, self.last_seq, self.last_frame_offset, self.known_durable, length)
        frame = self.append(KIND_SEAL, payload, sync=True, preallocate=0)
        self.sealed = True
        return frame

    def forget_seal(self) -> None:
        """Step back before the seal this handle appended, in memory only: the next look for
        new records (``LogView.catch_up``) meets the seal again and follows it."""
        if self._before_seal is not None:
            self.end, self.last_seq, self.last_frame_offset, self.known_durable, _ = self._before_seal
        self.sealed = False

    def withdraw_seal(self) -> None:
        """Take back the seal this handle appended (its switch failed): zero it and sync.

        If this fails, the seal stays on disk and is treated like the seal of a
        compaction that died (every handle cuts it to a side file under the lock).
        """
        if self._before_seal is None:
            return
        self.forget_seal()
        length = self._before_seal[4]
        self._before_seal = None
        self.io.pwrite(self.fd, bytes(length), self.end)
        self.io.sync_data(self.fd)

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
