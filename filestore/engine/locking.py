"""Locks between processes and threads, and the checks that make them trustworthy.

- ``WriterLock``: one exclusive lock on ``<store>/LOCK`` (never the log, never
  deleted), held across append + fsync + index update, plus a thread lock,
  because a file lock does not exclude threads of one process. The file lock
  is filelock's descriptor lock on a descriptor kept open: taking it costs a
  system call (~2 us), not an open/close pair (~50 us with ``FileLock``).
- ``Registration``: every open handle holds a *shared* ``flock`` on
  ``<store>/OPEN``; offline tools (compact, fsck --repair) take it exclusively
  to know that nobody else has the store open.
- ``network_filesystem``: locks and preallocation are unreliable on NFS and
  SMB, so opening refuses there unless explicitly overridden.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from typing import Final

import filelock

from filestore.engine.layout import LOCK_NAME, REGISTRATION_NAME
from filestore.errors import LockTimeoutError, StoreInUseError, StoreReadOnlyError, UntrustedDirectoryError

# What opening a file to write answers on a store that is read-only to us.
READ_ONLY: Final = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})

_FIRST_WAIT: Final = 0.0005
_LONGEST_WAIT: Final = 0.02

NETWORK_FILESYSTEMS: Final = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",
        "fuse.sshfs",
        "ceph",
        "glusterfs",
    }
)


_FLAGS: Final = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def _open_lock_file(path: str, mode: int, *, optional: bool = False) -> int | None:
    """A descriptor on the lock file ``path`` (made with ``mode`` if missing); ``None`` if it
    is missing, cannot be made here and is ``optional`` (else ``StoreReadOnlyError``)."""
    flags = _FLAGS
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | flags, mode)
    except OSError as error:
        # O_NOFOLLOW's ELOOP: a link planted at the lock file's name (opening checks
        # for one first, but one may appear later, and the offline tools meet it here).
        if error.errno == errno.ELOOP and os.path.islink(path):
            raise planted_link(path) from None
        if error.errno not in READ_ONLY:
            raise
    # A read-only store: flock needs no write access, so a reader (or a checker) locks
    # the existing file as a writer would; one that is missing cannot be made.
    try:
        return os.open(path, os.O_RDONLY | flags)
    except FileNotFoundError:
        if optional:
            return None
        raise StoreReadOnlyError(
            f"cannot make {path}: the store's directory is read-only here; the first process "
            "to open a store makes its lock files, and needs write access to do so",
            path=path,
        ) from None


def planted_link(path: str) -> UntrustedDirectoryError:
    """The error for a symbolic link found where a store file belongs."""
    try:
        status = os.lstat(path)
        uid, mode = status.st_uid, stat.S_IMODE(status.st_mode)
    except OSError:
        uid, mode = -1, 0
    return UntrustedDirectoryError(
        f"{path} is a symbolic link where the store keeps a file of its own; the store never "
        "opens one through a link (it could redirect writes elsewhere). Remove the link (and "
        "put the real file back if it was moved)",
        path=path,
        uid=uid,
        mode=mode,
    )


class WriterLock:
    """The store's exclusive writer lock: a thread lock, then the ``LOCK`` file lock.

    Re-entrant within one thread, so a writer can call helpers that lock too.

    ``optional`` (a read-only handle): where the file is missing and cannot be
    made (a backup's files in a directory this account may not write), the
    lock is the thread lock alone until the file appears. Every writer makes
    the file before it opens the log, so while it is missing no writer has the
    store open; each ``acquire`` looks for it again, and once a writer has made
    it the lock is taken on it as every handle does.
    """

    def __init__(self, directory: str, *, timeout: float, mode: int = 0o600, optional: bool = False) -> None:
        self.path = os.path.join(directory, LOCK_NAME)
        self.timeout = timeout
        self._fd = _open_lock_file(self.path, mode, optional=optional)
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._closed = False

    def acquire(self) -> None:
        """Take the lock, or raise ``LockTimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=max(self.timeout, 0.0)):
            raise self._timed_out()
        try:
            if self._depth == 0:
                if self._fd is None and not self._closed:
                    self._fd = _open_missing(self.path)
                if self._fd is not None:
                    self._lock_file(self._fd, deadline)
            self._depth += 1
        except BaseException:
            if self._depth == 0 and self._fd is not None:
                filelock.unlock_descriptor(self._fd)  # nothing if it was not taken
            self._thread_lock.release()
            raise

    def _lock_file(self, fd: int, deadline: float) -> None:
        wait = _FIRST_WAIT
        while not filelock.lock_descriptor(fd, blocking=False):
            if time.monotonic() >= deadline:
                raise self._timed_out()
            time.sleep(wait)
            wait = min(wait * 2, _LONGEST_WAIT)

    def release(self) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                filelock.unlock_descriptor(self._fd)
        finally:
            self._thread_lock.release()

    def release_leaked(self) -> None:
        """Let go of the lock if this thread holds it, at every depth: for a caller that holds it
        nowhere, after an interrupt (``KeyboardInterrupt`` from a signal is raised between any
        two steps, so one arriving just after an acquire, before the ``try`` that would release
        it, leaves the lock held: every other thread then waits for it forever; issue 20)."""
        if not self._thread_lock._is_owned():  # type: ignore[attr-defined]
            return
        self._depth = 0
        try:
            if self._fd is not None:
                filelock.unlock_descriptor(self._fd)
        finally:
            self._thread_lock._release_save()  # type: ignore[attr-defined]

    def _timed_out(self) -> LockTimeoutError:
        return LockTimeoutError(
            f"waited {self.timeout:g} s for the writer lock {self.path}", path=self.path, timeout=self.timeout
        )

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def close(self) -> None:
        """Close the lock file's descriptor (dropping any flock it held); once, however often called."""
        fd, self._fd, self._closed = self._fd, None, True
        if fd is not None:
            os.close(fd)


