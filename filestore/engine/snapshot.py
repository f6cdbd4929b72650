"""The index snapshot: a verified cache of the index, so opening replays only the log tail.

File ``sessions.idx`` (``SNAPSHOT_HEADER_SIZE`` = 24 bytes, then the body)::

    offset size field
    0      8    SNAPSHOT_MAGIC b"FSTIDX\\x00\\n"
    8      4    snapshot version (SNAPSHOT_VERSION = 5)
    12     4    CRC-32 of the body
    16     8    body length
    24     n    body: a CBOR map (keys below)

Body: ``store_uuid`` (16 bytes), ``generation``, ``position`` (the log offset
the snapshot covers up to), ``last_seq``, ``last_frame_offset`` and
``last_frame_crc`` (the record that ends exactly at ``position``, and its
CRC field: a copy of the store that diverged since has a different last
record there, so its snapshot is refused), ``live_bytes``,
``written_unix_ms``, and the index's columns: each key, its record's offset,
size and sequence number (which every read compares with the frame's), its
owner and user, the user lookup, waits and deadlines. Version 5 (issue 15)
stores them compactly: see ``filestore.engine.snapshotcolumns``. A version 4
snapshot (``filestore.engine.snapshotv4``) is still read; older versions are
refused, and the index rebuilt by replaying the log.

It is written like every file that replaces another: temp file, fsync,
rename, fsync of the directory; by a live store in two halves
(``write_snapshot_temp`` without the writer lock, the temp file ``flock``ed
meanwhile; ``install_snapshot`` under it; see
``filestore.engine.snapshotting``). It is never trusted: ``load`` checks the
CRC, the store identity and generation, that ``position`` is within the log
and ends a record with ``last_seq`` and ``last_frame_crc``, and spot-checks
entries against the records they point at. Any failure means "ignore it
and rebuild".
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import random
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, Final, Protocol

import attrs
import cbor2

from filestore import strictcbor
from filestore.engine.chunkedcbor import encode_parts
from filestore.engine.fileio import FileIO, create_first_free, replace_file
from filestore.engine.framing import (
    FILE_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    KIND_PUT,
    FileHeader,
    frame_crc,
    verify_frame,
)
from filestore.engine.index import Entry, Index
from filestore.engine.layout import SNAPSHOT_NAME, temp_names
from filestore.engine.records import Put, RecordDecodeError, decode_record
from filestore.engine.snapshotcolumns import columns_of, decode_columns, encode_columns
from filestore.engine.snapshotv4 import decode_v4
from filestore.errors import message_of
from filestore.ids import SessionKey, SessionScope

SNAPSHOT_MAGIC: Final = b"FSTIDX\x00\n"
# 3: per-entry ``seqs`` added (a version 2 snapshot is refused, and the index rebuilt by replay).
# 4: waits and deadlines added (issue 14; a version 3 snapshot is refused the same way).
# 5: compact columns (issue 15; a version 4 snapshot is still read).
SNAPSHOT_VERSION: Final = 5
READABLE_VERSIONS: Final = frozenset({4, SNAPSHOT_VERSION})
_HEADER: Final = struct.Struct("<8sIIQ")
SNAPSHOT_HEADER_SIZE: Final = _HEADER.size
SPOT_CHECKS: Final = 8
WRITE_SIZE: Final = 1 << 20


@attrs.frozen
class Snapshot:
    """What a verified snapshot says: the index as of ``position`` in the log."""

    index: Index
    position: int
    last_seq: int
    last_frame_offset: int
    written_unix_ms: int


class IndexLike(Protocol):
    """What a snapshot is made of: an ``Index`` (not frozen) or the ``IndexView`` of a frozen one."""

    @property
    def entries(self) -> Mapping[SessionKey, Entry]: ...

    @property
    def by_user(self) -> Mapping[SessionScope, SessionKey]: ...

    @property
    def live_bytes(self) -> int: ...


def encode_snapshot(
    header: FileHeader,
    index: IndexLike,
    *,
    position: int,
    last_seq: int,
    last_frame_offset: int,
    last_frame_crc: int,
) -> bytes:
    """The bytes of a snapshot of ``index`` as of log ``position``.

    ``last_frame_offset`` and ``last_frame_crc`` name the record that ends at
    ``position`` (both 0 when ``last_seq`` is 0).
    """
    return b"".join(
        encode_snapshot_parts(
            header,
            index,
            position=position,
            last_seq=last_seq,
            last_frame_offset=last_frame_offset,
            last_frame_crc=last_frame_crc,
        )
    )


def encode_snapshot_parts(
    header: FileHeader,
    index: IndexLike,
    *,
    position: int,
    last_seq: int,
    last_frame_offset: int,
    last_frame_crc: int,
) -> list[bytes]:
    """``encode_snapshot`` as a list of parts (their concatenation), none of them large, for
    a thread of its own to write beside live writers: it lets them run every ``CHUNK``
    entries (see ``filestore.engine.chunkedcbor``).
    """
    body = encode_parts(
        {
            "store_uuid": header.store_uuid.bytes,
            "generation": header.generation,
            "position": position,
            "last_seq": last_seq,
            "last_frame_offset": last_frame_offset,
            "last_frame_crc": last_frame_crc,
            "live_bytes": index.live_bytes,
            "written_unix_ms": int(time.time() * 1000),
            **encode_columns(columns_of(index.entries, index.by_user)),
        }
    )
    crc = 0
    for part in body:
        crc = zlib.crc32(part, crc)
    return [_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, crc, sum(map(len, body))), *body]


def write_snapshot(io: FileIO, directory: str, data: bytes, *, mode: int) -> None:
    """Atomically replace the snapshot file with ``data`` (temp, fsync, rename, fsync dir)."""
    replace_file(io, directory, SNAPSHOT_NAME, data, mode=mode)


@attrs.frozen
class TempSnapshot:
    """A snapshot written to a temp file and synced, not yet in place. Its descriptor holds an
    ``flock`` on it until it is renamed or removed, so that another process tidying the directory
    (``remove_temp_files``) leaves it alone although the writer lock is not held."""

    path: str
    fd: int


def write_snapshot_temp(io: FileIO, directory: str, parts: list[bytes], *, mode: int) -> TempSnapshot:
    """The first half of ``write_snapshot``, which needs no lock: ``parts`` written one after
    the other to a fresh, locked temp file and synced. Removed again if that fails."""
    path, fd = create_first_free(io, directory, temp_names(SNAPSHOT_NAME), mode=mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        offset = 0
        for block in _blocks(parts):
            io.pwrite(fd, block, offset)
            offset += len(block)
        io.sync_data(fd)
    except BaseException:
        discard_snapshot_temp(io, TempSnapshot(path, fd))
        raise
    return TempSnapshot(path, fd)


def _blocks(parts: list[bytes]) -> Iterator[bytes]:
    """``parts`` gathered into writes of about ``WRITE_SIZE`` (one for a small snapshot): few
    system calls, and no copy of the whole."""
    batch: list[bytes] = []
    size = 0
    for part in parts:
        batch.append(part)
        size += len(part)
        if size >= WRITE_SIZE:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def install_snapshot(io: FileIO, directory: str, temp: TempSnapshot) -> None:
    """The second half, under the writer lock: rename ``temp`` over the snapshot. ``temp`` is
    gone afterwards, even when this raises.

    The caller then syncs the directory, after letting the lock go: until that
    sync a crash may bring back the previous snapshot, which is only staler.
    """
    try:
        io.rename(temp.path, os.path.join(directory, SNAPSHOT_NAME))
    except BaseException:
        discard_snapshot_temp(io, temp)
        raise
    io.close(temp.fd)


def discard_snapshot_temp(io: FileIO, temp: TempSnapshot) -> None:
    """Remove a temp snapshot not put in place (errors ignored: it is a leftover at worst)."""
    with contextlib.suppress(OSError):
        io.unlink(temp.path)
    with contextlib.suppress(OSError):
        io.close(temp.fd)


def decode_snapshot(data: bytes) -> dict[str, Any] | None:
    """The snapshot body if header, length and CRC check out, else ``None``."""
    if len(data) < SNAPSHOT_HEADER_SIZE:
        return None
    magic, version, crc, length = _HEADER.unpack_from(data)
    body = data[SNAPSHOT_HEADER_SIZE:]
    if magic != SNAPSHOT_MAGIC or version not in READABLE_VERSIONS or length != len(body):
        return None
    if zlib.crc32(body) != crc:
        return None
    try:
        decoded = strictcbor.loads(body)
    except (cbor2.CBORDecodeError, RecursionError):
        return None
    if not isinstance(decoded, dict):
        return None
    decoded["version"] = version
    return decoded


def _build_index(body: dict[str, Any]) -> tuple[Index, list[str]]:
    # Hundreds of thousands of new objects would trigger cyclic GC passes that
    # find nothing (none of them can form a cycle): pause it while building.
    paused = gc.isenabled()
    gc.disable()
    try:
        index, keys = decode_columns(body) if body["version"] == SNAPSHOT_VERSION else decode_v4(body)
    finally:
        if paused:
            gc.enable()
    if index.live_bytes != body["live_bytes"]:
        raise ValueError("live_bytes disagrees with the entries")
    return index, keys


def load_snapshot(
    io: FileIO, path: str, log_fd: int, header: FileHeader, log_size: int
) -> tuple[Snapshot | None, str]:
    """The verified snapshot at ``path``, or ``(None, why it was refused)``."""
    try:
        data = io.read_file(path)
    except FileNotFoundError:
        return None, "no snapshot"
    except OSError as error:
        return None, f"unreadable: {error}"
    if len(data) >= SNAPSHOT_HEADER_SIZE and data.startswith(SNAPSHOT_MAGIC):
        version = _HEADER.unpack_from(data)[1]
        if version not in READABLE_VERSIONS:
            return None, f"snapshot format version {version}, this library writes {SNAPSHOT_VERSION}"
    body = decode_snapshot(data)
    if body is None:
        return None, "bad header, length or checksum"
    try:
        if body["store_uuid"] != header.store_uuid.bytes:
            return None, "from another store"
        if body["generation"] != header.generation:
            return None, f"of generation {body['generation']}, the log is {header.generation}"
        position, last_seq, last_frame_offset = body["position"], body["last_seq"], body["last_frame_offset"]
        last_frame_crc = body["last_frame_crc"]
        fields = (position, last_seq, last_frame_offset, last_frame_crc)
        if not all(isinstance(value, int) for value in fields):
            return None, "malformed position"
        if not FILE_HEADER_SIZE <= position <= log_size:
            return None, f"covers position {position}, beyond the log's {log_size} bytes"
        if not _ends_at(io, log_fd, header, position, last_seq, last_frame_offset, last_frame_crc):
            return None, f"no record with sequence {last_seq} and the snapshot's checksum ends at {position}"
        index, keys = _build_index(body)
        if not _spot_check(io, log_fd, header, index, keys, position):
            return None, "entries do not match the records they point at"
        written = body["written_unix_ms"]
    except (KeyError, ValueError, TypeError, IndexError, OverflowError, RecordDecodeError) as error:
        return None, f"malformed body: {message_of(error)}"
    return Snapshot(index, position, last_seq, last_frame_offset, int(written)), "ok"


def _ends_at(
    io: FileIO, fd: int, header: FileHeader, position: int, last_seq: int, offset: int, crc: int
) -> bool:
    if last_seq == 0:
        return position == FILE_HEADER_SIZE
    if not FILE_HEADER_SIZE <= offset < position:
        return False
    data = io.pread(fd, position - offset, offset)
    frame = verify_frame(header.salt, data, offset)
    return frame is not None and frame.seq == last_seq and frame_crc(data) == crc


def _spot_check(
    io: FileIO, fd: int, header: FileHeader, index: Index, keys: list[str], position: int
) -> bool:
    for name in random.sample(keys, min(SPOT_CHECKS, len(keys))):
        key = SessionKey(name)
        entry = index.entries[key]
        if entry.offset + entry.size > position or entry.size < FRAME_HEADER_SIZE:
            return False
        frame = verify_frame(header.salt, io.pread(fd, entry.size, entry.offset), entry.offset)
        if frame is None or frame.kind != KIND_PUT or not entry.matches(frame):
            return False
        record = decode_record(frame.kind, frame.payload)
        # The same checks every read makes: the record is that key's, under that owner, and
        # the very record the entry names (its sequence number), not an older one of the key.
        if record.key != key or not isinstance(record, Put) or record.scope != entry.scope:
            return False
        # An entry's wait is its record's, unless another key took the scope entry over since.
        if record.deadline != entry.deadline or entry.wait not in {None, record.wait}:
            return False
    return True
