"""Generations: online compaction, and every open handle following it.

A compaction seals the old log before switching; every handle looks for new
records before each call, finds the seal, waits for the writer lock and
reloads the new generation. No writer ever appends to a replaced log.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from filestore import FileSessionStore
from filestore.engine.fileio import OsFileIO
from filestore.engine.framing import FILE_HEADER_SIZE, KIND_SEAL, RECORD_MAGIC
from filestore.engine.logfile import LogFile
from filestore.offline.fsck import fsck

from .support import ctx, data
from .support.descriptors import held_files, needs_proc
from .support.fileio import Call, HookedIO, SyncLedger

FORK = multiprocessing.get_context("fork")


def test_online_compaction_keeps_contents_and_shrinks(tmp_path: Path) -> None:
    """compact() on an open store keeps every session and lookup, and drops dead records."""
    with FileSessionStore(tmp_path / "s", preallocate_bytes=0) as store:
        keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(40)]
        for key in keys[:30]:
            store.remove_session(key)
        before = (tmp_path / "s" / "sessions.log").stat().st_size
        result = store.compact()
        assert result.generation == 2
        assert result.records == 10
        assert (tmp_path / "s" / "sessions.log").stat().st_size < before / 3
        for number, key in enumerate(keys[30:], start=30):
            assert store.get_session(key) == data(ctx(user=f"u{number}"), step=number)
            assert store.find_by_user(ctx(), f"u{number}") == (key, data(ctx(user=f"u{number}"), step=number))
        added = store.create_session(ctx(user="new"), data(ctx(user="new")))
    with FileSessionStore(tmp_path / "s") as reopened:
        assert len(reopened) == 11
        assert reopened.get_session(added) == data(ctx(user="new"))
    assert not (tmp_path / "s" / "sessions.log.old").exists()
    assert not fsck(tmp_path / "s").errors


def _log_generation(directory: Path) -> int:
    log = LogFile.open(OsFileIO(), str(directory))
    try:
        return log.header.generation
    finally:
        log.close()


def _seal_without_switch(directory: Path) -> None:
    """What a compaction that died between its seal and its switch leaves behind."""
    log = LogFile.open(OsFileIO(), str(directory))
    try:
        log.adopt(log.scan(FILE_HEADER_SIZE, 1, lambda frame: None))
        log.append_seal(log.header.generation + 1)
    finally:
        log.close()


def test_other_handle_follows_the_seal(tmp_path: Path) -> None:
    """A second handle sees the new generation on its next call, and its writes land in it."""
    first = FileSessionStore(tmp_path / "s")
    second = FileSessionStore(tmp_path / "s")
    key = first.create_session(ctx(), data(step=1))
    assert second.get_session(key) == data(step=1)
    first.update_session(key, data(step=2))
    first.compact()
    assert second.get_session(key) == data(step=2)
    second.update_session(key, data(step=3))
    assert first.get_session(key) == data(step=3)
    second.close()
    first.close()
    assert _log_generation(tmp_path / "s") == 2
    with FileSessionStore(tmp_path / "s") as reopened:
        assert reopened.get_session(key) == data(step=3)


def test_seal_without_switch_is_cut_on_open(tmp_path: Path) -> None:
    """A compaction that died after sealing but before switching: opening cuts the seal, keeps data."""
    with FileSessionStore(tmp_path / "s", preallocate_bytes=0) as store:
        key = store.create_session(ctx(), data(step=1))
    _seal_without_switch(tmp_path / "s")
    report = fsck(tmp_path / "s")
    assert [finding.kind for finding in report.errors] == ["interrupted-compaction"]
    with FileSessionStore(tmp_path / "s") as store:
        assert store.get_session(key) == data(step=1)
        store.update_session(key, data(step=2))
    assert list((tmp_path / "s").glob("sessions.log.tr*"))
    assert not fsck(tmp_path / "s").errors


def test_open_handle_meeting_a_void_seal_cuts_it_and_goes_on(tmp_path: Path) -> None:
    """A handle that finds a seal while the sealed log is still current cuts it and carries on."""
    with FileSessionStore(tmp_path / "s", preallocate_bytes=0) as store:
        key = store.create_session(ctx(), data(step=1))
        _seal_without_switch(tmp_path / "s")
        assert store.get_session(key) == data(step=1)
        store.update_session(key, data(step=2))
        assert store.get_session(key) == data(step=2)
    with FileSessionStore(tmp_path / "s") as reopened:
        assert reopened.get_session(key) == data(step=2)
    assert _log_generation(tmp_path / "s") == 1


def test_fsck_repairs_an_interrupted_compaction(tmp_path: Path) -> None:
    """fsck --repair cuts a seal left by an interrupted compaction."""
    with FileSessionStore(tmp_path / "s", preallocate_bytes=0) as store:
        store.create_session(ctx(), data(step=1))
    _seal_without_switch(tmp_path / "s")
    assert fsck(tmp_path / "s", repair=True).exit_code == 1
    assert fsck(tmp_path / "s").exit_code == 0


class CompactWhileOpening(HookedIO):
    """Opening a handle: once it has opened the log and goes for the snapshot, ``compact`` runs
    (another process compacting just then)."""

    def __init__(self, compact: Callable[[], object]) -> None:
        super().__init__()
        self.compact: Callable[[], object] | None = compact

    def before(self, call: Call) -> None:
        super().before(call)
        if self.compact is not None and call.path.endswith("sessions.idx"):
            compact, self.compact = self.compact, None
            compact()


@pytest.mark.parametrize("durability", ["fsync", "group", "none"])
def test_opening_while_another_handle_compacts(tmp_path: Path, durability: str) -> None:
    """A handle that opens the old generation's log just before another compacts follows the seal
    while loading, and opens: it syncs the log it now reads, not the replaced one (whose
    descriptor it has closed: that sync raised EBADF, found by the multi-process model lane)."""
    directory = tmp_path / "s"
    other = FileSessionStore(directory)
    keys = [other.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(3)]
    other.remove_session(keys[0])
    other.write_snapshot()
    io = CompactWhileOpening(other.compact)
    with FileSessionStore(directory, durability=durability, io=io) as opened:
        assert io.compact is None, "the compaction ran while the handle was opening"
        assert opened.get_session(keys[1]) == data(ctx(user="u1"), step=1)
        opened.update_session(keys[2], data(ctx(user="u2"), step=9))
    assert other.get_session(keys[2]) == data(ctx(user="u2"), step=9)
    other.close()
    assert _log_generation(directory) == 2
    assert not fsck(directory).errors


def _compacting_writer(directory: str, key: str, rounds: int, ask: Connection, answer: Connection) -> None:
    with FileSessionStore(directory, durability="none") as store:
        for step in range(rounds):
            store.update_session(key, data(step=step))
            if step % 250 == 125:
                store.compact()
            answer.send(step)
            ask.recv()


def test_visibility_across_compactions(tmp_path: Path) -> None:
    """2,000 cross-process write-then-read round trips while the writer compacts 8 times."""
    directory = tmp_path / "s"
    with FileSessionStore(directory) as store:
        key = store.create_session(ctx(), data())
    to_writer, from_reader = FORK.Pipe(duplex=False)
    to_reader, from_writer = FORK.Pipe(duplex=False)
    rounds = 2000
    writer = FORK.Process(
        target=_compacting_writer, args=(str(directory), key, rounds, to_writer, from_writer)
    )
    with FileSessionStore(directory) as reader:
        writer.start()
        for expected in range(rounds):
            assert to_reader.recv() == expected
            assert reader.get_session(key) == data(step=expected)
            from_reader.send("next")
        writer.join(60)
        assert writer.exitcode == 0
        assert reader.find_by_user(ctx(), "u1") == (key, data(step=rounds - 1))
    assert _log_generation(directory) == 9
    assert not fsck(directory).errors


def test_no_write_lands_in_a_replaced_log(tmp_path: Path) -> None:
    """After another handle compacts, this handle's write goes to the new generation."""
    first = FileSessionStore(tmp_path / "s", preallocate_bytes=0)
    second = FileSessionStore(tmp_path / "s", preallocate_bytes=0)
    key = first.create_session(ctx(), data(step=1))
    second.compact(keep_old=True)
    old_size = (tmp_path / "s" / "sessions.log.old").stat().st_size
    first.update_session(key, data(step=2))
    assert (tmp_path / "s" / "sessions.log.old").stat().st_size == old_size
    first.close()
    second.close()
    log = LogFile.open(OsFileIO(), str(tmp_path / "s"))
    try:
        kinds = [frame.kind for _, frame, _ in log.frames(FILE_HEADER_SIZE) if frame is not None]
    finally:
        log.close()
    assert KIND_SEAL not in kinds
    assert len(kinds) == 2
    assert os.path.exists(tmp_path / "s" / "sessions.log.old")


