"""Wait routing and TTLs on the file store: what survives a reopen, a snapshot and a compaction.

The transcripts (tests/test_transcripts.py) check the answers op by op on
every durability mode; these pin what only a store on disk can get wrong:
the records and snapshot that carry waits and deadlines, compaction's copy
of them, expiry against the clock after a restart, and another handle
catching up with scope entries it did not write.
"""

from __future__ import annotations

import datetime
import multiprocessing
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from filestore import (
    FileSessionStore,
    InMemorySessionStore,
    InvalidInputError,
    ReplyScope,
    SessionKey,
    SessionNotFoundError,
    StoredSession,
)
from filestore.engine.fileio import OS_IO
from filestore.engine.framing import FILE_HEADER_SIZE, KIND_PUT, KIND_REMOVE
from filestore.engine.layout import SNAPSHOT_NAME
from filestore.engine.logfile import LogFile
from filestore.engine.records import Put, decode_record
from filestore.engine.snapshot import SNAPSHOT_VERSION, decode_snapshot, encode_snapshot, load_snapshot
from filestore.ids import SessionScope
from filestore.offline.compact import compact
from filestore.offline.exclusive import replay
from filestore.offline.fsck import FsckSeverity, fsck
from filestore.offline.stats import stats

from .support import ctx, data
from .support.clocks import ManualClock

SCOPE = ReplyScope("chat-1", thread="topic-9")
OTHER_SCOPE = ReplyScope("chat-2")
KEY_A = SessionKey("tenant:provider:a:u1")
KEY_B = SessionKey("tenant:provider:b:u1")
MINUTE = datetime.timedelta(minutes=1)
FORK = multiprocessing.get_context("fork")
OWNER = SessionScope.parse(["dev", "acme", "support", "u1"])


def _open(path: Path, clock: ManualClock, snapshot_every_records: int = 1000) -> FileSessionStore:
    return FileSessionStore(
        path, clock=clock, durability="none", snapshot_every_records=snapshot_every_records
    )


def _records(path: Path) -> list[tuple[int, object]]:
    """Every record of the store's current log, decoded, with its kind."""
    log = LogFile.open(OS_IO, str(path), readonly=True)
    try:
        return [
            (frame.kind, decode_record(frame.kind, frame.payload))
            for _, frame, _ in log.frames(FILE_HEADER_SIZE, stop=OS_IO.size(log.fd))
            if frame is not None
        ]
    finally:
        log.close()


def _state(store: FileSessionStore | InMemorySessionStore) -> list[StoredSession]:
    return sorted(store.iter_sessions(), key=lambda stored: stored.key)


def test_waits_and_deadlines_survive_a_reopen(tmp_path: Path) -> None:
    """A wait and its deadline are on disk: after a reopen (log replay, no snapshot) the scope
    finds the key, the user lists it, and iter_sessions gives the same wait and deadline."""
    clock = ManualClock()
    with _open(tmp_path, clock, snapshot_every_records=1000) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data(), MINUTE)
        store.register_wait(ctx(), "u1", OTHER_SCOPE, KEY_B, data(step=1))
        before = _state(store)
    (tmp_path / SNAPSHOT_NAME).unlink()
    with _open(tmp_path, clock) as store:
        assert _state(store) == before
        assert before[0].deadline_ms == clock() + 60_000
        assert before[0].wait == SCOPE.scope_hash()
        assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == KEY_A
        assert store.list_waits_for_user(ctx(), "u1") == [KEY_A, KEY_B]


