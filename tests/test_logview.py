"""A handle's view of the log: the decoded-session cache, and reads of records damaged after open.

The cache keeps the ``cache_size`` sessions last read or written, evicting
the least recently used. A read that misses it re-reads and re-verifies the
record, so a record damaged on disk after the store opened is
``CorruptionError`` naming its offset, never wrong data; so is a valid record of
another session, or of another owner, where the index points (a misdirected write).
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


# -- misdirected writes: a valid record of another session where the index points ----------


def two_tenants(directory: Path) -> tuple[dict[str, SessionKey], dict[str, int]]:
    """Sessions u0..u4 of tenant ``acme`` then of tenant ``evil`` (frames of equal sizes), closed with a
    snapshot; their keys and record offsets, named ``acme/u0``..."""
    keys: dict[str, SessionKey] = {}
    with FileSessionStore(directory, preallocate_bytes=0) as writer:
        for tenant in ("acme", "evil"):
            for number in range(5):
                owner = ctx(tenant=tenant, user=f"u{number}")
                keys[f"{tenant}/u{number}"] = writer.create_session(owner, data(owner, step=number))
    _salt, written = frames(directory)
    offsets = {name: frame.offset for name, frame in zip(keys, written, strict=True)}
    return keys, offsets


def copy_record(directory: Path, source: int, target: int) -> None:
    """A misdirected write: the whole valid frame at ``source`` lands again over the one at ``target``."""
    raw = (directory / LOG_NAME).read_bytes()
    by_offset = {frame.offset: frame for frame in frames(directory)[1]}
    moved, victim = by_offset[source], by_offset[target]
    assert moved.size == victim.size, "same length: the copy verifies at its new place"
    overwrite(directory, target, raw[moved.offset : moved.end])


def assert_every_read_of_acme_u1_is_corruption(store: FileSessionStore, key: SessionKey, offset: int) -> None:
    """get_session, find_by_user and iter_sessions raise CorruptionError naming ``offset``."""
    with pytest.raises(CorruptionError, match="not the one the index expects") as info:
        store.get_session(key)
    assert info.value.offset == offset
    with pytest.raises(CorruptionError) as info:
        store.find_by_user(ctx(tenant="acme", user="u1"), "u1")
    assert info.value.offset == offset
    with pytest.raises(CorruptionError) as info:
        list(store.iter_sessions())
    assert info.value.offset == offset


@pytest.mark.parametrize("when", ["after open", "at rest, the snapshot's spot checks missing it"])
def test_a_misdirected_record_is_corruption_never_another_tenants_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """With tenant evil's record copied over acme/u1's (a valid frame at the offset acme/u1's index
    entry points to), reading acme/u1 by key, by user or by iterating raises CorruptionError naming
    that offset, never evil's session; every other session reads as written."""
    directory = tmp_path / "s"
    keys, offsets = two_tenants(directory)
    if when == "after open":
        store = FileSessionStore(directory, cache_size=0)
        copy_record(directory, offsets["evil/u1"], offsets["acme/u1"])
    else:
        copy_record(directory, offsets["evil/u1"], offsets["acme/u1"])
        monkeypatch.setattr("filestore.engine.snapshot.SPOT_CHECKS", 0)
        store = FileSessionStore(directory)
    with store:
        assert_every_read_of_acme_u1_is_corruption(store, keys["acme/u1"], offsets["acme/u1"])
        for name, key in keys.items():
            if name != "acme/u1":
                tenant, user = name.split("/")
                owner = ctx(tenant=tenant, user=user)
                assert store.get_session(key) == data(owner, step=int(user[1:]))
                assert store.find_by_user(owner, user) == (key, data(owner, step=int(user[1:])))


def test_a_record_of_the_right_key_under_another_owner_is_corruption(tmp_path: Path) -> None:
    """A record that carries acme/u1's key but names tenant evil as its owner (a valid checksum) is
    CorruptionError on every read, never a session handed across tenants."""
    directory = tmp_path / "s"
    keys, offsets = two_tenants(directory)
    salt, written = frames(directory)
    victim = next(frame for frame in written if frame.offset == offsets["acme/u1"])
    key, scope, session = cbor2.loads(victim.payload)
    payload = cbor2.dumps([key, [scope[0], "evil", *scope[2:]], session])
    assert len(payload) == len(victim.payload)
    forged = encode_frame(salt, victim.kind, victim.flags, victim.seq, victim.synced_through, payload)
    with FileSessionStore(directory, cache_size=0) as store:
        overwrite(directory, victim.offset, forged)
        assert_every_read_of_acme_u1_is_corruption(store, keys["acme/u1"], victim.offset)


def test_online_compaction_refuses_a_misdirected_record(tmp_path: Path) -> None:
    """Online compaction, which copies records from where the index points without decoding them,
    refuses (CorruptionError naming the offset) to copy tenant evil's record found at acme/u1's
    place: the compacted store would have lost acme/u1 and held evil/u1 twice. The log is untouched."""
    directory = tmp_path / "s"
    keys, offsets = two_tenants(directory)
    with FileSessionStore(directory) as store:
        copy_record(directory, offsets["evil/u1"], offsets["acme/u1"])
        damaged = (directory / LOG_NAME).read_bytes()
        with pytest.raises(CorruptionError, match="not the one the index expects") as info:
            store.compact()
        assert info.value.offset == offsets["acme/u1"]
        assert (directory / LOG_NAME).read_bytes() == damaged
        assert len(store) == len(keys)
