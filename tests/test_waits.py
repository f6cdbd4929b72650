"""Wait routing and TTLs (issue 14), pinned rule by rule on every backend.

The four wait calls, ``purge_expired``, the TTL rules and ``find_by_user``'s
fallback to waits, as ``InMemorySessionStore`` (the reference) answers them.
The transcripts replay greentic-session 0.4.7's answers but skip
``find_by_user`` in wait scenarios; its rule is covered here. Tests that need
time to pass open the store with a ``ManualClock`` (``open_with_clock``) and
skip a backend that keeps time by its server (Redis).
"""

from __future__ import annotations

import datetime
import io
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filestore import (
    InMemorySessionStore,
    InvalidInputError,
    ReplyScope,
    SessionKey,
    SessionNotFoundError,
    SessionStore,
    StoredSession,
    TenantCtx,
    TenantMismatchError,
    export_sessions,
    import_sessions,
)
from filestore.backends import MovableStore

from .support import ctx, data
from .support.backends import Backend
from .support.clocks import ManualClock

U1: Final = ctx()  # dev/acme, team support, user u1
NO_USER: Final = ctx(user=None)
SCOPE_A: Final = ReplyScope("chat-1", thread="topic-9")
SCOPE_B: Final = ReplyScope("chat-1", thread="topic-10")
SECOND: Final = datetime.timedelta(seconds=1)
MULTIPLE: Final = "multiple waits exist for user; use scope-based routing"


def key(name: str) -> SessionKey:
    return SessionKey(name)


def state(store: SessionStore) -> list[StoredSession]:
    """Every live session with its owner, lookup flag, wait and deadline, in key order."""
    assert isinstance(store, MovableStore)
    return sorted(store.iter_sessions(), key=lambda session: str(session.key))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def timed(backend: Backend, tmp_path: Path, clock: ManualClock) -> Iterator[SessionStore]:
    """A fresh store of each backend whose TTLs run on ``clock`` (skips Redis)."""
    opened = backend.open_with_clock(tmp_path / "store", clock)
    try:
        yield opened
    finally:
        opened.close()


# -- the four calls ------------------------------------------------------------------


def test_a_registered_wait_is_found_by_scope_listed_and_readable(store: SessionStore) -> None:
    """register_wait stores the data under the caller's key; find, list and get see it."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1))
    assert store.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-a"
    assert store.find_wait_by_scope(U1, "u1", SCOPE_B) is None
    assert store.list_waits_for_user(U1, "u1") == ["wait-a"]
    assert store.get_session("wait-a") == data(step=1)


def test_list_is_sorted_and_holds_one_key_per_scope(store: SessionStore) -> None:
    """A user's waits are listed as sorted keys, one per scope."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-z", data(step=1))
    store.register_wait(U1, "u1", SCOPE_B, "wait-b", data(step=2))
    store.register_wait(U1, "u1", ReplyScope("chat-2"), "wait-m", data(step=3))
    assert store.list_waits_for_user(U1, "u1") == ["wait-b", "wait-m", "wait-z"]


def test_absent_and_empty_scope_fields_address_the_same_wait(store: SessionStore) -> None:
    """scope_hash treats an absent field as "", as greentic-types does: both reach the wait."""
    store.register_wait(U1, "u1", ReplyScope("chat-1"), "wait-a", data())
    assert store.find_wait_by_scope(U1, "u1", ReplyScope("chat-1", thread="", correlation="")) == "wait-a"


def test_registering_a_key_again_moves_its_wait(store: SessionStore) -> None:
    """Re-registering a key at another scope replaces its wait (a session holds one) and its data."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1))
    store.register_wait(U1, "u1", SCOPE_B, "wait-a", data(step=2))
    assert store.find_wait_by_scope(U1, "u1", SCOPE_A) is None
    assert store.find_wait_by_scope(U1, "u1", SCOPE_B) == "wait-a"
    assert store.list_waits_for_user(U1, "u1") == ["wait-a"]
    assert store.get_session("wait-a") == data(step=2)


def test_a_second_key_at_a_scope_takes_it_over(store: SessionStore) -> None:
    """The scope points at the newer key; the older one leaves the waits, its session stays."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1))
    store.register_wait(U1, "u1", SCOPE_A, "wait-b", data(step=2))
    assert store.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-b"
    assert store.list_waits_for_user(U1, "u1") == ["wait-b"]
    assert store.get_session("wait-a") == data(step=1)