def test_the_snapshot_round_trips_waits_and_deadlines(tmp_path: Path) -> None:
    """Snapshot version 4 holds each entry's wait and deadline: the index it loads equals the
    one replaying the log builds, scope entries included (a taken-over wait too)."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data(), MINUTE)
        store.register_wait(ctx(), "u1", SCOPE, KEY_B, data(step=1))  # A loses the wait
        store.register_wait(ctx(), "u1", OTHER_SCOPE, KEY_A, data(step=2), MINUTE * 2)
        store.write_snapshot()
    log = LogFile.open(OS_IO, str(tmp_path), readonly=True)
    try:
        snapshot, why = load_snapshot(
            OS_IO, str(tmp_path / SNAPSHOT_NAME), log.fd, log.header, OS_IO.size(log.fd)
        )
        replayed, _ = replay(log)
    finally:
        log.close()
    assert snapshot is not None, why
    assert SNAPSHOT_VERSION == 5
    assert snapshot.index.entries == replayed.entries
    assert snapshot.index.waits == replayed.waits
    owner = next(iter(replayed.waits))
    assert replayed.waits[owner] == {SCOPE.scope_hash(): KEY_B, OTHER_SCOPE.scope_hash(): KEY_A}
    assert replayed.entries[KEY_A].deadline == clock() + 120_000


def test_a_version_3_snapshot_is_ignored_and_the_log_replayed(tmp_path: Path) -> None:
    """A snapshot of the previous format is refused (a warning), and the store opens by replay."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data(), MINUTE)
    snapshot = tmp_path / SNAPSHOT_NAME
    raw = bytearray(snapshot.read_bytes())
    raw[8:12] = (3).to_bytes(4, "little")
    snapshot.write_bytes(bytes(raw))
    with _open(tmp_path, clock) as store:
        assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == KEY_A


@pytest.mark.parametrize("how", ["online", "offline"])
def test_compaction_keeps_a_taken_over_wait_with_its_new_key(tmp_path: Path, how: str) -> None:
    """A registers at a scope, B takes it over: after compaction (and a reopen) the scope finds
    B and the user lists only B. A's live record still names the wait, so the new generation
    must hold it re-encoded without it (whatever order the records are copied in)."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data())
        store.register_wait(ctx(), "u1", SCOPE, KEY_B, data(step=1))
        if how == "online":
            store.compact()
            assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == KEY_B
    if how == "offline":
        compact(tmp_path, clock=clock)
    puts = {record.key: record for kind, record in _records(tmp_path) if isinstance(record, Put)}
    assert puts[KEY_A].wait is None
    assert puts[KEY_B].wait == SCOPE.scope_hash()
    with _open(tmp_path, clock) as store:
        assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == KEY_B
        assert store.list_waits_for_user(ctx(), "u1") == [KEY_B]
        assert store.get_session(KEY_A) == data()


@pytest.mark.parametrize("how", ["online", "offline"])
def test_compaction_drops_expired_sessions(tmp_path: Path, how: str) -> None:
    """An expired session's record is not copied: the new generation holds only the live one."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data(), MINUTE)
        store.register_wait(ctx(), "u1", OTHER_SCOPE, KEY_B, data(step=1), MINUTE * 3)
        clock.advance(120_000)
        if how == "online":
            store.compact()
    if how == "offline":
        compact(tmp_path, clock=clock)
    assert [record.key for _, record in _records(tmp_path)] == [KEY_B]  # type: ignore[attr-defined]
    with _open(tmp_path, clock) as store:
        assert store.list_waits_for_user(ctx(), "u1") == [KEY_B]
        assert len(store) == 1


def test_purge_expired_removes_every_expired_session(tmp_path: Path) -> None:
    """purge_expired writes a REMOVE for each expired session and counts them; a second purge
    finds none; a session without a TTL, or not yet expired, stays."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data(), MINUTE)
        store.register_wait(ctx(user="u2"), "u2", SCOPE, KEY_B, data(ctx(user="u2")), MINUTE)
        kept = store.create_session(ctx(), data(step=5))
        later = SessionKey("later")
        store.register_wait(ctx(), "u1", OTHER_SCOPE, later, data(step=6), MINUTE * 10)
        clock.advance(60_000)  # exactly the deadline: expired
        assert store.purge_expired() == 2
        assert store.purge_expired() == 0
        removed = [record.key for kind, record in _records(tmp_path) if kind == KIND_REMOVE]  # type: ignore[attr-defined]
        assert sorted(removed) == sorted([KEY_A, KEY_B])
    with _open(tmp_path, clock) as store:
        assert sorted(store.session_keys()) == sorted([kept, later])
        assert store.list_waits_for_user(ctx(), "u1") == [later]


def test_expired_sessions_are_invisible_after_a_reopen_with_an_advanced_clock(tmp_path: Path) -> None:
    """The deadline is absolute: a store reopened once the clock passed it answers as if the
    session were gone, to every call, though its records are still in the log."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data(), MINUTE)
    clock.advance(60_000)
    with _open(tmp_path, clock) as store:
        assert store.get_session(KEY_A) is None
        assert store.find_wait_by_scope(ctx(), "u1", SCOPE) is None
        assert store.list_waits_for_user(ctx(), "u1") == []
        assert store.find_by_user(ctx(), "u1") is None
        assert list(store.iter_sessions()) == []
        assert len(store) == 0
        with pytest.raises(SessionNotFoundError):
            store.update_session(KEY_A, data(step=1))
        with pytest.raises(SessionNotFoundError):
            store.remove_session(KEY_A)
    assert any(isinstance(record, Put) for _, record in _records(tmp_path))


