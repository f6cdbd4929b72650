"""The log file format: file header, record frames, checksums. Read this first.

All integers are little-endian. ``docs/format.md`` tells the same story.

Log file header (``FILE_HEADER_SIZE`` = 40 bytes, at offset 0)::

    offset size field
    0      8    FILE_MAGIC  b"FSTLOG\\x00\\n"
    8      2    format version (FORMAT_VERSION = 1)
    10     2    flags (0; reserved)
    12     16   store UUID (bytes)
    28     8    generation (u64; 1 for a new store, +1 per compaction)
    36     4    CRC-32 of bytes 0..36

Record frame (``FRAME_HEADER_SIZE`` = 28 bytes, then the payload)::

    offset size field
    0      2    RECORD_MAGIC b"\\xf5\\x1e" (never zero: zeros mean "end of log")
    2      1    kind (KIND_PUT = 1, KIND_REMOVE = 2, KIND_SEAL = 3)
    3      1    flags (FLAG_SYNCED = 1: the writer fdatasync'd this record before
                releasing the writer lock, so any later record may count it durable)
    4      8    sequence number (u64; the first record is 1, then +1 each)
    12     8    synced_through (u64; the highest sequence number known durable
                when this record was written)
    20     4    payload length (u32, at most MAX_PAYLOAD)
    24     4    CRC-32 over (the file's salt, bytes 0..24, the payload)
    28     n    payload (CBOR; see ``filestore.engine.records``)

A SEAL record ends a generation that compaction replaces (payload: the
next generation's number). Every handle looks for new records before each
call, so one that finds a seal reloads the current generation; a seal at the
end of the *current* log is a compaction that never switched, and is cut.

The *salt* is the CRC-32 of the store UUID and the generation, so a record
copied from another store, or left over from an older generation, never
validates here.

Frames follow each other with no gaps. The log grows in preallocated,
zero-filled chunks, so after the last record the file holds zeros: a frame
header of all zeros at a frame boundary (or the end of the file) is the end
of the log. Anything else that does not validate is a *bad frame*:

- a bad frame with no valid frame after it is a torn tail (a write that
  never completed): recovery copies it to a side file and cuts it;
- a bad frame followed by a valid frame (numbered after it) is damage in the
  middle: a replay that meets it refuses with ``CorruptionError`` (run
  ``filestore fsck --repair``, which keeps every valid record), in every
  durability mode. Opening replays only the log after a verified index
  snapshot: damage the snapshot covers is met by the read of that record,
  and by ``fsck``, which reads every record. When
  the valid frame's ``synced_through`` reaches the bad frame's sequence
  number, or it is SYNCED, the damaged record was an acknowledged one; when
  not (``none`` mode, or a ``group`` batch a power loss left out of order) it
  may have been an unfinished write, but the valid records after it are never
  cut.
"""

from __future__ import annotations

import enum
import struct
import uuid
import zlib
from collections.abc import Iterable
from typing import Final, NamedTuple

import attrs

FILE_MAGIC: Final = b"FSTLOG\x00\n"
FORMAT_VERSION: Final = 1
_FILE_HEADER: Final = struct.Struct("<8sHH16sQ")
FILE_HEADER_SIZE: Final = _FILE_HEADER.size + 4

RECORD_MAGIC: Final = b"\xf5\x1e"
_FRAME_PREFIX: Final = struct.Struct("<2sBBQQI")
_CRC: Final = struct.Struct("<I")
FRAME_HEADER_SIZE: Final = _FRAME_PREFIX.size + _CRC.size
FRAME_CRC_OFFSET: Final = _FRAME_PREFIX.size

KIND_PUT: Final = 1
KIND_REMOVE: Final = 2
# The last record of a generation that compaction replaced: "no more writes
# here; generation N+1 is current". Written under the writer lock just before
# the switch, so no writer can append to a log that is no longer current.
KIND_SEAL: Final = 3
KINDS: Final = frozenset({KIND_PUT, KIND_REMOVE, KIND_SEAL})
FLAG_SYNCED: Final = 1
KNOWN_FLAGS: Final = FLAG_SYNCED

