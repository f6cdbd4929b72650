"""``AsyncRedisSessionStore`` beyond the contract (which runs on it through ``support/aio.py``):
the sync store's key layout, shared with it, and its failures as the sync store raises them."""

from __future__ import annotations

import asyncio
import datetime
import random

import attrs
import pytest
import redis

from filestore import (
    BackendUnavailableError,
    CorruptionError,
    ErrorCode,
    InvalidInputError,
    RedisSessionStore,
    ReplyScope,
    SessionKey,
    SessionNotFoundError,
    StoreClosedError,
    TenantMismatchError,
)
from filestore.aio import AsyncRedisSessionStore, open_async_store

from .support import ctx, data
from .support.redis_server import free_port, redis_url

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """filestore.aio is for asyncio."""
    return "asyncio"


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    return f"t:aio:{request.node.name}:{random.randrange(1 << 30)}"


@pytest.fixture
def raw() -> redis.Redis:
    return redis.Redis.from_url(redis_url(), decode_responses=True)


async def test_shares_the_sync_stores_layout(namespace: str, raw: redis.Redis) -> None:
    """What the async store writes the sync store reads, and back: one layout (greentic's lookup key too)."""
    async with await open_async_store(f"{redis_url()}?namespace={namespace}") as store:
        assert isinstance(store, AsyncRedisSessionStore)
        assert namespace in repr(store)
        key = await store.create_session(ctx(), data())
        assert raw.get(f"{namespace}:user:dev:acme:support:u1") == key
        with RedisSessionStore(redis_url(), namespace=namespace) as sync:
            assert sync.get_session(key) == data()
            sync.update_session(key, data(step=2))
        assert await store.get_session(key) == data(step=2)


async def test_options_and_bad_arguments(namespace: str) -> None:
    """Options reach the store; a bad namespace, URL or unknown option is InvalidInputError."""
    url = f"{redis_url()}?namespace={namespace}"
    async with await open_async_store(url, max_record_size=10) as small:
        with pytest.raises(InvalidInputError, match="max_record_size"):
            await small.create_session(ctx(), data())
    for option in ("no_such_option", "namespace"):  # the namespace comes from the URL
        with pytest.raises(InvalidInputError, match=option):
            await open_async_store(url, **{option: "x"})
    for bad in ("", "a b"):
        with pytest.raises(InvalidInputError):
            AsyncRedisSessionStore(redis_url(), namespace=bad)
    with pytest.raises(InvalidInputError):
        AsyncRedisSessionStore("")


async def test_a_too_large_update_is_refused_for_what_it_updates_first(namespace: str) -> None:
    """Over max_record_size, an update says: no such session, then another owner, then too large."""
    async with AsyncRedisSessionStore(redis_url(), namespace=namespace, max_record_size=400) as store:
        key = await store.create_session(ctx(), data())
        padding = '{"pad":"' + "x" * 500 + '"}'
        big = attrs.evolve(data(step=1), context_json=padding)
        with pytest.raises(SessionNotFoundError):
            await store.update_session("no-such-key", big)
        with pytest.raises(TenantMismatchError):
            await store.update_session(key, attrs.evolve(data(ctx(user="u9")), context_json=padding))
        with pytest.raises(InvalidInputError, match="max_record_size"):
            await store.update_session(key, big)
        assert await store.get_session(key) == data()


async def test_damaged_values_are_internal(namespace: str, raw: redis.Redis) -> None:
    """A session or owner entry that does not decode is CorruptionError, from a read and from a script."""
    raw.set(f"{namespace}:session:bad-1", "{not json")
    raw.set(f"{namespace}:user:dev:acme:support:u1", "bad-1")
    async with AsyncRedisSessionStore(redis_url(), namespace=namespace) as store:
        for call in (store.get_session("bad-1"), store.find_by_user(ctx(), "u1")):
            with pytest.raises(CorruptionError) as info:
                await call
            assert info.value.code is ErrorCode.INTERNAL
            assert info.value.path == f"{namespace}:session:bad-1"
        with pytest.raises(CorruptionError):
            await store.update_session("bad-1", data())
        key = await store.create_session(ctx(user="u2"), data(ctx(user="u2")))
        raw.set(f"{namespace}:owner:{key}", '["dev"]')
        raw.delete(f"{namespace}:session:bad-1")
        with pytest.raises(CorruptionError) as owner:
            [session async for session in store.iter_sessions()]
        assert owner.value.path == f"{namespace}:owner:{key}"


