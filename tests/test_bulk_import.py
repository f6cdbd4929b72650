"""Bulk import (issue 16): ``FileSessionStore.import_batch`` writes a batch with one sync, and
answers, stores and refuses exactly as ``import_session`` one session at a time does.

A batch is all or nothing when refused (checked whole before anything is written). A power loss
in the middle of one may keep any of its records, even a later one without an earlier one: the
crash-state test below checks that no session acknowledged before the batch is lost, that every
session of an acknowledged batch is there, and that importing the batch again completes it.
"""

from __future__ import annotations

import datetime
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filestore import CorruptionError, FileSessionStore, InMemorySessionStore, InvalidInputError
from filestore.backends import copy_sessions
from filestore.contract import StoredSession
from filestore.ids import SessionKey
from filestore.model import ReplyScope
from filestore.offline.fsck import fsck

from .support import ctx, data
from .support.clocks import ManualClock
from .support.crashsim import RecordingIO, crash_states
from .support.fileio import SyncLedger

MODES = ["fsync", "group", "none"]
USERS = ["u1", "u2", "u3", "u4"]


def exported(sessions: int, *, waits: bool = True, clock: ManualClock | None = None) -> list[StoredSession]:
    """Sessions as a memory store exports them: users with an active session, waits, a TTL, and
    sessions whose user has a newer one (so not active)."""
    source = InMemorySessionStore(clock=clock) if clock is not None else InMemorySessionStore()
    for number in range(sessions):
        user = USERS[number % len(USERS)]
        tenant = ctx(user=user)
        key = source.create_session(tenant, data(tenant, step=number))
        if waits and number % 3 == 0:
            ttl = datetime.timedelta(hours=1) if number % 2 else None
            scope = ReplyScope(f"conversation-{number}")
            source.register_wait(tenant, user, scope, key, data(tenant, step=number + 100), ttl)
    return list(source.iter_sessions())


def contents(store: FileSessionStore) -> set[StoredSession]:
    return set(store.iter_sessions())


@st.composite
def imports(draw: st.DrawFn) -> tuple[list[StoredSession], list[StoredSession], list[int]]:
    """A source's sessions, the ones a target already holds, and how the rest are cut in batches."""
    sessions = exported(draw(st.integers(0, 24)))
    before = [session for session in sessions if draw(st.booleans())] if draw(st.booleans()) else []
    cuts = sorted(draw(st.sets(st.integers(1, max(len(sessions) - 1, 1)), max_size=4)))
    return sessions, before, cuts


@pytest.mark.parametrize("durability", MODES)
def test_a_batch_answers_and_stores_as_one_session_at_a_time(tmp_path: Path, durability: str) -> None:
    """For any sessions, some already there, cut into any batches: import_batch's answers and the
    store it leaves equal import_session's, one session at a time, on a fresh store each time."""
    runs = iter(range(10_000))

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(imports())
    def check(case: tuple[list[StoredSession], list[StoredSession], list[int]]) -> None:
        sessions, before, cuts = case
        run = next(runs)
        with (
            FileSessionStore(tmp_path / f"b{run}", durability=durability) as batched,
            FileSessionStore(tmp_path / f"o{run}", durability=durability) as one_by_one,
        ):
            for session in before:
                batched.import_session(session)
                one_by_one.import_session(session)
            answers: list[bool] = []
            for start, stop in zip([0, *cuts], [*cuts, len(sessions)], strict=True):
                answers.extend(batched.import_batch(sessions[start:stop]))
            assert answers == [one_by_one.import_session(session) for session in sessions]
            assert contents(batched) == contents(one_by_one) == set(sessions)
        with FileSessionStore(tmp_path / f"b{run}") as reopened:
            assert contents(reopened) == set(sessions)
        shutil.rmtree(tmp_path / f"b{run}")
        shutil.rmtree(tmp_path / f"o{run}")

    check()


@pytest.mark.parametrize("durability", ["fsync", "group"])
def test_a_batch_is_made_durable_by_one_sync(tmp_path: Path, durability: str) -> None:
    """Sixty sessions, one fdatasync (import_session: one each)."""
    sessions = exported(60)
    io = SyncLedger()
    with FileSessionStore(tmp_path / "s", durability=durability, io=io) as store:
        mark = io.mark()
        assert store.import_batch(sessions) == [True] * 60
        events = io.ledger[mark:]
    assert sum(landed.event == "record" for landed in events) >= 60
    assert sum(landed.event == "sync" for landed in events) == 1


def test_a_refused_batch_writes_nothing(tmp_path: Path) -> None:
    """A batch with a session the store holds differently, a key twice, or two keys claiming one
    wait is refused whole: InvalidInputError, and the log is byte for byte as before."""
    sessions = exported(8)
    first = sessions[0]
    changed = StoredSession(first.key, first.scope, data(ctx(user="u1"), step=999), first.active)
    with FileSessionStore(tmp_path / "s") as store:
        store.import_session(first)
        log = (tmp_path / "s" / "sessions.log").read_bytes()
        waited = next(session for session in sessions if session.wait is not None)
        twin = attrs.evolve(waited, key=SessionKey(str(uuid.uuid4())))
        for batch, why in [
            ([*sessions[2:], changed], "already holds a different session"),
            ([*sessions[2:], sessions[3]], "twice in one batch"),
            ([waited, twin], "claim the wait"),
        ]:
            with pytest.raises(InvalidInputError, match=why):
                store.import_batch(batch)
            assert (tmp_path / "s" / "sessions.log").read_bytes() == log
        assert contents(store) == {first}


