"""A Hypothesis state machine drives each backend beside a plain dict model.

After every step the backend and the model must agree on every key ever
made, every possible user lookup (``find_by_user``, waits included) and
every session's wait and deadline; the wait rules compare each answer.
Durable backends get extra rules: close and reopen, and a second handle on
the same directory that takes over the writes (it must see everything the
first handle acknowledged).

Time is a ``ManualClock`` the model and the store share; only the
``advance_clock`` rule moves it. A backend that keeps time by its server
(Redis) takes no clock: its waits are registered without TTLs.
"""

from __future__ import annotations

import datetime
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
    InvalidInputError,
    ReplyScope,
    SessionCursor,
    SessionData,
    SessionNotFoundError,
    SessionStore,
    TenantCtx,
    TenantMismatchError,
)
from filestore.backends import MovableStore

from .support.backends import ASYNC_BACKENDS, BACKENDS, Backend
from .support.clocks import ManualClock

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
SCOPES = (ReplyScope("chat-1"), ReplyScope("chat-1", thread="t-1"), ReplyScope("chat-2"))
wait_users = st.sampled_from(USERS[1:])
# No TTL, a zero TTL (expired at once) and TTLs the advance_clock steps run out.
ttls = st.one_of(st.none(), st.integers(0, 3000))
MULTIPLE = "multiple"  # the model's find_by_user answer where the store raises InvalidInputError
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
    """The contract of docs/api.md (five calls, waits) in the plainest code: a few dicts, told the time.

    ``waits`` maps a scope entry (the owner's lookup scope, the reply scope's
    hash) to its key; ``wait_of`` and ``deadlines`` hold each session's wait
    hash and TTL deadline. An expired session is dropped at once (the store
    may do it lazily: it is invisible either way).
    """

    def __init__(self) -> None:
        self.sessions: dict[str, tuple[SessionData, Scope]] = {}
        self.by_user: dict[Scope, str] = {}
        self.waits: dict[tuple[Scope, str], str] = {}
        self.wait_of: dict[str, str] = {}
        self.deadlines: dict[str, int] = {}
        # Sessions expired since the last purge: what purge_expired may still count.
        self.unpurged = 0

    @staticmethod
    def scope(context: TenantCtx, user: str | None) -> Scope:
        team = context.team_id or context.team
        return (context.env, context.tenant_id, team, user)

    @staticmethod
    def user_of(context: TenantCtx) -> str | None:
        return context.user_id or context.user

    def fence_ok(self, caller: TenantCtx, stored: SessionData) -> bool:
        owner = stored.tenant_ctx
        same_place = self.scope(caller, None) == self.scope(owner, None)
        data_user = self.user_of(owner)
        return same_place and (data_user is None or data_user == self.user_of(caller))

    def create(self, key: str, caller: TenantCtx, stored: SessionData) -> None:
        owner = stored.tenant_ctx
        user = self.user_of(owner) or self.user_of(caller)
        scope = self.scope(owner, user)
        self.sessions[key] = (stored, scope)
        if user is not None:
            self.by_user[scope] = key

    def update_ok(self, key: str, stored: SessionData) -> bool:
        # Compared with the stored data, its user (present or not) included.
        before, new = self.sessions[key][0].tenant_ctx, stored.tenant_ctx
        return self.scope(new, self.user_of(new)) == self.scope(before, self.user_of(before))

    def update(self, key: str, stored: SessionData) -> None:
        scope = self.sessions[key][1]
        self.sessions[key] = (stored, scope)
        if self.user_of(stored.tenant_ctx):
            self.by_user[scope] = key

    def remove(self, key: str) -> None:
        _, scope = self.sessions.pop(key)
        if self.by_user.get(scope) == key:
            del self.by_user[scope]
        self.unwait(key, scope)
        self.deadlines.pop(key, None)

    def unwait(self, key: str, owner: Scope) -> None:
        """Forget ``key``'s wait; its scope entry goes only if it still points at ``key``."""
        scope_hash = self.wait_of.pop(key, None)
        if scope_hash is not None and self.waits.get((owner, scope_hash)) == key:
            del self.waits[owner, scope_hash]

    def register_refusal(
        self, caller: TenantCtx, user_id: str, key: str, stored: SessionData
    ) -> type[Exception] | None:
        """The error ``register_wait`` must raise, in the order greentic checks, or ``None``."""
        if not self.fence_ok(caller, stored):
            return TenantMismatchError
        caller_user, data_user = self.user_of(caller), self.user_of(stored.tenant_ctx)
        if caller_user not in {None, user_id} or data_user != user_id:
            return InvalidInputError
        if key in self.sessions and not self.update_ok(key, stored):
            return TenantMismatchError
        return None

    def register(
        self,
        caller: TenantCtx,
        user_id: str,
        scope_hash: str,
        key: str,
        stored: SessionData,
        deadline: int | None,
    ) -> None:
        owner = self.scope(caller, user_id)
        if key in self.sessions:
            self.unwait(key, self.sessions[key][1])
        taken = self.waits.get((owner, scope_hash))
        if taken is not None and taken != key:
            del self.wait_of[taken]
        self.waits[owner, scope_hash] = key
        self.sessions[key] = (stored, owner)
        self.wait_of[key] = scope_hash
        if deadline is None:
            self.deadlines.pop(key, None)
        else:
            self.deadlines[key] = deadline

    def expire(self, now: int) -> None:
        for key in [key for key, deadline in self.deadlines.items() if now >= deadline]:
            self.remove(key)
            self.unpurged += 1

    def waits_of(self, context: TenantCtx, user_id: str) -> list[str]:
        owner = self.scope(context, user_id)
        return sorted(key for (scope, _hash), key in self.waits.items() if scope == owner)

    def find(self, context: TenantCtx, user: str) -> tuple[str, SessionData] | str | None:
        key = self.by_user.get(self.scope(context, user))
        if key is None:
            waits = self.waits_of(context, user)
            if len(waits) > 1:
                return MULTIPLE
            key = waits[0] if waits else None
        return None if key is None else (key, self.sessions[key][0])


