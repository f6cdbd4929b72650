"""``AsyncFileSessionStore``'s writer: group commit across coroutines, the loop never waiting on the disk,
cancellation, closing with writes in flight, failures, and other handles' writes.

A ``GateIO`` holds the syncer in ``fdatasync`` until the test lets it go, so
what happens while a sync is in flight is pinned without timing anything.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from filestore import (
    FileSessionStore,
    SessionNotFoundError,
    StoreClosedError,
    StorePoisonedError,
    TenantMismatchError,
    WriteInDoubtError,
)
from filestore.aio import AsyncFileSessionStore

from .support import ctx, data
from .support.fileio import Call, FailingIO, HookedIO

pytestmark = pytest.mark.anyio
WAIT_S = 30.0  # a bound on waiting for another thread, never a measurement


@pytest.fixture
def anyio_backend() -> str:
    """filestore.aio is for asyncio."""
    return "asyncio"


class GateIO(HookedIO):
    """The real file layer; while ``held`` is set, every fdatasync waits until ``release`` is set.

    ``syncing`` is set when a held sync has begun; ``writes`` counts pwrites done.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held = threading.Event()
        self.release = threading.Event()
        self.syncing = threading.Event()
        self._written = threading.Condition()
        self.writes = 0

    def before(self, call: Call) -> None:
        super().before(call)
        if call.operation == "sync_data" and self.held.is_set():
            self.syncing.set()
            assert self.release.wait(WAIT_S), "the test never released the sync"

    def after(self, call: Call) -> None:
        if call.operation == "pwrite":
            with self._written:
                self.writes += 1
                self._written.notify_all()

    def wait_writes(self, count: int) -> None:
        with self._written:
            assert self._written.wait_for(lambda: self.writes >= count, WAIT_S)


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[AsyncFileSessionStore, GateIO]]:
    """An async file store on a GateIO (released at the end, so closing never waits on it)."""
    io = GateIO()
    store = AsyncFileSessionStore(tmp_path / "store", io=io)
    try:
        yield store, io
    finally:
        io.release.set()
        await store.close()


async def _until(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, WAIT_S)


async def test_one_fdatasync_covers_every_write_made_while_one_was_in_flight(
    gated: tuple[AsyncFileSessionStore, GateIO],
) -> None:
    """64 coroutines write while a sync is held: once it returns, one more sync covers the 63 others."""
    store, io = gated
    first = asyncio.create_task(store.create_session(ctx(), data(step=0)))
    io.held.set()
    await _until(io.syncing)
    syncs_before = io.calls["sync_data"]
    writes_before = io.writes
    others = [asyncio.create_task(store.create_session(ctx(), data(step=n))) for n in range(1, 64)]
    await asyncio.to_thread(io.wait_writes, writes_before + 63)  # appended while the sync is held
    assert not first.done()
    assert not any(task.done() for task in others)
    io.held.clear()
    io.release.set()
    keys = [await first, *await asyncio.gather(*others)]
    assert io.calls["sync_data"] - syncs_before == 1
    assert len(set(keys)) == 64
    for n, key in enumerate(keys):
        assert await store.get_session(key) == data(step=n)


async def test_the_loop_runs_while_a_sync_is_in_flight(gated: tuple[AsyncFileSessionStore, GateIO]) -> None:
    """A held fdatasync blocks neither reads nor other coroutines; the write returns only after it."""
    store, io = gated
    key = await store.create_session(ctx(), data(step=1))
    io.held.set()
    update = asyncio.create_task(store.update_session(key, data(step=101)))
    await _until(io.syncing)
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 5
    assert not update.done()
    # The record is in the index (group commit's readers may see it a sync early).
    assert await store.get_session(key) == data(step=101)
    assert await store.find_by_user(ctx(), "u1") == (key, data(step=101))
    io.held.clear()
    io.release.set()
    await update
    assert update.exception() is None