def test_removing_the_replaced_key_keeps_the_scope_of_the_new_one(store: SessionStore) -> None:
    """upstream_fix: removing a key the scope no longer points at leaves the scope (0.4.7 cleared it)."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1))
    store.register_wait(U1, "u1", SCOPE_A, "wait-b", data(step=2))
    store.remove_session("wait-a")
    assert store.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-b"
    assert store.list_waits_for_user(U1, "u1") == ["wait-b"]


def test_re_registering_the_replaced_key_keeps_the_scope_of_the_new_one(store: SessionStore) -> None:
    """upstream_fix, reached by re-registration: the old key's move does not clear the scope it lost."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1))
    store.register_wait(U1, "u1", SCOPE_A, "wait-b", data(step=2))
    store.register_wait(U1, "u1", SCOPE_B, "wait-a", data(step=3))
    assert store.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-b"
    assert store.find_wait_by_scope(U1, "u1", SCOPE_B) == "wait-a"
    assert store.list_waits_for_user(U1, "u1") == ["wait-a", "wait-b"]


def test_clear_wait_removes_the_wait_and_its_session(store: SessionStore) -> None:
    """clear_wait deletes the scope entry, the user's wait and the session; a second clear is fine."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data())
    store.register_wait(U1, "u1", SCOPE_B, "wait-b", data(step=2))
    store.clear_wait(U1, "u1", SCOPE_A)
    assert store.get_session("wait-a") is None
    assert store.find_wait_by_scope(U1, "u1", SCOPE_A) is None
    assert store.list_waits_for_user(U1, "u1") == ["wait-b"]
    with pytest.raises(SessionNotFoundError):
        store.update_session("wait-a", data())
    store.clear_wait(U1, "u1", SCOPE_A)
    assert store.list_waits_for_user(U1, "u1") == ["wait-b"]


def test_clear_wait_of_nothing_changes_nothing(store: SessionStore) -> None:
    """Clearing a scope no wait holds (or another user's) is not an error and removes nothing."""
    store.create_session(U1, data())
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data())
    before = state(store)
    store.clear_wait(U1, "u1", SCOPE_B)
    store.clear_wait(ctx(user="u2"), "u2", SCOPE_A)
    store.clear_wait(ctx(tenant="globex"), "u1", SCOPE_A)
    assert state(store) == before


def test_clear_wait_leaves_a_replaced_key_alone(store: SessionStore) -> None:
    """clear_wait removes the session the scope points at, not a key it used to point at."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1))
    store.register_wait(U1, "u1", SCOPE_A, "wait-b", data(step=2))
    store.clear_wait(U1, "u1", SCOPE_A)
    assert store.get_session("wait-b") is None
    assert store.get_session("wait-a") == data(step=1)
    assert store.list_waits_for_user(U1, "u1") == []


def test_remove_session_clears_its_wait(store: SessionStore) -> None:
    """remove_session deletes the session's wait; the scope is then free for another key."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data())
    store.remove_session("wait-a")
    assert store.find_wait_by_scope(U1, "u1", SCOPE_A) is None
    assert store.list_waits_for_user(U1, "u1") == []
    assert state(store) == []
    store.register_wait(U1, "u1", SCOPE_A, "wait-b", data())
    assert store.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-b"


def test_update_keeps_the_wait(store: SessionStore) -> None:
    """update_session replaces a wait's data; the scope still points at the key."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1))
    store.update_session("wait-a", data(step=2))
    assert store.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-a"
    assert store.list_waits_for_user(U1, "u1") == ["wait-a"]
    assert store.get_session("wait-a") == data(step=2)


def test_register_leaves_the_user_lookup_and_update_moves_it(store: SessionStore) -> None:
    """register_wait never moves the create/update lookup; an update naming the user does."""
    created = store.create_session(U1, data(step=1))
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=2))
    assert store.find_by_user(NO_USER, "u1") == (created, data(step=1))
    store.update_session("wait-a", data(step=3))
    assert store.find_by_user(NO_USER, "u1") == ("wait-a", data(step=3))


def test_registering_over_a_created_session_keeps_its_lookup(store: SessionStore) -> None:
    """A created session's key can be registered as a wait (same owner): its lookup stays."""
    created = store.create_session(U1, data(step=1))
    store.register_wait(U1, "u1", SCOPE_A, created, data(step=2))
    assert store.find_wait_by_scope(U1, "u1", SCOPE_A) == created
    assert store.find_by_user(NO_USER, "u1") == (created, data(step=2))


