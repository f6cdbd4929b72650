"""Moving sessions between stores: ``import_session`` on every backend, and the loop migrate and import share.

``import_session`` returns whether the session is new to the store; the
file store writes nothing at all for a session that is already there with
its lookup as asked. ``copy_sessions`` is the one loop ``migrate`` and
``import_sessions`` share: counts, progress, and a refusal named by number.
``migrate``'s closing check: a target may acknowledge an import and not hold
it afterwards (a backend bug, another writer, an eviction policy on a Redis
server); ``migrate`` then raises ``InvalidInputError`` naming how many
sessions and the first key, instead of reporting success.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import cast

import attrs
import pytest

from filestore import (
    FileSessionStore,
    InMemorySessionStore,
    InvalidInputError,
    SessionCursor,
    SessionData,
    SessionKey,
    SessionScope,
    SessionStore,
    StoredSession,
    TenantCtx,
    migrate,
)
from filestore.backends import MovableStore, copy_sessions

from .support import ctx, data

CTX = TenantCtx.new("dev", "acme").with_team("support").with_user("u1")
SCOPE = SessionScope(CTX.env, CTX.tenant_id, CTX.team_id, CTX.user_id)


def stored(step: int = 0, *, active: bool = True) -> StoredSession:
    data = SessionData(CTX, "onboarding.flow", SessionCursor(f"node.{step}"), f'{{"step":{step}}}')
    return StoredSession(SessionKey(str(uuid.uuid4())), SCOPE, data, active)


def movable(store: SessionStore) -> MovableStore:
    assert hasattr(store, "import_session")
    assert hasattr(store, "iter_sessions")
    return cast(MovableStore, store)


def test_import_session_returns_true_only_for_a_new_session(store: SessionStore) -> None:
    """True when the key was unknown; False for the same session again (active or not); data unchanged."""
    target = movable(store)
    session = stored()
    assert target.import_session(session) is True
    assert target.import_session(session) is False
    assert target.import_session(attrs.evolve(session, active=False)) is False
    assert target.get_session(session.key) == session.data
    assert target.find_by_user(CTX, "u1") == (session.key, session.data)


def test_import_session_already_there_still_points_the_lookup(store: SessionStore) -> None:
    """An equal session already there returns False, and an active one takes the user lookup back."""
    target = movable(store)
    first, newer = stored(1), stored(2)
    assert target.import_session(first)
    assert target.import_session(newer)
    assert target.find_by_user(CTX, "u1") == (newer.key, newer.data)
    assert target.import_session(attrs.evolve(first, active=False)) is False
    assert target.find_by_user(CTX, "u1") == (newer.key, newer.data)
    assert target.import_session(first) is False
    assert target.find_by_user(CTX, "u1") == (first.key, first.data)


def test_import_session_never_overwrites(store: SessionStore) -> None:
    """A key holding a different session raises InvalidInputError; the stored one stays."""
    target = movable(store)
    session = stored(1)
    target.import_session(session)
    with pytest.raises(InvalidInputError, match="already holds a different session"):
        target.import_session(attrs.evolve(session, data=stored(2).data))
    assert target.get_session(session.key) == session.data


def test_file_store_writes_nothing_for_a_session_already_there(tmp_path: Path) -> None:
    """The file store appends no record for an equal session whose lookup is as asked, one when it is not."""
    log = tmp_path / "s" / "sessions.log"
    with FileSessionStore(tmp_path / "s", preallocate_bytes=0) as target:
        first, newer = stored(1), stored(2)
        assert target.import_session(first)
        assert target.import_session(newer)
        size = log.stat().st_size
        assert target.import_session(newer) is False
        assert target.import_session(attrs.evolve(first, active=False)) is False
        assert log.stat().st_size == size
        assert target.import_session(first) is False  # takes the lookup back: one record
        assert log.stat().st_size > size
    with FileSessionStore(tmp_path / "s") as reopened:
        assert reopened.find_by_user(CTX, "u1") == (first.key, first.data)


def test_copy_sessions_counts_and_reports_progress() -> None:
    """copy_sessions counts copied and already-there sessions, calling progress(1) after each."""
    sessions = [stored(step) for step in range(3)]
    target = InMemorySessionStore()
    target.import_session(sessions[1])
    ticks: list[int] = []
    counts = copy_sessions(target, enumerate(sessions, 1), progress=ticks.append)
    assert (counts.copied, counts.already_there) == (2, 1)
    assert ticks == [1, 1, 1]
    assert sorted(session.key for session in target.iter_sessions()) == sorted(s.key for s in sessions)


def test_copy_sessions_names_a_refused_session_by_its_number() -> None:
    """A refusal stops the copy: the target's own error, or refused(number, error) when given."""
    sessions = [stored(step) for step in range(3)]
    target = InMemorySessionStore()
    target.import_session(attrs.evolve(sessions[1], data=stored(9).data))
    with pytest.raises(InvalidInputError, match="already holds a different session"):
        copy_sessions(target, enumerate(sessions, 1))

    def refused(number: int, error: InvalidInputError) -> InvalidInputError:
        return InvalidInputError(f"item {number}: {error.message}", field="item", rule="test")

    refusal = r"^InvalidInput: item 2: key .* already holds a different session$"
    with pytest.raises(InvalidInputError, match=refusal):
        copy_sessions(target, enumerate(sessions, 1), refused=refused)
    assert target.get_session(sessions[2].key) is None  # stopped at the refusal