async def test_a_cancelled_write_not_yet_taken_is_never_written(tmp_path: Path) -> None:
    """A write cancelled while the writer is busy with an earlier batch is dropped: the old data stays."""
    store = AsyncFileSessionStore(tmp_path / "store")
    try:
        key = await store.create_session(ctx(), data(step=1))
        blocker = threading.Event()
        taken = threading.Event()

        def hold() -> None:
            taken.set()
            assert blocker.wait(WAIT_S)

        # The appender runs this "call" in its batch, holding the store, so the next waits queued.
        held = asyncio.create_task(store._write(hold))
        await _until(taken)
        cancelled = asyncio.create_task(store.update_session(key, data(step=102)))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        blocker.set()
        await held
        assert await store.get_session(key) == data(step=1)
        await store.update_session(key, data(step=103))
        assert await store.get_session(key) == data(step=103)
    finally:
        await store.close()
    with FileSessionStore(tmp_path / "store") as reopened:
        assert reopened.get_session(key) == data(step=103)
        assert len(reopened) == 1


async def test_a_cancelled_write_already_appended_happens_whole(
    gated: tuple[AsyncFileSessionStore, GateIO], tmp_path: Path
) -> None:
    """Cancelling the await of a write the writer has appended does not undo it: it is stored, and
    durable once its sync returns; the store goes on."""
    store, io = gated
    key = await store.create_session(ctx(), data(step=1))
    io.held.set()
    writes = io.writes
    update = asyncio.create_task(store.update_session(key, data(step=101)))
    await asyncio.to_thread(io.wait_writes, writes + 1)
    update.cancel()
    with pytest.raises(asyncio.CancelledError):
        await update
    io.held.clear()
    io.release.set()
    await store.update_session(key, data(step=104))
    await store.close()
    with FileSessionStore(tmp_path / "store") as reopened:
        assert reopened.get_session(key) == data(step=104)


async def test_close_finishes_every_write_in_flight(
    gated: tuple[AsyncFileSessionStore, GateIO], tmp_path: Path
) -> None:
    """close() with writes queued and one sync held: each await returns, all are on disk after; a write
    begun once closing started is refused with StoreClosedError."""
    store, io = gated
    io.held.set()
    first = asyncio.create_task(store.create_session(ctx(), data(step=0)))
    await _until(io.syncing)
    rest = [asyncio.create_task(store.create_session(ctx(), data(step=n))) for n in range(1, 10)]
    await asyncio.sleep(0)
    closing = asyncio.create_task(store.close())
    while not closing.done() and store._store._stopping is False:
        await asyncio.sleep(0)
    with pytest.raises(StoreClosedError):
        await store.create_session(ctx(), data(step=999))
    io.held.clear()
    io.release.set()
    keys = [await first, *await asyncio.gather(*rest)]
    await closing
    with FileSessionStore(tmp_path / "store") as reopened:
        assert [reopened.get_session(key) for key in keys] == [data(step=n) for n in range(10)]


async def test_refusals_in_a_batch_are_each_calls_own(tmp_path: Path) -> None:
    """Writes refused in a batch raise the sync store's errors; the others of the batch are stored."""
    async with AsyncFileSessionStore(tmp_path / "store") as store:
        key = await store.create_session(ctx(), data(step=1))
        results = await asyncio.gather(
            store.update_session("no-such-key", data(step=1)),
            store.create_session(ctx(), data(step=2)),
            store.update_session(key, data(ctx(user="u9"))),
            store.remove_session(key),
            return_exceptions=True,
        )
        missing, created, other_owner, removed = results
        assert isinstance(missing, SessionNotFoundError)
        assert isinstance(other_owner, TenantMismatchError)
        assert removed is None
        assert isinstance(created, str)
        assert await store.get_session(created) == data(step=2)
        assert await store.get_session(key) is None


