"""A handle's view of the log: the decoded-session cache, and reads of records damaged after open.

The cache keeps the ``cache_size`` sessions last read or written, evicting
the least recently used. A read that misses it re-reads and re-verifies the
record, so a record damaged on disk after the store opened is
``CorruptionError`` naming its offset, never wrong data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest

from filestore import CorruptionError, FileSessionStore, SessionKey
from filestore.engine.fileio import OS_IO
from filestore.engine.framing import FILE_HEADER_SIZE, Frame, encode_frame
from filestore.engine.layout import LOG_NAME
from filestore.engine.logfile import LogFile
from filestore.engine.logview import SessionCache

from .support import ctx, data
from .support.fileio import HookedIO

A, B, C = SessionKey("a"), SessionKey("b"), SessionKey("c")


def test_cache_evicts_the_least_recently_used() -> None:
    """Full, the cache drops the session least recently read or written, not the oldest written."""
    cache = SessionCache(2)
    cache.put(A, 10, data(step=1))
    cache.put(B, 20, data(step=2))
    assert cache.get(A, 10) == data(step=1)
    cache.put(C, 30, data(step=3))
    assert cache.get(B, 20) is None
    assert cache.get(A, 10) == data(step=1)
    assert cache.get(C, 30) == data(step=3)


def test_cache_answers_only_for_the_record_it_holds() -> None:
    """A cached session is returned only for the record offset it was decoded from; size 0 keeps nothing."""
    cache = SessionCache(2)
    cache.put(A, 10, data(step=1))
    assert cache.get(A, 11) is None
    cache.put(A, 11, data(step=2))
    assert cache.get(A, 11) == data(step=2)
    cache.drop(A)
    assert cache.get(A, 11) is None
    empty = SessionCache(0)
    empty.put(A, 10, data())
    assert empty.get(A, 10) is None


def test_store_rereads_a_session_evicted_from_its_cache(tmp_path: Path) -> None:
    """With cache_size=2, a get is one read (the peek for new records) while its session is cached,
    two once it was evicted; reading a session keeps it cached over one only written."""
    io = HookedIO()
    with FileSessionStore(tmp_path / "s", io=io, cache_size=2) as store:
        a, b, c = (store.create_session(ctx(user=user), data(ctx(user=user))) for user in ("ua", "ub", "uc"))

        def reads_for(key: str) -> int:
            io.calls.clear()
            assert store.get_session(key) is not None
            return io.calls["pread"]

        assert reads_for(b) == 1
        assert reads_for(a) == 2, "the first written was evicted by the third"
        assert reads_for(b) == 1, "read last but one: kept, while c (written before) was evicted"
        assert reads_for(c) == 2


# -- records damaged after the store opened --------------------------------------------


def frames(directory: Path) -> tuple[int, list[Frame]]:
    """The log's salt and verified frames."""
    log = LogFile.open(OS_IO, str(directory))
    try:
        return log.salt, [frame for _, frame, _ in log.frames(FILE_HEADER_SIZE) if frame is not None]
    finally:
        log.close()


def overwrite(directory: Path, offset: int, raw: bytes) -> None:
    with (directory / LOG_NAME).open("r+b") as log:
        log.seek(offset)
        log.write(raw)


def flip_a_byte(directory: Path, frame: Frame, salt: int) -> None:
    """A bit rots in the record's payload: its checksum fails."""
    raw = (directory / LOG_NAME).read_bytes()
    overwrite(directory, frame.end - 4, bytes([raw[frame.end - 4] ^ 0x01]))


def rewrite_with_a_valid_checksum(directory: Path, frame: Frame, salt: int) -> None:
    """The record is replaced, same size and a checksum that passes, by a session that is not one."""
    key, scope, session = cbor2.loads(frame.payload)
    payload = cbor2.dumps([key, scope, b"\xff" * len(session)])
    assert len(payload) == len(frame.payload)
    overwrite(
        directory,
        frame.offset,
        encode_frame(salt, frame.kind, frame.flags, frame.seq, frame.synced_through, payload),
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [(flip_a_byte, "no longer verifies"), (rewrite_with_a_valid_checksum, "does not decode")],
)
def test_get_of_a_record_damaged_after_open_is_corruption_never_wrong_data(
    tmp_path: Path, damage: Callable[[Path, Frame, int], None], message: str
) -> None:
    """get_session and find_by_user of the damaged session raise CorruptionError naming the record's
    offset; every other session still reads as written; the log is not changed by reading."""
    directory = tmp_path / "s"
    with FileSessionStore(directory, preallocate_bytes=0) as writer:
        keys = [writer.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(4)]
    with FileSessionStore(directory, cache_size=0) as store:
        salt, written = frames(directory)
        victim = written[1]
        damage(directory, victim, salt)
        damaged_log = (directory / LOG_NAME).read_bytes()
        with pytest.raises(CorruptionError, match=message) as info:
            store.get_session(keys[1])
        assert info.value.offset == victim.offset
        with pytest.raises(CorruptionError):
            store.find_by_user(ctx(user="u1"), "u1")
        for number, key in enumerate(keys):
            if number != 1:
                assert store.get_session(key) == data(ctx(user=f"u{number}"), step=number)
        assert (directory / LOG_NAME).read_bytes() == damaged_log
