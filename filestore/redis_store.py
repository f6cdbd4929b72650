"""``RedisSessionStore``: the SessionStore contract on Redis, in greentic-session's key layout.

Layout (shared with the Rust crate, so Python and Rust runners can share one
Redis; the full list, with our own entries, is in ``filestore.redis_scripts``)::

    {ns}:session:{key}                                        the SessionData JSON (serde's)
    {ns}:user:{env}:{tenant_id}:{team or "-"}:{user}           the user's active session (0.3-0.4.3)
    {ns}:waits:user:{env}:{tenant_id}:{team or "-"}:{user}     SET of the user's wait keys (0.4.5+)
    {ns}:waits:scope:{env}:{tenant_id}:{team or "-"}:{user}:{scope_hash}   a wait's key (0.4.5+)

Ours, unknown to the Rust crate: ``{ns}:owner:{key}`` records the user a
session was created for when only the creating ``ctx`` named one (the data
does not; Rust-written sessions have none, and their owner is read from their
data), and ``{ns}:wait:{key}`` the scope_hash of a session's wait, so removing
or re-registering it finds its scope entry. Every mutation is one Lua script,
so the session, its owner, its lookups and its wait entries change together,
and many writers on many hosts never leave them disagreeing. On a Redis
Cluster the same scripts run as steps, one command per key
(``filestore.redis_steps``), in an order every reader can follow (see
docs/scaling-out.md for what is then atomic and what is not).

TTLs: ``register_wait`` sets the TTL in milliseconds (``PEXPIRE``, as
greentic) on the session key, the scope entry and our own keys of the
session, in one script; an update keeps it (``SET ... KEEPTTL``). The server
expires them on its own clock, so an expired session is invisible to every
call at once (Redis keeps a key through its expiry millisecond: a TTL of n ms
lasts one ms longer than on the memory store's clock, and ``iter_sessions``
reports the deadline as that expiry time + 1); the SETs of wait keys and the lookups have no TTL and are
cleaned by the reads, as greentic's reads clean them (and by ``purge_expired``).

greentic's lookup key writes a missing team as ``-``, which is also a valid
team id, so "no team" and the team ``-`` share it. It keeps greentic's
meaning (the newest session either scope, or a Rust runner, pointed it at),
and ``find_by_user`` answers from it only when the session's stored owner is
the scope asked for; otherwise from that scope's own ``scoped-user`` entry,
where the empty team field stands for none (an id is never empty). So the two
scopes never see, take over or remove each other's lookups, exactly as
``InMemorySessionStore`` behaves. Waits get the same treatment: greentic's
scope entry answers when its session is the scope's, else the scope's own
``scoped-waits`` entry, and each of the two keeps its own ``scoped-waits``
SET, so neither takes over, lists or cleans the other's waits. The user part needs none of this: a session
without a user has no lookup, so ``-`` there is only ever the user ``-``.

Failures: an unreachable or failing server raises ``BackendUnavailableError``
(greentic code ``Unavailable``) naming the address. A write that raised may or
may not have been applied (the script ran or not, never half); its durability
is the server's: with ``appendonly yes`` and ``appendfsync always`` an
acknowledged write survives a server crash, with ``everysec`` up to a second
of writes may be lost.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import redis
import redis.cluster
import redis.exceptions

from filestore import redis_scripts as scripts
from filestore.contract import (
    DEFAULT_MAX_RECORD_SIZE,
    ClosesOnExit,
    StoredSession,
    check_context_fence,
    check_ctx_preserved,
    check_max_record_size,
    check_record_size,
    check_session_data,
    check_stored_session,
    check_tenant_ctx,
    lookup_scope,
    session_scope,
)
from filestore.errors import (
    BackendUnavailableError,
    CorruptionError,
    InvalidInputError,
    SessionNotFoundError,
    StoreClosedError,
)
from filestore.ids import SessionKey, SessionScope, UserId, check_key
from filestore.model import ReplyScope, SessionData, TenantCtx
from filestore.redis_connect import Client, connect, describe, failure, timeout
from filestore.redis_layout import (
    DEFAULT_NAMESPACE,
    check_outcome,
    deadline,
    encodable,
    find_args,
    glob_literal,
    owner_of,
    register_args,
    session_key,
    store_args,
    stored_data,
    update_args,
)
from filestore.waits import (
    check_registration,
    only_wait,
    wait_address,
    wait_lookup,
)

__all__ = ["DEFAULT_NAMESPACE", "RedisSessionStore"]


class RedisSessionStore(ClosesOnExit):
    """A ``SessionStore`` on Redis (one server, a cluster or Sentinel), in greentic-session's key layout.

    ``url``: ``redis://host:port/db``, ``rediss://``, ``unix://``,
    ``redis+cluster://host:port,...`` or ``redis+sentinel://host:port,.../MASTER``
    (see ``filestore.redis_connect``); ``client`` (a ``redis.Redis``, or a
    ``redis.cluster.RedisCluster``) may be given instead. Timeouts are in
    seconds. TTLs are the server's: it expires the keys on its own clock.

    ``min_replicas``: after each write, ``WAIT min_replicas replica_timeout``;
    fewer replicas acknowledging raises ``BackendUnavailableError`` (the
    write was applied on the master, and may be lost if it fails now).
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        namespace: str = DEFAULT_NAMESPACE,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        client: Client | None = None,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
        min_replicas: int = 0,
        replica_timeout: float = 1.0,
    ) -> None:
        if (
            not isinstance(namespace, str)
            or not namespace
            or not namespace.isprintable()
            or any(character.isspace() for character in namespace)
            or not encodable(namespace)
        ):
            raise InvalidInputError(
                f"namespace must be a non-empty string of printable characters without spaces, "
                f"not {namespace!r}",
                field="namespace",
                rule="non-empty, printable, no spaces",
            )
        if client is None and not (isinstance(url, str) and url and encodable(url)):
            raise InvalidInputError(f"url must be a redis URL, not {url!r}", field="url", rule="a URL")
        if client is not None and not isinstance(client, (redis.Redis, redis.cluster.RedisCluster)):
            raise InvalidInputError(
                f"client must be a redis.Redis or RedisCluster, not {type(client).__name__}",
                field="client",
                rule="a Redis",
            )
        if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 0:
            raise InvalidInputError(
                f"min_replicas must be a count of replicas (an int >= 0), not {min_replicas!r}",
                field="min_replicas",
                rule=">= 0",
            )
        connect_timeout = timeout("connect_timeout", connect_timeout)
        command_timeout = timeout("command_timeout", command_timeout)
        self.namespace = namespace
        self.max_record_size = check_max_record_size(max_record_size)
        self.min_replicas = min_replicas
        replica_timeout = timeout("replica_timeout", replica_timeout)
        if min_replicas and replica_timeout >= command_timeout:
            # WAIT blocks for up to replica_timeout: the socket must outlast it.
            raise InvalidInputError(
                f"replica_timeout ({replica_timeout} s) must be shorter than command_timeout "
                f"({command_timeout} s)",
                field="replica_timeout",
                rule="< command_timeout",
            )
        self._wait_ms = max(1, round(replica_timeout * 1000))
        self.address = url if client is None else describe(client)
        self._client: Client = client or self._call(
            connect, url, connect_timeout=connect_timeout, command_timeout=command_timeout
        )
        self._closed = False
        if isinstance(self._client, redis.cluster.RedisCluster):
            # No script spans a cluster's slots: each runs as steps, one command per key.
            from filestore.redis_steps import StepScript  # noqa: PLC0415 - needs lupa, cluster only

            cluster = self._client

            def register(text: str) -> Any:
                return StepScript(cluster, text, min_replicas=min_replicas, wait_ms=self._wait_ms)
        else:
            register = self._client.register_script  # type: ignore[assignment]
        self._store_script = register(scripts.STORE)
        self._update = register(scripts.UPDATE)
        self._remove = register(scripts.REMOVE)
        self._find = register(scripts.FIND)
        self._register = register(scripts.REGISTER)
        self._find_wait = register(scripts.FIND_WAIT)
        self._list_waits = register(scripts.LIST_WAITS)
        self._clear_wait = register(scripts.CLEAR_WAIT)
        self._prune_waits = register(scripts.PRUNE_WAITS)
        self._describe = register(scripts.DESCRIBE)

    def _session_key(self, key: str) -> str:
        return session_key(self.namespace, key)

    # -- the contract ------------------------------------------------------------

    def create_session(self, ctx: TenantCtx, data: SessionData) -> SessionKey:
        check_context_fence(ctx, data)
        self._check_size(data, None)
        scope = session_scope(ctx, data)
        key = SessionKey(str(uuid.uuid4()))
        self._store(StoredSession(key, scope, data, active=True))
        return key

    def get_session(self, key: SessionKey | str) -> SessionData | None:
        checked = check_key(key)
        name = self._session_key(checked)
        value = self._call(self._client.get, name)
        return None if value is None else stored_data(name, value)

    def update_session(self, key: SessionKey | str, data: SessionData) -> None:
        checked = check_key(key)
        new = check_session_data(data)
        try:
            self._check_size(new, checked)
        except InvalidInputError:
            # Refused for what it updates first, as the memory and file stores (missing, then
            # another owner, then too big): the size is known before the script runs, they are not.
            current = self.get_session(checked)
            if current is None:
                raise SessionNotFoundError(f"no session with key {checked}", key=checked) from None
            check_ctx_preserved(current, new)
            raise
        outcome = self._write(self._update, [], update_args(self.namespace, checked, new))
        check_outcome(outcome, checked)

    def remove_session(self, key: SessionKey | str) -> None:
        checked = check_key(key)
        check_outcome(self._write(self._remove, [], [self.namespace, checked]), checked)

    def find_by_user(self, ctx: TenantCtx, user: UserId | str) -> tuple[SessionKey, SessionData] | None:
        """The lookup's session; without one, the user's only wait (several: ``InvalidInputError``)."""
        return self._find_scope(lookup_scope(check_tenant_ctx(ctx), user), waits=True)

    # -- wait routing (greentic 0.4.5+'s keys) ------------------------------------------

    def register_wait(
        self,
        ctx: TenantCtx,
        user_id: UserId | str,
        scope: ReplyScope,
        key: SessionKey | str,
        data: SessionData,
        ttl: datetime.timedelta | None = None,
    ) -> None:
        wait = check_registration(ctx, user_id, scope, key, data, ttl)
        self._check_size(wait.data, wait.key)
        check_outcome(self._write(self._register, [], register_args(self.namespace, wait)), wait.key)

    def find_wait_by_scope(
        self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope
    ) -> SessionKey | None:
        owner, scope_hash = wait_address(ctx, user_id, scope)
        found = self._call(self._find_wait, [], [self.namespace, json.dumps(list(owner)), scope_hash])
        return None if found is None else SessionKey(found)

    def list_waits_for_user(self, ctx: TenantCtx, user_id: UserId | str) -> list[SessionKey]:
        owner = wait_lookup(ctx, user_id)
        found = self._call(self._list_waits, [], [self.namespace, json.dumps(list(owner))])
        return sorted(SessionKey(key) for key in found)

    def clear_wait(self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope) -> None:
        owner, scope_hash = wait_address(ctx, user_id, scope)
        self._write(self._clear_wait, [], [self.namespace, json.dumps(list(owner)), scope_hash])

    def purge_expired(self) -> int:
        """Clean the wait SETs of members whose session is gone; always ``0`` sessions removed.

        Redis deletes an expired session's keys itself (a key past its
        deadline reads as missing at once), so none is left here to remove:
        the count of sessions removed is 0. The SETs of wait keys have no TTL
        (greentic's layout), so their members of expired sessions are pruned
        here, as the reads also do.
        """
        for pattern in ("waits:user:*", "scoped-waits:user:*"):
            match = f"{glob_literal(self.namespace)}:{pattern}"
            for name in self._scan(match):
                self._call(self._prune_waits, [name], [self.namespace])
        return 0

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    def __repr__(self) -> str:
        return f"RedisSessionStore({self.address!r}, namespace={self.namespace!r})"

    # -- moving data --------------------------------------------------------------

    def iter_sessions(self) -> Iterator[StoredSession]:
        """Every live session with its key, owner, lookup and wait state, and its deadline.

        SCAN: safe on a live server. A wait is the scope filestore recorded
        for it; a Rust-written wait, which has no such record, is found by its
        greentic scope entry (scanned first).
        """
        scopes = self._scope_entries()
        prefix = f"{self.namespace}:session:"
        for name in self._scan(f"{glob_literal(prefix)}*"):
            key = SessionKey(name[len(prefix) :])
            stored = self._stored(key, scopes.get(key, ""))
            if stored is not None:  # else removed while we scanned
                yield stored

    def import_session(self, session: StoredSession) -> bool:
        """Store a session under its own key and owner; ``False`` if already there, equal.

        ``InvalidInputError`` if the key holds a different session (never
        overwritten), or if its wait's scope entry points at another key.
        """
        session = check_stored_session(session)
        key = session.key
        # A Rust-written wait has no marker: its scope is known only from the session's own wait
        # (DESCRIBE keeps it only if greentic's entry there points at the key).
        existing = self._stored(key, session.wait or "")
        if existing is not None and attrs.evolve(existing, active=session.active) != session:
            raise InvalidInputError(
                f"key {key} already holds a different session", field="key", rule="no overwrite"
            )
        if session.wait is not None:
            holder = self._call(
                self._find_wait, [], [self.namespace, json.dumps(list(session.scope)), session.wait]
            )
            if holder not in {None, key}:
                raise InvalidInputError(
                    f"the wait of {key} is held by another key", field="wait", rule="one key per scope"
                )
        # Checked where the file store writes a record: a new key, or the lookup to point.
        if existing is None or (session.active and not existing.active):
            self._check_size(session.data, key)
        self._store(session)
        return existing is None

    # -- internals ------------------------------------------------------------------

    def _check_size(self, data: SessionData, key: SessionKey | None) -> None:
        """The limit every backend keeps, on the data's CBOR (as the file store records it)."""
        check_record_size(len(data.to_cbor()), self.max_record_size, key)

    def _store(self, session: StoredSession) -> None:
        self._write(self._store_script, [], store_args(self.namespace, session))

    def _scope_entries(self) -> dict[str, str]:
        """Key -> scope_hash of every greentic scope entry (the only record of a Rust-written wait)."""
        prefix = f"{self.namespace}:waits:scope:"
        names = list(self._scan(f"{glob_literal(prefix)}*"))
        scopes: dict[str, str] = {}
        for start in range(0, len(names), 500):
            batch = names[start : start + 500]
            for name, key in zip(batch, self._call(self._mget, batch), strict=True):
                if key is not None:
                    scopes[key] = name.rsplit(":", 1)[1]
        return scopes

    def _stored(self, key: SessionKey, scope_hash: str = "") -> StoredSession | None:
        """A live session as ``iter_sessions`` yields it (its owner read from its data without an entry).

        ``scope_hash``: where a greentic scope entry pointed at it, for a wait without our record.
        """
        found = self._call(self._describe, [], [self.namespace, key, scope_hash])
        if found is None:
            return None
        value, owner, wait, expires = found
        name = self._session_key(key)
        data = stored_data(name, value)
        scope = owner_of(self.namespace, key, owner, data)
        active = False
        if scope.user is not None:
            hit = self._find_scope(scope, waits=False)
            active = hit is not None and hit[0] == key
        return StoredSession(key, scope, data, active, wait or None, deadline(expires))

    def _find_scope(self, scope: SessionScope, *, waits: bool) -> tuple[SessionKey, SessionData] | None:
        """The session the lookup of ``scope`` (which has a user) points at, if it is that scope's.

        With ``waits``, when there is none, the user's only live wait (as
        ``find_by_user`` answers).
        """
        found = self._call(self._find, [], find_args(self.namespace, scope, waits=waits))
        if not found:
            return None
        if found[0] == "waits":
            only_wait(SessionKey(key) for key in found[1:])  # raises: several waits
        _status, key, value = found
        return SessionKey(key), stored_data(self._session_key(key), value)

    def _scan(self, match: str) -> Iterator[Any]:
        """SCAN's names, lazily, each step through ``_call``: redis-py's iterator talks to the
        server as it goes, so an unreachable server is found while iterating, not when it starts."""
        names = self._call(self._client.scan_iter, match=match, count=500)
        while True:
            try:
                name = self._call(next, names)
            except StopIteration:
                return
            yield name

    def _mget(self, names: list[str]) -> list[str | None]:
        client: Any = self._client
        if isinstance(client, redis.cluster.RedisCluster):
            return list(client.mget_nonatomic(names))
        return list(client.mget(names))

    def _write(self, script: Any, keys: list[str], args: list[str]) -> Any:
        """Run a mutating script; with ``min_replicas``, WAIT for them on the script's connection.

        (A cluster's ``StepScript`` WAITs after each of its own writes.)
        """
        if not self.min_replicas or isinstance(self._client, redis.cluster.RedisCluster):
            return self._call(script, keys, args)
        pipe: Any = self._client.pipeline(transaction=False)
        script(keys, args, client=pipe)
        pipe.execute_command("WAIT", self.min_replicas, self._wait_ms)
        outcome, acknowledged = self._call(pipe.execute)
        if acknowledged < self.min_replicas:
            raise BackendUnavailableError(
                f"Redis at {self.address}: only {acknowledged} of {self.min_replicas} replicas "
                f"acknowledged a write within {self._wait_ms} ms (it was applied on the master)",
                address=self.address,
            )
        return outcome

    def _call(self, operation: Any, *args: Any, **kwargs: Any) -> Any:
        """``operation(...)``; every failure of Redis as ``BackendUnavailableError``, never redis-py's own."""
        if getattr(self, "_closed", False):
            raise StoreClosedError(f"the store at {self.address} is closed")
        try:
            return operation(*args, **kwargs)
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as error:
            translated = failure(error, self.address)
            if isinstance(translated, CorruptionError):
                raise translated from None  # the damage is the store's, not a redis-py failure
            raise translated from error