def _assert_synced_within(ledger: SyncLedger, directory: Path, write: Callable[[], object]) -> None:
    """Run ``write`` and check that, before it returned, its one record went to the current log
    and an fdatasync of that log completed after it."""
    since = ledger.mark()
    write()
    inodes, syncs = ledger.records_and_syncs(since, ledger.mark())
    assert inodes == [(directory / "sessions.log").stat().st_ino], "one record, in the current log"
    assert syncs >= 1, "an fdatasync of the current log covered the record before the call returned"


def _append_result(results: list[str], call: Callable[[], str]) -> None:
    results.append(call())


@pytest.mark.parametrize("compactor", ["this handle", "another handle"])
@pytest.mark.parametrize("durability", ["fsync", "group"])
def test_every_write_is_synced_in_its_own_generation(tmp_path: Path, durability: str, compactor: str) -> None:
    """In the fsync and group modes every acknowledged create, update and remove is covered, within
    its call, by an fdatasync of the current log completed after its record was written: before
    any compaction and after each of four in a row, made by this handle or by another one it
    follows. Each generation runs its record numbers far past the next one's (many updates of
    three sessions), so durable state remembered across generations would skip the sync."""
    directory = tmp_path / "s"
    ledger = SyncLedger()
    store = FileSessionStore(directory, durability=durability, io=ledger)
    other = FileSessionStore(directory)
    compacting = store if compactor == "this handle" else other
    contexts = [ctx(user=f"u{number}") for number in range(3)]
    keys = [store.create_session(context, data(context)) for context in contexts]
    for generation in range(2, 6):
        for step in range(1, 25):
            number = step % 3
            update = partial(store.update_session, keys[number], data(contexts[number], step=step))
            _assert_synced_within(ledger, directory, update)
        extra = ctx(user="extra")
        created: list[str] = []
        create = partial(_append_result, created, partial(store.create_session, extra, data(extra)))
        _assert_synced_within(ledger, directory, create)
        _assert_synced_within(ledger, directory, partial(store.remove_session, created[0]))
        assert compacting.compact().generation == generation
    for step in range(25, 28):
        _assert_synced_within(
            ledger, directory, partial(store.update_session, keys[0], data(contexts[0], step=step))
        )
    assert other.get_session(keys[0]) == data(contexts[0], step=27)
    other.close()
    store.close()
    assert _log_generation(directory) == 5


