"""``filestore.aio``: the async stores' own surface (the contract runs through ``support/aio.py``).

Opening by target, ``async with``, the protocol, and option refusals; the
file store's group commit, cancellation and closing have their own module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from filestore import InvalidInputError, StoreClosedError
from filestore.aio import (
    AsyncFileSessionStore,
    AsyncInMemorySessionStore,
    AsyncSessionStore,
    open_async_store,
)

from .support import ctx, data

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """filestore.aio is for asyncio."""
    return "asyncio"


async def test_memory_target_opens_the_dict_store() -> None:
    """``memory:`` opens an AsyncInMemorySessionStore, a runtime AsyncSessionStore."""
    async with await open_async_store("memory:") as store:
        assert isinstance(store, AsyncInMemorySessionStore)
        assert isinstance(store, AsyncSessionStore)
        key = await store.create_session(ctx(), data())
        assert await store.get_session(key) == data()


async def test_directory_target_opens_the_file_store(tmp_path: Path) -> None:
    """A directory (str or PathLike) opens an AsyncFileSessionStore; what it wrote is there on reopen."""
    async with await open_async_store(tmp_path / "s") as store:
        assert isinstance(store, AsyncFileSessionStore)
        assert isinstance(store, AsyncSessionStore)
        key = await store.create_session(ctx(), data())
    async with await open_async_store(str(tmp_path / "s")) as again:
        assert await again.get_session(key) == data()


async def test_leaving_async_with_closes(tmp_path: Path) -> None:
    """After ``async with`` every call raises StoreClosedError, on both stores."""
    for target in ("memory:", str(tmp_path / "closed")):
        async with await open_async_store(target) as store:
            key = await store.create_session(ctx(), data())
        with pytest.raises(StoreClosedError):
            await store.get_session(key)
        with pytest.raises(StoreClosedError):
            await store.create_session(ctx(), data())


@pytest.mark.parametrize("target", [b"dir", 3, None, "", "ftp://x", "http://host/db"])
async def test_bad_targets_are_refused(target: object) -> None:
    """A target that is not text, or names no store, is InvalidInputError."""
    with pytest.raises(InvalidInputError):
        await open_async_store(target)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["memory:", "DIR"])
async def test_unknown_options_are_refused(target: str, tmp_path: Path) -> None:
    """An option the store's constructor does not take is InvalidInputError naming it, nothing created."""
    spec = str(tmp_path / "s") if target == "DIR" else target
    with pytest.raises(InvalidInputError, match="no_such_option"):
        await open_async_store(spec, no_such_option=1)
    assert not (tmp_path / "s").exists()


async def test_options_reach_the_store(tmp_path: Path) -> None:
    """Options go to the constructor: a directory store's durability, a memory store's size limit."""
    async with await open_async_store(tmp_path / "s", durability="none") as store:
        assert isinstance(store, AsyncFileSessionStore)
        assert store.durability.value == "none"
    async with await open_async_store("memory:", max_record_size=10) as small:
        with pytest.raises(InvalidInputError, match="max_record_size"):
            await small.create_session(ctx(), data())


async def test_file_store_maintenance_and_listing(tmp_path: Path) -> None:
    """write_snapshot and online compaction keep every session; iter_sessions lists them; repr names
    the directory."""
    async with AsyncFileSessionStore(tmp_path / "s") as store:
        keys = [await store.create_session(ctx(), data(step=n)) for n in range(3)]
        await store.remove_session(keys[0])
        await store.write_snapshot()
        result = await store.compact()
        assert result.generation == 2
        listed = {session.key: session.data async for session in store.iter_sessions()}
        assert listed == {keys[1]: data(step=1), keys[2]: data(step=2)}
        assert str(tmp_path / "s") in repr(store)
        assert store.path == str(tmp_path / "s")


async def test_memory_store_limit_listing_and_import() -> None:
    """The memory twin keeps its size limit, lists its sessions and imports them into another."""
    async with AsyncInMemorySessionStore(max_record_size=4096) as store, AsyncInMemorySessionStore() as copy:
        assert store.max_record_size == 4096
        assert repr(store) == "AsyncInMemorySessionStore()"
        key = await store.create_session(ctx(), data())
        listed = [session async for session in store.iter_sessions()]
        assert [session.key for session in listed] == [key]
        assert await copy.import_session(listed[0]) is True
        assert await copy.import_session(listed[0]) is False
        assert await copy.find_by_user(ctx(), "u1") == (key, data())


@pytest.mark.parametrize(
    "target", ["redis+cluster://127.0.0.1:7000?namespace=n", "redis+sentinel://127.0.0.1:26379/main"]
)
async def test_a_cluster_or_sentinel_url_is_refused_saying_the_sync_store_runs_there(target: str) -> None:
    """The async Redis store speaks to one server: a cluster or Sentinel URL is InvalidInputError
    naming the sync open_store, rather than a connection error from a client that cannot parse it."""
    with pytest.raises(InvalidInputError, match="sync open_store"):
        await open_async_store(target)