class StoreMachine(RuleBasedStateMachine):
    """Drives ``backend`` and a ``DictModel`` with the same calls."""

    backend: Backend

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="filestore-model-"))
        self.clock = ManualClock()
        self.store: SessionStore = self.open()
        self.model = DictModel()
        self.known_keys: list[str] = []

    def open(self) -> SessionStore:
        path = self.directory / "store"
        if self.backend.takes_clock:
            return self.backend.open_with_clock(path, self.clock)
        return self.backend.open(path)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def pick_key(self, data: st.DataObject) -> str:
        use_known: bool = data.draw(st.booleans(), label="known")
        if self.known_keys and use_known:
            return data.draw(st.sampled_from(self.known_keys), label="key")
        return str(uuid.uuid4())

    def expect(self, error: type[Exception] | None, call: Any) -> Any:
        """``call()``'s answer, or the check that it raised ``error``."""
        if error is None:
            return call()
        with pytest.raises(error):
            call()
        return None

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
        found = self.model.by_user.get(self.model.scope(context, user))
        if found is not None:
            self.store.remove_session(found)
            self.model.remove(found)

    # -- wait routing (issue 14) ----------------------------------------------------------

    @rule(
        data=st.data(),
        caller=contexts,
        owner=contexts,
        user_id=wait_users,
        scope=st.sampled_from(SCOPES),
        payload=payloads,
        same=mostly_same,
        ttl_ms=ttls,
    )
    def register_wait(
        self,
        data: st.DataObject,
        caller: TenantCtx,
        owner: TenantCtx,
        user_id: str,
        scope: ReplyScope,
        payload: str,
        same: bool,
        ttl_ms: int | None,
    ) -> None:
        """Mostly a well-formed registration (ctx and data naming user_id), over a new or known key."""
        key = self.pick_key(data)
        if same:
            caller = caller.with_user(user_id)
        stored = make_data(caller if same else owner, payload)
        if not self.backend.takes_clock:
            ttl_ms = None
        ttl = None if ttl_ms is None else datetime.timedelta(milliseconds=ttl_ms)
        error = self.model.register_refusal(caller, user_id, key, stored)
        self.expect(error, lambda: self.store.register_wait(caller, user_id, scope, key, stored, ttl))
        if error is None:
            now = self.clock()
            deadline = None if ttl_ms is None else now + ttl_ms
            self.model.register(caller, user_id, scope.scope_hash(), key, stored, deadline)
            self.model.expire(now)  # a zero TTL is expired at once
            if key not in self.known_keys:
                self.known_keys.append(key)

    @rule(context=contexts, user_id=wait_users, scope=st.sampled_from(SCOPES))
    def find_wait_by_scope(self, context: TenantCtx, user_id: str, scope: ReplyScope) -> None:
        expected = self.model.waits.get((self.model.scope(context, user_id), scope.scope_hash()))
        assert self.store.find_wait_by_scope(context, user_id, scope) == expected

    @rule(context=contexts, user_id=wait_users)
    def list_waits_for_user(self, context: TenantCtx, user_id: str) -> None:
        assert self.store.list_waits_for_user(context, user_id) == self.model.waits_of(context, user_id)

    @rule(context=contexts, user_id=wait_users, scope=st.sampled_from(SCOPES))
    def clear_wait(self, context: TenantCtx, user_id: str, scope: ReplyScope) -> None:
        self.store.clear_wait(context, user_id, scope)
        key = self.model.waits.get((self.model.scope(context, user_id), scope.scope_hash()))
        if key is not None:
            self.model.remove(key)

    @rule()
    def purge_expired(self) -> None:
        """purge_expired counts at most what expired since the last purge (reads may drop some first)."""
        removed = self.store.purge_expired()
        assert 0 <= removed <= self.model.unpurged
        self.model.unpurged = 0
        assert self.store.purge_expired() == 0

    @precondition(lambda self: self.backend.takes_clock)
    @rule(ms=st.integers(1, 2000))
    def advance_clock(self, ms: int) -> None:
        self.clock.advance(ms)
        self.model.expire(self.clock())

    @precondition(lambda self: self.backend.durable)
    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self.open()

    @precondition(lambda self: self.backend.durable)
    @rule()
    def switch_to_second_handle(self) -> None:
        """Open a second handle on the same directory and carry on with it."""
        second = self.open()
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
            expected_found = self.model.find(context, user)
            if expected_found == MULTIPLE:
                with pytest.raises(InvalidInputError, match="multiple waits"):
                    self.store.find_by_user(context, user)
            else:
                found = self.store.find_by_user(context, user)
                assert (None if found is None else (str(found[0]), found[1])) == expected_found

    @invariant()
    def waits_and_deadlines_agree(self) -> None:
        """Each live session holds the model's wait hash and deadline (a KEEPTTL update included)."""
        assert isinstance(self.store, MovableStore)
        held = {
            str(session.key): (session.wait, session.deadline_ms) for session in self.store.iter_sessions()
        }
        model = self.model
        assert held == {key: (model.wait_of.get(key), model.deadlines.get(key)) for key in model.sessions}


def _machine_for(name: str) -> type[StoreMachine]:
    backend = BACKENDS[name] if name in BACKENDS else ASYNC_BACKENDS[name]
    return type(f"{name.title()}Machine", (StoreMachine,), {"backend": backend})


_SETTINGS = settings(max_examples=60, stateful_step_count=40, deadline=None)


# On the cluster a reopen is a new cluster client (about 0.1 s): the run takes minutes there,
# so it is a slow lane; the contract and transcript suites run on the cluster every time.
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=[pytest.mark.slow] if name == "redis-cluster" else [])
        for name in sorted(BACKENDS) + sorted(ASYNC_BACKENDS)
    ],
)
def test_backend_agrees_with_dict_model(name: str) -> None:
    """Random call sequences give the same answers on the backend as on the dict model."""
    run_state_machine_as_test(_machine_for(name), settings=_SETTINGS)
