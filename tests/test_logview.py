"""A handle's view of the log: the decoded-session cache, and reads of records damaged after open.

The cache keeps the ``cache_size`` sessions last read or written, evicting
the least recently used. A read that misses it re-reads and re-verifies the
record, so a record damaged on disk after the store opened is
``CorruptionError`` naming its offset, never wrong data; so is a valid record of
another session, or of another owner, where the index points (a misdirected write),
or an older record of the same session (its sequence number is not the entry's).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest

from filestore import CorruptionError, FileSessionStore, SessionKey
from filestore.engine.fileio import OS_IO
from filestore.engine.framing import FILE_HEADER_SIZE, Frame, encode_frame
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME
from filestore.engine.logfile import LogFile
from filestore.engine.logview import SessionCache
from filestore.engine.snapshot import load_snapshot

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


# -- an older record of the same session where the index points: a silent rollback ------------


def updated_twice(directory: Path) -> tuple[SessionKey, Frame, Frame]:
    """acme/u1 created then updated (records of equal length), beside two other sessions, closed
    with a snapshot; its key, its first record and its newest."""
    owner = ctx(tenant="acme", user="u1")
    with FileSessionStore(directory, preallocate_bytes=0) as writer:
        writer.create_session(ctx(tenant="acme", user="u0"), data(ctx(tenant="acme", user="u0")))
        key = writer.create_session(owner, data(owner, step=1))
        writer.update_session(key, data(owner, step=2))
        # Not the last record: the snapshot names the last one, so its copy would be seen anyway.
        writer.create_session(ctx(tenant="evil", user="u1"), data(ctx(tenant="evil", user="u1")))
    mine = [frame for frame in frames(directory)[1] if cbor2.loads(frame.payload)[0] == key]
    first, newest = mine
    assert first.size == newest.size, "same length: the older copy verifies at the newest's place"
    return key, first, newest


@pytest.mark.parametrize("when", ["after open", "at rest, the snapshot's spot checks missing it"])
def test_an_older_record_of_the_session_is_corruption_never_a_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """acme/u1's first record (same key, owner and length) copied over its newest, where the index
    points: get_session, find_by_user and iter_sessions raise CorruptionError naming that offset and
    both record numbers, never the older value as the current one; the other sessions read as written."""
    directory = tmp_path / "s"
    key, first, newest = updated_twice(directory)
    raw = (directory / LOG_NAME).read_bytes()
    if when == "after open":
        store = FileSessionStore(directory, cache_size=0)
        overwrite(directory, newest.offset, raw[first.offset : first.end])
    else:
        overwrite(directory, newest.offset, raw[first.offset : first.end])
        monkeypatch.setattr("filestore.engine.snapshot.SPOT_CHECKS", 0)
        store = FileSessionStore(directory)
    with store:
        with pytest.raises(CorruptionError, match=f"record {first.seq}, not .* record {newest.seq}") as info:
            store.get_session(key)
        assert info.value.offset == newest.offset
        with pytest.raises(CorruptionError) as info:
            store.find_by_user(ctx(tenant="acme", user="u1"), "u1")
        assert info.value.offset == newest.offset
        with pytest.raises(CorruptionError) as info:
            list(store.iter_sessions())
        assert info.value.offset == newest.offset
        for tenant, user in (("acme", "u0"), ("evil", "u1")):
            owner = ctx(tenant=tenant, user=user)
            found = store.find_by_user(owner, user)
            assert found is not None
            assert found[1] == data(owner)


def test_online_compaction_refuses_an_older_record_of_the_session(tmp_path: Path) -> None:
    """Online compaction refuses (CorruptionError naming the offset) to copy acme/u1's first record
    found where its newest should be: the new generation would roll acme/u1 back. The log is untouched."""
    directory = tmp_path / "s"
    key, first, newest = updated_twice(directory)
    with FileSessionStore(directory) as store:
        raw = (directory / LOG_NAME).read_bytes()
        overwrite(directory, newest.offset, raw[first.offset : first.end])
        damaged = (directory / LOG_NAME).read_bytes()
        with pytest.raises(CorruptionError, match="not the one the index expects") as info:
            store.compact()
        assert info.value.offset == newest.offset
        assert (directory / LOG_NAME).read_bytes() == damaged
        assert len(store) == 3
        with pytest.raises(CorruptionError):
            store.get_session(key)


def test_the_snapshot_spot_check_refuses_an_older_record_where_an_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every entry spot-checked, a snapshot whose entry for acme/u1 points at a place now
    holding acme/u1's first record (right key and owner, wrong record number) is refused as not
    matching the records it points at; the store does not open on it with the older value."""
    directory = tmp_path / "s"
    _key, first, newest = updated_twice(directory)
    raw = (directory / LOG_NAME).read_bytes()
    overwrite(directory, newest.offset, raw[first.offset : first.end])
    monkeypatch.setattr("filestore.engine.snapshot.SPOT_CHECKS", 100)
    log = LogFile.open(OS_IO, str(directory))
    try:
        snapshot, why = load_snapshot(
            OS_IO, str(directory / SNAPSHOT_NAME), log.fd, log.header, OS_IO.size(log.fd)
        )
    finally:
        log.close()
    assert (snapshot, why) == (None, "entries do not match the records they point at")


@pytest.mark.parametrize("mode", ["fsync", "group", "none"])
@pytest.mark.parametrize("snapshot", [True, False])
def test_an_older_record_over_the_last_is_refused_not_cut_as_a_torn_tail(
    tmp_path: Path, mode: str, snapshot: bool
) -> None:
    """acme/u1's first record copied over its update, the log's last record: opening (from the
    snapshot, which no longer matches the log's end, or by replay) raises CorruptionError naming
    that offset and pointing at fsck --repair, changing no file; it never cuts the copy as a torn
    tail, which would show the older value as current."""
    directory = tmp_path / "s"
    owner = ctx(tenant="acme", user="u1")
    with FileSessionStore(directory, durability=mode, preallocate_bytes=0) as writer:
        writer.create_session(ctx(tenant="acme", user="u0"), data(ctx(tenant="acme", user="u0")))
        key = writer.create_session(owner, data(owner, step=1))
        writer.update_session(key, data(owner, step=2))
    *_, first, last = frames(directory)[1]
    assert first.size == last.size
    raw = (directory / LOG_NAME).read_bytes()
    overwrite(directory, last.offset, raw[first.offset : first.end])
    if not snapshot:
        (directory / SNAPSHOT_NAME).unlink()
    before = sorted((path.name, path.read_bytes()) for path in directory.iterdir())
    with pytest.raises(CorruptionError, match=r"copy of record 2 where record 3 belongs") as info:
        FileSessionStore(directory, durability=mode)
    assert (info.value.offset, info.value.path) == (last.offset, str(directory / LOG_NAME))
    assert "`filestore fsck --repair`" in str(info.value)
    assert sorted((path.name, path.read_bytes()) for path in directory.iterdir()) == before
