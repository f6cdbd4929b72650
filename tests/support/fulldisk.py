"""Full disks, real and simulated: a small tmpfs to fill, and a file layer whose snapshot writes fail.

``small_tmpfs`` mounts a tmpfs of a few hundred KiB (root only; the test is
skipped with the reason otherwise) and unmounts it afterwards; ``fill``
takes every free byte of it into one file. ``SnapshotFailsIO`` is the real
file layer, except that while ``armed`` every write to an index snapshot's
temp file fails with ``OSError(error)``; ``SnapshotWatchIO`` notes, at
each snapshot write, which thread made it and whether the writer lock was
free then.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from filestore.engine.layout import LOCK_NAME, SNAPSHOT_NAME

from .fileio import HookedIO, os_error


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "512k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``; skips the test when one cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("no mount(8) here")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run([umount, "-l", str(where)], check=False)


def fill(directory: Path, name: str = "filler") -> Path:
    """Write one file in ``directory`` until its file system is full; the file's path."""
    filler = directory / name
    block = b"\xa5" * 4096
    with filler.open("wb", buffering=0) as out:
        while True:
            try:
                out.write(block)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
        # Single bytes, down to the last free one.
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\xa5")
    return filler


def _is_snapshot_temp(path: str) -> bool:
    name = os.path.basename(path)
    return name.startswith(f".{SNAPSHOT_NAME}.") and name.endswith(".tmp")


class _SnapshotTempsIO(HookedIO):
    """The real file layer, knowing which open descriptors are index snapshots' temp files."""

    def __init__(self) -> None:
        super().__init__()
        self._snapshot_fds: set[int] = set()

    def open(self, path: str, *, create: bool = False, exclusive: bool = False, mode: int = 0o600) -> int:
        fd = super().open(path, create=create, exclusive=exclusive, mode=mode)
        if _is_snapshot_temp(path):
            self._snapshot_fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        self._snapshot_fds.discard(fd)
        super().close(fd)


class SnapshotFailsIO(_SnapshotTempsIO):
    """While ``armed``, every write to an index snapshot's temp file fails with ``OSError(error)``.

    The temp file is still created (the failure is the data write, as on a
    full disk), so whoever wrote it must remove it. ``failures`` counts the
    writes failed.
    """

    def __init__(self, error: int = errno.ENOSPC) -> None:
        super().__init__()
        self.armed = False
        self.error = error
        self.failures = 0

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if self.armed and fd in self._snapshot_fds:
            self.failures += 1
            raise os_error(self.error)()
        super().pwrite(fd, data, offset)


def writer_lock_is_free(directory: str) -> bool:
    """Whether nobody (this process included) holds the store's writer lock file right now."""
    fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


class SnapshotWatchIO(_SnapshotTempsIO):
    """Watches index snapshots being written.

    At each write to a snapshot's temp file it notes the thread, whether the
    writer lock was free, and the bytes (``writes``); it sets ``written``. A
    write on ``forbidden_thread`` fails the test at once (a snapshot written
    inside a write call). When ``hold`` is given, the first snapshot write
    waits until it is set. ``installed`` counts renames onto ``sessions.idx``
    (``installed_bytes``: what each put there), signalled through ``on_install``.
    """

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory
        self.writes: list[tuple[int, bool, bytes]] = []
        self.written = threading.Event()
        self.hold: threading.Event | None = None
        self.forbidden_thread: int | None = None
        self.installed = 0
        self.installed_bytes: list[bytes] = []
        self.on_install = threading.Event()

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if fd in self._snapshot_fds:
            thread = threading.get_ident()
            if thread == self.forbidden_thread:
                raise AssertionError("the snapshot was written inside a write call, on its thread")
            self.writes.append((thread, writer_lock_is_free(self.directory), bytes(data)))
            self.written.set()
            hold, self.hold = self.hold, None
            if hold is not None and not hold.wait(timeout=60):
                raise AssertionError("the snapshot write was held for 60 s")
        super().pwrite(fd, data, offset)

    def rename(self, source: str, target: str) -> None:
        if os.path.basename(target) == SNAPSHOT_NAME:
            with open(source, "rb") as written:
                self.installed_bytes.append(written.read())
        super().rename(source, target)
        if os.path.basename(target) == SNAPSHOT_NAME:
            self.installed += 1
            self.on_install.set()


class FullDiskIO(HookedIO):
    """While ``full``, a write that would grow a file fails with ENOSPC (after writing what
    fits, as the kernel does); writes into space a file already has still succeed."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False
        self.refused = 0

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if self.full:
            room = max(os.fstat(fd).st_size - offset, 0)
            if len(data) > room:
                self.refused += 1
                super().pwrite(fd, data[:room], offset)
                raise os_error(errno.ENOSPC)()
        super().pwrite(fd, data, offset)
