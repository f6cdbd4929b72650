"""The index snapshot: a verified cache of the index, so opening replays only the log tail.

File ``sessions.idx`` (``SNAPSHOT_HEADER_SIZE`` = 24 bytes, then the body)::

    offset size field
    0      8    SNAPSHOT_MAGIC b"FSTIDX\\x00\\n"
    8      4    snapshot version (SNAPSHOT_VERSION = 3)
    12     4    CRC-32 of the body
    16     8    body length
    24     n    body: a CBOR map (keys below)

Body: ``store_uuid`` (16 bytes), ``generation``, ``position`` (the log offset
the snapshot covers up to), ``last_seq``, ``last_frame_offset`` and
``last_frame_crc`` (the record that ends exactly at ``position``, and its
CRC field: a copy of the store that diverged since has a different last
record there, so its snapshot is refused), ``live_bytes``, ``keys`` (text),
``offsets``/``sizes``/``scope_ids``/``seqs`` (packed little-endian
u64/u32/u32/u64 arrays, one per key; ``seqs``: the sequence number of the
record each offset points at, which every read compares with the frame's),
``scope_count`` and ``scope_columns`` (the distinct owner
scopes as four texts, env, tenant_id, team and user, each the scopes' ids
joined by newlines, which no id contains; an empty line for no team or user:
one regex pass validates a column, where one ``parse`` per id made reopening
a store of 100,000 users spend most of its time there),
``lookup`` (packed u32 indices of the keys the user lookup points at),
``wait_ids`` (packed u32 indices of the keys that hold a wait's scope entry)
and ``wait_hashes`` (their scope hashes, 32 raw bytes each, in that order),
``deadline_ids`` and ``deadlines`` (packed u32 indices of the keys with a
TTL deadline, and those deadlines as packed u64 unix milliseconds). Version
4 added the last four; a version 3 snapshot is refused like any other
version, and the index rebuilt by replaying the log.

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

import array
import contextlib
import fcntl
import gc
import os
import random
import struct
import sys
import time
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, Final, Protocol

import attrs
import cbor2

from filestore import strictcbor
from filestore.engine.chunkedcbor import CHUNK, Joined, encode_parts, let_others_run
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
from filestore.engine.records import MAX_DEADLINE, Put, RecordDecodeError, decode_record
from filestore.errors import message_of
from filestore.ids import EnvId, SessionKey, SessionScope, TeamId, TenantId, UserId

SNAPSHOT_MAGIC: Final = b"FSTIDX\x00\n"
# 3: per-entry ``seqs`` added (a version 2 snapshot is refused, and the index rebuilt by replay).
# 4: waits and deadlines added (issue 14; a version 3 snapshot is refused the same way).
SNAPSHOT_VERSION: Final = 4
_HASH_BYTES: Final = 32
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


def _pack(typecode: str, values: list[int]) -> bytes:
    packed = array.array(typecode)
    for start in range(0, len(values), CHUNK):
        packed.extend(values[start : start + CHUNK])
        let_others_run()
    if sys.byteorder == "big":  # pragma: no cover - the format is little-endian
        packed.byteswap()
    return packed.tobytes()


class IndexLike(Protocol):
    """What a snapshot is made of: an ``Index`` (not frozen) or the ``IndexView`` of a frozen one."""

    @property
    def entries(self) -> Mapping[SessionKey, Entry]: ...

    @property
    def by_user(self) -> Mapping[SessionScope, SessionKey]: ...

    @property
    def live_bytes(self) -> int: ...


def _unpack(typecode: str, data: object, count: int) -> list[int]:
    if not isinstance(data, bytes):
        raise ValueError("packed array is not bytes")
    unpacked = array.array(typecode)
    if len(data) != unpacked.itemsize * count:
        raise ValueError("packed array has the wrong length")
    unpacked.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover
        unpacked.byteswap()
    return unpacked.tolist()


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
    scope_ids: dict[SessionScope, int] = {}
    keys: list[str] = []
    offsets: list[int] = []
    sizes: list[int] = []
    entry_scopes: list[int] = []
    seqs: list[int] = []
    pointed: list[int] = []
    wait_ids: list[int] = []
    wait_hashes: list[bytes] = []
    deadline_ids: list[int] = []
    deadlines: list[int] = []
    by_user = index.by_user
    for number, (key, entry) in enumerate(index.entries.items()):
        keys.append(str(key))
        offsets.append(entry.offset)
        sizes.append(entry.size)
        scope = entry.scope
        entry_scopes.append(scope_ids.setdefault(scope, len(scope_ids)))
        seqs.append(entry.seq)
        # In entry order, so sorted, as a sort of the lookup's positions would give.
        if scope.user is not None and by_user.get(scope) == key:
            pointed.append(number)
        if entry.wait is not None:
            wait_ids.append(number)
            wait_hashes.append(bytes.fromhex(entry.wait))
        if entry.deadline is not None:
            deadline_ids.append(number)
            deadlines.append(entry.deadline)
        if number % CHUNK == CHUNK - 1:
            let_others_run()
    columns = [Joined(_scope_column(list(scope_ids), field)) for field in range(len(SessionScope._fields))]
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
            "keys": keys,
            "offsets": _pack("Q", offsets),
            "sizes": _pack("I", sizes),
            "scope_ids": _pack("I", entry_scopes),
            "seqs": _pack("Q", seqs),
            "scope_count": len(scope_ids),
            "scope_columns": columns,
            "lookup": _pack("I", pointed),
            "wait_ids": _pack("I", wait_ids),
            "wait_hashes": b"".join(wait_hashes),
            "deadline_ids": _pack("I", deadline_ids),
            "deadlines": _pack("Q", deadlines),
        }
    )
    crc = 0
    for part in body:
        crc = zlib.crc32(part, crc)
    return [_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, crc, sum(map(len, body))), *body]


def _scope_column(scopes: list[SessionScope], field: int) -> list[str]:
    """One of ``scope_columns``, ``CHUNK`` scopes at a time: one comprehension over every
    distinct scope held the GIL 60 ms at 100,000 users (ten times that at a million)."""
    column: list[str] = []
    for start in range(0, len(scopes), CHUNK):
        column.extend([str(scope[field] or "") for scope in scopes[start : start + CHUNK]])
        let_others_run()
    return column


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
    if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION or length != len(body):
        return None
    if zlib.crc32(body) != crc:
        return None
    try:
        decoded = strictcbor.loads(body)
    except (cbor2.CBORDecodeError, RecursionError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _build_index(body: dict[str, Any]) -> Index:
    # Hundreds of thousands of new tuples would trigger cyclic GC passes that
    # find nothing (none of them can form a cycle): pause it while building.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _build_index_columns(body)
    finally:
        if paused:
            gc.enable()


def _build_index_columns(body: dict[str, Any]) -> Index:
    keys = body["keys"]
    if not isinstance(keys, list) or not set(map(type, keys)) <= {str}:
        raise ValueError("keys is not a list of text")
    count = len(keys)
    scopes = _decode_scopes(body["scope_columns"], body["scope_count"])
    lookup = body["lookup"]
    if not isinstance(lookup, bytes):
        raise ValueError("lookup is not packed")
    index = Index.from_columns(
        keys,
        _unpack("Q", body["offsets"], count),
        _unpack("I", body["sizes"], count),
        [scopes[number] for number in _unpack("I", body["scope_ids"], count)],
        _unpack("Q", body["seqs"], count),
        _unpack("I", lookup, len(lookup) // 4),
        _decode_waits(body["wait_ids"], body["wait_hashes"], count),
        _decode_deadlines(body["deadline_ids"], body["deadlines"], count),
    )
    if len(index) != count:
        raise ValueError("a key appears twice")
    if index.live_bytes != body["live_bytes"]:
        raise ValueError("live_bytes disagrees with the entries")
    return index


def _positions(packed: object, count: int) -> list[int]:
    """Packed u32 positions of keys, each below ``count`` and none twice."""
    if not isinstance(packed, bytes) or len(packed) % 4:
        raise ValueError("positions are not packed u32")
    positions = _unpack("I", packed, len(packed) // 4)
    if len(set(positions)) != len(positions) or any(number >= count for number in positions):
        raise ValueError("positions repeat or name no key")
    return positions


def _decode_waits(ids: object, hashes: object, count: int) -> dict[int, str]:
    """The scope hash of each key that holds a wait, by the key's position."""
    positions = _positions(ids, count)
    if not isinstance(hashes, bytes) or len(hashes) != _HASH_BYTES * len(positions):
        raise ValueError("wait_hashes does not hold one hash per wait")
    return {
        number: hashes[at * _HASH_BYTES : (at + 1) * _HASH_BYTES].hex() for at, number in enumerate(positions)
    }


