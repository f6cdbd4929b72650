"""Running one store handle's snapshot jobs: in the background after a write, or in the caller.

The steps and their rules are in ``filestore.engine.snapshotting``; this is
who runs them, with which locks: ``start`` hands the job a call captured to a
thread of its own (one at a time per handle), ``run`` writes a job (encoded
and written with no lock held, renamed in place under the store's mutex and
the writer lock, the directory synced after both are let go), and ``wait``
waits for a background one to end, as ``close`` and ``write_snapshot`` do.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Final

from filestore.engine.chunkedcbor import paced
from filestore.engine.fileio import FileIO
from filestore.engine.layout import SNAPSHOT_NAME
from filestore.engine.locking import WriterLock
from filestore.engine.logview import LogView
from filestore.engine.snapshot import TempSnapshot, discard_snapshot_temp
from filestore.engine.snapshotting import SnapshotJob
from filestore.errors import FilestoreError

# The longest the snapshot encoder waits, between two chunks, for a call to finish (seconds).
WRITE_WAIT: Final = 0.002


class SnapshotWriter:
    """Writes the snapshots of the handle whose ``mutex``, writer ``lock`` and ``view`` it is given.

    ``healthy`` says whether the handle may still change the store (not poisoned).
    """

    def __init__(
        self,
        io: FileIO,
        path: str,
        *,
        mode: int,
        mutex: threading.RLock,
        lock: WriterLock,
        view: LogView,
        healthy: Callable[[], bool],
    ) -> None:
        self._io = io
        self._path = path
        self._mode = mode
        self._mutex = mutex
        self._lock = lock
        self._view = view
        self._healthy = healthy
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Hand the snapshot a call captured to a thread of its own (the mutex held)."""
        job = self._view.take_snapshot_job()
        if job is None:
            return
        self._thread = threading.Thread(
            target=self._run_in_background, args=(job,), name="filestore-snapshot", daemon=True
        )
        self._thread.start()

    def wait(self) -> None:
        """Wait until no snapshot is being written in the background (the mutex not held)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run_in_background(self, job: SnapshotJob) -> None:
        """``run`` on the snapshot's own thread, where whatever it raises (``MemoryError``,
        ``SystemExit``...) is only a failed snapshot: a cache never fails a write."""
        try:
            self.run(job)
        except BaseException as error:  # nobody to raise it to
            with self._mutex:
                self._view.snapshot_failed(job, error)

    def run(self, job: SnapshotJob, *, explicit: bool = False) -> None:
        """Write ``job``'s snapshot (the mutex not held on entry).

        A failure is a warning (the snapshot is a cache; the next waits an
        interval), never an error of the write that made it due; only an
        ``explicit`` run raises it (the ``OSError`` or ``FilestoreError`` itself).
        """
        temp: TempSnapshot | None = None
        replaced: int | None = None
        try:
            with paced(self._writes_first):
                temp = job.write_temp(self._io, self._path, mode=self._mode)
            installed = False
            replaced = self._hold_current()
            with self._mutex, self._lock:
                self._view.catch_up(locked=True)
                if self._healthy():
                    handed, temp = temp, None
                    installed = self._view.install_snapshot(job, handed)
            if replaced is not None:
                self._let_go(replaced)
                replaced = None
            if installed:
                # Not under the lock: a directory fsync can take long on a busy disk, and
                # until it is done a crash only brings back the previous, staler snapshot.
                self._io.sync_dir(self._path)
        except (OSError, FilestoreError) as error:
            with self._mutex:
                self._view.snapshot_failed(job, error)
            if explicit:
                raise
        finally:
            if replaced is not None:
                self._let_go(replaced)
            if temp is not None:
                discard_snapshot_temp(self._io, temp)
            ended = False
            while not ended:  # a chunk at a time: other calls run between
                with self._mutex:
                    ended = self._view.end_snapshot(job)

    def _writes_first(self) -> None:
        """Between two chunks of encoding: wait (``WRITE_WAIT`` at most) for a call in progress.

        Encoding a big index is seconds of Python, and every time a writer lets
        the GIL go (each system call of a write) the encoder would take it for a
        chunk, several times a write, or a whole scheduler slice when the machine is
        busy. Waiting for the store's mutex instead lets the call in progress run
        to its end with the GIL nearly to itself. Bounded, so a stream of writes
        that always holds the mutex slows the snapshot down but never starves it.
        """
        if self._mutex.acquire(timeout=WRITE_WAIT):
            self._mutex.release()

    def _hold_current(self) -> int | None:
        """A descriptor on the snapshot about to be replaced, if there is one (no lock held).

        The rename that installs the new one drops the old file's last name; were
        that its last reference too, the kernel would free its blocks inside the
        rename, under the writer lock: milliseconds per ten megabytes of snapshot
        (4 ms at 100,000 sessions, growing with the store), which a write waits
        for. Held open, the file is freed when ``_let_go`` closes it, after the
        lock. Nothing on disk changes: an unlinked file's blocks are reclaimed
        (after a crash, by the file system's orphan list) whether or not it was open.
        """
        try:
            return self._io.open_readonly(os.path.join(self._path, SNAPSHOT_NAME))
        except OSError:
            return None  # none yet, or unreadable: the rename frees nothing big, or nothing

    def _let_go(self, fd: int) -> None:
        """Close the replaced snapshot's descriptor (freeing the file if it is gone)."""
        with contextlib.suppress(OSError):
            self._io.close(fd)