async def test_a_refused_command_is_unavailable(namespace: str, raw: redis.Redis) -> None:
    """A command the server refuses (a key of the wrong type) is BackendUnavailableError."""
    raw.rpush(f"{namespace}:session:listed", "x")
    async with AsyncRedisSessionStore(redis_url(), namespace=namespace) as store:
        with pytest.raises(BackendUnavailableError, match="refused"):
            await store.get_session("listed")


async def test_unreachable_server_is_unavailable() -> None:
    """A server that does not answer raises BackendUnavailableError naming its address."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with AsyncRedisSessionStore(url, connect_timeout=0.5, command_timeout=0.5) as store:
        with pytest.raises(BackendUnavailableError) as info:
            await store.get_session("k")
        assert info.value.address == url


async def test_closed_store_refuses_calls(namespace: str) -> None:
    """After close every call raises StoreClosedError; closing twice is fine."""
    store = AsyncRedisSessionStore(redis_url(), namespace=namespace)
    await store.close()
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.get_session("k")
    with pytest.raises(StoreClosedError):
        [session async for session in store.iter_sessions()]


async def test_waits_move_and_expired_members_are_pruned(namespace: str, raw: redis.Redis) -> None:
    """iter_sessions lists a wait with its scope; import_session refuses a wait another key holds;
    purge_expired prunes a wait SET member whose session is gone, returning 0."""
    scope = ReplyScope(conversation="c1")
    async with AsyncRedisSessionStore(redis_url(), namespace=namespace) as store:
        await store.register_wait(ctx(), "u1", scope, "w1", data(), datetime.timedelta(hours=1))
        listed = [session async for session in store.iter_sessions()]
        assert [(s.key, s.wait) for s in listed] == [("w1", scope.scope_hash())]
        other = attrs.evolve(listed[0], key=SessionKey("w2"), active=False)
        with pytest.raises(InvalidInputError, match="held by another key"):
            await store.import_session(other)
        raw.delete(f"{namespace}:session:w1")
        assert await store.purge_expired() == 0
        assert await store.list_waits_for_user(ctx(), "u1") == []
        assert not raw.smembers(f"{namespace}:waits:user:dev:acme:support:u1")


async def test_one_store_serves_several_event_loops(namespace: str) -> None:
    """A store used from a second loop (another thread's, while the first runs), then again from
    its first loop, then from a third after the second closed: each call answers as on one loop
    (redis.asyncio's connections belong to the loop that made them). Made outside any loop, as at
    a module's top level; a loop's ``release`` closes only its own connections, if it made any."""
    store = await asyncio.to_thread(AsyncRedisSessionStore, redis_url(), namespace=namespace)
    try:
        key = await store.create_session(ctx(), data(step=1))

        async def elsewhere(step: int) -> SessionKey | None:
            await store.update_session(key, data(step=step))
            assert await store.get_session(key) == data(step=step)
            try:
                return await store.find_wait_by_scope(ctx(), "u1", ReplyScope(conversation="conv"))
            finally:
                await store._client.release()  # this loop ends here: its connections with it

        assert await asyncio.to_thread(asyncio.run, elsewhere(2)) is None
        assert await store.get_session(key) == data(step=2)
        assert await asyncio.to_thread(asyncio.run, elsewhere(3)) is None
        assert await store.find_by_user(ctx(), "u1") == (key, data(step=3))
        await asyncio.to_thread(asyncio.run, store._client.release())  # a loop that made no client
        await store._client.release()
        assert await store.get_session(key) == data(step=3)  # connects again
    finally:
        await store.close()
