"""``AsyncFileSessionStore`` when an interrupt (issue 20's seam: ``KeyboardInterrupt``,
``SystemExit``, ``asyncio.CancelledError``) is raised inside its appender or syncer thread.

Whatever the threads meet, every await of a write ends: with its result if the write is
durable, else with a ``FilestoreError`` that says what it stored; none hangs, none is told
"done" of a write that a reopen does not show, and ``close`` returns.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from filestore import FileSessionStore, FilestoreError, StorePoisonedError, WriteInDoubtError
from filestore.aio import AsyncFileSessionStore

from .support import ctx, data
from .support.interrupting import INTERRUPTS, InterruptAt, on

pytestmark = pytest.mark.anyio
WAIT_S = 30.0  # a bound on waiting for the writer's threads, never a measurement
# The interrupts that are no Exception: the ones a thread's "except Exception" lets through.
BASE_ONLY = [name for name, kind in INTERRUPTS.items() if not issubclass(kind, Exception)]


@pytest.fixture
def anyio_backend() -> str:
    """filestore.aio is for asyncio."""
    return "asyncio"


async def _write_through(store: AsyncFileSessionStore, key: str, count: int) -> list[object]:
    """``count`` updates of ``key`` from as many coroutines, each await bounded."""
    updates = [store.update_session(key, data(step=n)) for n in range(1, count + 1)]
    return await asyncio.wait_for(asyncio.gather(*updates, return_exceptions=True), WAIT_S)


@pytest.mark.parametrize("interrupt", BASE_ONLY)
@pytest.mark.parametrize("operation", ["pwrite", "sync_data"])
async def test_an_interrupt_in_the_writer_threads_ends_every_await(
    tmp_path: Path, interrupt: str, operation: str
) -> None:
    """An interrupt at a write's pwrite (appender) or fdatasync (syncer): every await ends, with
    success only for writes that are durable and a FilestoreError for the others; close returns and
    the reopened store holds the last acknowledged update (or a later, in-doubt one)."""
    io = InterruptAt(1, INTERRUPTS[interrupt], matches=on(operation))
    io.armed = False
    store = AsyncFileSessionStore(tmp_path / "store", io=io)
    try:
        key = await store.create_session(ctx(), data(step=0))
        io.armed = True
        outcomes = await _write_through(store, key, 8)
        assert io.fired
        assert all(outcome is None or isinstance(outcome, FilestoreError) for outcome in outcomes)
        assert any(isinstance(outcome, StorePoisonedError) for outcome in outcomes)
        acknowledged = [n for n, outcome in enumerate(outcomes, 1) if outcome is None]
        in_doubt = [n for n, outcome in enumerate(outcomes, 1) if isinstance(outcome, WriteInDoubtError)]
    finally:
        await asyncio.wait_for(store.close(), WAIT_S)
    with FileSessionStore(tmp_path / "store") as reopened:
        stored = reopened.get_session(key)
    assert stored is not None
    last = max(acknowledged, default=0)
    assert stored in [data(step=n) for n in [last, *(n for n in in_doubt if n > last)]]
