"""Writing a new generation of the log and switching to it: shared by compact and fsck --repair.

Never a moment without a valid store. The steps, each crash-safe:

1. Write the new generation to ``sessions.log.compact`` (generation + 1, same
   store UUID, records renumbered from 1), fdatasync it, fsync the directory.
2. Verify it by reading it back through the normal frame checks.
3. Hard-link the current log to ``sessions.log.old`` and fsync the
   directory, so the old generation survives the switch. An ``.old`` kept
   by an earlier repair or ``--keep-old`` is evidence and is never
   replaced: the link takes the first free ``sessions.log.oldN`` instead.
   Only a stray link to the current log itself (left by a rewrite that
   stopped before its switch) is reused.
4. Seal the old log: a synced SEAL record tells every open handle (which
   looks for new records before each call) that this generation is done,
   so none appends to it again; they wait for the writer lock and reload.
5. COMMIT POINT: rename ``sessions.log.compact`` over ``sessions.log``, fsync
   the directory. Before it, a crash leaves the old store (plus a stray
   ``.compact`` that the next rewrite replaces, and a seal at the end of the
   log, which the next opener cuts); after it, the new one.
6. Write the new generation's index snapshot (the old one names the old
   generation, so until then opening simply rebuilds it).
7. Unless asked to keep it, unlink the old generation's link and fsync the directory.

The caller holds the writer lock (and, offline, the exclusive registration).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Final

import attrs

from filestore.engine.directory import store_file_mode
from filestore.engine.fileio import FileIO
from filestore.engine.framing import (
    FILE_HEADER_SIZE,
    FLAG_SYNCED,
    KIND_PUT,
    FileHeader,
    Frame,
    encode_frame,
    frame_crc,
)
from filestore.engine.index import Index
from filestore.engine.layout import COMPACT_NAME, LOG_NAME, old_name
from filestore.engine.logfile import LogFile
from filestore.engine.records import Put, decode_record, is_put_of
from filestore.engine.snapshot import encode_snapshot, write_snapshot
from filestore.errors import CorruptionError

_WRITE_BATCH: Final = 4 << 20


@attrs.frozen
class RewriteResult:
    """What the new generation holds."""

    generation: int
    records: int
    log_bytes: int
    snapshot_bytes: int
    old_log: str | None


def rewrite_generation(
    io: FileIO,
    directory: str,
    old_header: FileHeader,
    frames: Iterable[Frame],
    *,
    keep_old: bool,
    seal: Callable[[int], object],
    file_mode: int | None = None,
) -> RewriteResult:
    """Write ``frames`` (in order) as the next generation and switch to it atomically.

    Its files get ``file_mode``, by default the current log's mode.
    """
    if file_mode is None:
        file_mode = store_file_mode(directory)
    header = FileHeader(old_header.store_uuid, old_header.generation + 1)
    compact_path = os.path.join(directory, COMPACT_NAME)
    log_path = os.path.join(directory, LOG_NAME)
    with contextlib.suppress(FileNotFoundError):
        io.unlink(compact_path)  # a stray from an interrupted rewrite: never the live log
    index = Index()
    seq, end, last_frame_offset, last_frame_crc = _write_new_log(
        io, compact_path, header, frames, index, file_mode
    )
    io.sync_dir(directory)
    _verify(io, directory, header, seq, end)
    old_path = _free_old_name(io, directory, log_path)
    io.link(log_path, old_path)
    io.sync_dir(directory)
    seal(header.generation)
    # COMMIT POINT: from here on the store is the new generation.
    io.rename(compact_path, log_path)
    io.sync_dir(directory)
    snapshot = encode_snapshot(
        header,
        index,
        position=end,
        last_seq=seq,
        last_frame_offset=last_frame_offset,
        last_frame_crc=last_frame_crc,
    )
    write_snapshot(io, directory, snapshot, mode=file_mode)
    kept: str | None = old_path
    if not keep_old:
        io.unlink(old_path)
        io.sync_dir(directory)
        kept = None
    return RewriteResult(header.generation, seq, end, len(snapshot), kept)


def _free_old_name(io: FileIO, directory: str, log_path: str) -> str:
    """Where to link the current log: the first ``.old`` name that holds no evidence.

    A name that is already a link to the current log is a stray from a
    rewrite that stopped before its switch; it holds nothing the log does not.
    """
    number = 1
    while True:
        path = os.path.join(directory, old_name(number))
        try:
            if not os.path.samefile(path, log_path):
                number += 1
                continue
        except FileNotFoundError:
            return path
        io.unlink(path)
        return path


def _write_new_log(
    io: FileIO, path: str, header: FileHeader, frames: Iterable[Frame], index: Index, file_mode: int
) -> tuple[int, int, int, int]:
    """Write the new log; return its last sequence number, end, and last frame's offset and CRC."""
    fd = io.open(path, exclusive=True, mode=file_mode)
    try:
        salt = header.salt
        pending = [header.encode()]
        pending_bytes = FILE_HEADER_SIZE
        written = 0
        end = FILE_HEADER_SIZE
        seq = 0
        last_frame_offset = 0
        last_frame_crc = 0
        for frame in frames:
            seq += 1
            # Everything in a rewritten log is synced before it becomes current.
            data = encode_frame(salt, frame.kind, FLAG_SYNCED, seq, seq - 1, frame.payload)
            index.apply(decode_record(frame.kind, frame.payload), end, len(data))
            pending.append(data)
            pending_bytes += len(data)
            last_frame_offset = end
            last_frame_crc = frame_crc(data)
            end += len(data)
            if pending_bytes >= _WRITE_BATCH:
                io.pwrite(fd, b"".join(pending), written)
                written += pending_bytes
                pending, pending_bytes = [], 0
        io.pwrite(fd, b"".join(pending), written)
        io.sync_data(fd)
    finally:
        io.close(fd)
    return seq, end, last_frame_offset, last_frame_crc


