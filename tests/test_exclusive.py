"""Exclusive access for offline tools, seen from both sides.

While an offline tool holds a store (``exclusive_store``), opening it is
refused with ``LockTimeoutError`` once ``lock_timeout`` runs out, changing
nothing, or waits for the tool to finish. The tool's own opening of the log:
a damaged header is recovered only through ``recover_header``, and every
descriptor is closed whatever it answers; a record that does not decode
stops ``replay`` with ``CorruptionError``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import cbor2
import pytest

from filestore import CorruptionError, FileSessionStore, LockTimeoutError
from filestore.engine.fileio import OS_IO
from filestore.engine.framing import FILE_HEADER_SIZE, FLAG_SYNCED, KIND_PUT, FileHeader, encode_frame
from filestore.engine.layout import LOG_NAME
from filestore.engine.logfile import LogFile
from filestore.offline.exclusive import exclusive_store, replay

from .support import ctx, data
from .support.waiting import release_once_blocked


def make_store(directory: Path) -> list[str]:
    with FileSessionStore(directory, preallocate_bytes=0) as store:
        return [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(3)]


def directory_bytes(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_opening_while_an_offline_tool_holds_the_store_times_out_and_changes_nothing(tmp_path: Path) -> None:
    """Past lock_timeout, opening raises LockTimeoutError (a TimeoutError) naming the offline tool;
    no file changes, no descriptor leaks, and opening works once the tool is done."""
    directory = tmp_path / "s"
    keys = make_store(directory)
    with exclusive_store(directory):
        before, descriptors = directory_bytes(directory), open_descriptors()
        for timeout in (0.0, 0.05):
            with pytest.raises(LockTimeoutError, match="an offline tool holds the store") as info:
                FileSessionStore(directory, lock_timeout=timeout)
            assert isinstance(info.value, TimeoutError)
            assert info.value.timeout == timeout
        assert directory_bytes(directory) == before
        assert open_descriptors() == descriptors
    with FileSessionStore(directory) as store:
        assert [store.get_session(key) for key in keys] == [data(ctx(user=f"u{n}"), step=n) for n in range(3)]


def test_opening_waits_for_the_offline_tool_within_lock_timeout(tmp_path: Path) -> None:
    """Opening finds the store held, waits, and opens once the tool finishes (which it does only
    after the opening found it held)."""
    directory = tmp_path / "s"
    keys = make_store(directory)
    holding, finish = threading.Event(), threading.Event()

    def offline_tool() -> None:
        with exclusive_store(directory):
            holding.set()
            finish.wait(60)

    tool = threading.Thread(target=offline_tool)
    tool.start()
    try:
        assert holding.wait(60)
        with (
            release_once_blocked(finish.set) as watcher,
            FileSessionStore(directory, lock_timeout=30) as store,
        ):
            assert store.get_session(keys[0]) == data(ctx(user="u0"), step=0)
        assert watcher.blocked
    finally:
        finish.set()
        tool.join(60)


def damage_the_header(directory: Path) -> FileHeader:
    """Flip a bit of the log header's generation; return the header it was."""
    raw = bytearray((directory / LOG_NAME).read_bytes())
    header = FileHeader.decode(bytes(raw))
    assert header is not None
    raw[30] ^= 0x04
    (directory / LOG_NAME).write_bytes(bytes(raw))
    return header


def test_a_damaged_header_is_opened_only_through_recover_header(tmp_path: Path) -> None:
    """Without recover_header, or when it finds nothing, CorruptionError; when it finds the header,
    the log opens with it; when it raises, that propagates. No descriptor is left open."""
    directory = tmp_path / "s"
    make_store(directory)
    original = damage_the_header(directory)
    descriptors = open_descriptors()
    with pytest.raises(CorruptionError, match="header"), exclusive_store(directory):
        pass
    with (
        pytest.raises(CorruptionError, match="header"),
        exclusive_store(directory, recover_header=lambda fd: None),
    ):
        pass

    def broken(fd: int) -> FileHeader | None:
        raise OSError("read failed")

    with pytest.raises(OSError, match="read failed"), exclusive_store(directory, recover_header=broken):
        pass
    assert open_descriptors() == descriptors
    with exclusive_store(directory, recover_header=lambda fd: original) as log:
        index, _ = replay(log)
        assert len(index) == 3
    assert open_descriptors() == descriptors


def test_replay_stops_at_a_record_that_does_not_decode(tmp_path: Path) -> None:
    """A checksummed record whose payload is not a record: CorruptionError at its offset, naming the
    log and pointing to fsck."""
    directory = tmp_path / "s"
    make_store(directory)
    log = LogFile.open(OS_IO, str(directory))
    try:
        last = [frame for _, frame, _ in log.frames(FILE_HEADER_SIZE) if frame is not None][-1]
        salt = log.salt
    finally:
        log.close()
    with (directory / LOG_NAME).open("ab") as file:
        file.write(encode_frame(salt, KIND_PUT, FLAG_SYNCED, last.seq + 1, last.seq, cbor2.dumps(["k"])))
    with exclusive_store(directory) as log, pytest.raises(CorruptionError, match="filestore fsck") as info:
        replay(log)
    assert info.value.offset == last.end
    assert str(directory / LOG_NAME) in str(info.value)
