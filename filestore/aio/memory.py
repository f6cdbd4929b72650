"""``AsyncInMemorySessionStore``: the in-memory store's answers, awaited.

A dict needs no thread and no I/O: every call runs
``filestore.memory.InMemorySessionStore``'s on the event loop, whose lock
is only ever held for a dict operation. For tests and runners that accept
losing their sessions on restart.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator

from filestore.aio.protocol import AsyncClosesOnExit
from filestore.contract import DEFAULT_MAX_RECORD_SIZE, StoredSession
from filestore.ids import SessionKey, UserId
from filestore.memory import InMemorySessionStore
from filestore.model import ReplyScope, SessionData, TenantCtx
from filestore.waits import Clock, system_clock


class AsyncInMemorySessionStore(AsyncClosesOnExit):
    """A dict-backed ``AsyncSessionStore``. Nothing survives the process.

    ``clock`` gives unix milliseconds (TTL deadlines), as for ``InMemorySessionStore``.
    """

    def __init__(
        self, *, clock: Clock = system_clock, max_record_size: int = DEFAULT_MAX_RECORD_SIZE
    ) -> None:
        self._store = InMemorySessionStore(clock=clock, max_record_size=max_record_size)

    @property
    def max_record_size(self) -> int:
        return self._store.max_record_size

    async def create_session(self, ctx: TenantCtx, data: SessionData) -> SessionKey:
        return self._store.create_session(ctx, data)

    async def get_session(self, key: SessionKey | str) -> SessionData | None:
        return self._store.get_session(key)

    async def update_session(self, key: SessionKey | str, data: SessionData) -> None:
        self._store.update_session(key, data)

    async def remove_session(self, key: SessionKey | str) -> None:
        self._store.remove_session(key)

    async def find_by_user(self, ctx: TenantCtx, user: UserId | str) -> tuple[SessionKey, SessionData] | None:
        return self._store.find_by_user(ctx, user)

    async def register_wait(
        self,
        ctx: TenantCtx,
        user_id: UserId | str,
        scope: ReplyScope,
        key: SessionKey | str,
        data: SessionData,
        ttl: datetime.timedelta | None = None,
    ) -> None:
        self._store.register_wait(ctx, user_id, scope, key, data, ttl)

    async def find_wait_by_scope(
        self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope
    ) -> SessionKey | None:
        return self._store.find_wait_by_scope(ctx, user_id, scope)

    async def list_waits_for_user(self, ctx: TenantCtx, user_id: UserId | str) -> list[SessionKey]:
        return self._store.list_waits_for_user(ctx, user_id)

    async def clear_wait(self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope) -> None:
        self._store.clear_wait(ctx, user_id, scope)

    async def purge_expired(self) -> int:
        return self._store.purge_expired()

    async def iter_sessions(self) -> AsyncIterator[StoredSession]:
        """Every live session (a copy taken when iteration starts)."""
        for session in self._store.iter_sessions():
            yield session

    async def import_session(self, session: StoredSession) -> bool:
        return self._store.import_session(session)

    async def close(self) -> None:
        self._store.close()

    def __repr__(self) -> str:
        return "AsyncInMemorySessionStore()"