def test_an_expired_session_is_replaced_in_a_batch(tmp_path: Path) -> None:
    """A key whose session has expired in the store takes the batch's session, as import_session
    does (its lookups and wait go with the old one)."""
    clock = ManualClock()
    sessions = exported(6, clock=clock)
    timed = [session for session in sessions if session.deadline_ms is not None]
    assert timed
    with FileSessionStore(tmp_path / "s", clock=clock) as store:
        store.import_batch(sessions)
        clock.advance(2 * 3600 * 1000)
        assert all(store.get_session(session.key) is None for session in timed)
        fresh = [StoredSession(s.key, s.scope, s.data, s.active) for s in timed]
        assert store.import_batch(fresh) == [True] * len(fresh)
        assert {store.get_session(session.key) for session in fresh} == {session.data for session in fresh}


def recovered(where: Path) -> set[StoredSession]:
    """What a crashed store holds once opened; refused as damage in the middle, after the repair."""
    try:
        with FileSessionStore(where) as store:
            return contents(store)
    except CorruptionError:
        assert fsck(where, repair=True).exit_code in {1, 4}
        with FileSessionStore(where) as store:
            return contents(store)


def crash_directories(tmp_path: Path, durability: str) -> Iterator[tuple[Path, bool, list[StoredSession]]]:
    """Every state a power loss could leave around one import_batch (of sessions some of which
    the store already holds): (directory, whether the batch had returned, the batch)."""
    sessions = exported(9)
    directory = tmp_path / "recorded"
    with FileSessionStore(directory, durability=durability) as store:
        for session in sessions[:3]:
            store.import_session(session)
    io = RecordingIO(directory)
    with FileSessionStore(directory, durability=durability, io=io) as store:
        io.begin(0)
        store.import_batch(sessions[1:])
        io.end(0)
    where = tmp_path / "crashed"
    for state in crash_states(io.initial, io.ops):
        if where.exists():
            shutil.rmtree(where)
        state.write_to(where)
        where.chmod(0o700)
        yield where, state.acknowledged_calls >= 1, sessions


@pytest.mark.parametrize("durability", ["fsync", "group"])
def test_a_power_loss_during_a_batch_loses_nothing_acknowledged(tmp_path: Path, durability: str) -> None:
    """At every crash point around a batch, in every state the model allows: the sessions stored
    before it are intact; every session is one the source holds; once the batch returned, all of
    it is there; and importing the batch again leaves the whole source."""
    explored = 0
    for where, returned, sessions in crash_directories(tmp_path, durability):
        held = recovered(where)
        assert set(sessions[:3]) <= held
        assert held <= set(sessions)
        if returned:
            assert held == set(sessions)
        with FileSessionStore(where) as store:
            store.import_batch(sessions[1:])
            assert contents(store) == set(sessions)
        explored += 1
    assert explored > 20


def test_a_batch_keeps_the_lookup_where_one_at_a_time_leaves_it(tmp_path: Path) -> None:
    """A batch whose new session takes a user's lookup, then names the session the store already
    had active for that user as active again (an import file listing both as active, re-run):
    one at a time the later line takes the lookup back, and so must the batch (it skipped the
    later line as already active, leaving the lookup on the earlier one)."""
    source = InMemorySessionStore()
    tenant = ctx(user="u1")
    first = source.create_session(tenant, data(tenant, step=1))
    second = source.create_session(tenant, data(tenant, step=2))
    listed = {session.key: attrs.evolve(session, active=True) for session in source.iter_sessions()}
    with (
        FileSessionStore(tmp_path / "b") as batched,
        FileSessionStore(tmp_path / "o") as one_by_one,
    ):
        for store in (batched, one_by_one):
            store.import_session(listed[first])
        answers = batched.import_batch([listed[second], listed[first]])
        one_at_a_time = [one_by_one.import_session(listed[key]) for key in (second, first)]
        assert answers == one_at_a_time
        assert contents(batched) == contents(one_by_one)
        assert {session.key for session in contents(batched) if session.active} == {first}


def test_a_refused_batch_taken_one_at_a_time_counts_what_it_stored(tmp_path: Path) -> None:
    """A batch refused for one session is taken again one at a time: the sessions before the
    refused one are stored, and progress is told of each of them, so a refused or interrupted
    import or migrate says how far it really got."""
    sessions = exported(9, waits=False)
    conflicting = sessions[5]
    changed = StoredSession(conflicting.key, conflicting.scope, data(ctx(user="u2"), step=999), False)
    told: list[int] = []
    with FileSessionStore(tmp_path / "s") as store:
        store.import_session(changed)
        with pytest.raises(InvalidInputError, match="different session"):
            copy_sessions(store, enumerate(sessions, 1), progress=told.append)
        assert contents(store) == {changed, *sessions[:5]}
    assert told == [1] * 5
