"""The SessionStore contract, pinned rule by rule, on every backend.

These tests are the contract's definition in this repository; docs/api.md ("The contract:
SessionStore") states it for readers. (The team's specification it came from is not part of
the repository.)

Every test takes the ``store`` fixture, which runs it once per registered
backend (memory, file, ...): a backend that passes this module behaves as
greentic-session's stores do (with the 0.4 checks).
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import attrs
import pytest

from filestore import (
    ErrorCode,
    InvalidInputError,
    SessionKey,
    SessionNotFoundError,
    SessionStore,
    StoreClosedError,
    TenantCtx,
    TenantMismatchError,
)

from .support import ctx, data
from .support.backends import Backend

# -- create / get ------------------------------------------------------------


def test_satisfies_protocol(store: SessionStore) -> None:
    """Every backend is a runtime SessionStore."""
    assert isinstance(store, SessionStore)


def test_create_returns_uuid4_key_and_get_returns_data(store: SessionStore) -> None:
    """create_session returns a fresh uuid4 key under which get_session finds the data."""
    stored = data()
    key = store.create_session(ctx(), stored)
    assert isinstance(key, SessionKey)
    assert uuid.UUID(key).version == 4
    assert store.get_session(key) == stored


def test_keys_are_unique(store: SessionStore) -> None:
    """Two creates with the same data get two different keys."""
    first = store.create_session(ctx(), data())
    second = store.create_session(ctx(), data())
    assert first != second


def test_get_unknown_key_is_none(store: SessionStore) -> None:
    """An unknown key reads as None, not an error."""
    assert store.get_session(str(uuid.uuid4())) is None


@pytest.mark.parametrize("bad_key", ["", "k" * 257])
def test_bad_key_is_invalid_input_everywhere(store: SessionStore, bad_key: str) -> None:
    """An empty or over-long key is invalid input for get, update and remove."""
    with pytest.raises(InvalidInputError) as info:
        store.get_session(bad_key)
    assert info.value.field == "key"
    with pytest.raises(InvalidInputError):
        store.update_session(bad_key, data())
    with pytest.raises(InvalidInputError):
        store.remove_session(bad_key)


def test_key_of_256_characters_is_valid(store: SessionStore) -> None:
    """The key length limit is inclusive: 256 characters read as an unknown key."""
    assert store.get_session("k" * 256) is None


def test_non_model_arguments_are_invalid_input(store: SessionStore) -> None:
    """Passing a dict where a TenantCtx or SessionData belongs is invalid input."""
    with pytest.raises(InvalidInputError):
        store.create_session(ctx().to_dict(), data())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        store.create_session(ctx(), data().to_dict())  # type: ignore[arg-type]
    key = store.create_session(ctx(), data())
    with pytest.raises(InvalidInputError):
        store.update_session(key, data().to_dict())  # type: ignore[arg-type]
    assert store.get_session(key) == data()


# -- the context fence --------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "part"),
    [
        (ctx(env="prod"), "env/tenant"),
        (ctx(tenant="globex"), "env/tenant"),
        (ctx(team="sales"), "team"),
        (ctx(team=None), "team"),
        (ctx(user="u2"), "user"),
        (ctx(user=None), "user"),
    ],
)
def test_context_fence_rejects_and_stores_nothing(store: SessionStore, caller: TenantCtx, part: str) -> None:
    """ctx and data must agree on env/tenant, team, and the data's user; else nothing is stored."""
    with pytest.raises(TenantMismatchError) as info:
        store.create_session(caller, data())
    assert info.value.part == part
    assert info.value.code is ErrorCode.INVALID_INPUT
    assert isinstance(info.value, ValueError)
    assert part.split("/", maxsplit=1)[0] in str(info.value)
    assert store.find_by_user(ctx(), "u1") is None
    assert store.find_by_user(caller, "u1") is None


def test_fence_compares_team_id_or_else_team(store: SessionStore) -> None:
    """A ctx with only `team` agrees with data that has only `team_id` of the same value."""
    caller = attrs.evolve(ctx(), team_id=None)
    owned = data(attrs.evolve(ctx(), team=None))
    key = store.create_session(caller, owned)
    assert store.find_by_user(ctx(), "u1") == (key, owned)


def test_fence_compares_tenant_id_not_tenant(store: SessionStore) -> None:
    """The fence reads tenant_id: a differing display `tenant` with equal tenant_id passes."""
    owned = data(attrs.evolve(ctx(), tenant="acme-display"))
    key = store.create_session(ctx(), owned)
    assert store.get_session(key) == owned


# -- the user lookup ------------------------------------------------------------


def test_find_by_user_returns_key_and_data(store: SessionStore) -> None:
    """find_by_user returns the (key, data) pair of the user's session."""
    stored = data()
    key = store.create_session(ctx(), stored)
    assert store.find_by_user(ctx(), "u1") == (key, stored)


def test_user_from_ctx_when_data_has_none(store: SessionStore) -> None:
    """A session whose data names no user is looked up by the user of create's ctx."""
    stored = data(ctx(user=None))
    key = store.create_session(ctx(user="u1"), stored)
    assert store.find_by_user(ctx(), "u1") == (key, stored)


