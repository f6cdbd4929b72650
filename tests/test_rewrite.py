"""Writing a new generation: the read-back check refuses a new log that did not land as written.

Step 2 of the rewrite (``filestore.engine.rewrite``) reads the new
generation back before anything switches to it. These tests make the disk
return something else than what was written (a flipped byte, a lost end, a
header of the wrong generation) and check that online and offline compaction
then raise ``CorruptionError`` with the store exactly as it was: same files,
same bytes, same sessions, still generation 1, and usable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from filestore import CorruptionError, FileSessionStore, SessionData
from filestore.engine.fileio import OS_IO, OsFileIO
from filestore.engine.framing import FILE_HEADER_SIZE, FileHeader
from filestore.engine.layout import COMPACT_NAME
from filestore.engine.logfile import LogFile
from filestore.offline.compact import compact

from .support import ctx, data


def flip_a_payload_byte(written: bytes) -> bytes:
    damaged = bytearray(written)
    damaged[-3] ^= 0x10
    return bytes(damaged)


def lose_the_end(written: bytes) -> bytes:
    return written[:-5]


def header_naming_another_generation(written: bytes) -> bytes:
    header = FileHeader.decode(written)
    assert header is not None
    return FileHeader(header.store_uuid, header.generation + 1).encode() + written[FILE_HEADER_SIZE:]


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "flipped byte": flip_a_payload_byte,
    "lost end": lose_the_end,
    "wrong generation in the header": header_naming_another_generation,
}


class CorruptingIO(OsFileIO):
    """Writes ``corrupt(data)`` instead of ``data`` to the new generation's file, as a disk that
    acknowledges a write and then returns something else would."""

    def __init__(self, corrupt: Callable[[bytes], bytes]) -> None:
        self.corrupt = corrupt
        self.new_generation_fds: set[int] = set()
        self.corrupted = 0

    def open(self, path: str, *, create: bool = False, exclusive: bool = False, mode: int = 0o600) -> int:
        fd = super().open(path, create=create, exclusive=exclusive, mode=mode)
        if os.path.basename(path) == COMPACT_NAME and exclusive:
            self.new_generation_fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        self.new_generation_fds.discard(fd)
        super().close(fd)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if fd in self.new_generation_fds:
            self.corrupted += 1
            data = self.corrupt(data)
        super().pwrite(fd, data, offset)


def build(directory: Path) -> dict[str, SessionData]:
    """A store with dead records to compact away; its live sessions by key."""
    with FileSessionStore(directory, preallocate_bytes=0) as store:
        keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(6)]
        store.update_session(keys[3], data(ctx(user="u3"), step=9))
        for key in keys[:3]:
            store.remove_session(key)
        return sessions_of(store)


def sessions_of(store: FileSessionStore) -> dict[str, SessionData]:
    return {str(key): found for key in store.session_keys() if (found := store.get_session(key)) is not None}


def files_but_the_stray(directory: Path) -> dict[str, bytes]:
    """Every file and its bytes, except the ``.compact`` a failed rewrite may leave (the next replaces it)."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.name != COMPACT_NAME}


def generation(directory: Path) -> int:
    log = LogFile.open(OS_IO, str(directory))
    try:
        return log.header.generation
    finally:
        log.close()


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS)
def test_offline_compaction_refuses_a_new_generation_that_reads_back_wrong(
    tmp_path: Path, corrupt: Callable[[bytes], bytes]
) -> None:
    """compact raises CorruptionError naming the new file; the store is byte for byte as it was,
    opens with every session, and a later compaction on a sound disk succeeds."""
    directory = tmp_path / "s"
    sessions = build(directory)
    before = files_but_the_stray(directory)
    io = CorruptingIO(corrupt)
    with pytest.raises(CorruptionError, match="new generation") as info:
        compact(directory, io=io)
    assert io.corrupted == 1
    assert info.value.path == str(directory / COMPACT_NAME)
    assert files_but_the_stray(directory) == before
    assert generation(directory) == 1
    with FileSessionStore(directory) as store:
        assert sessions_of(store) == sessions
    assert compact(directory).generation == 2
    assert not (directory / COMPACT_NAME).exists()
    with FileSessionStore(directory) as store:
        assert sessions_of(store) == sessions


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS)
def test_online_compaction_refuses_it_and_the_handle_goes_on(
    tmp_path: Path, corrupt: Callable[[bytes], bytes]
) -> None:
    """store.compact raises CorruptionError; nothing was sealed or switched, so the same handle
    (and a second one) keep reading and writing generation 1, and can compact later."""
    directory = tmp_path / "s"
    sessions = build(directory)
    io = CorruptingIO(lambda written: written)
    with (
        FileSessionStore(directory, io=io, preallocate_bytes=0) as store,
        FileSessionStore(directory) as other,
    ):
        before = files_but_the_stray(directory)
        io.corrupt = corrupt
        with pytest.raises(CorruptionError, match="new generation"):
            store.compact()
        io.corrupt = lambda written: written
        assert files_but_the_stray(directory) == before
        assert generation(directory) == 1
        assert sessions_of(store) == sessions == sessions_of(other)
        key = store.create_session(ctx(user="late"), data(ctx(user="late")))
        assert other.get_session(key) == data(ctx(user="late"))
        assert store.compact().generation == 2
        assert other.get_session(key) == data(ctx(user="late"))