@needs_proc
@pytest.mark.parametrize("durability", ["fsync", "group", "none"])
def test_descriptors_stay_flat_over_many_compactions(tmp_path: Path, durability: str) -> None:
    """Over 100 online compactions the descriptors this process holds stay as many as after the
    first, and no handle holds a deleted log: neither the compacting handle nor a second handle
    that follows each compaction (and writes in the new generation)."""
    directory = tmp_path / "s"
    compacting = FileSessionStore(directory, durability=durability)
    following = FileSessionStore(directory, durability=durability)
    key = compacting.create_session(ctx(), data())

    def one_round(step: int) -> None:
        compacting.update_session(key, data(step=step))
        compacting.compact()
        following.update_session(key, data(step=step + 1))
        assert compacting.get_session(key) == data(step=step + 1)

    one_round(0)
    held_after_first, deleted_after_first = held_files(directory)
    assert deleted_after_first == []
    for step in range(1, 100):
        one_round(step)
    assert held_files(directory) == (held_after_first, [])
    following.close()
    compacting.close()
    assert _log_generation(directory) == 101


class HeldSyncIO(OsFileIO):
    """Once armed, the next fdatasync of a log after a record was written to it waits for ``release``
    (a group-commit leader syncing, outside the store's mutex, while another thread compacts)."""

    def __init__(self) -> None:
        self.armed = False
        self.record_written = False
        self.syncing = threading.Event()
        self.release = threading.Event()

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        super().pwrite(fd, data, offset)
        if self.armed and data.startswith(RECORD_MAGIC):
            self.record_written = True

    def sync_data(self, fd: int) -> None:
        if self.armed and self.record_written:
            self.armed = False
            self.syncing.set()
            if not self.release.wait(timeout=60):
                raise AssertionError("the held sync was never released")
        super().sync_data(fd)