def test_session_without_any_user_has_no_lookup(store: SessionStore) -> None:
    """With no user in data or ctx, the session is stored but not findable by user."""
    stored = data(ctx(user=None))
    key = store.create_session(ctx(user=None), stored)
    assert store.get_session(key) == stored
    assert store.find_by_user(ctx(), "u1") is None


def test_newest_session_of_a_user_wins(store: SessionStore) -> None:
    """A second create for the same user points the lookup at the new key."""
    store.create_session(ctx(), data(step=1))
    newer = store.create_session(ctx(), data(step=2))
    assert store.find_by_user(ctx(), "u1") == (newer, data(step=2))


def test_user_id_wins_over_user(store: SessionStore) -> None:
    """The lookup uses user_id when it differs from user."""
    owner = attrs.evolve(ctx(), user="display-name", user_id="u1")
    key = store.create_session(owner, data(owner))
    assert store.find_by_user(ctx(), "u1") == (key, data(owner))
    assert store.find_by_user(ctx(), "display-name") is None


@pytest.mark.parametrize(
    "other",
    [ctx(env="prod"), ctx(tenant="globex"), ctx(team="sales"), ctx(team=None)],
)
def test_find_by_user_never_crosses_env_tenant_or_team(store: SessionStore, other: TenantCtx) -> None:
    """A user's session is invisible from another env, tenant or team."""
    store.create_session(ctx(), data())
    assert store.find_by_user(other, "u1") is None


def test_find_by_user_in_other_scope_finds_its_own(store: SessionStore) -> None:
    """The same user id in two teams has two independent sessions."""
    support = store.create_session(ctx(), data())
    sales_ctx = ctx(team="sales")
    sales = store.create_session(sales_ctx, data(sales_ctx))
    assert store.find_by_user(ctx(), "u1") == (support, data())
    assert store.find_by_user(sales_ctx, "u1") == (sales, data(sales_ctx))


@pytest.mark.parametrize("bad_user", ["", "u 1", "ü", "u" * 257])
def test_find_by_user_rejects_bad_user_ids(store: SessionStore, bad_user: str) -> None:
    """find_by_user validates the user id like any UserId."""
    with pytest.raises(InvalidInputError):
        store.find_by_user(ctx(), bad_user)


# -- update ----------------------------------------------------------------------


def test_update_replaces_data(store: SessionStore) -> None:
    """update_session replaces the payload under the same key."""
    key = store.create_session(ctx(), data(step=1))
    store.update_session(key, data(step=2))
    assert store.get_session(key) == data(step=2)
    assert store.find_by_user(ctx(), "u1") == (key, data(step=2))


def test_update_unknown_key_raises_and_stores_nothing(store: SessionStore) -> None:
    """Updating an unknown key is NotFound (a KeyError) and stores nothing (the 0.3 bug)."""
    key = str(uuid.uuid4())
    with pytest.raises(SessionNotFoundError) as info:
        store.update_session(key, data())
    assert isinstance(info.value, KeyError)
    assert info.value.key == key
    assert info.value.code is ErrorCode.NOT_FOUND
    assert store.get_session(key) is None
    assert store.find_by_user(ctx(), "u1") is None


@pytest.mark.parametrize(
    ("changed", "part"),
    [
        (ctx(env="prod"), "env/tenant"),
        (ctx(tenant="globex"), "env/tenant"),
        (ctx(team="sales"), "team"),
        (ctx(team=None), "team"),
        (ctx(user="u2"), "user"),
        (ctx(user=None), "user"),
    ],
)
def test_update_never_changes_owner(store: SessionStore, changed: TenantCtx, part: str) -> None:
    """An update that moves the session to another env, tenant, team or user, or drops its
    user, changes nothing (greentic's ensure_ctx_preserved, 0.4.3 and 0.4.7)."""
    key = store.create_session(ctx(), data(step=1))
    with pytest.raises(TenantMismatchError) as info:
        store.update_session(key, data(changed, step=2))
    assert info.value.part == part
    assert store.get_session(key) == data(step=1)
    assert store.find_by_user(ctx(), "u1") == (key, data(step=1))


def test_update_cannot_introduce_a_user(store: SessionStore) -> None:
    """A session stored without any user cannot gain one by update."""
    anonymous = ctx(user=None)
    key = store.create_session(anonymous, data(anonymous))
    with pytest.raises(TenantMismatchError):
        store.update_session(key, data(ctx(user="u1")))
    assert store.get_session(key) == data(anonymous)
    assert store.find_by_user(ctx(), "u1") is None


def test_update_without_user_keeps_the_ctx_user_lookup(store: SessionStore) -> None:
    """A session looked up by ctx's user keeps that lookup through an update whose data names none."""
    key = store.create_session(ctx(), data(ctx(user=None), step=1))
    store.update_session(key, data(ctx(user=None), step=2))
    assert store.find_by_user(ctx(), "u1") == (key, data(ctx(user=None), step=2))


