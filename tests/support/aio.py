"""The async backends under the sync contract: each call awaited on a loop in another thread.

``SyncOverAsync`` is a ``SessionStore`` whose every call submits the async
store's coroutine to one shared event loop (a daemon thread) and waits for
it, so ``test_contract.py``, ``test_waits.py`` and the state machine run
unchanged against ``filestore.aio``'s stores. Calls from several test threads
become concurrent coroutines on that loop, as in an asyncio program.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from filestore import ReplyScope, SessionData, SessionKey, StoredSession, TenantCtx, UserId
from filestore.aio import AsyncFileSessionStore, AsyncSessionStore
from filestore.engine.rewrite import RewriteResult

_T = TypeVar("_T")
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def shared_loop() -> asyncio.AbstractEventLoop:
    """The event loop every adapter runs its store on (started on first use, never stopped)."""
    global _loop  # noqa: PLW0603 - one loop for the test session, started lazily
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="aio-adapter-loop", daemon=True).start()
            _loop = loop
        return _loop


def run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` on the shared loop and return its result (or raise its error)."""
    return asyncio.run_coroutine_threadsafe(coroutine, shared_loop()).result()


async def _listed(store: AsyncSessionStore) -> list[StoredSession]:
    return [session async for session in store.iter_sessions()]


class SyncOverAsync:
    """A sync ``SessionStore`` (and ``MovableStore``) over an ``AsyncSessionStore``."""

    def __init__(self, opened: AsyncSessionStore) -> None:
        self.aio = opened

    @classmethod
    def opening(cls, open_async: Callable[[], Awaitable[AsyncSessionStore]]) -> Self:
        """Open the async store on the shared loop (it belongs to that loop from then on)."""

        async def opened() -> AsyncSessionStore:
            return await open_async()

        return cls(run(opened()))

    def create_session(self, ctx: TenantCtx, data: SessionData) -> SessionKey:
        return run(self.aio.create_session(ctx, data))

    def get_session(self, key: SessionKey | str) -> SessionData | None:
        return run(self.aio.get_session(key))

    def update_session(self, key: SessionKey | str, data: SessionData) -> None:
        run(self.aio.update_session(key, data))

    def remove_session(self, key: SessionKey | str) -> None:
        run(self.aio.remove_session(key))

    def find_by_user(self, ctx: TenantCtx, user: UserId | str) -> tuple[SessionKey, SessionData] | None:
        return run(self.aio.find_by_user(ctx, user))

    def register_wait(
        self,
        ctx: TenantCtx,
        user_id: UserId | str,
        scope: ReplyScope,
        key: SessionKey | str,
        data: SessionData,
        ttl: datetime.timedelta | None = None,
    ) -> None:
        run(self.aio.register_wait(ctx, user_id, scope, key, data, ttl))

    def find_wait_by_scope(
        self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope
    ) -> SessionKey | None:
        return run(self.aio.find_wait_by_scope(ctx, user_id, scope))

    def list_waits_for_user(self, ctx: TenantCtx, user_id: UserId | str) -> list[SessionKey]:
        return run(self.aio.list_waits_for_user(ctx, user_id))

    def clear_wait(self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope) -> None:
        run(self.aio.clear_wait(ctx, user_id, scope))

    def purge_expired(self) -> int:
        return run(self.aio.purge_expired())

    def iter_sessions(self) -> Iterator[StoredSession]:
        return iter(run(_listed(self.aio)))

    def import_session(self, session: StoredSession) -> bool:
        return run(self.aio.import_session(session))

    def close(self) -> None:
        run(self.aio.close())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncOverAsyncFile(SyncOverAsync):
    """``SyncOverAsync`` with the file store's maintenance calls (the state machine's rules)."""

    aio: AsyncFileSessionStore

    def write_snapshot(self) -> None:
        run(self.aio.write_snapshot())

    def compact(self) -> RewriteResult:
        return run(self.aio.compact())