class LosingStore(InMemorySessionStore):
    """Acknowledges every import, but stores ``lose`` sessions not at all and ``alter`` ones altered."""

    def __init__(self, *, lose: frozenset[str] = frozenset(), alter: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.lose = lose
        self.alter = alter

    def import_session(self, session: StoredSession) -> bool:
        if session.key in self.lose:
            return True
        if session.key in self.alter:
            changed = attrs.evolve(session.data, context_json='{"altered":true}')
            return super().import_session(attrs.evolve(session, data=changed))
        return super().import_session(session)


def source_store(directory: Path, sessions: int = 5) -> tuple[FileSessionStore, list[str]]:
    store = FileSessionStore(directory)
    keys = [
        str(store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n))) for n in range(sessions)
    ]
    return store, keys


def test_migrate_reports_what_it_copied_and_calls_progress_per_session(tmp_path: Path) -> None:
    """A sound target: the report counts each session once, progress is called once per session."""
    source, keys = source_store(tmp_path / "a")
    ticks: list[int] = []
    with source, InMemorySessionStore() as target:
        report = migrate(source, target, progress=ticks.append)
        assert report.to_dict() == {"source_sessions": 5, "copied": 5, "already_there": 0}
        assert ticks == [1] * 5
        assert migrate(source, target).to_dict() == {"source_sessions": 5, "copied": 0, "already_there": 5}
        assert {key: target.get_session(key) for key in keys} == {
            key: source.get_session(key) for key in keys
        }


@pytest.mark.parametrize("fault", ["lose", "alter"])
def test_migrate_fails_when_a_session_does_not_arrive_intact(tmp_path: Path, fault: str) -> None:
    """A target that acknowledged imports but lost or altered two sessions: InvalidInputError on
    ``target`` naming the count and the first such key; nothing in the source changes."""
    source, keys = source_store(tmp_path / "a")
    damaged = frozenset(keys[1:3])
    target = LosingStore(lose=damaged) if fault == "lose" else LosingStore(alter=damaged)
    with source, target:
        before = list(source.iter_sessions())
        with pytest.raises(InvalidInputError, match="2 sessions did not arrive intact") as info:
            migrate(source, target)
        assert info.value.field == "target"
        first = next(session.key for session in source.iter_sessions() if session.key in damaged)
        assert f"(first: {first})" in str(info.value)
        assert list(source.iter_sessions()) == before
