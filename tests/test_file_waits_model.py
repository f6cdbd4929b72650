"""The file store against the memory store: random wait and TTL calls answer alike.

Each seed runs 60 random calls (registrations with TTLs, take-overs, updates
with and without a user, removals, clears, clock advances, purges) on both,
sharing one clock, with online compactions and reopens of the file store
between them: every answer, and ``iter_sessions`` after every call, must agree.
"""

from __future__ import annotations

import datetime
import random
from pathlib import Path

import pytest

from filestore import (
    FileSessionStore,
    FilestoreError,
    InMemorySessionStore,
    ReplyScope,
    SessionKey,
    SessionStore,
)

from .support import ctx, data
from .support.clocks import ManualClock

SCOPE = ReplyScope("chat-1", thread="topic-9")
OTHER_SCOPE = ReplyScope("chat-2")


def _open(path: Path, clock: ManualClock) -> FileSessionStore:
    return FileSessionStore(path, clock=clock, durability="none", snapshot_every_records=4)


Op = tuple[str, str, ReplyScope, int, datetime.timedelta | None]


def _run_op(target: SessionStore, op: Op, key: SessionKey) -> object:
    """One call of the differential run on ``target`` (``key``: that store's key, if it takes one)."""
    name, user, scope, step, ttl = op
    context = ctx(user=user)
    if name == "register":
        target.register_wait(context, user, scope, key, data(context, step), ttl)
    elif name == "update":
        target.update_session(key, data(context if ttl is None else ctx(user=None), step))
    elif name == "remove":
        target.remove_session(key)
    elif name == "clear":
        target.clear_wait(context, user, scope)
    elif name == "find":
        return target.find_wait_by_scope(context, user, scope)
    elif name == "list":
        return target.list_waits_for_user(context, user)
    elif name == "find_by_user":
        return target.find_by_user(ctx(), user)
    elif name == "get":
        return target.get_session(key)
    else:
        assert name == "purge", name
        # Only that it runs: memory drops expired sessions lazily when reads meet them, so how
        # many are left to purge differs (what stays visible may not).
        return target.purge_expired() >= 0
    return None


def _differential_run(seed: int, path: Path) -> int:
    """Random calls on a memory store and a file store sharing one clock, with compactions and
    reopens of the file store between them; every answer must agree. Returns the calls made."""
    rng = random.Random(seed)
    clock = ManualClock()
    memory = InMemorySessionStore(clock=clock)
    store = _open(path, clock)
    # A created session's key differs between the stores: answers compare memory's keys.
    created: list[tuple[SessionKey, SessionKey]] = []
    as_memory: dict[str, str] = {}
    ttls = (None, datetime.timedelta(milliseconds=1), datetime.timedelta(milliseconds=80))
    calls = 0
    try:
        for calls in range(60):
            roll = rng.random()
            user = rng.choice(("u1", "u2"))
            if roll < 0.12:
                context = ctx(user=user)
                pair = (
                    memory.create_session(context, data(context, calls)),
                    store.create_session(context, data(context, calls)),
                )
                created.append(pair)
                as_memory[pair[1]] = pair[0]
            elif roll < 0.8:
                name = rng.choice(
                    ["register"] * 3
                    + ["update"] * 2
                    + ["remove", "clear", "find", "list", "find_by_user", "get"]
                )
                # For an update, a TTL (not None) says the data names no user.
                op: Op = (name, user, rng.choice((SCOPE, OTHER_SCOPE)), calls, rng.choice(ttls))
                wait_key = SessionKey(f"wait-{rng.randrange(4)}")
                pair = rng.choice(created) if created and rng.random() < 0.5 else (wait_key, wait_key)
                answers: list[object] = []
                for target, key in ((memory, pair[0]), (store, pair[1])):
                    try:
                        answer = _run_op(target, op, key)
                    except FilestoreError as error:
                        answer = type(error).__name__
                    answers.append(answer)
                assert _translated(answers[1], as_memory) == answers[0], f"seed {seed}, call {calls}: {op}"
            elif roll < 0.88:
                clock.advance(rng.choice([1, 50, 100]))
            elif roll < 0.9:
                assert _run_op(memory, ("purge", user, SCOPE, 0, None), SessionKey("-")) == _run_op(
                    store, ("purge", user, SCOPE, 0, None), SessionKey("-")
                )
            elif roll < 0.95:
                store.compact()
            else:
                store.close()
                store = _open(path, clock)
            expected = {(str(s.key), s.data, s.active, s.wait, s.deadline_ms) for s in memory.iter_sessions()}
            found = {
                (as_memory.get(s.key, str(s.key)), s.data, s.active, s.wait, s.deadline_ms)
                for s in store.iter_sessions()
            }
            assert found == expected, f"seed {seed}, after call {calls}"
    finally:
        store.close()
    return calls + 1


def _translated(answer: object, as_memory: dict[str, str]) -> object:
    """A file store's answer with created keys replaced by the memory store's."""
    if isinstance(answer, str):
        return as_memory.get(answer, answer)
    if isinstance(answer, list):
        return sorted(as_memory.get(str(key), str(key)) for key in answer)
    if isinstance(answer, tuple):
        return (as_memory.get(answer[0], answer[0]), answer[1])
    return answer


@pytest.mark.parametrize("seed", range(12))
def test_random_calls_answer_as_the_memory_store(seed: int, tmp_path: Path) -> None:
    """60 random calls (registrations with TTLs, take-overs, updates with and without a user,
    removals, clears, clock advances, purges) answer exactly as the memory store does, and
    iter_sessions agrees after each, with online compactions and reopens in between."""
    assert _differential_run(seed, tmp_path) == 60
