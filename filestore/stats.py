"""``stats``: what is inside a store, read without taking any lock (writers are never blocked)."""

from __future__ import annotations

import os
import time
import uuid

import attrs

from filestore.errors import CorruptionError
from filestore.fileio import OS_IO, FileIO
from filestore.framing import FILE_HEADER_SIZE, Frame
from filestore.logfile import LOG_NAME, LogFile
from filestore.offline import replay
from filestore.records import RecordDecodeError, decode_record
from filestore.snapshot import SNAPSHOT_NAME, load_snapshot


@attrs.frozen
class StatsReport:
    """Counts and sizes of one store."""

    path: str
    store_uuid: str
    generation: int
    sessions: int
    users: int
    records: int
    live_bytes: int
    dead_bytes: int
    dead_ratio: float
    log_bytes: int
    log_file_bytes: int
    snapshot_position: int | None
    snapshot_records: int | None
    snapshot_age_seconds: float | None
    files: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def stats(path: str | os.PathLike[str], *, io: FileIO = OS_IO) -> StatsReport:
    """Read the store at ``path`` (its snapshot, then the log after it) and count."""
    directory = os.path.abspath(os.fspath(path))
    if not os.path.isfile(os.path.join(directory, LOG_NAME)):
        raise CorruptionError(
            f"{directory} has no {LOG_NAME}", path=os.path.join(directory, LOG_NAME), offset=0
        )
    log = LogFile.open(io, directory)
    try:
        size = io.size(log.fd)
        snapshot, _ = load_snapshot(io, os.path.join(directory, SNAPSHOT_NAME), log.fd, log.header, size)
        if snapshot is None:
            index, _ = replay(log)
        else:
            index = snapshot.index
            log.end, log.last_seq = snapshot.position, snapshot.last_seq

            def apply(frame: Frame) -> None:
                try:
                    index.apply(decode_record(frame.kind, frame.payload), frame.offset, frame.size)
                except RecordDecodeError as error:
                    raise CorruptionError(str(error), path=log.path, offset=frame.offset) from None

            log.adopt(log.scan(log.end, log.last_seq + 1, apply))
        used = log.end - FILE_HEADER_SIZE
        dead = max(used - index.live_bytes, 0)
        files = {
            name: os.path.getsize(os.path.join(directory, name))
            for name in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, name))
        }
        return StatsReport(
            path=directory,
            store_uuid=str(uuid.UUID(bytes=log.header.store_uuid.bytes)),
            generation=log.header.generation,
            sessions=len(index),
            users=len(index.by_user),
            records=log.last_seq,
            live_bytes=index.live_bytes,
            dead_bytes=dead,
            dead_ratio=round(dead / used, 4) if used else 0.0,
            log_bytes=log.end,
            log_file_bytes=size,
            snapshot_position=None if snapshot is None else snapshot.position,
            snapshot_records=None if snapshot is None else snapshot.last_seq,
            snapshot_age_seconds=None
            if snapshot is None
            else round(max(time.time() - snapshot.written_unix_ms / 1000, 0.0), 1),
            files=files,
        )
    finally:
        log.close()
