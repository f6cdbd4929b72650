"""``AsyncFileSessionStore``: the file store for asyncio programs.

Writes: every coroutine's write call goes to one writer (``filestore.aio.writer``)
that appends them in order and makes each batch durable with one fdatasync
in a worker thread, then resolves every coroutine of the batch: group commit
across coroutines, a write durable when its await returns.

Reads: answered on the event loop from the in-memory index and session cache,
after the one small ``pread`` that catches up with other processes' writes,
as the sync store's reads do; only when the writer holds the store that
instant (appending a call), or catching up meets another process's compaction
(following it waits for the writer lock), does a read go to a worker thread
rather than wait.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import os
from collections.abc import AsyncIterator, Callable
from typing import TypeVar, cast

from filestore.aio.protocol import AsyncClosesOnExit
from filestore.aio.writer import BatchingFileStore
from filestore.contract import DEFAULT_MAX_RECORD_SIZE, StoredSession
from filestore.engine.fileio import OS_IO, FileIO
from filestore.engine.options import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_PREALLOCATE,
    DEFAULT_SNAPSHOT_BYTES,
    DEFAULT_SNAPSHOT_RECORDS,
    Durability,
    parse_durability,
)
from filestore.engine.rewrite import RewriteResult
from filestore.ids import SessionKey, UserId
from filestore.model import ReplyScope, SessionData, TenantCtx
from filestore.waits import Clock, system_clock

_T = TypeVar("_T")


class AsyncFileSessionStore(AsyncClosesOnExit):
    """A ``FileSessionStore`` (same directory, format, options and guarantees) for coroutines.

    ``durability`` is ``"fsync"`` (default; ``"group"`` means the same here):
    a write's await returns once its record is fdatasync'd, one sync shared
    by every write of a batch; ``"none"`` leaves flushing to the OS. Errors
    are the sync store's, raised by the await. Other processes may open the
    directory with either store meanwhile.

    A write whose await is cancelled happened whole or not at all. ``close``
    finishes every write in flight (each await returns or raises), then
    closes; until then the store holds two threads. Constructing opens the
    store in the calling thread; inside a running loop use
    ``await open_async_store(path)``, which opens it in a worker thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability | str = Durability.FSYNC,
        snapshot_every_records: int = DEFAULT_SNAPSHOT_RECORDS,
        snapshot_every_bytes: int = DEFAULT_SNAPSHOT_BYTES,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
        lock_timeout: float = 10.0,
        preallocate_bytes: int = DEFAULT_PREALLOCATE,
        cache_size: int = DEFAULT_CACHE_SIZE,
        file_mode: int = 0o600,
        dir_mode: int = 0o700,
        allow_network_filesystem: bool = False,
        trust_directory: bool = False,
        io: FileIO = OS_IO,
        clock: Clock = system_clock,
    ) -> None:
        mode = parse_durability(durability)
        self.durability = Durability.FSYNC if mode is Durability.GROUP else mode
        self._store = BatchingFileStore(
            path,
            durability=Durability.NONE if mode is Durability.NONE else Durability.GROUP,
            snapshot_every_records=snapshot_every_records,
            snapshot_every_bytes=snapshot_every_bytes,
            max_record_size=max_record_size,
            lock_timeout=lock_timeout,
            preallocate_bytes=preallocate_bytes,
            cache_size=cache_size,
            file_mode=file_mode,
            dir_mode=dir_mode,
            allow_network_filesystem=allow_network_filesystem,
            trust_directory=trust_directory,
            io=io,
            clock=clock,
        )
        self.path = self._store.path

    async def create_session(self, ctx: TenantCtx, data: SessionData) -> SessionKey:
        return await self._write(functools.partial(self._store.create_session, ctx, data))

    async def get_session(self, key: SessionKey | str) -> SessionData | None:
        return await self._read(functools.partial(self._store.get_session, key))

    async def update_session(self, key: SessionKey | str, data: SessionData) -> None:
        await self._write(functools.partial(self._store.update_session, key, data))

    async def remove_session(self, key: SessionKey | str) -> None:
        await self._write(functools.partial(self._store.remove_session, key))

    async def find_by_user(self, ctx: TenantCtx, user: UserId | str) -> tuple[SessionKey, SessionData] | None:
        return await self._read(functools.partial(self._store.find_by_user, ctx, user))

    async def register_wait(
        self,
        ctx: TenantCtx,
        user_id: UserId | str,
        scope: ReplyScope,
        key: SessionKey | str,
        data: SessionData,
        ttl: datetime.timedelta | None = None,
    ) -> None:
        await self._write(functools.partial(self._store.register_wait, ctx, user_id, scope, key, data, ttl))

    async def find_wait_by_scope(
        self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope
    ) -> SessionKey | None:
        return await self._read(functools.partial(self._store.find_wait_by_scope, ctx, user_id, scope))

    async def list_waits_for_user(self, ctx: TenantCtx, user_id: UserId | str) -> list[SessionKey]:
        return await self._read(functools.partial(self._store.list_waits_for_user, ctx, user_id))

    async def clear_wait(self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope) -> None:
        await self._write(functools.partial(self._store.clear_wait, ctx, user_id, scope))

    async def purge_expired(self) -> int:
        return await self._write(self._store.purge_expired)

    async def iter_sessions(self) -> AsyncIterator[StoredSession]:
        """Every live session (read in a worker thread: it reads every record)."""
        for session in await asyncio.to_thread(lambda: list(self._store.iter_sessions())):
            yield session

    async def import_session(self, session: StoredSession) -> bool:
        return await self._write(functools.partial(self._store.import_session, session))

    async def write_snapshot(self) -> None:
        """``FileSessionStore.write_snapshot``, in a worker thread."""
        await asyncio.to_thread(self._store.write_snapshot)

    async def compact(self, *, keep_old: bool = False) -> RewriteResult:
        """``FileSessionStore.compact`` (online compaction), in a worker thread."""
        return await asyncio.to_thread(self._store.compact, keep_old=keep_old)

    async def close(self) -> None:
        """Finish every write in flight, then close the store (in a worker thread)."""
        await asyncio.to_thread(self._store.close)

    def __repr__(self) -> str:
        return f"Async{self._store!r}"

    async def _write(self, call: Callable[[], _T]) -> _T:
        """Hand ``call`` to the writer; its result once durable (see ``filestore.aio.writer``)."""
        pending = self._store.enqueue(call, asyncio.get_running_loop())
        try:
            return cast(_T, await pending.future)
        except asyncio.CancelledError:
            self._store.abandon(pending)
            raise

    async def _read(self, read: Callable[[], _T]) -> _T:
        """``read`` on the loop if the store is free this instant, else in a worker thread."""
        ran, result = self._store.read_now(read)
        if ran:
            return cast(_T, result)
        return await asyncio.to_thread(read)
