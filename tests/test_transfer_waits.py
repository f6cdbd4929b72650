"""Export, import and migrate carry waits and TTL deadlines (issue 14), on every backend.

An exported line gains ``wait`` (the reply scope's ``scope_hash``) and
``deadline_ms`` only when the session has them, so other lines stay export
format 1. An expired session is not exported; a line whose deadline has
passed is skipped by import and counted as ``expired``; a malformed wait or
deadline refuses its batch, naming the line, before anything is written.
After an import or a migration, the target routes the reply scope to the
same key.
"""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, cast

import pytest

from filestore import (
    InMemorySessionStore,
    InvalidInputError,
    RedisSessionStore,
    ReplyScope,
    SessionKey,
    SessionScope,
    SessionStore,
    StoredSession,
    export_sessions,
    import_sessions,
    migrate,
)
from filestore.backends import MovableStore
from filestore.transfer import parse_line, session_line
from filestore.waits import system_clock

from .support import ctx, data
from .support.backends import Backend
from .support.clocks import ManualClock, ServerClock

REPLY: Final = ReplyScope(conversation="chat-1", thread="topic-9")
HOUR: Final = datetime.timedelta(hours=1)
HOUR_MS: Final = 3_600_000
OWNER: Final = SessionScope(ctx().env, ctx().tenant_id, ctx().team_id, ctx().user_id)


def movable(store: SessionStore) -> MovableStore:
    assert isinstance(store, MovableStore)
    return store


@pytest.fixture
def target(backend: Backend, tmp_path: Path) -> Iterator[MovableStore]:
    """A second empty store of the same backend (the ``store`` fixture is the first)."""
    opened = movable(backend.open(tmp_path / "target"))
    try:
        yield opened
    finally:
        opened.close()


def with_a_wait(store: SessionStore) -> tuple[SessionKey, SessionKey]:
    """A wait of u1 at ``REPLY`` with a one-hour TTL, and u2's plain session: their keys."""
    waiting = SessionKey("k-wait")
    store.register_wait(ctx(), "u1", REPLY, waiting, data(step=1), ttl=HOUR)
    plain = store.create_session(ctx(user="u2"), data(ctx(user="u2"), step=2))
    return waiting, plain


def exported(store: SessionStore) -> list[dict[str, Any]]:
    out = io.StringIO()
    count = export_sessions(movable(store), out)
    lines = [cast(dict[str, Any], json.loads(line)) for line in out.getvalue().splitlines()]
    assert len(lines) == count
    return sorted(lines, key=lambda line: str(line["key"]))


def line(key: str = "k-1", *, base: StoredSession | None = None, **fields: object) -> str:
    """An export line of ``base`` (default: u1's session ``key``), with ``fields`` set as given."""
    if base is None:
        base = StoredSession(SessionKey(key), OWNER, data(), True)
    doc: dict[str, object] = json.loads(session_line(base))
    doc.update(fields)
    return json.dumps(doc)


def test_export_writes_wait_and_deadline_only_when_set(store: SessionStore) -> None:
    """The wait's line has its scope hash and its deadline (now + TTL, in ms, by the clock the
    store's TTLs run on: Redis's own for Redis); the plain line has neither."""
    # Redis sets a TTL by its own clock, which may be a millisecond behind ours. It keeps a key
    # through its expiry millisecond, so the deadline (the first millisecond it is gone) is the
    # expiry time + 1: up to after + TTL + 1 when the script ran in the millisecond of `after`.
    on_redis = isinstance(store, RedisSessionStore)
    clock: Callable[[], int] = ServerClock() if on_redis else system_clock
    before = clock()
    waiting, plain = with_a_wait(store)
    after = clock()
    by_key = {line["key"]: line for line in exported(store)}
    assert by_key[str(waiting)]["wait"] == REPLY.scope_hash()
    assert before + HOUR_MS + on_redis <= by_key[str(waiting)]["deadline_ms"] <= after + HOUR_MS + on_redis
    assert "wait" not in by_key[str(plain)]
    assert "deadline_ms" not in by_key[str(plain)]