# The hard limit of the format; stores apply their own, lower, configured limit.
MAX_PAYLOAD: Final = 1 << 30

# A frame header of all zeros at a frame boundary: the end of the log (preallocated space).
ZERO_FRAME_HEADER: Final = bytes(FRAME_HEADER_SIZE)


@attrs.frozen
class FileHeader:
    """The identity a log file carries: which store, which generation."""

    store_uuid: uuid.UUID
    generation: int

    def encode(self) -> bytes:
        body = _FILE_HEADER.pack(FILE_MAGIC, FORMAT_VERSION, 0, self.store_uuid.bytes, self.generation)
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def decode(cls, data: bytes) -> FileHeader | None:
        """The header in ``data``, or ``None`` if it is short, foreign or damaged."""
        if len(data) < FILE_HEADER_SIZE:
            return None
        body = data[: _FILE_HEADER.size]
        (crc,) = _CRC.unpack_from(data, _FILE_HEADER.size)
        if zlib.crc32(body) != crc:
            return None
        magic, version, _flags, raw_uuid, generation = _FILE_HEADER.unpack(body)
        if magic != FILE_MAGIC or version != FORMAT_VERSION:
            return None
        return cls(uuid.UUID(bytes=raw_uuid), generation)

    @classmethod
    def unverified_fields(cls, data: bytes) -> tuple[uuid.UUID, int]:
        """The store UUID and generation fields as they stand in ``data`` (zero-padded if
        short), trusting neither CRC, magic nor version: candidates for recovering a
        damaged header, never an answer on their own."""
        padded = data[:FILE_HEADER_SIZE].ljust(FILE_HEADER_SIZE, b"\0")
        _magic, _version, _flags, raw_uuid, generation = _FILE_HEADER.unpack_from(padded)
        return uuid.UUID(bytes=raw_uuid), int(generation)

    @property
    def salt(self) -> int:
        """The CRC-32 seed every record checksum of this file starts from."""
        return zlib.crc32(self.store_uuid.bytes + self.generation.to_bytes(8, "little"))


@attrs.frozen
class Frame:
    """One verified record: where it is and what it carries."""

    offset: int
    kind: int
    flags: int
    seq: int
    synced_through: int
    payload: bytes

    @property
    def size(self) -> int:
        return FRAME_HEADER_SIZE + len(self.payload)

    @property
    def end(self) -> int:
        return self.offset + self.size


class FrameRef(NamedTuple):
    """Where a verified frame is, without its payload: what a whole-log walk keeps per
    record, so that its memory follows the number of records, not the log's bytes
    (``LogFile.frames_at`` reads the frames again)."""

    offset: int
    size: int
    kind: int
    seq: int

    @classmethod
    def of(cls, frame: Frame) -> FrameRef:
        return cls(frame.offset, frame.size, frame.kind, frame.seq)

    @property
    def end(self) -> int:
        return self.offset + self.size


class Probe(enum.Enum):
    """What lies at a frame boundary."""

    FRAME = "frame"  # a complete, verified frame
    END = "end"  # zeros or end of file: the log ends here
    BAD = "bad"  # something that does not verify: torn, garbage or damage


def encode_frame(salt: int, kind: int, flags: int, seq: int, synced_through: int, payload: bytes) -> bytes:
    """The bytes of one record frame."""
    return encode_frame_parts(salt, kind, flags, seq, synced_through, (payload,), len(payload))


def encode_frame_parts(
    salt: int, kind: int, flags: int, seq: int, synced_through: int, parts: tuple[bytes, ...], length: int
) -> bytes:
    """The bytes of one record frame whose payload is ``parts`` joined (``length`` bytes in all).

    The payload is never joined on its own: its parts are checksummed where
    they lie and copied once, straight into the frame.
    """
    prefix = _FRAME_PREFIX.pack(RECORD_MAGIC, kind, flags, seq, synced_through, length)
    crc = zlib.crc32(prefix, salt)
    for part in parts:
        crc = zlib.crc32(part, crc)
    return b"".join((prefix, _CRC.pack(crc), *parts))


