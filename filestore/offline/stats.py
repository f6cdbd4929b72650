"""``stats``: what is inside a store, read without taking any lock (writers are never blocked).

A stats reader takes neither the writer lock nor an open registration, and
opens the log read-only: it may run while other processes write, while an
offline tool holds the store, and as a user who may only read the files.
It sees the log as it was when it looked: a record being written at that
moment is simply not counted yet.
"""

from __future__ import annotations

import os
import time

import attrs

from filestore.engine.directory import refuse_links, require_directory
from filestore.engine.fileio import OS_IO, FileIO
from filestore.engine.framing import FILE_HEADER_SIZE
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME
from filestore.engine.logfile import LogFile
from filestore.engine.options import store_path
from filestore.engine.snapshot import load_snapshot
from filestore.errors import CorruptionError
from filestore.offline.exclusive import replay
from filestore.waits import Clock, check_clock, is_expired, system_clock


@attrs.frozen
class StatsReport:
    """Counts and sizes of one store.

    ``sessions``: live sessions (expired ones included until a purge, a
    removal or a compaction drops them); ``expired``: how many of those are
    expired at the clock's time; ``waits``: scope entries of waits whose
    session is not expired; ``users``: user lookup entries (users with an
    active session); ``records``: records in the current generation's log;
    ``live_bytes``: bytes of the records live sessions point at;
    ``dead_bytes``: the rest of the log after its header (reclaimed by
    compaction), and ``dead_ratio`` its share of the log's used bytes;
    ``log_bytes``: where the log ends; ``log_file_bytes``: the log file's size
    (preallocated zeros included). ``snapshot_*`` describe the index snapshot,
    all ``None`` when there is none that verifies against the log (opening then
    replays the whole log). ``files``: every file in the directory, by name.
    """

    path: str
    store_uuid: str
    generation: int
    sessions: int
    expired: int
    waits: int
    users: int
    records: int
    live_bytes: int
    dead_bytes: int
    dead_ratio: float
    log_bytes: int
    log_file_bytes: int
    snapshot_bytes: int | None
    snapshot_position: int | None
    snapshot_last_seq: int | None
    snapshot_age_seconds: float | None
    files: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def stats(path: str | os.PathLike[str], *, io: FileIO = OS_IO, clock: Clock = system_clock) -> StatsReport:
    """Read the store at ``path`` (its snapshot, then the log after it) and count.

    ``clock`` (unix milliseconds) is what ``expired`` is counted against.

    Raises ``InvalidInputError`` if the directory does not exist,
    ``CorruptionError`` if it holds no log, or its header does not verify. Changes nothing on disk.
    """
    directory = store_path(path)
    now = check_clock(clock)()
    require_directory(directory)
    refuse_links(directory)
    log = _open_log_readonly(io, directory)
    try:
        size = io.size(log.fd)
        snapshot_path = os.path.join(directory, SNAPSHOT_NAME)
        snapshot, _ = load_snapshot(io, snapshot_path, log.fd, log.header, size)
        if snapshot is None:
            index, _ = replay(log)
        else:
            index = snapshot.index
            log.end, log.last_seq = snapshot.position, snapshot.last_seq
            log.adopt(log.scan(log.end, log.last_seq + 1, lambda frame: index.apply_frame(frame, log.path)))
        used = log.end - FILE_HEADER_SIZE
        dead = max(used - index.live_bytes, 0)
        files = _file_sizes(directory)
        expired = {key for key, entry in index.items() if is_expired(entry.deadline, now)}
        waits = sum(key not in expired for entries in index.waits.values() for key in entries.values())
        return StatsReport(
            path=directory,
            store_uuid=str(log.header.store_uuid),
            generation=log.header.generation,
            sessions=len(index),
            expired=len(expired),
            waits=waits,
            users=len(index.by_user),
            records=log.last_seq,
            live_bytes=index.live_bytes,
            dead_bytes=dead,
            dead_ratio=round(dead / used, 4) if used else 0.0,
            log_bytes=log.end,
            log_file_bytes=size,
            snapshot_bytes=None if snapshot is None else files.get(SNAPSHOT_NAME),
            snapshot_position=None if snapshot is None else snapshot.position,
            snapshot_last_seq=None if snapshot is None else snapshot.last_seq,
            snapshot_age_seconds=None
            if snapshot is None
            else round(max(time.time() - snapshot.written_unix_ms / 1000, 0.0), 1),
            files=files,
        )
    finally:
        log.close()


def _open_log_readonly(io: FileIO, directory: str) -> LogFile:
    """The store's log opened for reading only: stats never changes a store."""
    try:
        return LogFile.open(io, directory, readonly=True)
    except FileNotFoundError:
        path = os.path.join(directory, LOG_NAME)
        raise CorruptionError(
            f"{directory} has no {LOG_NAME}: not a filestore", path=path, offset=0
        ) from None


def _file_sizes(directory: str) -> dict[str, int]:
    """The size of every file in ``directory``, by name.

    Writers replace files while we look (a snapshot's temp file is renamed
    away between listing and stat): a file gone by then is left out.
    """
    sizes: dict[str, int] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return dict(sorted(sizes.items()))