def _decode_deadlines(ids: object, deadlines: object, count: int) -> dict[int, int]:
    """The deadline of each key that has one, by the key's position."""
    positions = _positions(ids, count)
    values = _unpack("Q", deadlines, len(positions))
    if any(value > MAX_DEADLINE for value in values):
        raise ValueError("a deadline beyond int64 milliseconds")
    return dict(zip(positions, values, strict=True))


def _decode_scopes(columns: object, count: object) -> list[SessionScope]:
    """The distinct owner scopes, validated as ids in one pass per column."""
    if (
        not isinstance(columns, list)
        or len(columns) != len(SessionScope._fields)
        or not isinstance(count, int)
    ):
        raise ValueError("scope_columns is not four texts")
    if not all(isinstance(column, str) for column in columns):
        raise ValueError("scope_columns is not four texts")
    envs, tenants, teams, users = columns
    return list(
        map(
            SessionScope._make,
            zip(
                EnvId.parse_joined(envs, count, optional=False, field="scope.env"),
                TenantId.parse_joined(tenants, count, optional=False, field="scope.tenant_id"),
                TeamId.parse_joined(teams, count, optional=True, field="scope.team"),
                UserId.parse_joined(users, count, optional=True, field="scope.user"),
                strict=True,
            ),
        )
    )


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
        if version != SNAPSHOT_VERSION:
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
        index = _build_index(body)
        if not _spot_check(io, log_fd, header, index, body["keys"], position):
            return None, "entries do not match the records they point at"
        written = body["written_unix_ms"]
    except (KeyError, ValueError, TypeError, IndexError, RecordDecodeError) as error:
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