# -- refusals change nothing ------------------------------------------------------------

OTHER_TENANT: Final = ctx(tenant="globex")
NO_TEAM: Final = ctx(team=None)
U2: Final = ctx(user="u2")

# (ctx, user_id, key, data, error): each a registration the checks refuse.
REFUSED: Final[dict[str, tuple[TenantCtx, str, str, TenantCtx, type[Exception]]]] = {
    "ctx user is not user_id": (U2, "u1", "new", U2, InvalidInputError),
    # The fence (data's user named by ctx) comes first, so a data user other than user_id is a mismatch.
    "data user is not user_id": (NO_USER, "u1", "new", U2, TenantMismatchError),
    "data names no user": (NO_USER, "u1", "new", NO_USER, InvalidInputError),
    "fence: other tenant": (U1, "u1", "new", OTHER_TENANT, TenantMismatchError),
    "fence: other team": (U1, "u1", "new", NO_TEAM, TenantMismatchError),
    "fence: data user not ctx's": (U2, "u2", "new", U1, TenantMismatchError),
    "existing key: other tenant": (OTHER_TENANT, "u1", "wait-a", OTHER_TENANT, TenantMismatchError),
    "existing key: other team": (NO_TEAM, "u1", "wait-a", NO_TEAM, TenantMismatchError),
    "existing key: other user": (U2, "u2", "wait-a", U2, TenantMismatchError),
    "existing key: user introduced": (U1, "u1", "user-less", U1, TenantMismatchError),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_refused_registration_changes_nothing(store: SessionStore, case: str) -> None:
    """Each registration check (user agreement, context fence, update rules) refuses; nothing changes."""
    caller, user_id, name, owner, error = REFUSED[case]
    user_less = store.create_session(U1, data(NO_USER, step=2))
    created = store.create_session(U1, data(step=1))  # the newest: u1's lookup points here
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=3))
    store.register_wait(U1, "u1", SCOPE_B, "wait-b", data(step=4))
    target = {"user-less": user_less}.get(name, name)
    before = state(store)
    with pytest.raises(error):
        store.register_wait(caller, user_id, SCOPE_A, target, data(owner, step=9))
    assert state(store) == before
    assert store.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-a"
    assert store.list_waits_for_user(U1, "u1") == ["wait-a", "wait-b"]
    assert store.list_waits_for_user(U2, "u2") == []
    assert store.find_by_user(NO_USER, "u1") == (created, data(step=1))


# -- find_by_user: the lookup first, then the waits ---------------------------------------


def test_find_by_user_without_lookup_or_waits_is_none(store: SessionStore) -> None:
    """No create lookup and no wait: None (another user's wait does not count)."""
    store.register_wait(U2, "u2", SCOPE_A, "wait-a", data(U2))
    assert store.find_by_user(NO_USER, "u1") is None


def test_find_by_user_answers_the_one_live_wait(store: SessionStore) -> None:
    """Without a lookup, a user's only wait answers find_by_user, with its data."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1))
    assert store.find_by_user(NO_USER, "u1") == ("wait-a", data(step=1))


def test_find_by_user_refuses_to_choose_between_waits(store: SessionStore) -> None:
    """Several waits and no lookup: InvalidInputError naming scope routing; one removed, the other answers."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1))
    store.register_wait(U1, "u1", SCOPE_B, "wait-b", data(step=2))
    with pytest.raises(InvalidInputError, match=MULTIPLE):
        store.find_by_user(NO_USER, "u1")
    store.clear_wait(U1, "u1", SCOPE_A)
    assert store.find_by_user(NO_USER, "u1") == ("wait-b", data(step=2))