def test_export_leaves_out_an_expired_session(store: SessionStore) -> None:
    """A session whose deadline has passed is not exported; a live one with a deadline is."""
    live_deadline = system_clock() + HOUR_MS
    store = movable(store)
    assert store.import_session(StoredSession(SessionKey("k-gone"), OWNER, data(step=1), False, None, 1))
    store.import_session(StoredSession(SessionKey("k-live"), OWNER, data(step=2), True, None, live_deadline))
    assert [(line["key"], line["deadline_ms"]) for line in exported(store)] == [("k-live", live_deadline)]


def test_a_line_with_a_wait_and_a_deadline_parses_back_to_its_session() -> None:
    """session_line then parse_line gives the same StoredSession, wait and deadline included."""
    stored = StoredSession(SessionKey("k-1"), OWNER, data(), False, REPLY.scope_hash(), 1_800_000_000_000)
    assert parse_line(session_line(stored), 1) == stored


def test_a_format_1_line_or_null_fields_import_as_no_wait_and_no_deadline() -> None:
    """A line without wait or deadline_ms (an older export), or with them null, has neither."""
    for text in (line(), line(wait=None, deadline_ms=None)):
        parsed = parse_line(text, 1)
        assert (parsed.wait, parsed.deadline_ms) == (None, None)
    assert '"wait":' not in line()
    assert '"wait": null' in line(wait=None)


def test_export_then_import_routes_the_reply_scope_to_the_same_key(
    store: SessionStore, target: MovableStore
) -> None:
    """After export and import, the target finds the wait by its scope and lists it; a re-run skips all."""
    waiting, plain = with_a_wait(store)
    lines = [json.dumps(line) for line in exported(store)]
    report = import_sessions(target, lines)
    assert (report.lines, report.imported, report.already_there, report.expired) == (2, 2, 0, 0)
    assert target.find_wait_by_scope(ctx(), "u1", REPLY) == waiting
    assert target.list_waits_for_user(ctx(), "u1") == [waiting]
    assert target.get_session(plain) == data(ctx(user="u2"), step=2)
    assert exported(target) == exported(store)
    again = import_sessions(target, lines)
    assert (again.imported, again.already_there, again.expired) == (0, 2, 0)


def test_migrate_keeps_waits_and_deadlines(store: SessionStore, target: MovableStore) -> None:
    """migrate copies the wait and its deadline: find_wait_by_scope on the target gives the same key."""
    waiting, _plain = with_a_wait(store)
    report = migrate(movable(store), target)
    assert (report.source_sessions, report.copied) == (2, 2)
    assert target.find_wait_by_scope(ctx(), "u1", REPLY) == waiting
    assert target.list_waits_for_user(ctx(), "u1") == [waiting]
    assert exported(target) == exported(store)


def test_import_skips_and_counts_a_session_whose_deadline_has_passed(store: SessionStore) -> None:
    """A deadline at or before the import's clock is skipped (counted as expired, progress called)."""
    clock = ManualClock()
    now = clock()
    lines = [
        line("k-past", deadline_ms=1),
        line("k-now", deadline_ms=now, wait=REPLY.scope_hash()),
        line("k-later", deadline_ms=now + 1),
    ]
    calls: list[int] = []
    report = import_sessions(movable(store), lines, clock=clock, progress=calls.append)
    assert (report.lines, report.imported, report.already_there, report.expired) == (3, 1, 0, 2)
    assert calls == [1, 1, 1]
    assert store.get_session("k-past") is None
    assert store.get_session("k-now") is None
    assert store.find_wait_by_scope(ctx(), "u1", REPLY) is None
    assert report.to_dict() == {"lines": 3, "imported": 1, "already_there": 0, "expired": 2}


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"wait": "not-a-hash"}, "wait"),
        ({"wait": REPLY.scope_hash().upper()}, "wait"),
        ({"wait": 7}, "wait"),
        ({"deadline_ms": "soon"}, "deadline_ms"),
        ({"deadline_ms": 1.5}, "deadline_ms"),
        ({"deadline_ms": -1}, "deadline_ms"),
        ({"deadline_ms": 2**63}, "deadline_ms"),
        ({"deadline_ms": True}, "deadline_ms"),
    ],
)
def test_import_refuses_a_malformed_wait_or_deadline_and_writes_nothing(
    store: SessionStore, fields: dict[str, object], says: str
) -> None:
    """A bad wait or deadline_ms refuses the batch naming the line and the field; nothing is written."""
    lines = [line("k-good"), line("k-bad", base=None, **fields)]
    with pytest.raises(InvalidInputError, match=rf"^InvalidInput: line 2: .*{says}") as caught:
        import_sessions(movable(store), lines)
    assert caught.value.field == "line 2"
    assert store.get_session("k-good") is None
    assert store.get_session("k-bad") is None