def _open_missing(path: str) -> int | None:
    """A read-only descriptor on the lock file ``path`` that was missing, if a writer made it since."""
    try:
        return os.open(path, os.O_RDONLY | _FLAGS)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP and os.path.islink(path):
            raise planted_link(path) from None  # as at open: never a lock taken through a link
        raise


class Registration:
    """A handle's shared claim on the store; offline tools need it exclusively.

    ``optional`` (a read-only handle): where the file is missing and cannot be
    made, there is no claim (an offline tool, which must make the file, can
    only run where this account could not stop it anyway).
    """

    def __init__(
        self, directory: str, *, exclusive: bool, wait: float = 0.0, mode: int = 0o600, optional: bool = False
    ) -> None:
        self.path = os.path.join(directory, REGISTRATION_NAME)
        fd = _open_lock_file(self.path, mode, optional=optional)
        self._fd = fd
        if fd is None:
            return
        operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + wait
        delay = _FIRST_WAIT
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    if exclusive:
                        raise StoreInUseError(
                            f"other processes have the store at {directory} open; close them first "
                            "(or wait for them)",
                            path=directory,
                        ) from None
                    raise LockTimeoutError(
                        f"an offline tool holds the store at {directory}; waited {wait:g} s",
                        path=self.path,
                        timeout=wait,
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, _LONGEST_WAIT)

    def close(self) -> None:
        """Give the claim back; once, however often called (a second ``close`` of a store
        finishes what an interrupted first one left)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def network_filesystem(path: str) -> str | None:
    """The file system type of ``path`` if it is a network one (NFS, SMB...), else ``None``.

    ``os.statvfs`` does not give the type, so this reads the kernel's mount
    table and takes the longest mount point containing ``path``.
    """
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return None
    best_point, best_type = "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best_point):
            best_point, best_type = point, fields[2]
    return best_type if best_type in NETWORK_FILESYSTEMS else None


def held_by_a_writer(path: str) -> bool:
    """Whether a live process holds the ``flock`` that a temp file written outside the writer
    lock (an index snapshot) is written under: such a file is in use, not a crash's leftover.

    A writer that died released it with its descriptors.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also gives back the lock just taken
    return False
