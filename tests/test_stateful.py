"""A Hypothesis state machine drives each backend beside a plain dict model.

After every step the backend and the model must agree on every key ever
made and every possible user lookup. Durable backends get extra rules:
close and reopen, and a second handle on the same directory that takes
over the writes (it must see everything the first handle acknowledged).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from filestore import (
    SessionCursor,
    SessionData,
    SessionNotFoundError,
    SessionStore,
    TenantCtx,
    TenantMismatchError,
)

from .support.backends import BACKENDS, Backend

ENVS = ("dev",)
TENANTS = ("acme", "globex")
TEAMS = (None, "support")
USERS = (None, "u1", "u2")

Scope = tuple[str, str, str | None, str | None]

contexts = st.builds(
    lambda env, tenant, team, user: TenantCtx.new(env, tenant).with_team(team).with_user(user),
    st.sampled_from(ENVS),
    st.sampled_from(TENANTS),
    st.sampled_from(TEAMS),
    st.sampled_from(USERS),
)
payloads = st.text(max_size=40)
# Mostly well-formed calls, so that sessions pile up on a few users.
mostly_same = st.sampled_from([True, True, True, False])


def make_data(context: TenantCtx, payload: str) -> SessionData:
    return SessionData(
        tenant_ctx=context,
        flow_id="flow.main",
        cursor=SessionCursor(node_pointer="node.wait"),
        context_json=payload,
    )


class DictModel:
    """The contract of SPEC.md in the plainest code: two dicts."""

    def __init__(self) -> None:
        self.sessions: dict[str, tuple[SessionData, Scope]] = {}
        self.by_user: dict[Scope, str] = {}

    @staticmethod
    def scope(context: TenantCtx, user: str | None) -> Scope:
        team = context.team_id or context.team
        return (context.env, context.tenant_id, team, user)

    def fence_ok(self, caller: TenantCtx, stored: SessionData) -> bool:
        owner = stored.tenant_ctx
        same_place = self.scope(caller, None) == self.scope(owner, None)
        data_user = owner.user_id or owner.user
        return same_place and (data_user is None or data_user == (caller.user_id or caller.user))

    def create(self, key: str, caller: TenantCtx, stored: SessionData) -> None:
        owner = stored.tenant_ctx
        user = owner.user_id or owner.user or caller.user_id or caller.user
        scope = self.scope(owner, user)
        self.sessions[key] = (stored, scope)
        if user is not None:
            self.by_user[scope] = key

    def update_ok(self, key: str, stored: SessionData) -> bool:
        # Compared with the stored data, its user (present or not) included.
        before, new = self.sessions[key][0].tenant_ctx, stored.tenant_ctx
        user_before = before.user_id or before.user
        return self.scope(new, new.user_id or new.user) == self.scope(before, user_before)

    def update(self, key: str, stored: SessionData) -> None:
        scope = self.sessions[key][1]
        self.sessions[key] = (stored, scope)
        owner = stored.tenant_ctx
        if owner.user_id or owner.user:
            self.by_user[scope] = key

    def remove(self, key: str) -> None:
        _, scope = self.sessions.pop(key)
        if self.by_user.get(scope) == key:
            del self.by_user[scope]

    def find(self, context: TenantCtx, user: str) -> tuple[str, SessionData] | None:
        key = self.by_user.get(self.scope(context, user))
        return None if key is None else (key, self.sessions[key][0])


class StoreMachine(RuleBasedStateMachine):
    """Drives ``backend`` and a ``DictModel`` with the same calls."""

    backend: Backend

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="filestore-model-"))
        self.store: SessionStore = self.backend.open(self.directory / "store")
        self.model = DictModel()
        self.known_keys: list[str] = []

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def pick_key(self, data: st.DataObject) -> str:
        use_known: bool = data.draw(st.booleans(), label="known")
        if self.known_keys and use_known:
            return data.draw(st.sampled_from(self.known_keys), label="key")
        return str(uuid.uuid4())

    @rule(caller=contexts, owner=contexts, payload=payloads, same=mostly_same)
    def create(self, caller: TenantCtx, owner: TenantCtx, payload: str, same: bool) -> None:
        stored = make_data(caller if same else owner, payload)
        if self.model.fence_ok(caller, stored):
            key = self.store.create_session(caller, stored)
            assert key not in self.model.sessions
            self.model.create(key, caller, stored)
            self.known_keys.append(key)
        else:
            with pytest.raises(TenantMismatchError):
                self.store.create_session(caller, stored)

    @rule(data=st.data(), owner=contexts, payload=payloads, same=mostly_same)
    def update(self, data: st.DataObject, owner: TenantCtx, payload: str, same: bool) -> None:
        key = self.pick_key(data)
        if key not in self.model.sessions:
            with pytest.raises(SessionNotFoundError):
                self.store.update_session(key, make_data(owner, payload))
            return
        # Usually keep the owner, so that most updates are accepted.
        stored = make_data(self.model.sessions[key][0].tenant_ctx if same else owner, payload)
        if self.model.update_ok(key, stored):
            self.store.update_session(key, stored)
            self.model.update(key, stored)
        else:
            with pytest.raises(TenantMismatchError):
                self.store.update_session(key, stored)

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        key = self.pick_key(data)
        if key in self.model.sessions:
            self.store.remove_session(key)
            self.model.remove(key)
        else:
            with pytest.raises(SessionNotFoundError):
                self.store.remove_session(key)

    @rule(context=contexts)
    def remove_active_session(self, context: TenantCtx) -> None:
        """Remove a user's active session, so older sessions of that user lose their lookup."""
        user = context.user or "u1"
        found = self.model.find(context, user)
        if found is not None:
            self.store.remove_session(found[0])
            self.model.remove(found[0])

    @precondition(lambda self: self.backend.durable)
    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self.backend.open(self.directory / "store")

    @precondition(lambda self: self.backend.durable)
    @rule()
    def switch_to_second_handle(self) -> None:
        """Open a second handle on the same directory and carry on with it."""
        second = self.backend.open(self.directory / "store")
        self.store.close()
        self.store = second

    @precondition(lambda self: hasattr(self.store, "write_snapshot"))
    @rule()
    def snapshot(self) -> None:
        self.store.write_snapshot()  # type: ignore[attr-defined]

    @precondition(lambda self: hasattr(self.store, "compact"))
    @rule()
    def compact(self) -> None:
        """Online compaction keeps every session and every lookup exactly."""
        self.store.compact()  # type: ignore[attr-defined]

    @invariant()
    def agrees_with_model(self) -> None:
        for key in self.known_keys:
            expected = self.model.sessions.get(key)
            assert self.store.get_session(key) == (None if expected is None else expected[0])
        for env, tenant, team, user in itertools.product(ENVS, TENANTS, TEAMS, USERS[1:]):
            context = TenantCtx.new(env, tenant).with_team(team)
            assert user is not None
            found = self.store.find_by_user(context, user)
            expected_found: Any = self.model.find(context, user)
            if found is None:
                assert expected_found is None
            else:
                assert (str(found[0]), found[1]) == expected_found


def _machine_for(name: str) -> type[StoreMachine]:
    return type(f"{name.title()}Machine", (StoreMachine,), {"backend": BACKENDS[name]})


_SETTINGS = settings(max_examples=60, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_agrees_with_dict_model(name: str) -> None:
    """Random call sequences give the same answers on the backend as on the dict model."""
    run_state_machine_as_test(_machine_for(name), settings=_SETTINGS)