@needs_proc
def test_old_log_stays_open_for_a_group_sync_running_on_it(tmp_path: Path) -> None:
    """A compaction while a group-commit sync of the old log is in flight keeps that log open until
    the sync ends (the write then returns, not poisoned), and closes it then: no deleted log held."""
    directory = tmp_path / "s"
    io = HeldSyncIO()
    store = FileSessionStore(directory, durability="group", io=io)
    key = store.create_session(ctx(), data())
    io.armed = True
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            store.update_session(key, data(step=1))
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert io.syncing.wait(timeout=60)
        store.compact()
        assert len(held_files(directory)[1]) == 1, "the log being synced is still open"
    finally:
        io.release.set()
        writer.join(60)
    assert outcome == [None]
    assert held_files(directory)[1] == []
    assert store.get_session(key) == data(step=1)
    store.update_session(key, data(step=2))
    store.close()
    with FileSessionStore(directory) as reopened:
        assert reopened.get_session(key) == data(step=2)


@pytest.mark.parametrize("compactor", ["this handle", "another handle"])
@pytest.mark.parametrize("durability", ["fsync", "group"])
def test_concurrent_writes_are_synced_in_their_generation(
    tmp_path: Path, durability: str, compactor: str
) -> None:
    """With 4 threads writing 160 updates while a fifth compacts 16 times in between (through the
    writers' handle or another one), every acknowledged write is covered, before it returns, by
    an fdatasync of the log its record went to, completed after the record: its own generation's
    log, whether a group leader's sync or the seal a compaction synced when it replaced that log."""
    directory = tmp_path / "s"
    ledger = SyncLedger()
    store = FileSessionStore(directory, durability=durability, io=ledger, preallocate_bytes=0)
    other = FileSessionStore(directory, io=ledger, preallocate_bytes=0)
    compacting = store if compactor == "this handle" else other
    # Writers may start 10 updates per compaction; the next compaction starts once 5 of them
    # are done, so it runs while the others are being written and synced.
    progress = threading.Condition()
    issued = written = compactions = 0
    writers_done = False
    failures: list[str] = []

    def may_compact() -> bool:
        return written >= 10 * compactions - 5 or writers_done

    def may_write() -> bool:
        return issued < 10 * compactions

    def compact() -> None:
        nonlocal compactions
        while True:
            compacting.compact()
            with progress:
                compactions += 1
                progress.notify_all()
                assert progress.wait_for(may_compact, timeout=60)
                if writers_done:
                    return

    def writer(worker: int) -> None:
        nonlocal issued, written
        context = ctx(user=f"w{worker}")
        key = store.create_session(context, data(context))
        for step in range(1, 41):
            with progress:
                assert progress.wait_for(may_write, timeout=60)
                issued += 1
            since = ledger.mark()
            store.update_session(key, data(context, step=step))
            inodes, syncs = ledger.records_and_syncs(since, ledger.mark())
            if len(inodes) != 1 or syncs < 1:
                failures.append(f"w{worker} step {step}: {len(inodes)} records, {syncs} syncs after")
            with progress:
                written += 1
                progress.notify_all()

    compactor_thread = threading.Thread(target=compact)
    writers = [threading.Thread(target=writer, args=(worker,)) for worker in range(4)]
    for thread in writers:
        thread.start()
    compactor_thread.start()
    for thread in writers:
        thread.join(60)
    with progress:
        writers_done = True
        progress.notify_all()
    compactor_thread.join(60)
    assert failures == []
    assert written == 160
    assert compactions >= 16
    other.close()
    store.close()
    with FileSessionStore(directory) as reopened:
        assert len(reopened) == 4