def frame_length(header: bytes) -> int | None:
    """The total frame length a header announces, or ``None`` if it cannot be a header.

    Used to know how many bytes to read; the length is trusted only once the
    checksum over the whole frame passes.
    """
    if len(header) < FRAME_HEADER_SIZE or header[:2] != RECORD_MAGIC:
        return None
    length: int = _FRAME_PREFIX.unpack_from(header)[5]
    if length > MAX_PAYLOAD:
        return None
    return FRAME_HEADER_SIZE + length


def probe(salt: int, buffer: bytes | memoryview, start: int, base_offset: int) -> tuple[Probe, Frame | None]:
    """Classify what is at ``buffer[start:]`` (file offset ``base_offset + start``).

    ``FRAME`` comes with the verified frame; a frame cut short by the end of
    ``buffer`` is ``BAD`` (the caller decides whether more bytes exist).
    """
    header = bytes(buffer[start : start + FRAME_HEADER_SIZE])
    if not header or header == ZERO_FRAME_HEADER[: len(header)]:
        return Probe.END, None
    total = frame_length(header)
    if total is None or start + total > len(buffer):
        return Probe.BAD, None
    _magic, kind, flags, seq, synced_through, _length = _FRAME_PREFIX.unpack(header[: _FRAME_PREFIX.size])
    if kind not in KINDS or flags & ~KNOWN_FLAGS:
        return Probe.BAD, None
    payload = bytes(buffer[start + FRAME_HEADER_SIZE : start + total])
    (crc,) = _CRC.unpack_from(header, _FRAME_PREFIX.size)
    if zlib.crc32(payload, zlib.crc32(header[: _FRAME_PREFIX.size], salt)) != crc:
        return Probe.BAD, None
    return Probe.FRAME, Frame(base_offset + start, kind, flags, seq, synced_through, payload)


def verify_frame(salt: int, data: bytes, offset: int) -> Frame | None:
    """``data`` holds exactly one frame read from ``offset``: the frame if it verifies."""
    result, frame = probe(salt, data, 0, offset)
    if result is not Probe.FRAME or frame is None or frame.size != len(data):
        return None
    return frame


def checksum_matches(salt: int, header: bytes, payload_pieces: Iterable[bytes]) -> bool:
    """Whether the CRC in frame ``header`` covers its payload, given in pieces (a frame
    too large to hold is checked a chunk at a time; it still verifies in full before use)."""
    crc = zlib.crc32(header[:FRAME_CRC_OFFSET], salt)
    for piece in payload_pieces:
        crc = zlib.crc32(piece, crc)
    return crc == frame_crc(header)


def find_valid_frames(salt: int, buffer: bytes, start: int, base_offset: int) -> list[Frame]:
    """Every frame that verifies at or after ``buffer[start:]``, found by its magic.

    This is the resynchronisation scan after a bad frame: it never trusts a
    damaged length field, only a magic pair whose whole frame checksums.
    """
    found: list[Frame] = []
    position = buffer.find(RECORD_MAGIC, start)
    while position != -1:
        result, frame = probe(salt, buffer, position, base_offset)
        if result is Probe.FRAME and frame is not None:
            found.append(frame)
            position = buffer.find(RECORD_MAGIC, position + frame.size)
        else:
            position = buffer.find(RECORD_MAGIC, position + 1)
    return found


def is_zero(data: bytes | memoryview) -> bool:
    """Whether ``data`` is all zero bytes (preallocated, never written)."""
    return not bytes(data).strip(b"\0")


def frame_crc(data: bytes) -> int:
    """The CRC field of the frame whose bytes (at least its header) start ``data``."""
    (crc,) = _CRC.unpack_from(data, FRAME_CRC_OFFSET)
    return int(crc)
