"""``AsyncSessionStore``: the ``SessionStore`` contract as coroutines, for asyncio programs.

Every call of ``filestore.contract.SessionStore`` (the five calls, the four
wait calls, ``purge_expired``, ``close``) and the two that move sessions
(``iter_sessions``, ``import_session``) with the same arguments, results and
errors, awaited; ``async with`` closes the store. The rules a call applies
are the sync contract's, word for word: see ``filestore.contract``.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from filestore.contract import StoredSession
from filestore.ids import SessionKey, UserId
from filestore.model import ReplyScope, SessionData, TenantCtx


@runtime_checkable
class AsyncSessionStore(Protocol):
    """greentic-session's store contract as coroutines (see ``filestore.contract.SessionStore``).

    A write is durable when its await returns, on the durable backends. A
    write whose await is cancelled either happened or did not, whole; the
    store stays consistent either way. ``close`` with writes in flight
    finishes or fails each of them.
    """

    async def create_session(self, ctx: TenantCtx, data: SessionData) -> SessionKey: ...

    async def get_session(self, key: SessionKey | str) -> SessionData | None: ...

    async def update_session(self, key: SessionKey | str, data: SessionData) -> None: ...

    async def remove_session(self, key: SessionKey | str) -> None: ...

    async def find_by_user(
        self, ctx: TenantCtx, user: UserId | str
    ) -> tuple[SessionKey, SessionData] | None: ...

    async def register_wait(
        self,
        ctx: TenantCtx,
        user_id: UserId | str,
        scope: ReplyScope,
        key: SessionKey | str,
        data: SessionData,
        ttl: datetime.timedelta | None = None,
    ) -> None: ...

    async def find_wait_by_scope(
        self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope
    ) -> SessionKey | None: ...

    async def list_waits_for_user(self, ctx: TenantCtx, user_id: UserId | str) -> list[SessionKey]: ...

    async def clear_wait(self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope) -> None: ...

    async def purge_expired(self) -> int: ...

    def iter_sessions(self) -> AsyncIterator[StoredSession]:
        """Every live session with its key, owner, lookup and wait state (``async for``)."""
        ...

    async def import_session(self, session: StoredSession) -> bool: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class AsyncClosesOnExit:
    """``async with`` use for a store: leaving the block awaits ``close()``."""

    async def close(self) -> None:
        raise NotImplementedError  # pragma: no cover - each store's

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
