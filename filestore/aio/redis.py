"""``AsyncRedisSessionStore``: the Redis store on ``redis.asyncio``, for asyncio programs.

The same Lua scripts (``filestore.redis_scripts``), key layout and answers as
``filestore.redis_store.RedisSessionStore``, whose helpers for building keys
and reading the scripts' answers it shares: a sync and an async runner, or a
Rust one, can share one Redis. Each call is one round trip (one script,
atomic on the server) on the running loop's own connection pool; nothing blocks the
loop. Failures are the sync store's: ``BackendUnavailableError`` for an
unreachable or refusing server, ``CorruptionError`` for a value that does
not decode.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import redis.asyncio
import redis.exceptions
from redis.commands.core import AsyncScript

from filestore import redis_layout as layout
from filestore import redis_scripts as scripts
from filestore.aio.protocol import AsyncClosesOnExit
from filestore.contract import (
    DEFAULT_MAX_RECORD_SIZE,
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
    InvalidInputError,
    SessionNotFoundError,
    StoreClosedError,
)
from filestore.ids import SessionKey, SessionScope, UserId, check_key
from filestore.model import ReplyScope, SessionData, TenantCtx
from filestore.redis_connect import timeout
from filestore.redis_layout import DEFAULT_NAMESPACE
from filestore.waits import check_registration, only_wait, wait_address, wait_lookup


class _LoopClients:
    """One ``redis.asyncio`` client per event loop, standing in for a client.

    A redis.asyncio connection belongs to the loop that opened it: one pool shared by
    two loops (a second thread's, or ``asyncio.run`` again after the first loop
    closed) hands a loop another's connection, and the call fails ("attached to a
    different loop", "Event loop is closed"). Attributes are the running loop's
    client's; with no loop running (the scripts' encoder), a client that never connects.
    """

    def __init__(self, make: Callable[[], redis.asyncio.Redis]) -> None:
        self._make = make
        self._idle = make()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
            weakref.WeakKeyDictionary()
        )

    def here(self) -> redis.asyncio.Redis:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._idle
        client = self._by_loop.get(loop)
        if client is None:
            client = self._by_loop[loop] = self._make()
        return client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.here(), name)

    async def release(self) -> None:
        """Close the running loop's client (a loop about to end; its next call connects again)."""
        client = self._by_loop.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        """Close the running loop's client; other loops' are dropped: they can only be closed on
        their own loop, which may be gone (a loop that ends while the store is open should
        ``release`` first, or its sockets are left to the garbage collector)."""
        await self.release()
        self._by_loop.clear()