def test_update_keeps_the_wait_and_the_deadline(tmp_path: Path) -> None:
    """update_session writes the entry's current wait and deadline (a KEEPTTL update), and none
    once another key took the wait over: a reopen then still routes the scope to that key."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data(), MINUTE)
        store.update_session(KEY_A, data(step=1))
        assert _state(store)[0].deadline_ms == clock() + 60_000
        store.register_wait(ctx(), "u1", SCOPE, KEY_B, data(step=2))
        store.update_session(KEY_A, data(step=3))
    with _open(tmp_path, clock) as store:
        assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == KEY_B
        assert {stored.key: stored.wait for stored in store.iter_sessions()} == {
            KEY_A: None,
            KEY_B: SCOPE.scope_hash(),
        }
        clock.advance(60_000)
        assert store.get_session(KEY_A) is None


def test_registering_over_an_expired_key_starts_afresh(tmp_path: Path) -> None:
    """An expired key is free: registering there removes it first (its user lookup goes, as the
    memory store drops it), in the same batch as the new PUT; both stores then agree."""
    clock = ManualClock()
    file_store = _open(tmp_path, clock)
    memory = InMemorySessionStore(clock=clock)
    try:
        for store in (file_store, memory):
            key = store.create_session(ctx(), data())
            store.remove_session(key)
            store.import_session(StoredSession(KEY_A, OWNER, data(), True, None, clock() + 10))
        clock.advance(10)
        for store in (file_store, memory):
            store.register_wait(ctx(), "u1", SCOPE, KEY_A, data(step=1))
        assert _state(file_store) == _state(memory)
        assert not _state(file_store)[0].active
        kinds = [kind for kind, _ in _records(tmp_path)][-2:]
        assert kinds == [KIND_REMOVE, KIND_PUT]
    finally:
        file_store.close()


def test_find_by_user_falls_back_to_the_only_wait(tmp_path: Path) -> None:
    """With no lookup (or one pointing at an expired session), find_by_user answers from the
    waits: none, the only one, or InvalidInputError for several."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        assert store.find_by_user(ctx(), "u1") is None
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data())
        assert store.find_by_user(ctx(), "u1") == (KEY_A, data())
        store.register_wait(ctx(), "u1", OTHER_SCOPE, KEY_B, data(step=1))
        with pytest.raises(InvalidInputError, match="multiple waits"):
            store.find_by_user(ctx(), "u1")
        created = store.create_session(ctx(), data(step=2))
        assert store.find_by_user(ctx(), "u1") == (created, data(step=2))


def test_import_refuses_a_wait_another_live_key_holds(tmp_path: Path) -> None:
    """import_session stores wait and deadline; a wait whose scope entry another live key holds
    is refused (nothing written); once that key expired, the import takes the entry."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data(), MINUTE)
        size = (tmp_path / "sessions.log").stat().st_size
        wanted = StoredSession(KEY_B, OWNER, data(step=1), False, SCOPE.scope_hash(), None)
        with pytest.raises(InvalidInputError, match="held by another key"):
            store.import_session(wanted)
        assert (tmp_path / "sessions.log").stat().st_size == size
        clock.advance(60_000)
        assert store.import_session(wanted)
        assert not store.import_session(wanted)
        assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == KEY_B


def _register_in_child(directory: str, done: Connection) -> None:
    with FileSessionStore(directory) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_B, data(step=1), MINUTE)
    done.send("registered")
    done.close()


def test_another_process_sees_a_wait_and_its_take_over(tmp_path: Path) -> None:
    """A handle open in this process catches up with a registration another process wrote: the
    scope now finds the other key, and the key that held it has lost its wait."""
    with FileSessionStore(tmp_path) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data())
        receive, send = FORK.Pipe(duplex=False)
        child = FORK.Process(target=_register_in_child, args=(str(tmp_path), send))
        child.start()
        assert receive.recv() == "registered"
        child.join()
        assert child.exitcode == 0
        assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == KEY_B
        assert store.list_waits_for_user(ctx(), "u1") == [KEY_B]
        assert {stored.key: stored.wait for stored in store.iter_sessions()}[KEY_A] is None


def test_stats_counts_expired_sessions_and_waits(tmp_path: Path) -> None:
    """stats counts the sessions still in the log, the expired ones among them, and live waits."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data(), MINUTE)
        store.register_wait(ctx(), "u1", OTHER_SCOPE, KEY_B, data(step=1))
        store.create_session(ctx(), data(step=2))
    clock.advance(60_000)
    report = stats(tmp_path, clock=clock)
    assert (report.sessions, report.expired, report.waits, report.users) == (3, 1, 1, 1)


