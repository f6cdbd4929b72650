"""A damaged index snapshot (ZODB's Corruption.py cases) never costs data: it is refused and rewritten.

Every case reopens with every session and lookup intact, and leaves a valid
snapshot behind (``load_snapshot`` accepts it). A stale but valid snapshot
is extended: only the log after it is replayed.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest

from filestore import FileSessionStore
from filestore.fileio import OsFileIO
from filestore.logfile import LogFile
from filestore.snapshot import SNAPSHOT_HEADER_SIZE, decode_snapshot, load_snapshot

from .test_contract import ctx, data

Contents = tuple[dict[str, str], dict[str, str | None]]


def contents(directory: Path) -> Contents:
    with FileSessionStore(directory) as store:
        sessions = {
            str(key): found.to_json()
            for key in store.session_keys()
            if (found := store.get_session(key)) is not None
        }
        lookups = {
            user: None if (hit := store.find_by_user(ctx(), user)) is None else str(hit[0])
            for user in (f"u{n}" for n in range(12))
        }
    return sessions, lookups


def snapshot_is_valid(directory: Path) -> bool:
    io = OsFileIO()
    log = LogFile.open(io, str(directory))
    try:
        snapshot, _ = load_snapshot(io, str(directory / "sessions.idx"), log.fd, log.header, io.size(log.fd))
    finally:
        log.close()
    return snapshot is not None


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, bytes, Contents]:
    """A closed store of 45 sessions; its snapshot from 10 records before the end, and its final one."""
    directory = tmp_path_factory.mktemp("snapdamage") / "store"
    with FileSessionStore(directory) as opened:
        keys = [
            opened.create_session(ctx(user=f"u{n % 12}"), data(ctx(user=f"u{n % 12}"), step=n))
            for n in range(50)
        ]
        opened.write_snapshot()
        stale = (directory / "sessions.idx").read_bytes()
        for key in keys[:5]:
            opened.remove_session(key)
        for number, key in enumerate(keys[40:45]):
            opened.update_session(key, data(ctx(user=f"u{(40 + number) % 12}"), step=1000 + number))
    final = (directory / "sessions.idx").read_bytes()
    return directory, stale, final, contents(directory)


def rebuilt(body: dict[str, object]) -> bytes:
    encoded = cbor2.dumps(body)
    return struct.pack("<8sIIQ", b"FSTIDX\x00\n", 1, zlib.crc32(encoded), len(encoded)) + encoded


def edited(final: bytes, **changes: object) -> bytes:
    body = decode_snapshot(final)
    assert body is not None
    body.update(changes)
    return rebuilt(body)


def every_offset_at_the_header(final: bytes) -> bytes:
    body = decode_snapshot(final)
    assert body is not None
    count = len(body["keys"])
    return edited(final, offsets=struct.pack(f"<{count}Q", *([40] * count)))


def zeroed(final: bytes) -> bytes:
    damaged = bytearray(final)
    for start in range(SNAPSHOT_HEADER_SIZE, len(damaged), 97):
        damaged[start : start + 7] = bytes(len(damaged[start : start + 7]))
    return bytes(damaged)


def from_another_store(tmp_path: Path) -> bytes:
    with FileSessionStore(tmp_path / "other") as other:
        for n in range(50):
            other.create_session(ctx(user=f"u{n % 12}"), data(ctx(user=f"u{n % 12}"), step=n))
    return (tmp_path / "other" / "sessions.idx").read_bytes()


CASES: dict[str, Callable[[bytes, bytes, Path], bytes | None]] = {
    "truncated-to-half": lambda stale, final, tmp: final[: len(final) // 2],
    "zeroed-bytes": lambda stale, final, tmp: zeroed(final),
    "deleted": lambda stale, final, tmp: None,
    "stale": lambda stale, final, tmp: stale,
    "covers-beyond-the-log": lambda stale, final, tmp: edited(final, position=10**9),
    "wrong-position-inside-the-log": lambda stale, final, tmp: edited(final, position=1000),
    "wrong-generation": lambda stale, final, tmp: edited(final, generation=7),
    "wrong-entry-offsets": lambda stale, final, tmp: edited(
        final,
        offsets=struct.pack(f"<{len(final)}Q", *range(len(final)))[: len(decode_snapshot(final)["offsets"])],  # type: ignore[index]
    ),
    "from-another-store": lambda stale, final, tmp: from_another_store(tmp),
    "garbage": lambda stale, final, tmp: b"\x93garbage" * 50,
    "empty": lambda stale, final, tmp: b"",
}


@pytest.mark.parametrize("case", CASES)
def test_damaged_snapshot_costs_nothing(
    store: tuple[Path, bytes, bytes, Contents], tmp_path: Path, case: str
) -> None:
    """The store reopens with all its data, and the snapshot is valid again afterwards."""
    directory, stale, final, expected = store
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    damaged = CASES[case](stale, final, tmp_path)
    if damaged is None:
        (copy / "sessions.idx").unlink()
    else:
        (copy / "sessions.idx").write_bytes(damaged)
    assert contents(copy) == expected
    assert snapshot_is_valid(copy)
    assert contents(copy) == expected


def test_stale_snapshot_is_extended_not_rebuilt(
    store: tuple[Path, bytes, bytes, Contents], tmp_path: Path
) -> None:
    """With a valid snapshot 10 records old, opening replays only those 10 records."""
    directory, stale, _, expected = store
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    (copy / "sessions.idx").write_bytes(stale)

    class CountingIO(OsFileIO):
        replayed = 0

        def pread(self, fd: int, size: int, offset: int) -> bytes:
            if size > 4096:
                CountingIO.replayed += size
            return super().pread(fd, size, offset)

    with FileSessionStore(copy, io=CountingIO()) as opened:
        assert len(opened) == 45
    stale_body = decode_snapshot(stale)
    assert stale_body is not None
    tail = (copy / "sessions.log").stat().st_size - int(stale_body["position"])
    assert CountingIO.replayed <= tail + 4096
    assert contents(copy) == expected