def test_import_refuses_a_wait_on_a_session_without_a_user(store: SessionStore) -> None:
    """A wait needs its session data to name a user (greentic: "user required by wait")."""
    userless = StoredSession(SessionKey("k-1"), OWNER._replace(user=None), data(ctx(user=None)), False)
    with pytest.raises(InvalidInputError, match=r"^InvalidInput: line 1: .*user"):
        import_sessions(movable(store), [line(base=userless, wait=REPLY.scope_hash())])
    assert store.get_session("k-1") is None


def test_import_refuses_two_keys_claiming_one_wait_and_writes_nothing(store: SessionStore) -> None:
    """Two lines whose keys claim the same reply scope of one user: the second is named, none written."""
    scope_hash = REPLY.scope_hash()
    lines = [line("k-1", wait=scope_hash), line("k-2", wait=scope_hash)]
    claimed_twice = r"^InvalidInput: line 2: the wait of key k-2 .* key k-1 on line 1"
    with pytest.raises(InvalidInputError, match=claimed_twice):
        import_sessions(movable(store), lines)
    assert store.get_session("k-1") is None


def test_import_refuses_one_key_with_two_deadlines_and_writes_nothing(store: SessionStore) -> None:
    """The same key twice with equal data but another deadline is two different sessions: refused."""
    later = system_clock() + HOUR_MS
    lines = [line("k-1", deadline_ms=later), line("k-1", deadline_ms=later + 1)]
    with pytest.raises(InvalidInputError, match=r"^InvalidInput: line 2: key k-1 is also on line 1"):
        import_sessions(movable(store), lines)
    assert store.get_session("k-1") is None


def test_import_refuses_a_wait_the_store_points_at_another_key(store: SessionStore) -> None:
    """A line whose wait the store already routes to another key is refused by the store, naming the line."""
    waiting, _plain = with_a_wait(store)
    with pytest.raises(InvalidInputError, match=r"^InvalidInput: line 1: "):
        import_sessions(movable(store), [line("k-other", wait=REPLY.scope_hash())])
    assert store.get_session("k-other") is None
    assert store.find_wait_by_scope(ctx(), "u1", REPLY) == waiting


def test_migrate_does_not_count_a_session_that_expired_meanwhile_as_missing() -> None:
    """A session the source still lists but that expired in the target before the closing check
    (by the clock migrate is given) is not "did not arrive intact"; a live one still is checked."""
    source_clock, target_clock = ManualClock(), ManualClock()
    source = InMemorySessionStore(clock=source_clock)
    target = InMemorySessionStore(clock=target_clock)
    source.register_wait(ctx(), "u1", REPLY, "k-wait", data(step=1), ttl=datetime.timedelta(seconds=1))
    source.create_session(ctx(user="u2"), data(ctx(user="u2"), step=2))
    report = migrate(source, target, progress=lambda _one: target_clock.advance(1000), clock=target_clock)
    assert (report.source_sessions, report.copied) == (2, 2)
    assert target.get_session("k-wait") is None
    assert source.get_session("k-wait") == data(step=1)


@pytest.mark.parametrize("clock", [None, 1_800_000_000_000, "now"])
def test_import_and_migrate_refuse_a_clock_that_is_not_callable(clock: object) -> None:
    """clock must be a callable giving unix ms; anything else is InvalidInputError, nothing written."""
    source, target = InMemorySessionStore(), InMemorySessionStore()
    source.create_session(ctx(), data())
    with pytest.raises(InvalidInputError, match="clock"):
        import_sessions(target, [line()], clock=cast(Any, clock))
    with pytest.raises(InvalidInputError, match="clock"):
        migrate(source, target, clock=cast(Any, clock))
    assert list(target.iter_sessions()) == []
