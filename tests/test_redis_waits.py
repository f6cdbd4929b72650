"""Wait routing on Redis in greentic-session 0.4.7's layout: Rust and Python runners see each other's waits.

``Rust047`` issues the exact commands greentic-session 0.4.7's
``src/backends/redis.rs`` issues for ``register_wait`` and its reads (the
same keys, values and TTL commands, in the same order), with redis-py. A wait
either side registers must be found by the other; TTLs are milliseconds,
kept across updates; removing a session leaves no wait entry behind.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Iterator

import attrs
import pytest
import redis

from filestore import (
    InMemorySessionStore,
    InvalidInputError,
    RedisSessionStore,
    ReplyScope,
    SessionData,
    SessionKey,
    TenantCtx,
    TenantMismatchError,
)
from filestore.backends import migrate

from .support import ctx, data
from .support.clocks import ServerClock
from .support.redis_server import drop_namespace, redis_url

SCOPE = ReplyScope("chat-1", "topic-9", "msg-3", "cid-7")
OTHER_SCOPE = ReplyScope("chat-2")
HASH = "5251e2c9eb975466809eecbe51be7aa8dc7785ad05cb393a8f47a3a2f42cc544"  # the vector


class Rust047:
    """greentic-session 0.4.7's ``RedisSessionStore``, command for command (``src/backends/redis.rs``)."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.ns = namespace

    def _tail(self, context: TenantCtx, user: str) -> str:
        team = context.effective_team or "-"
        return f"{context.env}:{context.tenant_id}:{team}:{user}"

    def user_waits_key(self, context: TenantCtx, user: str) -> str:
        return f"{self.ns}:waits:user:{self._tail(context, user)}"

    def scope_wait_key(self, context: TenantCtx, user: str, scope: ReplyScope) -> str:
        return f"{self.ns}:waits:scope:{self._tail(context, user)}:{scope.scope_hash()}"

    def register_wait(
        self,
        context: TenantCtx,
        user: str,
        scope: ReplyScope,
        key: str,
        stored: SessionData,
        ttl: datetime.timedelta | None,
    ) -> None:
        """SET session, PEXPIRE; SADD; GET scope, SET scope, PEXPIRE; SREM the previous key."""
        entry = f"{self.ns}:session:{key}"
        self.client.set(entry, stored.to_json())
        self._apply_ttl(entry, ttl)
        user_waits = self.user_waits_key(context, user)
        self.client.sadd(user_waits, key)
        scope_key = self.scope_wait_key(context, user, scope)
        previous = self.client.get(scope_key)
        self.client.set(scope_key, key)
        self._apply_ttl(scope_key, ttl)
        if previous is not None and previous != key:
            self.client.srem(user_waits, previous)

    def remove_session(self, key: str) -> None:
        """GET the session, DEL it, SREM it from its data's user's waits (no other key is touched)."""
        stored = self._session(key)
        assert stored is not None, f"no session {key}"
        self.client.delete(f"{self.ns}:session:{key}")
        user = stored.tenant_ctx.effective_user
        if user is not None:
            self.client.srem(self.user_waits_key(stored.tenant_ctx, str(user)), key)

    def _apply_ttl(self, name: str, ttl: datetime.timedelta | None) -> None:
        if ttl is not None:
            self.client.pexpire(name, max(ttl // datetime.timedelta(milliseconds=1), 1))

    def _session(self, key: str) -> SessionData | None:
        payload = self.client.get(f"{self.ns}:session:{key}")
        return None if payload is None else SessionData.from_json(payload)

    def _matches(self, stored: SessionData, context: TenantCtx, user: str) -> bool:
        found = stored.tenant_ctx
        same_place = (found.env, found.tenant_id, found.effective_team) == (
            context.env,
            context.tenant_id,
            context.effective_team,
        )
        return same_place and found.effective_user in {None, user}

    def find_wait_by_scope(self, context: TenantCtx, user: str, scope: ReplyScope) -> str | None:
        """GET the scope key, GET the session, compare env/tenant/team/user (no cleaning needed here)."""
        found = self.client.get(self.scope_wait_key(context, user, scope))
        if found is None:
            return None
        key = str(found)
        stored = self._session(key)
        return key if stored is not None and self._matches(stored, context, user) else None

    def list_waits_for_user(self, context: TenantCtx, user: str) -> list[str]:
        """SMEMBERS, then each session read and compared."""
        found = []
        for member in self.client.smembers(self.user_waits_key(context, user)):
            key = str(member)
            stored = self._session(key)
            if stored is not None and self._matches(stored, context, user):
                found.append(key)
        return sorted(found)


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"waits:{random.randrange(1 << 40)}"
    yield name
    drop_namespace(name)


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url(), decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def store(namespace: str) -> Iterator[RedisSessionStore]:
    with RedisSessionStore(redis_url(), namespace=namespace) as opened:
        yield opened


@pytest.fixture
def rust(raw: redis.Redis, namespace: str) -> Rust047:
    return Rust047(raw, namespace)


def keys_of(raw: redis.Redis, namespace: str) -> set[str]:
    return set(raw.scan_iter(match=f"{namespace}:*"))


def test_scope_hash_keys_the_scope_entry(store: RedisSessionStore, rust: Rust047) -> None:
    """The scope entry's key ends in greentic-types' scope_hash (the issue's test vector)."""
    store.register_wait(ctx(), "u1", SCOPE, "k1", data())
    assert rust.scope_wait_key(ctx(), "u1", SCOPE).endswith(HASH)
    assert rust.client.get(f"{rust.ns}:waits:scope:dev:acme:support:u1:{HASH}") == "k1"
    assert rust.client.smembers(f"{rust.ns}:waits:user:dev:acme:support:u1") == {"k1"}


def test_a_wait_a_rust_runner_registered_is_routed(store: RedisSessionStore, rust: Rust047) -> None:
    """0.4.7's raw commands register a wait that find_wait_by_scope, list and find_by_user all find."""
    stored = data(step=4)
    rust.register_wait(ctx(), "u1", SCOPE, "rust-1", stored, datetime.timedelta(minutes=5))
    assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == "rust-1"
    assert store.find_wait_by_scope(ctx(user=None), "u1", SCOPE) == "rust-1"
    assert store.list_waits_for_user(ctx(), "u1") == ["rust-1"]
    assert store.find_by_user(ctx(), "u1") == ("rust-1", stored)
    assert store.get_session("rust-1") == stored
    # Another user, team or scope does not see it.
    assert store.find_wait_by_scope(ctx(), "u2", SCOPE) is None
    assert store.find_wait_by_scope(ctx(team=None), "u1", SCOPE) is None
    assert store.find_wait_by_scope(ctx(), "u1", OTHER_SCOPE) is None
    # A second Rust registration at the scope takes it over; the first leaves the user's waits.
    rust.register_wait(ctx(), "u1", SCOPE, "rust-2", data(step=5), None)
    assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == "rust-2"
    assert store.list_waits_for_user(ctx(), "u1") == ["rust-2"]
    assert store.get_session("rust-1") == stored


def test_a_wait_filestore_registered_is_found_by_0_4_7_reads(
    store: RedisSessionStore, rust: Rust047, raw: redis.Redis, namespace: str
) -> None:
    """GET scope -> key, GET session -> serde JSON SessionData accepts, SMEMBERS: all as 0.4.7 reads."""
    stored = data(step=2)
    store.register_wait(ctx(), "u1", SCOPE, "py-1", stored, datetime.timedelta(seconds=90))
    store.register_wait(ctx(), "u1", OTHER_SCOPE, "py-2", data(step=3))
    assert rust.find_wait_by_scope(ctx(), "u1", SCOPE) == "py-1"
    assert rust.find_wait_by_scope(ctx(), "u1", OTHER_SCOPE) == "py-2"
    assert rust.list_waits_for_user(ctx(), "u1") == ["py-1", "py-2"]
    assert raw.get(f"{namespace}:session:py-1") == stored.to_json()
    assert SessionData.from_json(str(raw.get(f"{namespace}:session:py-1"))) == stored
    # Re-registering moves the wait: the old scope entry is gone for Rust's reads too.
    store.register_wait(ctx(), "u1", OTHER_SCOPE, "py-1", stored)
    assert rust.find_wait_by_scope(ctx(), "u1", SCOPE) is None
    assert rust.find_wait_by_scope(ctx(), "u1", OTHER_SCOPE) == "py-1"
    assert rust.list_waits_for_user(ctx(), "u1") == ["py-1"]


def test_ttls_are_milliseconds_and_updates_keep_them(
    store: RedisSessionStore, raw: redis.Redis, namespace: str
) -> None:
    """The TTL is set in ms on the session, its scope entry and our keys at one instant; updates keep it."""
    ttl = datetime.timedelta(seconds=100, milliseconds=500, microseconds=1)
    store.register_wait(ctx(), "u1", SCOPE, "k1", data(), ttl)
    expiring = [
        f"{namespace}:session:k1",
        f"{namespace}:waits:scope:dev:acme:support:u1:{HASH}",
        f"{namespace}:owner:k1",
        f"{namespace}:wait:k1",
    ]
    deadlines = {raw.pexpiretime(name) for name in expiring}
    assert len(deadlines) == 1
    before = int(raw.pttl(expiring[0]))
    assert 100_000 < before <= 100_501  # whole ms, rounded up: not seconds
    assert raw.pttl(f"{namespace}:waits:user:dev:acme:support:u1") == -1  # the SET has none, as in Rust
    store.update_session("k1", data(step=9))
    after = int(raw.pttl(expiring[0]))
    assert 0 < after <= before
    assert {raw.pexpiretime(name) for name in expiring} == deadlines
    assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == "k1"
    # Registering again without a TTL makes every key of the wait persistent.
    store.register_wait(ctx(), "u1", SCOPE, "k1", data(step=10))
    assert [raw.pttl(name) for name in expiring] == [-1] * len(expiring)


def test_an_expired_wait_is_gone_for_every_call_and_purge_cleans_the_set(
    store: RedisSessionStore, raw: redis.Redis, namespace: str
) -> None:
    """Past a 1 ms TTL (server clock) nothing finds the wait; purge_expired prunes the SET, answers 0."""
    store.register_wait(ctx(), "u1", SCOPE, "k1", data(), datetime.timedelta(milliseconds=1))
    store.register_wait(ctx(), "u1", OTHER_SCOPE, "k2", data(step=1))
    ServerClock().advance(5)
    assert store.get_session("k1") is None
    assert store.find_wait_by_scope(ctx(), "u1", SCOPE) is None
    waits = f"{namespace}:waits:user:dev:acme:support:u1"
    assert raw.smembers(waits) == {"k1", "k2"}  # no read has met it yet
    assert store.purge_expired() == 0  # Redis removed the session itself
    assert raw.smembers(waits) == {"k2"}
    assert store.list_waits_for_user(ctx(), "u1") == ["k2"]


def test_remove_and_clear_leave_no_wait_entry_behind(
    store: RedisSessionStore, raw: redis.Redis, namespace: str
) -> None:
    """remove_session and clear_wait delete every key of the wait (scan of the namespace: empty)."""
    for team in ("support", None, "-"):
        where = ctx(team=team)
        store.register_wait(where, "u1", SCOPE, f"a-{team}", data(where), datetime.timedelta(hours=1))
        store.register_wait(where, "u1", OTHER_SCOPE, f"b-{team}", data(where, step=1))
        created = store.create_session(where, data(where, step=2))
        store.register_wait(where, "u1", ReplyScope("chat-3"), created, data(where, step=3))
    assert any(":waits:" in name for name in keys_of(raw, namespace))
    for team in ("support", None, "-"):
        where = ctx(team=team)
        store.remove_session(f"a-{team}")
        store.clear_wait(where, "u1", OTHER_SCOPE)
        store.clear_wait(where, "u1", OTHER_SCOPE)  # nothing there: fine
        (created,) = store.list_waits_for_user(where, "u1")
        store.remove_session(created)
    assert keys_of(raw, namespace) == set()


def test_a_taken_over_key_keeps_its_session_and_the_newer_key_its_entry(
    store: RedisSessionStore, raw: redis.Redis, namespace: str
) -> None:
    """The first key leaves the waits (session and TTL stay); removing it later spares the new entry."""
    store.register_wait(ctx(), "u1", SCOPE, "first", data(), datetime.timedelta(hours=1))
    store.register_wait(ctx(), "u1", SCOPE, "second", data(step=1))
    assert store.list_waits_for_user(ctx(), "u1") == ["second"]
    assert store.get_session("first") == data()
    assert int(raw.pttl(f"{namespace}:session:first")) > 0
    store.remove_session("first")  # greentic 0.4.7's in-memory store deletes the entry here
    assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == "second"


def test_no_team_and_team_dash_keep_their_own_waits(
    store: RedisSessionStore, rust: Rust047, namespace: str
) -> None:
    """The two scopes sharing greentic's wait keys never find, list, take over or clear each other's waits."""
    teamless, dashed = ctx(team=None), ctx(team="-")
    store.register_wait(teamless, "u1", SCOPE, "none", data(teamless))
    store.register_wait(dashed, "u1", SCOPE, "dash", data(dashed))
    assert store.find_wait_by_scope(teamless, "u1", SCOPE) == "none"
    assert store.find_wait_by_scope(dashed, "u1", SCOPE) == "dash"
    assert store.list_waits_for_user(teamless, "u1") == ["none"]
    assert store.list_waits_for_user(dashed, "u1") == ["dash"]
    assert rust.client.get(rust.scope_wait_key(dashed, "u1", SCOPE)) == "dash"  # greentic's: the newest
    # A 0.4.7 reader in the no-team scope cleans the shared entry it finds of the other team.
    rust.client.delete(rust.scope_wait_key(teamless, "u1", SCOPE))
    rust.client.srem(rust.user_waits_key(teamless, "u1"), "dash")
    assert store.find_wait_by_scope(dashed, "u1", SCOPE) == "dash"
    assert store.list_waits_for_user(dashed, "u1") == ["dash"]
    store.clear_wait(dashed, "u1", SCOPE)
    assert store.find_wait_by_scope(teamless, "u1", SCOPE) == "none"
    assert store.get_session("none") == data(teamless)
    assert store.find_by_user(teamless, "u1") == ("none", data(teamless))
    assert store.find_by_user(dashed, "u1") is None


def test_find_by_user_prefers_the_lookup_then_the_only_wait(store: RedisSessionStore) -> None:
    """The create lookup answers first; without one, one wait answers and several are InvalidInputError."""
    store.register_wait(ctx(), "u1", SCOPE, "w1", data(step=1))
    assert store.find_by_user(ctx(), "u1") == ("w1", data(step=1))
    created = store.create_session(ctx(), data(step=2))
    store.register_wait(ctx(), "u1", OTHER_SCOPE, "w2", data(step=3))
    assert store.find_by_user(ctx(), "u1") == (created, data(step=2))
    store.remove_session(created)
    with pytest.raises(InvalidInputError, match="multiple waits"):
        store.find_by_user(ctx(), "u1")


def test_register_over_a_session_applies_the_update_rules(store: RedisSessionStore) -> None:
    """A registration over a live key of another team is refused as an update would be; nothing changes."""
    other = ctx(team="sales")
    key = store.create_session(other, data(other))
    with pytest.raises(TenantMismatchError, match="team mismatch"):
        store.register_wait(ctx(), "u1", SCOPE, key, data())
    assert store.get_session(key) == data(other)
    assert store.list_waits_for_user(ctx(), "u1") == []


def test_iter_import_and_migrate_carry_waits_and_deadlines(
    store: RedisSessionStore, raw: redis.Redis, namespace: str
) -> None:
    """iter_sessions yields wait and deadline (PEXPIRETIME); import sets PEXPIREAT; both ways via memory."""
    store.register_wait(ctx(), "u1", SCOPE, "k1", data(), datetime.timedelta(hours=2))
    store.create_session(ctx(), data(step=1))
    by_key = {stored.key: stored for stored in store.iter_sessions()}
    first = by_key[SessionKey("k1")]
    # Redis expires a key once its clock passes the expiry time: the deadline is the next ms.
    assert (first.wait, first.deadline_ms) == (HASH, raw.pexpiretime(f"{namespace}:session:k1") + 1)
    memory = InMemorySessionStore()
    migrate(store, memory)
    with RedisSessionStore(redis_url(), namespace=f"{namespace}:copy") as copy:
        migrate(memory, copy)
        assert raw.pexpiretime(f"{namespace}:copy:session:k1") + 1 == first.deadline_ms
        entry = f"{namespace}:copy:waits:scope:dev:acme:support:u1:{HASH}"
        assert raw.pexpiretime(entry) + 1 == first.deadline_ms
        assert copy.find_wait_by_scope(ctx(), "u1", SCOPE) == "k1"
        assert sorted(copy.iter_sessions(), key=str) == sorted(store.iter_sessions(), key=str)
        # A wait whose scope entry another key holds is refused, as in memory.
        copy.register_wait(ctx(), "u1", OTHER_SCOPE, "holder", data(step=5))
        holder = next(stored for stored in copy.iter_sessions() if stored.key == "holder")
        clash = attrs.evolve(first, key=SessionKey("k9"), wait=OTHER_SCOPE.scope_hash(), deadline_ms=None)
        with pytest.raises(InvalidInputError, match="held by another key"):
            copy.import_session(clash)
        reference = InMemorySessionStore()
        reference.import_session(holder)
        with pytest.raises(InvalidInputError, match="held by another key"):
            reference.import_session(clash)


def test_a_rust_written_wait_is_exported_with_its_scope(store: RedisSessionStore, rust: Rust047) -> None:
    """iter_sessions finds a Rust-written wait's scope from greentic's entry: migrate keeps it routable."""
    rust.register_wait(ctx(), "u1", SCOPE, "rust-1", data(), None)
    rust.register_wait(ctx(), "u1", OTHER_SCOPE, "rust-2", data(step=1), None)
    rust.register_wait(ctx(), "u1", OTHER_SCOPE, "rust-3", data(step=2), None)  # takes rust-2's scope
    waits = {stored.key: stored.wait for stored in store.iter_sessions()}
    assert waits == {"rust-1": HASH, "rust-2": None, "rust-3": OTHER_SCOPE.scope_hash()}
    memory = InMemorySessionStore()
    migrate(store, memory)
    assert memory.find_wait_by_scope(ctx(), "u1", SCOPE) == "rust-1"
    assert memory.list_waits_for_user(ctx(), "u1") == ["rust-1", "rust-3"]


def test_a_key_rust_removed_and_registered_again_is_routed_for_its_new_team(
    store: RedisSessionStore, rust: Rust047
) -> None:
    """filestore's owner record of a key outlives a Rust remove (Rust knows nothing of it); a wait
    Rust then registers under that key for another team is still that team's, on both sides."""
    sales = ctx(team="sales")
    store.register_wait(ctx(), "u1", SCOPE, "k", data())
    rust.remove_session("k")
    rust.register_wait(sales, "u1", SCOPE, "k", data(sales, 1), None)
    assert store.find_wait_by_scope(sales, "u1", SCOPE) == "k"
    assert store.list_waits_for_user(sales, "u1") == ["k"]
    assert store.find_by_user(sales, "u1") == ("k", data(sales, 1))
    assert store.find_wait_by_scope(ctx(), "u1", SCOPE) is None
    # filestore's reads cleaned nothing of it: the Rust runner still routes it.
    assert rust.find_wait_by_scope(sales, "u1", SCOPE) == "k"
    assert rust.list_waits_for_user(sales, "u1") == ["k"]


def test_a_key_rust_removed_and_registered_at_another_scope_stays_listed(
    store: RedisSessionStore, rust: Rust047
) -> None:
    """filestore's wait marker of a key outlives a Rust remove; when Rust registers the key again
    at another scope, the marker's old scope must not make filestore drop it from the user's waits."""
    store.register_wait(ctx(), "u1", SCOPE, "k", data())
    rust.remove_session("k")
    assert store.find_wait_by_scope(ctx(), "u1", SCOPE) is None  # cleans the dangling scope entry
    rust.register_wait(ctx(), "u1", OTHER_SCOPE, "k", data(step=1), None)
    assert store.list_waits_for_user(ctx(), "u1") == ["k"]
    assert rust.list_waits_for_user(ctx(), "u1") == ["k"]
    assert store.find_wait_by_scope(ctx(), "u1", OTHER_SCOPE) == "k"
    assert {stored.key: stored.wait for stored in store.iter_sessions()} == {"k": OTHER_SCOPE.scope_hash()}


def test_a_namespace_with_glob_characters_purges_and_lists_only_its_own_keys(namespace: str) -> None:
    """SCAN MATCH is a glob: a namespace holding ``*`` must not reach another namespace's keys,
    neither purge_expired pruning its SETs of wait keys nor iter_sessions listing its sessions."""
    other = f"{namespace}x"
    globbed = f"{namespace}*"
    try:
        with (
            RedisSessionStore(redis_url(), namespace=other) as neighbour,
            RedisSessionStore(redis_url(), namespace=globbed) as store,
        ):
            neighbour.register_wait(ctx(), "u1", SCOPE, "k", data())
            store.register_wait(ctx(), "u1", OTHER_SCOPE, "k", data(step=1))
            assert [(stored.key, stored.wait) for stored in store.iter_sessions()] == [
                ("k", OTHER_SCOPE.scope_hash())
            ]
            store.remove_session("k")
            assert store.purge_expired() == 0
            assert neighbour.list_waits_for_user(ctx(), "u1") == ["k"]
            assert neighbour.find_by_user(ctx(), "u1") == ("k", data())
    finally:
        drop_namespace(other)
        drop_namespace(globbed)


def test_importing_a_rust_written_wait_again_finds_it_already_there(
    store: RedisSessionStore, rust: Rust047
) -> None:
    """A Rust-written wait has no marker of ours: import_session of the session iter_sessions
    reports for it (its scope found from greentic's entry) is 'already there', not 'different'
    (re-running an interrupted migrate or import must be safe)."""
    rust.register_wait(ctx(), "u1", SCOPE, "rust-1", data(), None)
    (stored,) = store.iter_sessions()
    assert stored.wait == HASH
    assert store.import_session(stored) is False
    assert store.find_wait_by_scope(ctx(), "u1", SCOPE) == "rust-1"


@pytest.mark.parametrize("remover", ["filestore", "rust"])
def test_a_teamless_wait_rust_took_over_stays_gone_once_the_new_key_is_removed(
    store: RedisSessionStore, rust: Rust047, remover: str
) -> None:
    """Without a team, filestore also keeps its own scope entry; a Rust runner taking the scope
    over rewrites only greentic's. Once Rust's key is removed (by either side), the taken-over
    key must not come back through filestore's entry: as on every store, the scope is then empty."""
    teamless = ctx(team=None)
    store.register_wait(teamless, "u1", SCOPE, "first", data(teamless))
    rust.register_wait(teamless, "u1", SCOPE, "rust-1", data(teamless, 1), None)
    assert store.find_wait_by_scope(teamless, "u1", SCOPE) == "rust-1"
    if remover == "filestore":
        store.remove_session("rust-1")
    else:
        rust.remove_session("rust-1")
    assert store.find_wait_by_scope(teamless, "u1", SCOPE) is None
    assert store.list_waits_for_user(teamless, "u1") == []
    assert store.find_by_user(teamless, "u1") is None
    assert store.get_session("first") == data(teamless)  # a taken-over key's session stays
    assert rust.find_wait_by_scope(teamless, "u1", SCOPE) is None
