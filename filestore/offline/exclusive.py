"""Exclusive access for offline tools (compact, fsck --repair): nobody else has the store open.

``exclusive_store`` takes the open registration exclusively (refusing with
``StoreInUseError`` while other handles are open, or waiting up to ``wait``
seconds), then the writer lock, and opens the log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from filestore.engine.directory import refuse_links, require_directory
from filestore.engine.fileio import OS_IO, FileIO
from filestore.engine.framing import FILE_HEADER_SIZE, FileHeader, Frame
from filestore.engine.index import Index
from filestore.engine.layout import LOG_NAME
from filestore.engine.locking import Registration, WriterLock
from filestore.engine.logfile import LogFile, ScanResult
from filestore.engine.options import store_path
from filestore.errors import CorruptionError


@contextmanager
def exclusive_store(
    path: str | os.PathLike[str],
    *,
    wait: float = 0.0,
    io: FileIO = OS_IO,
    recover_header: Callable[[int], FileHeader | None] | None = None,
    readonly: bool = False,
) -> Iterator[LogFile]:
    """Hold the store at ``path`` exclusively and yield its open log.

    A log whose file header does not verify raises ``CorruptionError``,
    unless ``recover_header`` (given the open descriptor) finds the header
    it was written with. ``readonly`` opens the log for reading only (a
    check that changes nothing, so it works on a read-only store);
    otherwise a store this process may not write is ``StoreReadOnlyError``.
    """
    directory = store_path(path)
    require_directory(directory)
    if not os.path.isfile(os.path.join(directory, LOG_NAME)):
        raise CorruptionError(
            f"{directory} has no {LOG_NAME}: not a filestore, or its log is missing",
            path=os.path.join(directory, LOG_NAME),
            offset=0,
        )
    refuse_links(directory)
    registration = Registration(directory, exclusive=True, wait=wait)
    try:
        lock = WriterLock(directory, timeout=max(wait, 1.0))
        try:
            with lock:
                log = _open_log(io, directory, recover_header, readonly)
                try:
                    yield log
                finally:
                    log.close()
        finally:
            lock.close()
    finally:
        registration.close()


def _open_log(
    io: FileIO, directory: str, recover_header: Callable[[int], FileHeader | None] | None, readonly: bool
) -> LogFile:
    try:
        return LogFile.open(io, directory, readonly=readonly)
    except CorruptionError:
        if recover_header is None:
            raise
        path = os.path.join(directory, LOG_NAME)
        fd = io.open_readonly(path) if readonly else io.open(path)
        try:
            header = recover_header(fd)
        except BaseException:
            io.close(fd)
            raise
        if header is None:
            io.close(fd)
            raise
        return LogFile(io, directory, fd, header)


def replay(log: LogFile, progress: Callable[[int], None] | None = None) -> tuple[Index, ScanResult]:
    """Rebuild the index from the whole log (stopping at the end or the first bad frame);
    ``progress`` is told the bytes of each record applied."""
    index = Index()

    def apply(frame: Frame) -> None:
        index.apply_frame(frame, log.path)
        if progress is not None:
            progress(frame.size)

    result = log.scan(FILE_HEADER_SIZE, 1, apply)
    log.adopt(result)
    return index, result