def test_find_by_user_prefers_the_lookup_over_waits(store: SessionStore) -> None:
    """With a create lookup, find_by_user answers it, however many waits the user has."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1))
    store.register_wait(U1, "u1", SCOPE_B, "wait-b", data(step=2))
    created = store.create_session(U1, data(step=3))
    assert store.find_by_user(NO_USER, "u1") == (created, data(step=3))
    store.remove_session(created)
    with pytest.raises(InvalidInputError, match=MULTIPLE):
        store.find_by_user(NO_USER, "u1")


# -- isolation ------------------------------------------------------------------------------

ELSEWHERE: Final = [
    pytest.param(ctx(env="prod"), "u1", id="other env"),
    pytest.param(ctx(tenant="globex"), "u1", id="other tenant"),
    pytest.param(ctx(team=None), "u1", id="no team"),
    pytest.param(ctx(team="sales"), "u1", id="other team"),
    pytest.param(U1, "u2", id="other user"),
]


@pytest.mark.parametrize(("other", "user_id"), ELSEWHERE)
def test_a_wait_is_invisible_elsewhere(store: SessionStore, other: TenantCtx, user_id: str) -> None:
    """Another env, tenant, team or user finds, lists, routes to and clears nothing of the wait."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data())
    before = state(store)
    assert store.find_wait_by_scope(other.with_user(None), user_id, SCOPE_A) is None
    assert store.list_waits_for_user(other.with_user(None), user_id) == []
    assert store.find_by_user(other.with_user(None), user_id) is None
    store.clear_wait(other.with_user(None), user_id, SCOPE_A)
    assert state(store) == before


PLACES: Final = st.tuples(
    st.sampled_from(["dev", "prod"]),
    st.sampled_from(["acme", "globex"]),
    st.sampled_from([None, "support"]),
    st.sampled_from(["u1", "u2"]),
    st.sampled_from([SCOPE_A, SCOPE_B]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(places=st.lists(PLACES, min_size=1, max_size=4), probe=PLACES)
def test_a_wait_is_found_exactly_at_its_own_address(
    backend: Backend, tmp_path: Path, places: list[Any], probe: Any
) -> None:
    """Waits registered at random places: a probe finds the last key registered at its exact address."""
    with backend.open(tmp_path / uuid.uuid4().hex) as store:
        expected: dict[Any, str] = {}
        for number, (env, tenant, team, user, scope) in enumerate(places):
            context = ctx(env, tenant, team, user)
            store.register_wait(context, user, scope, f"wait-{number}", data(context, step=number))
            expected[env, tenant, team, user, scope.scope_hash()] = f"wait-{number}"
        env, tenant, team, user, scope = probe
        context = ctx(env, tenant, team, None)
        found = store.find_wait_by_scope(context, user, scope)
        assert found == expected.get((env, tenant, team, user, scope.scope_hash()))
        mine = sorted(key for (*place, _hash), key in expected.items() if place == [env, tenant, team, user])
        assert store.list_waits_for_user(context, user) == mine


# -- TTL -------------------------------------------------------------------------------------------

Probe = Callable[[SessionStore], object]

# Each call on a key whose TTL ran out, and the answer it must give.
EXPIRED_ANSWERS: Final[dict[str, tuple[Probe, object]]] = {
    "get": (lambda store: store.get_session("wait-a"), None),
    "find_wait_by_scope": (lambda store: store.find_wait_by_scope(U1, "u1", SCOPE_A), None),
    "list_waits_for_user": (lambda store: store.list_waits_for_user(U1, "u1"), []),
    "find_by_user": (lambda store: store.find_by_user(NO_USER, "u1"), None),
    "update": (lambda store: store.update_session("wait-a", data(step=2)), SessionNotFoundError),
    "remove": (lambda store: store.remove_session("wait-a"), SessionNotFoundError),
}


@pytest.mark.parametrize("call", sorted(EXPIRED_ANSWERS))
def test_an_expired_wait_is_invisible_to_every_call(
    timed: SessionStore, clock: ManualClock, call: str
) -> None:
    """Visible until its deadline, then gone for get, find, list, find_by_user, update and remove."""
    probe, answer = EXPIRED_ANSWERS[call]
    timed.register_wait(U1, "u1", SCOPE_A, "wait-a", data(), ttl=SECOND)
    clock.advance(999)
    assert timed.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-a"
    clock.advance(1)
    if isinstance(answer, type):
        with pytest.raises(answer):
            probe(timed)
    else:
        assert probe(timed) == answer
    assert state(timed) == []


def test_an_expired_key_is_free_to_register(timed: SessionStore, clock: ManualClock) -> None:
    """Registering over an expired key skips the update rules: another tenant may take the key."""
    timed.register_wait(U1, "u1", SCOPE_A, "wait-a", data(), ttl=SECOND)
    clock.advance(1000)
    timed.register_wait(OTHER_TENANT, "u1", SCOPE_A, "wait-a", data(OTHER_TENANT))
    assert timed.get_session("wait-a") == data(OTHER_TENANT)
    assert timed.find_wait_by_scope(U1, "u1", SCOPE_A) is None
    assert timed.find_wait_by_scope(OTHER_TENANT, "u1", SCOPE_A) == "wait-a"


def test_update_keeps_the_ttl(timed: SessionStore, clock: ManualClock) -> None:
    """update_session keeps the deadline (a KEEPTTL update): the session expires when it would have."""
    timed.register_wait(U1, "u1", SCOPE_A, "wait-a", data(), ttl=SECOND)
    clock.advance(500)
    timed.update_session("wait-a", data(step=2))
    clock.advance(499)
    assert timed.get_session("wait-a") == data(step=2)
    clock.advance(1)
    assert timed.get_session("wait-a") is None


def test_re_registering_replaces_the_ttl(timed: SessionStore, clock: ManualClock) -> None:
    """A new registration's TTL starts at its call; ``ttl=None`` then means no deadline at all."""
    timed.register_wait(U1, "u1", SCOPE_A, "wait-a", data(), ttl=SECOND)
    clock.advance(500)
    timed.register_wait(U1, "u1", SCOPE_A, "wait-a", data(), ttl=SECOND)
    clock.advance(999)
    assert timed.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-a"
    timed.register_wait(U1, "u1", SCOPE_A, "wait-a", data())
    clock.advance(10**12)
    assert timed.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-a"


def test_the_replaced_key_expiring_keeps_the_scope_of_the_new_one(
    timed: SessionStore, clock: ManualClock
) -> None:
    """upstream_fix for expiry: the older key's TTL running out does not clear the scope it lost."""
    timed.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1), ttl=SECOND)
    timed.register_wait(U1, "u1", SCOPE_A, "wait-b", data(step=2))
    clock.advance(1000)
    assert timed.purge_expired() == 1
    assert timed.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-b"
    assert timed.list_waits_for_user(U1, "u1") == ["wait-b"]
    assert timed.get_session("wait-a") is None