async def test_a_failed_sync_fails_its_batch_in_doubt_and_poisons(tmp_path: Path) -> None:
    """An fdatasync that fails raises WriteInDoubtError for the writes it covered; later writes raise
    StorePoisonedError; reads go on."""
    io = FailingIO()
    store = AsyncFileSessionStore(tmp_path / "store", io=io)
    try:
        key = await store.create_session(ctx(), data(step=1))
        io.fail_on = "sync_data"
        with pytest.raises(WriteInDoubtError):
            await store.update_session(key, data(step=101))
        io.fail_on = None
        with pytest.raises(StorePoisonedError):
            await store.create_session(ctx(), data(step=2))
        assert await store.get_session(key) is not None
    finally:
        await store.close()


async def test_another_handles_writes_are_seen(tmp_path: Path) -> None:
    """Writes of another handle on the directory (as of another process) are read on the loop, and a
    write of the async store decides on them (caught up under the writer lock)."""
    async with AsyncFileSessionStore(tmp_path / "store") as store:
        with FileSessionStore(tmp_path / "store") as other:
            key = other.create_session(ctx(), data(step=1))
            assert await store.get_session(key) == data(step=1)
            assert await store.find_by_user(ctx(), "u1") == (key, data(step=1))
            await store.update_session(key, data(step=101))
            assert other.get_session(key) == data(step=101)
            other.remove_session(key)
            with pytest.raises(SessionNotFoundError):
                await store.remove_session(key)


async def test_a_read_while_the_store_is_held_goes_to_a_thread(tmp_path: Path) -> None:
    """While another thread holds the store, a read does not wait on the loop: it finishes once
    the store is free, and the loop ran meanwhile."""
    async with AsyncFileSessionStore(tmp_path / "store") as store:
        key = await store.create_session(ctx(), data(step=1))
        holding = threading.Event()
        done = threading.Event()

        def hold() -> None:
            with store._store._mutex:
                holding.set()
                assert done.wait(WAIT_S)

        holder = asyncio.create_task(asyncio.to_thread(hold))
        await _until(holding)
        read = asyncio.create_task(store.get_session(key))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not read.done()
        done.set()
        assert await read == data(step=1)
        await holder


async def test_durability_none_writes_without_a_sync(tmp_path: Path) -> None:
    """durability="none": writes return without any fdatasync, and are there on reopen."""
    io = HookedIO()
    async with AsyncFileSessionStore(tmp_path / "store", durability="none", io=io) as store:
        before = io.calls["sync_data"]
        keys = await asyncio.gather(*(store.create_session(ctx(), data(step=n)) for n in range(20)))
        assert io.calls["sync_data"] == before
    with FileSessionStore(tmp_path / "store") as reopened:
        assert [reopened.get_session(key) for key in keys] == [data(step=n) for n in range(20)]


class RenameGateIO(HookedIO):
    """The real file layer; the first rename (a compaction's switch, after its seal) waits until
    ``release`` is set, the compacting handle holding the writer lock; ``renaming`` says it began."""

    def __init__(self) -> None:
        super().__init__()
        self.renaming = threading.Event()
        self.release = threading.Event()

    def before(self, call: Call) -> None:
        super().before(call)
        if call.operation == "rename" and not self.renaming.is_set():
            self.renaming.set()
            assert self.release.wait(WAIT_S), "the test never released the rename"


async def test_a_read_meeting_another_handles_compaction_does_not_hold_the_loop(tmp_path: Path) -> None:
    """Another handle (as another process) has sealed the log and holds the writer lock to switch
    generations: a read that meets the seal waits for it in a worker thread, the loop running
    meanwhile, then answers from the new generation."""
    io = RenameGateIO()
    async with AsyncFileSessionStore(tmp_path / "store") as store:
        with FileSessionStore(tmp_path / "store", io=io) as other:
            key = await store.create_session(ctx(), data(step=1))
            compaction = asyncio.create_task(asyncio.to_thread(other.compact))
            await _until(io.renaming)
            read = asyncio.create_task(store.get_session(key))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not read.done()  # waiting in a thread: the loop got here
            io.release.set()
            await compaction
            assert await read == data(step=1)
            await store.update_session(key, data(step=2))
            assert other.get_session(key) == data(step=2)
