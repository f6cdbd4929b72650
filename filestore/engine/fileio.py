"""The one seam through which the engine touches files.

Every open, write, read, sync, truncate, rename and unlink of the store goes
through a ``FileIO`` object, so tests can record each operation (to build
the states a power loss may leave) or fail the Nth one (EIO, ENOSPC). The
default, ``OsFileIO``, is a thin layer over ``os``.

Durability rules it encodes once:

- ``sync_data`` is ``fdatasync``, and a store opens only where that and a
  directory ``fsync`` reach the disk (``require_supported_platform``);
- ``sync_dir`` opens the directory and fsyncs it, which makes a create,
  rename or unlink durable.

The hot path (an append, the look for new records before every call) may
call ``os`` itself rather than the seam, but only for an operation the
``FileIO`` in use does not override (``is_plain``, asked once, when a log is
opened): a double that records or fails an operation still sees every call of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Iterable
from typing import Final

from filestore.engine.layout import side_file_names, temp_names
from filestore.errors import UnsupportedPlatformError

_O_BINARY: Final = getattr(os, "O_BINARY", 0)
_O_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


class FileIO:
    """File operations the store uses; subclass to record or inject faults.

    Paths are ``str``; descriptors are plain ints.
    """

    def open(self, path: str, *, create: bool = False, exclusive: bool = False, mode: int = 0o600) -> int:
        """Open ``path`` read-write, never through a symlink.

        ``create`` makes it if missing; ``exclusive`` fails if it exists.
        """
        flags = os.O_RDWR | _O_BINARY | _O_NOFOLLOW | _O_CLOEXEC
        if create:
            flags |= os.O_CREAT
        if exclusive:
            flags |= os.O_CREAT | os.O_EXCL
        return os.open(path, flags, mode)

    def open_readonly(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | _O_BINARY | _O_NOFOLLOW | _O_CLOEXEC)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of ``data`` at ``offset`` (looping over short writes)."""
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``; shorter only at end of file."""
        data = os.pread(fd, size, offset)
        if len(data) == size or not data:
            return data
        chunks = [data]
        got = len(data)
        while got < size:
            more = os.pread(fd, size - got, offset + got)
            if not more:
                break
            chunks.append(more)
            got += len(more)
        return b"".join(chunks)

    def size(self, fd: int) -> int:
        # lseek, not fstat: on this kernel a stat before a write made the next
        # fdatasync ~45 us slower (tools/bench); we never use the file offset.
        return os.lseek(fd, 0, os.SEEK_END)

    def sync_data(self, fd: int) -> None:
        """Make the file's data (and its size) durable."""
        os.fdatasync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def rename(self, source: str, target: str) -> None:
        """Atomically replace ``target`` by ``source`` (durable after ``sync_dir``)."""
        os.replace(source, target)

    def link(self, source: str, target: str) -> None:
        """A second name for ``source`` (durable after ``sync_dir``)."""
        os.link(source, target)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def sync_dir(self, path: str) -> None:
        """fsync a directory, making creates, renames and unlinks in it durable."""
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_file(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        """Create ``path`` exclusively, write ``data``, and sync it (not its directory).

        ``FileExistsError`` if anything is at ``path``, a link included. A
        write or sync that fails (a full disk) or is interrupted removes the
        file again: a partial file is nobody's evidence.
        """
        try:
            fd = self.open(path, exclusive=True, mode=mode)
        except OSError:
            raise  # nothing was created (taken, or refused)
        except BaseException:
            # Interrupted around the create: what is there now is ours (created
            # exclusively, never through a link) if it is a regular file.
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    self.unlink(path)
            raise
        try:
            try:
                self.pwrite(fd, data, 0)
                self.sync_data(fd)
            finally:
                self.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                self.unlink(path)
            raise

    def read_file(self, path: str) -> bytes:
        fd = self.open_readonly(path)
        try:
            return self.pread(fd, self.size(fd), 0)
        finally:
            self.close(fd)


class OsFileIO(FileIO):
    """The real thing: every call goes straight to the operating system."""


# FileIO's own operations as defined here, so that a class (or a test) that
# replaces one, even by patching FileIO itself, is never bypassed.
_PLAIN: Final = {name: value for name, value in vars(FileIO).items() if callable(value)}


def is_plain(io: FileIO, operation: str) -> bool:
    """Whether ``io.<operation>`` is ``FileIO``'s own, a thin call of ``os``, so a hot path may
    make that call itself; ``False`` when a subclass or the instance replaces it."""
    if operation in getattr(io, "__dict__", {}):
        return False
    return getattr(type(io), operation, None) is _PLAIN.get(operation)


OS_IO: Final[FileIO] = OsFileIO()

# The systems the durability promises are made (and tested) on. Not macOS: there fsync
# returns before the data is on the disk (only fcntl F_FULLFSYNC gets it there) and
# fdatasync does not exist; nor the BSDs, for want of tests.
SUPPORTED_PLATFORMS: Final = frozenset({"linux"})


def require_supported_platform(path: str) -> None:
    """Refuse a store directory (``UnsupportedPlatformError``) where its syncs would promise too much.

    Called before a store or an offline tool makes or reads anything, so a
    refused platform is never left with a half-made store.
    """
    if sys.platform not in SUPPORTED_PLATFORMS:
        raise UnsupportedPlatformError(
            f"{path}: filestore keeps stores only on Linux, not on {sys.platform}: "
            + (
                "macOS's fsync does not reach the disk, so writes would not be crash-safe; "
                if sys.platform == "darwin"
                else "its sync calls are not tested here, so writes might not be crash-safe; "
            )
            + "use InMemorySessionStore or RedisSessionStore there",
            path=path,
            platform=sys.platform,
        )


def write_first_free(
    io: FileIO, directory: str, names: Iterable[str], data: bytes, *, mode: int = 0o600
) -> str:
    """Write ``data`` (synced) to the first of ``names`` in ``directory`` that nothing occupies;
    its path.

    A name where anything is, a dangling symlink included, is taken; one
    taken between the look and the exclusive create is passed over too, so
    nothing is ever written through a link or over another file.
    """
    for name in names:
        path = os.path.join(directory, name)
        if os.path.lexists(path):
            continue
        try:
            io.write_file(path, data, mode=mode)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "every name tried is taken", directory)