def test_update_cannot_name_the_ctx_user_later(store: SessionStore) -> None:
    """Data stored without a user may not gain one by update, even the user the creating ctx
    named: the comparison is with the stored data (greentic 0.4.3 and 0.4.7 refuse it)."""
    key = store.create_session(ctx(), data(ctx(user=None), step=1))
    with pytest.raises(TenantMismatchError) as info:
        store.update_session(key, data(step=3))
    assert info.value.part == "user"
    assert store.get_session(key) == data(ctx(user=None), step=1)
    assert store.find_by_user(ctx(), "u1") == (key, data(ctx(user=None), step=1))


def test_update_without_user_does_not_take_the_lookup_back(store: SessionStore) -> None:
    """An update of user-less data leaves the lookup where it is: the user's newer session stays
    the one find_by_user returns (as 0.4.3 does; found by the recorded transcripts)."""
    older = store.create_session(ctx(), data(ctx(user=None), step=1))
    newer = store.create_session(ctx(), data(step=2))
    store.update_session(older, data(ctx(user=None), step=3))
    assert store.find_by_user(ctx(), "u1") == (newer, data(step=2))
    store.remove_session(newer)
    assert store.find_by_user(ctx(), "u1") is None


def test_update_points_lookup_at_updated_session(store: SessionStore) -> None:
    """Updating a user's older session makes it the one find_by_user returns."""
    older = store.create_session(ctx(), data(step=1))
    store.create_session(ctx(), data(step=2))
    store.update_session(older, data(step=3))
    assert store.find_by_user(ctx(), "u1") == (older, data(step=3))


# -- remove -------------------------------------------------------------------------


def test_remove_deletes_session_and_lookup(store: SessionStore) -> None:
    """After remove, neither get nor find_by_user returns the session."""
    key = store.create_session(ctx(), data())
    store.remove_session(key)
    assert store.get_session(key) is None
    assert store.find_by_user(ctx(), "u1") is None


def test_remove_unknown_key_raises(store: SessionStore) -> None:
    """Removing an unknown key (or removing twice) is NotFound."""
    key = store.create_session(ctx(), data())
    store.remove_session(key)
    with pytest.raises(SessionNotFoundError) as info:
        store.remove_session(key)
    assert info.value.key == key


def test_remove_old_session_keeps_newer_lookup(store: SessionStore) -> None:
    """Removing a session the lookup no longer points at leaves the lookup alone."""
    older = store.create_session(ctx(), data(step=1))
    newer = store.create_session(ctx(), data(step=2))
    store.remove_session(older)
    assert store.find_by_user(ctx(), "u1") == (newer, data(step=2))


def test_remove_newest_does_not_resurrect_older(store: SessionStore) -> None:
    """Removing the session the lookup points at clears it; the older one is not looked up again."""
    older = store.create_session(ctx(), data(step=1))
    newer = store.create_session(ctx(), data(step=2))
    store.remove_session(newer)
    assert store.find_by_user(ctx(), "u1") is None
    assert store.get_session(older) == data(step=1)


def test_update_after_remove_is_not_found(store: SessionStore) -> None:
    """A removed key cannot be updated back to life."""
    key = store.create_session(ctx(), data())
    store.remove_session(key)
    with pytest.raises(SessionNotFoundError):
        store.update_session(key, data())
    assert store.get_session(key) is None


# -- lifecycle and threads --------------------------------------------------------------


def test_closed_store_refuses_calls(store: SessionStore) -> None:
    """Every call on a closed store raises StoreClosedError; close is idempotent."""
    key = store.create_session(ctx(), data())
    store.close()
    store.close()
    with pytest.raises(StoreClosedError):
        store.get_session(key)
    with pytest.raises(StoreClosedError):
        store.create_session(ctx(), data())
    with pytest.raises(StoreClosedError):
        store.update_session(key, data())
    with pytest.raises(StoreClosedError):
        store.remove_session(key)
    with pytest.raises(StoreClosedError):
        store.find_by_user(ctx(), "u1")


def test_context_manager_closes(backend: Backend, tmp_path: Path) -> None:
    """Leaving a with block closes the store."""
    with backend.open(tmp_path / "cm") as opened:
        key = opened.create_session(ctx(), data())
    with pytest.raises(StoreClosedError):
        opened.get_session(key)


def test_concurrent_threads_lose_nothing(store: SessionStore) -> None:
    """Creates and updates from several threads all land, each under its own key."""
    keys: list[list[SessionKey]] = [[] for _ in range(4)]

    def work(worker: int) -> None:
        context = ctx(user=f"w{worker}")
        for step in range(25):
            key = store.create_session(context, data(context, step=step))
            store.update_session(key, data(context, step=step + 100))
            keys[worker].append(key)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for worker, worker_keys in enumerate(keys):
        context = ctx(user=f"w{worker}")
        assert len(set(worker_keys)) == 25
        for step, key in enumerate(worker_keys):
            assert store.get_session(key) == data(context, step=step + 100)
        assert store.find_by_user(context, f"w{worker}") == (worker_keys[-1], data(context, step=124))
