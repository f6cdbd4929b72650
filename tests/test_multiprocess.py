"""Several processes on one store: they see each other's writes and lose nothing.

Children are forked with no store handle open (each opens its own), as
worker processes of a pre-fork server do. Timings are never asserted.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from filestore import FileSessionStore, LockTimeoutError, SessionData, SessionKey
from filestore.engine.fileio import OS_IO
from filestore.engine.framing import FILE_HEADER_SIZE
from filestore.engine.logfile import LogFile
from filestore.engine.records import Put, decode_record

from .support import ctx, data

FORK = multiprocessing.get_context("fork")
USERS = ("u1", "u2", "u3")
TEAMS = ("support", "sales")


def _stress_worker(directory: str, worker: int, operations: int, start: Barrier, results: Connection) -> None:
    """Random operations on shared users, started together with the other workers; report the
    final state this worker acknowledged."""
    rng = random.Random(worker)
    mine: dict[str, SessionData | None] = {}
    with FileSessionStore(directory, durability="none" if worker % 2 else "fsync") as store:
        start.wait()
        for step in range(1, operations + 1):
            context = ctx(team=rng.choice(TEAMS), user=rng.choice(USERS))
            live = [key for key, value in mine.items() if value is not None]
            roll = rng.random()
            if roll < 0.35 or not live:
                stored = data(context, step=step)
                mine[store.create_session(context, stored)] = stored
            elif roll < 0.7:
                key = rng.choice(live)
                previous = mine[key]
                assert previous is not None
                stored = data(previous.tenant_ctx, step=step)
                store.update_session(key, stored)
                mine[key] = stored
            elif roll < 0.85:
                key = rng.choice(live)
                store.remove_session(key)
                mine[key] = None
            else:
                store.find_by_user(context, context.user or "u1")
    results.send({key: None if value is None else value.to_json() for key, value in mine.items()})
    results.close()


def _lookup_from_log(directory: Path) -> dict[tuple[str, str, str | None, str | None], str]:
    """The user lookup rebuilt independently, by replaying every record in log order."""
    log = LogFile.open(OS_IO, str(directory))
    owners: dict[str, tuple[str, str, str | None, str | None]] = {}
    lookup: dict[tuple[str, str, str | None, str | None], str] = {}
    try:
        for _, frame, _ in log.frames(FILE_HEADER_SIZE):
            if frame is None:
                break
            record = decode_record(frame.kind, frame.payload)
            if isinstance(record, Put):
                scope = owners.setdefault(record.key, tuple(record.scope))  # type: ignore[arg-type]
                if scope[3] is not None:
                    lookup[scope] = record.key
            else:
                scope = owners.pop(record.key)
                if lookup.get(scope) == record.key:
                    del lookup[scope]
    finally:
        log.close()
    return lookup


def test_four_processes_lose_nothing(tmp_path: Path) -> None:
    """4 processes (fsync and none modes), 600 operations each: every acknowledged write is there,
    the lookup agrees."""
    directory = tmp_path / "s"
    FileSessionStore(directory).close()
    watcher = FileSessionStore(directory)
    pipes = [FORK.Pipe(duplex=False) for _ in range(4)]
    start = FORK.Barrier(4, timeout=60)
    workers = [
        FORK.Process(target=_stress_worker, args=(str(directory), worker, 600, start, pipes[worker][1]))
        for worker in range(4)
    ]
    for process in workers:
        process.start()
    finals: dict[str, str | None] = {}
    for receiver, _ in pipes:
        finals.update(receiver.recv())
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    assert len(finals) > 40
    (directory / "sessions.idx").unlink(missing_ok=True)
    with FileSessionStore(directory) as reopened:
        for key, expected in finals.items():
            got = reopened.get_session(key)
            assert (None if got is None else got.to_json()) == expected
            # The handle that stayed open all along caught up to the same state.
            seen = watcher.get_session(key)
            assert (None if seen is None else seen.to_json()) == expected
        lookup = _lookup_from_log(directory)
        for (env, tenant, team, user), key in lookup.items():
            assert user is not None
            found = reopened.find_by_user(ctx(env=env, tenant=tenant, team=team, user=None), user)
            assert found is not None
            assert found[0] == key
            assert finals[key] is not None
        assert len(reopened) == sum(value is not None for value in finals.values())
    watcher.close()


def _echo_writer(directory: str, key: str, rounds: int, ask: Connection, answer: Connection) -> None:
    with FileSessionStore(directory, durability="none") as store:
        for step in range(rounds):
            store.update_session(key, data(step=step))
            answer.send(step)
            ask.recv()


def test_write_in_one_process_is_read_by_the_next_call_in_another(tmp_path: Path) -> None:
    """2,000 times in a row: once A's update returns, B's very next get returns it."""
    directory = tmp_path / "s"
    with FileSessionStore(directory) as store:
        key = store.create_session(ctx(), data())
    to_writer, from_reader = FORK.Pipe(duplex=False)
    to_reader, from_writer = FORK.Pipe(duplex=False)
    rounds = 2000
    writer = FORK.Process(target=_echo_writer, args=(str(directory), key, rounds, to_writer, from_writer))
    with FileSessionStore(directory) as reader:
        writer.start()
        for expected in range(rounds):
            assert to_reader.recv() == expected
            assert reader.get_session(key) == data(step=expected)
            assert reader.find_by_user(ctx(), "u1") == (key, data(step=expected))
            from_reader.send("next")
    writer.join(30)
    assert writer.exitcode == 0


def _hold_lock_then(directory: str, ready: Connection, action: str) -> None:
    store = FileSessionStore(directory)
    store._lock.acquire()
    ready.send("holding")
    if action == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    signal.pause()  # holding the lock until the test kills us


def test_killed_writer_holding_the_lock_blocks_nobody(tmp_path: Path) -> None:
    """A writer SIGKILLed while it holds the writer lock releases it; others write at once."""
    directory = tmp_path / "s"
    FileSessionStore(directory).close()
    receiver, sender = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_hold_lock_then, args=(str(directory), sender, "die"))
    child.start()
    assert receiver.recv() == "holding"
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    with FileSessionStore(directory, lock_timeout=5) as store:
        key = store.create_session(ctx(), data())
        assert store.get_session(key) == data()


def test_lock_timeout_is_typed_and_reads_go_on(tmp_path: Path) -> None:
    """While another process holds the writer lock, writes time out with LockTimeoutError; reads work."""
    directory = tmp_path / "s"
    with FileSessionStore(directory) as store:
        key = store.create_session(ctx(), data())
    receiver, sender = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_hold_lock_then, args=(str(directory), sender, "hold"))
    child.start()
    try:
        assert receiver.recv() == "holding"
        with FileSessionStore(directory, lock_timeout=0.2) as store:
            with pytest.raises(LockTimeoutError) as info:
                store.update_session(key, data(step=9))
            assert isinstance(info.value, TimeoutError)
            assert info.value.timeout == pytest.approx(0.2)
            assert store.get_session(key) == data()
    finally:
        child.kill()
        child.join(30)


def _write_forever(directory: str, acknowledged: int, ready: Connection) -> None:
    """Create sessions without end, saying so once ``acknowledged`` of them have returned."""
    with FileSessionStore(directory, preallocate_bytes=4096) as store:
        step = 0
        while True:
            step += 1
            store.create_session(ctx(), data(step=step))
            if step == acknowledged:
                ready.send(step)


@pytest.mark.parametrize("acknowledged", [1, 13, 31])
def test_writer_killed_mid_stream_leaves_an_openable_store(tmp_path: Path, acknowledged: int) -> None:
    """SIGKILL a busy writer once it has acknowledged some writes: the store opens with at least
    those sessions, finds the user's newest, and accepts writes."""
    directory = tmp_path / "s"
    FileSessionStore(directory).close()
    receiver, sender = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_write_forever, args=(str(directory), acknowledged, sender))
    child.start()
    assert receiver.recv() == acknowledged
    child.kill()
    child.join(30)
    with FileSessionStore(directory) as store:
        count = len(store)
        assert count >= acknowledged
        found = store.find_by_user(ctx(), "u1")
        assert found is not None
        assert found[1].cursor.node_pointer == f"node.{count}", "the newest session, and nothing after"
        key: SessionKey = store.create_session(ctx(), data())
        assert store.find_by_user(ctx(), "u1") == (key, data())
    with FileSessionStore(directory) as store:
        assert len(store) == count + 1