def _verify(io: FileIO, directory: str, header: FileHeader, seq: int, end: int) -> None:
    """Read the new generation back: every frame verifies, in sequence, ending at ``end``."""
    log = LogFile.open(io, directory, name=COMPACT_NAME)
    try:
        if log.header != header:
            raise CorruptionError("the new generation's header reads back wrong", path=log.path, offset=0)
        result = log.scan(FILE_HEADER_SIZE, 1, lambda frame: None)
        if result.last_seq != seq or result.end != end or result.stopped_at_bad:
            raise CorruptionError(
                f"the new generation reads back {result.last_seq} records ending at {result.end}, "
                f"expected {seq} ending at {end}; the old generation is untouched",
                path=log.path,
                offset=result.end,
            )
    finally:
        log.close()


def live_frames(log: LogFile, index: Index, progress: Callable[[int], None] | None = None) -> Iterator[Frame]:
    """The newest PUT of every live session, in log order, ready for a new generation.

    A session the user lookup no longer points at (its user's newer session
    was removed) is re-encoded as a PUT that does not point the lookup, so
    the new generation has exactly the old one's lookups.
    """
    live = {entry.offset: (key, entry) for key, entry in index.items()}
    for _, frame, _ in log.frames(FILE_HEADER_SIZE, stop=log.end):
        if frame is None:
            return
        if progress is not None:
            progress(frame.size)
        found = live.get(frame.offset)
        if found is None:
            continue
        key, entry = found
        if frame.kind != KIND_PUT or not is_put_of(frame.payload, key, entry.scope):
            # A valid record written at the wrong place: copying it would give the
            # new generation two of another session and none of this one.
            raise CorruptionError(
                f"{log.path}: the record at offset {frame.offset} is not the one the index expects "
                "there (another session's, a misdirected write?); the old generation is untouched: "
                "run `filestore fsck --repair`",
                path=log.path,
                offset=frame.offset,
            )
        if entry.scope.user is None or index.lookup(entry.scope) == key:
            yield frame
            continue
        record = decode_record(frame.kind, frame.payload)
        assert isinstance(record, Put), "index entries point at PUT records"
        payload = attrs.evolve(record, points_lookup=False).encode()
        yield attrs.evolve(frame, payload=payload)
