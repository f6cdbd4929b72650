"""migrate's closing check: every source session is read back from the target, or it fails.

A target may acknowledge an import and not hold it afterwards (a backend
bug, another writer, an eviction policy on a Redis server). ``migrate``
must then raise ``InvalidInputError`` naming how many sessions and the
first key, instead of returning a report of success.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from filestore import FileSessionStore, InMemorySessionStore, InvalidInputError
from filestore.backends import migrate
from filestore.contract import StoredSession

from .test_contract import ctx, data


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
