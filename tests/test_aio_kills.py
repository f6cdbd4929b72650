"""A real process kill of an asyncio writer (issue 17): ``AsyncFileSessionStore`` resolves a
write's await only once its batch is written and synced, so a SIGKILL never loses an
acknowledged write, whatever other coroutines had in flight.

The child runs 16 coroutines on one loop, each creating a session and then updating it step
after step; it writes an *intent* line before each awaited call and an *ack* line after it
returns (unbuffered ``os.write``: a SIGKILL cannot lose a line once written), and tells the
parent through a pipe every 64 acknowledgements. The parent kills it after the third, with
coroutines mid-batch, reopens the store, and checks every session against the oracle: an
acknowledged update is there (or the one intended after it, in flight when killed); a session
whose creation was in flight may be there at step 0; nothing else.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from filestore import AsyncFileSessionStore, FileSessionStore

from .support import ctx, data

FORK = multiprocessing.get_context("fork")
COROUTINES = 16


def _writer(directory: str, oracle: str, durability: str, progress: Connection) -> None:
    fd = os.open(oracle, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    acknowledged = 0

    def line(entry: dict[str, object]) -> None:
        os.write(fd, (json.dumps(entry) + "\n").encode())

    def ack(entry: dict[str, object]) -> None:
        nonlocal acknowledged
        line(entry)
        acknowledged += 1
        if acknowledged % 64 == 0:
            progress.send(acknowledged)

    async def flow(store: AsyncFileSessionStore, number: int) -> None:
        tenant = ctx(user=f"u{number}")
        line({"creating": number})
        key = await store.create_session(tenant, data(tenant, step=0))
        ack({"created": str(key), "user": number})
        step = 0
        while True:
            step += 1
            line({"key": str(key), "intent": step})
            await store.update_session(key, data(tenant, step=step))
            ack({"key": str(key), "acked": step})

    async def main() -> None:
        async with AsyncFileSessionStore(directory, durability=durability) as store:
            await asyncio.gather(*(flow(store, number) for number in range(COROUTINES)))

    asyncio.run(main())


def _oracle(path: Path) -> tuple[dict[str, tuple[int, int, int]], int]:
    """Each acknowledged session's (user, last acknowledged step, last intended step), and how
    many creations were in flight. A torn last line (the kill inside its write) is ignored."""
    sessions: dict[str, tuple[int, int, int]] = {}
    creating = 0
    for text in path.read_text().splitlines(keepends=True):
        if not text.endswith("\n"):
            break
        entry = json.loads(text)
        if "creating" in entry:
            creating += 1
        elif "created" in entry:
            creating -= 1
            sessions[entry["created"]] = (entry["user"], 0, 0)
        elif "intent" in entry:
            user, acked, _ = sessions[entry["key"]]
            sessions[entry["key"]] = (user, acked, entry["intent"])
        else:
            user, _, intended = sessions[entry["key"]]
            sessions[entry["key"]] = (user, entry["acked"], intended)
    return sessions, creating


@pytest.mark.parametrize("durability", ["fsync", "none"])
@pytest.mark.parametrize("round_", range(3))
def test_a_killed_async_writer_loses_no_acknowledged_write(
    tmp_path: Path, durability: str, round_: int
) -> None:
    """After a SIGKILL amid 16 coroutines' writes, every acknowledged write is on disk, every
    in-flight one whole or absent, and nothing else is there."""
    directory, oracle = tmp_path / "s", tmp_path / "oracle.jsonl"
    receiving, sending = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_writer, args=(str(directory), str(oracle), durability, sending))
    child.start()
    sending.close()
    try:
        for _ in range(3 + round_):
            assert receiving.poll(60), "the writer stopped acknowledging"
            receiving.recv()
    finally:
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    assert child.exitcode == -signal.SIGKILL
    expected, creating = _oracle(oracle)
    assert len(expected) == COROUTINES  # each flow created its session before 192 acks
    assert sum(acked for _, acked, _ in expected.values()) >= 64 * 3 - COROUTINES
    with FileSessionStore(directory) as store:
        found = {str(key): store.get_session(key) for key in store.session_keys()}
    for key, (user, acked, intended) in expected.items():
        tenant = ctx(user=f"u{user}")
        assert found.pop(key) in (data(tenant, step=acked), data(tenant, step=intended)), key
    assert len(found) <= creating  # creations in flight, whole
    for session in found.values():
        assert session is not None
        assert session.cursor.node_pointer == "node.0"
