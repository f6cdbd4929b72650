"""Offline compaction: rewrite only the live records into a new generation.

Refuses while other processes have the store open (or waits, if asked).
Crash-safe at every step: see ``filestore.engine.rewrite`` for the sequence and
its commit point.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import attrs

from filestore.engine.fileio import OS_IO, FileIO
from filestore.engine.framing import FILE_HEADER_SIZE
from filestore.engine.layout import SNAPSHOT_NAME
from filestore.engine.options import callback, flag, seconds, store_path
from filestore.engine.rewrite import live_frames, rewrite_generation
from filestore.offline.exclusive import exclusive_store, replay
from filestore.progress import begin_phase, phased_only
from filestore.waits import Clock, check_clock, system_clock


@attrs.frozen
class CompactReport:
    """What compaction did: sizes before and after, records kept and dropped."""

    path: str
    generation: int
    live_records: int
    dropped_records: int
    bytes_before: int
    bytes_after: int
    live_bytes: int
    old_log: str | None
    # Steps after the switch that failed or were interrupted (the generation advanced anyway).
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def compact(
    path: str | os.PathLike[str],
    *,
    keep_old: bool = False,
    wait: float = 0.0,
    progress: Callable[[int], None] | None = None,
    io: FileIO = OS_IO,
    clock: Clock = system_clock,
) -> CompactReport:
    """Compact the store at ``path``; return what it did.

    Raises ``StoreInUseError`` if other handles have the store open (after
    waiting ``wait`` seconds), ``CorruptionError`` if the log is damaged in
    the middle, or if valid records follow a bad one at all (run ``fsck``
    first: it never cuts a valid record). ``progress`` is called with
    the number of bytes of old log copied since its last call; one that
    follows phases (see ``filestore.progress``) is told of two, ``scan``
    (rebuilding the index) and ``copy``, and gets the bytes of both.

    Returns if and only if the store advanced to the new generation; a
    failure or ``KeyboardInterrupt`` before that undoes the rewrite (nothing
    of it is left) and is raised. Steps after the switch that failed (the
    snapshot on a full disk) are in the report's ``warnings``.
    """
    directory = store_path(path)
    keep_old = flag("keep_old", keep_old)
    wait = seconds("wait", wait)
    progress = callback("progress", progress)
    clock = check_clock(clock)
    snapshot_path = os.path.join(directory, SNAPSHOT_NAME)
    with exclusive_store(directory, wait=wait, io=io) as log:
        # The scan reads the records, then ends where they do: what follows (preallocated
        # zeros, a torn tail) is counted at once, so the phase ends at its total.
        size = io.size(log.fd) - FILE_HEADER_SIZE
        begin_phase(progress, "scan", size, "B")
        scanned = phased_only(progress)
        index, _ = replay(log, scanned)
        if scanned is not None:
            scanned(size - (log.end - FILE_HEADER_SIZE))
        log.recover_tail()
        records_before = log.last_seq
        bytes_before = io.size(log.fd) + _file_size(snapshot_path)
        begin_phase(progress, "copy", log.end - FILE_HEADER_SIZE, "B")
        result = rewrite_generation(
            io,
            directory,
            log.header,
            live_frames(log, index, progress, now=clock()),
            keep_old=keep_old,
            seal=log,
        )
    return CompactReport(
        path=directory,
        generation=result.generation,
        live_records=result.records,
        dropped_records=records_before - result.records,
        bytes_before=bytes_before,
        bytes_after=result.log_bytes + result.snapshot_bytes,
        live_bytes=index.live_bytes,
        old_log=result.old_log,
        warnings=result.warnings,
    )