def test_fsck_reports_a_wait_of_a_session_whose_data_names_another_user(tmp_path: Path) -> None:
    """A PUT carrying a wait whose data names a user other than its owner's (which
    register_wait refuses) is a wait-user finding; repair rewrites it without the wait."""
    with FileSessionStore(tmp_path) as store:
        store.create_session(ctx(), data())  # a store with a log and its identity
    log = LogFile.open(OS_IO, str(tmp_path))
    try:
        log.adopt(log.scan(FILE_HEADER_SIZE, 1, lambda frame: None))
        bad = Put(KEY_A, OWNER, data(ctx(user="u2")).to_cbor(), False, SCOPE.scope_hash(), None)
        log.append(KIND_PUT, bad.encode(), sync=True, preallocate=0)
    finally:
        log.close()
    report = fsck(tmp_path)
    assert [finding.kind for finding in report.findings if finding.kind == "wait-user"] == ["wait-user"]
    fsck(tmp_path, repair=True)
    assert not [finding for finding in fsck(tmp_path).findings if finding.severity is FsckSeverity.ERROR]
    puts = [record for _, record in _records(tmp_path) if isinstance(record, Put) and record.key == KEY_A]
    assert [put.wait for put in puts] == [None]


def test_fsck_flags_a_snapshot_whose_wait_columns_disagree(tmp_path: Path) -> None:
    """A snapshot that verifies but gives a key a wait the log does not is a snapshot finding
    naming the waits; repair rewrites the snapshot from the log."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data())
        store.register_wait(ctx(), "u1", SCOPE, KEY_B, data(step=1))
        store.write_snapshot()
    log = LogFile.open(OS_IO, str(tmp_path), readonly=True)
    try:
        snapshot, _ = load_snapshot(
            OS_IO, str(tmp_path / SNAPSHOT_NAME), log.fd, log.header, OS_IO.size(log.fd)
        )
        assert snapshot is not None
        index = snapshot.index
        body = decode_snapshot((tmp_path / SNAPSHOT_NAME).read_bytes())
        assert body is not None
        # B's wait moved back to A: a disagreement only in the wait columns.
        index.entries[KEY_A] = index.entries[KEY_A]._replace(wait=SCOPE.scope_hash())
        index.entries[KEY_B] = index.entries[KEY_B]._replace(wait=None)
        forged = encode_snapshot(
            log.header,
            index,
            position=body["position"],
            last_seq=body["last_seq"],
            last_frame_offset=body["last_frame_offset"],
            last_frame_crc=body["last_frame_crc"],
        )
    finally:
        log.close()
    (tmp_path / SNAPSHOT_NAME).write_bytes(forged)
    findings = [finding for finding in fsck(tmp_path).findings if finding.kind == "snapshot"]
    assert [finding.detail for finding in findings] == [
        "the snapshot disagrees with the index rebuilt from the log (its waits or deadlines)"
    ]
    fsck(tmp_path, repair=True)
    assert not [finding for finding in fsck(tmp_path).findings if finding.kind == "snapshot"]


def test_the_longest_ttl_is_a_deadline_within_int64(tmp_path: Path) -> None:
    """timedelta.max is a valid TTL (about 8.6e16 ms, its last microseconds rounded up to a
    whole millisecond): its deadline is stored and read back."""
    clock = ManualClock()
    with _open(tmp_path, clock) as store:
        store.register_wait(ctx(), "u1", SCOPE, KEY_A, data(), datetime.timedelta.max)
        expected = clock() + datetime.timedelta.max // datetime.timedelta(milliseconds=1) + 1
    with _open(tmp_path, clock) as store:
        assert [stored.deadline_ms for stored in store.iter_sessions()] == [expected]