def test_the_deadline_is_kept_in_whole_milliseconds_rounded_up(
    timed: SessionStore, clock: ManualClock
) -> None:
    """A zero TTL is expired at once; a sub-millisecond one lasts one millisecond (as in Rust)."""
    timed.register_wait(U1, "u1", SCOPE_A, "wait-a", data(), ttl=datetime.timedelta(0))
    timed.register_wait(U1, "u1", SCOPE_B, "wait-b", data(), ttl=datetime.timedelta(microseconds=1))
    assert timed.list_waits_for_user(U1, "u1") == ["wait-b"]
    clock.advance(1)
    assert timed.list_waits_for_user(U1, "u1") == []


def test_an_expired_lookup_falls_back_to_the_waits(timed: SessionStore, clock: ManualClock) -> None:
    """find_by_user's lookup pointing at an expired session counts as none: the live wait answers."""
    timed.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1), ttl=SECOND)
    timed.update_session("wait-a", data(step=2))  # points the lookup at the TTL'd wait
    timed.register_wait(U1, "u1", SCOPE_B, "wait-b", data(step=3))
    assert timed.find_by_user(NO_USER, "u1") == ("wait-a", data(step=2))
    clock.advance(1000)
    assert timed.find_by_user(NO_USER, "u1") == ("wait-b", data(step=3))


