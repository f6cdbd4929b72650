"""Implementation of the stores for asyncio programs; users import them from ``filestore``
(``filestore.aio`` names the same objects, for code that wants the async ones apart).

- ``AsyncSessionStore``: the protocol (every sync call, awaited; ``async with``);
- ``AsyncFileSessionStore``: the file store, writes of all coroutines made
  durable together (group commit), reads from memory on the loop;
- ``AsyncRedisSessionStore``: the Redis store on ``redis.asyncio``, same
  scripts and key layout;
- ``AsyncInMemorySessionStore``: the dict store;
- ``open_async_store(target)``: any of them from ``open_store``'s targets.
"""

from __future__ import annotations

from filestore.aio.filestore import AsyncFileSessionStore
from filestore.aio.memory import AsyncInMemorySessionStore
from filestore.aio.opening import open_async_store
from filestore.aio.protocol import AsyncSessionStore
from filestore.aio.redis import AsyncRedisSessionStore

__all__ = [
    "AsyncFileSessionStore",
    "AsyncInMemorySessionStore",
    "AsyncRedisSessionStore",
    "AsyncSessionStore",
    "open_async_store",
]