def create_first_free(
    io: FileIO, directory: str, names: Iterable[str], *, mode: int = 0o600
) -> tuple[str, int]:
    """Create, exclusively, the first of ``names`` in ``directory`` that nothing occupies (the
    rules of ``write_first_free``); its path and an open descriptor for the caller to fill."""
    for name in names:
        path = os.path.join(directory, name)
        if os.path.lexists(path):
            continue
        try:
            return path, io.open(path, exclusive=True, mode=mode)
        except FileExistsError:
            continue
        except OSError:
            raise  # nothing was created
        except BaseException:
            # Interrupted around the create (issue 20: an interrupt while close() wrote
            # the snapshot left its temp file, which fsck then reported): as write_file.
            _remove_if_regular(io, path)
            raise
    raise FileExistsError(errno.EEXIST, "every name tried is taken", directory)


def _remove_if_regular(io: FileIO, path: str) -> None:
    """Remove what an interrupted exclusive create left at ``path``: ours (created exclusively,
    never through a link) if it is a regular file."""
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(path).st_mode):
            io.unlink(path)


def write_side_file(io: FileIO, directory: str, base: str, data: bytes) -> str:
    """Keep ``data`` cut from ``base`` in the first free ``<base>.trN``; its path (not yet
    durable in the directory: the caller syncs it before cutting anything)."""
    return write_first_free(io, directory, side_file_names(base), data)


def replace_file(io: FileIO, directory: str, name: str, data: bytes, *, mode: int = 0o600) -> None:
    """Atomically put ``data`` at ``directory/name``: temp file, sync, rename, sync directory.

    The temp name is unique (pid and a random suffix) and created exclusively,
    so a stray temp or a symlink planted there is never written through (another
    name is drawn); a failure or interrupt before the rename removes the temp file.
    """
    temp = write_first_free(io, directory, temp_names(name), data, mode=mode)
    try:
        io.rename(temp, os.path.join(directory, name))
    except BaseException:
        with contextlib.suppress(OSError):
            io.unlink(temp)
        raise
    io.sync_dir(directory)