def test_expired_waits_do_not_count_for_find_by_user(timed: SessionStore, clock: ManualClock) -> None:
    """Of two waits, once one expires the other answers find_by_user instead of an error."""
    timed.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1), ttl=SECOND)
    timed.register_wait(U1, "u1", SCOPE_B, "wait-b", data(step=2))
    with pytest.raises(InvalidInputError, match=MULTIPLE):
        timed.find_by_user(NO_USER, "u1")
    clock.advance(1000)
    assert timed.find_by_user(NO_USER, "u1") == ("wait-b", data(step=2))


def test_purge_expired_counts_what_it_removes(timed: SessionStore, clock: ManualClock) -> None:
    """purge_expired removes every session past its deadline and returns how many; the rest stay."""
    created = timed.create_session(U1, data())
    for number in range(3):
        timed.register_wait(U1, "u1", ReplyScope(f"chat-{number}"), f"short-{number}", data(), ttl=SECOND)
    timed.register_wait(U1, "u1", SCOPE_A, "long", data(), ttl=2 * SECOND)
    timed.register_wait(U1, "u1", SCOPE_B, "forever", data())
    assert timed.purge_expired() == 0
    clock.advance(1000)
    assert timed.purge_expired() == 3
    assert timed.purge_expired() == 0
    assert timed.list_waits_for_user(U1, "u1") == ["forever", "long"]
    clock.advance(1000)
    assert timed.purge_expired() == 1
    assert [session.key for session in state(timed)] == sorted([created, key("forever")])


def test_purge_expired_without_deadlines_removes_nothing(store: SessionStore) -> None:
    """Sessions without a TTL never expire: purge_expired returns 0 and keeps them all."""
    store.create_session(U1, data())
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data())
    before = state(store)
    assert store.purge_expired() == 0
    assert state(store) == before


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ttl_ms=st.integers(0, 5000), waited=st.integers(0, 6000))
def test_a_wait_lives_exactly_its_ttl(backend: Backend, tmp_path: Path, ttl_ms: int, waited: int) -> None:
    """Registered with ``ttl_ms``, a wait is found after ``waited`` ms iff ``waited < ttl_ms``."""
    clock = ManualClock()
    with backend.open_with_clock(tmp_path / uuid.uuid4().hex, clock) as store:
        store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(), ttl=datetime.timedelta(milliseconds=ttl_ms))
        clock.advance(waited)
        alive = waited < ttl_ms
        assert store.find_wait_by_scope(U1, "u1", SCOPE_A) == ("wait-a" if alive else None)
        assert store.get_session("wait-a") == (data() if alive else None)


def test_export_and_import_carry_waits_and_deadlines(store: SessionStore) -> None:
    """An export line holds its session's wait and TTL deadline (issue 14): imported elsewhere the
    wait is routable and the deadline kept; imported back into its store it is already there."""
    store.register_wait(U1, "u1", SCOPE_A, "wait-a", data(step=1), datetime.timedelta(hours=1))
    store.register_wait(U1, "u1", SCOPE_B, "wait-b", data(step=2))
    out = io.StringIO()
    assert isinstance(store, MovableStore)
    assert export_sessions(store, out) == 2
    copy = InMemorySessionStore()
    assert import_sessions(copy, out.getvalue().splitlines()).imported == 2
    assert state(copy) == state(store)
    assert copy.find_wait_by_scope(U1, "u1", SCOPE_A) == "wait-a"
    assert copy.list_waits_for_user(U1, "u1") == ["wait-a", "wait-b"]
    assert import_sessions(store, out.getvalue().splitlines()).already_there == 2


def test_import_refuses_a_bad_wait_or_deadline_by_its_line() -> None:
    """A line's wait must be a scope hash of a session naming its user, its deadline int64 ms."""
    source = InMemorySessionStore()
    source.register_wait(U1, "u1", SCOPE_A, "wait-a", data(), datetime.timedelta(hours=1))
    out = io.StringIO()
    export_sessions(source, out)
    good = out.getvalue().strip()
    for bad in (
        good.replace(SCOPE_A.scope_hash(), "not-a-hash"),
        good.replace('"deadline_ms":', '"deadline_ms":-'),
        good.replace('"deadline_ms":', '"deadline_ms":0.5,"x":'),
    ):
        target = InMemorySessionStore()
        with pytest.raises(InvalidInputError, match="line 1"):
            import_sessions(target, [bad])
        assert state(target) == []
