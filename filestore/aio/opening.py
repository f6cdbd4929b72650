"""``open_async_store``: one way to open any async backend, as ``filestore.backends.open_store``.

The same targets: ``"memory:"``, a ``redis://`` / ``rediss://`` / ``unix://``
URL (``?namespace=`` picks the key namespace), or a store directory. A
directory is opened in a worker thread (opening replays the log's tail), so
the event loop goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from filestore.aio.filestore import AsyncFileSessionStore
from filestore.aio.memory import AsyncInMemorySessionStore
from filestore.aio.protocol import AsyncSessionStore
from filestore.aio.redis import AsyncRedisSessionStore
from filestore.backends import check_options, parse_target
from filestore.errors import InvalidInputError
from filestore.redis_connect import CLUSTER_SCHEME, SENTINEL_SCHEME


async def open_async_store(target: str | os.PathLike[str], **options: Any) -> AsyncSessionStore:
    """Open the async store ``target`` names; ``options`` go to its constructor.

    Refusals are ``open_store``'s (``filestore.backends.parse_target``):
    ``InvalidInputError`` for a target that is not text or names no store,
    and for an option the store does not take. The async Redis store speaks
    to one server: a ``redis+cluster://`` or ``redis+sentinel://`` URL is
    refused too (the sync ``RedisSessionStore`` runs on both).
    """
    named = parse_target(target, field="target")
    if named.kind == "memory":
        check_options(AsyncInMemorySessionStore, options)
        return AsyncInMemorySessionStore(**options)
    if named.kind == "redis":
        if named.location.startswith((CLUSTER_SCHEME, SENTINEL_SCHEME)):
            raise InvalidInputError(
                f"{named.location}: the async Redis store runs on one server (redis://, rediss://, "
                "unix://); open a cluster or a Sentinel-managed Redis with the sync open_store",
                field="target",
                rule="one Redis server",
            )
        check_options(AsyncRedisSessionStore, options, given_by_spec=frozenset({"namespace"}))
        return AsyncRedisSessionStore(named.location, namespace=named.namespace, **options)
    check_options(AsyncFileSessionStore, options)
    return await asyncio.to_thread(AsyncFileSessionStore, named.location, **options)