class AsyncRedisSessionStore(AsyncClosesOnExit):
    """An ``AsyncSessionStore`` on a Redis server, in greentic-session's key layout.

    ``url`` is a redis-py URL (``redis://host:port/db``, ``rediss://``,
    ``unix://``). Timeouts are in seconds. TTLs are the server's. Durability
    is the server's too (see ``RedisSessionStore``).
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        namespace: str = DEFAULT_NAMESPACE,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    ) -> None:
        if (
            not isinstance(namespace, str)
            or not namespace
            or not namespace.isprintable()
            or any(character.isspace() for character in namespace)
            or not layout.encodable(namespace)
        ):
            raise InvalidInputError(
                f"namespace must be a non-empty string of printable characters without spaces, "
                f"not {namespace!r}",
                field="namespace",
                rule="non-empty, printable, no spaces",
            )
        if not (isinstance(url, str) and url and layout.encodable(url)):
            raise InvalidInputError(f"url must be a redis URL, not {url!r}", field="url", rule="a URL")
        self.namespace = namespace
        self.max_record_size = check_max_record_size(max_record_size)
        self.address = url
        self._client = _LoopClients(
            functools.partial(
                redis.asyncio.Redis.from_url,
                url,
                socket_connect_timeout=timeout("connect_timeout", connect_timeout),
                socket_timeout=timeout("command_timeout", command_timeout),
                decode_responses=True,
            )
        )
        self._closed = False

        def register(script: str) -> AsyncScript:
            return AsyncScript(self._client, script)  # type: ignore[arg-type]  # run on each loop's client

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
        return f"{self.namespace}:session:{key}"

    # -- the contract ------------------------------------------------------------

    async def create_session(self, ctx: TenantCtx, data: SessionData) -> SessionKey:
        check_context_fence(ctx, data)
        self._check_size(data, None)
        scope = session_scope(ctx, data)
        key = SessionKey(str(uuid.uuid4()))
        await self._store(StoredSession(key, scope, data, active=True))
        return key

    async def get_session(self, key: SessionKey | str) -> SessionData | None:
        checked = check_key(key)
        name = self._session_key(checked)
        value = await self._call(self._client.get(name))
        return None if value is None else layout.stored_data(name, value)

    async def update_session(self, key: SessionKey | str, data: SessionData) -> None:
        checked = check_key(key)
        new = check_session_data(data)
        try:
            self._check_size(new, checked)
        except InvalidInputError:
            # Refused for what it updates first, as every backend: missing, another owner, too big.
            current = await self.get_session(checked)
            if current is None:
                raise SessionNotFoundError(f"no session with key {checked}", key=checked) from None
            check_ctx_preserved(current, new)
            raise
        outcome = await self._call(
            self._update(keys=[], args=layout.update_args(self.namespace, checked, new))
        )
        layout.check_outcome(outcome, checked)

    async def remove_session(self, key: SessionKey | str) -> None:
        checked = check_key(key)
        layout.check_outcome(await self._call(self._remove(keys=[], args=[self.namespace, checked])), checked)

    async def find_by_user(self, ctx: TenantCtx, user: UserId | str) -> tuple[SessionKey, SessionData] | None:
        return await self._find_scope(lookup_scope(check_tenant_ctx(ctx), user), waits=True)

    # -- wait routing ---------------------------------------------------------------------

    async def register_wait(
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
        args = layout.register_args(self.namespace, wait)
        layout.check_outcome(await self._call(self._register(keys=[], args=args)), wait.key)

    async def find_wait_by_scope(
        self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope
    ) -> SessionKey | None:
        owner, scope_hash = wait_address(ctx, user_id, scope)
        found = await self._call(
            self._find_wait(keys=[], args=[self.namespace, json.dumps(list(owner)), scope_hash])
        )
        return None if found is None else SessionKey(found)

    async def list_waits_for_user(self, ctx: TenantCtx, user_id: UserId | str) -> list[SessionKey]:
        owner = wait_lookup(ctx, user_id)
        found = await self._call(self._list_waits(keys=[], args=[self.namespace, json.dumps(list(owner))]))
        return sorted(SessionKey(key) for key in found)

    async def clear_wait(self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope) -> None:
        owner, scope_hash = wait_address(ctx, user_id, scope)
        await self._call(
            self._clear_wait(keys=[], args=[self.namespace, json.dumps(list(owner)), scope_hash])
        )

    async def purge_expired(self) -> int:
        """Prune the wait SETs of members whose session expired; ``0`` (Redis removed them itself)."""
        for pattern in ("waits:user:*", "scoped-waits:user:*"):
            async for name in self._scan(f"{layout.glob_literal(self.namespace)}:{pattern}"):
                await self._call(self._prune_waits(keys=[name], args=[self.namespace]))
        return 0

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"AsyncRedisSessionStore({self.address!r}, namespace={self.namespace!r})"

    # -- moving data --------------------------------------------------------------

    async def iter_sessions(self) -> AsyncIterator[StoredSession]:
        """Every live session with its key, owner, lookup, wait and deadline (SCAN, as the sync store)."""
        scopes = await self._scope_entries()
        prefix = f"{self.namespace}:session:"
        async for name in self._scan(f"{layout.glob_literal(prefix)}*"):
            key = SessionKey(name[len(prefix) :])
            stored = await self._stored(key, scopes.get(key, ""))
            if stored is not None:  # else removed while we scanned
                yield stored

    async def import_session(self, session: StoredSession) -> bool:
        """Store a session under its own key and owner; ``False`` if already there, equal."""
        session = check_stored_session(session)
        key = session.key
        existing = await self._stored(key, session.wait or "")
        if existing is not None and attrs.evolve(existing, active=session.active) != session:
            raise InvalidInputError(
                f"key {key} already holds a different session", field="key", rule="no overwrite"
            )
        if session.wait is not None:
            holder = await self._call(
                self._find_wait(keys=[], args=[self.namespace, json.dumps(list(session.scope)), session.wait])
            )
            if holder not in {None, key}:
                raise InvalidInputError(
                    f"the wait of {key} is held by another key", field="wait", rule="one key per scope"
                )
        if existing is None or (session.active and not existing.active):
            self._check_size(session.data, key)
        await self._store(session)
        return existing is None

    # -- internals ------------------------------------------------------------------

    def _check_size(self, data: SessionData, key: SessionKey | None) -> None:
        check_record_size(len(data.to_cbor()), self.max_record_size, key)

    async def _store(self, session: StoredSession) -> None:
        await self._call(self._store_script(keys=[], args=layout.store_args(self.namespace, session)))

    async def _scope_entries(self) -> dict[str, str]:
        """Key -> scope_hash of every greentic scope entry (the only record of a Rust-written wait)."""
        prefix = f"{self.namespace}:waits:scope:"
        names = [name async for name in self._scan(f"{layout.glob_literal(prefix)}*")]
        scopes: dict[str, str] = {}
        for start in range(0, len(names), 500):
            batch = names[start : start + 500]
            values = await self._call(self._client.mget(batch))
            for name, key in zip(batch, values, strict=True):
                if key is not None:
                    scopes[key] = name.rsplit(":", 1)[1]
        return scopes

    async def _stored(self, key: SessionKey, scope_hash: str = "") -> StoredSession | None:
        found = await self._call(self._describe(keys=[], args=[self.namespace, key, scope_hash]))
        if found is None:
            return None
        value, owner, wait, deadline = found
        data = layout.stored_data(self._session_key(key), value)
        scope = layout.owner_of(self.namespace, key, owner, data)
        active = False
        if scope.user is not None:
            hit = await self._find_scope(scope, waits=False)
            active = hit is not None and hit[0] == key
        return StoredSession(key, scope, data, active, wait or None, layout.deadline(deadline))

    async def _find_scope(self, scope: SessionScope, *, waits: bool) -> tuple[SessionKey, SessionData] | None:
        found = await self._call(
            self._find(keys=[], args=layout.find_args(self.namespace, scope, waits=waits))
        )
        if not found:
            return None
        if found[0] == "waits":
            only_wait(SessionKey(key) for key in found[1:])  # raises: several waits
        _status, key, value = found
        return SessionKey(key), layout.stored_data(self._session_key(key), value)

    async def _scan(self, match: str) -> AsyncIterator[Any]:
        names = self._client.scan_iter(match=match, count=500)
        while True:
            try:
                name = await self._call(anext(names))
            except StopAsyncIteration:
                return
            yield name

    async def _call(self, operation: Awaitable[Any]) -> Any:
        if self._closed:
            close = getattr(operation, "close", None)
            if close is not None:
                close()  # the coroutine never runs: no "never awaited" warning
            raise StoreClosedError(f"the store at {self.address} is closed")
        try:
            return await operation
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise BackendUnavailableError(
                f"Redis at {self.address} is unavailable: {error}", address=self.address
            ) from error
        except redis.exceptions.ResponseError as error:
            if str(error).startswith(layout.CORRUPT_PREFIX):
                name, _end = json.JSONDecoder().raw_decode(str(error), len(layout.CORRUPT_PREFIX))
                raise layout.corrupt(name, "it does not decode as JSON") from None
            raise BackendUnavailableError(
                f"Redis at {self.address} refused a command: {error}", address=self.address
            ) from error
