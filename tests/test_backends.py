"""Moving sessions between stores: ``import_session`` on every backend, and the loop migrate and import share.

``import_session`` returns whether the session is new to the store; the
file store writes nothing at all for a session that is already there with
its lookup as asked. ``copy_sessions`` is the one loop ``migrate`` and
``import_sessions`` share: counts, progress, and a refusal named by number.
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
)
from filestore.backends import MovableStore, copy_sessions

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
        return InvalidInputError(f"item {number}: {error}", field="item", rule="test")

    with pytest.raises(InvalidInputError, match=r"^item 2: key .* already holds a different session$"):
        copy_sessions(target, enumerate(sessions, 1), refused=refused)
    assert target.get_session(sessions[2].key) is None  # stopped at the refusal
