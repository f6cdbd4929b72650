"""Group commit's mechanics (``filestore.engine.groupcommit``): who syncs, who wakes, and the
sync thread's life. Every sync here is held on an event, so each test fixes the order of the
syncs and of the writers around them; nothing waits on time."""

from __future__ import annotations

import errno
import gc
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from filestore import FileSessionStore, StorePoisonedError, WriteInDoubtError
from filestore.engine.fileio import OsFileIO

from .support import ctx, data

SYNC_THREAD = "filestore group commit"
TIMEOUT = 60


class HeldSyncs(OsFileIO):
    """Once armed, fdatasync number ``n`` (from 0) says it began (``began(n)``) and waits for
    ``release(n)`` (or ``release_from`` up to ``n``); it fails with EIO if ``n`` is in ``failing``.
    Records which thread ran each."""

    def __init__(self) -> None:
        self.armed = False
        self._all_from: int | None = None
        self.failing: set[int] = set()
        self.threads: list[str] = []
        self._began: list[threading.Event] = []
        self._released: list[threading.Event] = []
        self._lock = threading.Lock()

    def _events(self, number: int) -> tuple[threading.Event, threading.Event]:
        with self._lock:
            while len(self._began) <= number:
                self._began.append(threading.Event())
                self._released.append(threading.Event())
            return self._began[number], self._released[number]

    def began(self, number: int) -> bool:
        return self._events(number)[0].wait(TIMEOUT)

    def has_begun(self, number: int) -> bool:
        return self._events(number)[0].is_set()

    def release(self, number: int) -> None:
        self._events(number)[1].set()

    def release_from(self, number: int) -> None:
        """Release sync ``number`` and every one after it (close's own syncs among them)."""
        with self._lock:
            self._all_from = number
            events = self._released[number:]
        for event in events:
            event.set()

    def sync_data(self, fd: int) -> None:
        if not self.armed:
            super().sync_data(fd)
            return
        with self._lock:
            number = len(self.threads)
            self.threads.append(threading.current_thread().name)
        began, released = self._events(number)
        began.set()
        with self._lock:
            if self._all_from is not None and number >= self._all_from:
                released.set()
        if not released.wait(TIMEOUT):
            raise AssertionError(f"sync {number} was never released")
        if number in self.failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().sync_data(fd)


class CountingWaits:
    """``threading`` as ``filestore.engine.groupcommit`` sees it, but each writer's Condition
    ``wait`` is counted per thread name, ``waiting(n)`` blocks until ``n`` waits have begun in
    all, and ``sync_thread_idle`` is set while the sync thread waits for work.

    A waiter is counted while it holds the condition's lock, which ``wait``
    releases only once asleep: so once counted, no sync can end (that takes
    the lock) before the waiter is truly asleep.
    """

    def __init__(self) -> None:
        self.waits: dict[str, int] = {}
        self.sync_thread_idle = threading.Event()
        self._changed = threading.Condition()

    def __getattr__(self, name: str) -> object:
        return getattr(threading, name)

    def waiting(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: sum(self.waits.values()) >= count, TIMEOUT)

    def Condition(self, lock: threading.Lock) -> threading.Condition:
        shim = self

        class Counting(threading.Condition):
            def wait(self, timeout: float | None = None) -> bool:
                name = threading.current_thread().name
                if name.startswith("writer"):
                    with shim._changed:
                        shim.waits[name] = shim.waits.get(name, 0) + 1
                        shim._changed.notify_all()
                # The sync thread waits with no timeout only for work, holding no handle.
                idle = name.startswith(SYNC_THREAD) and timeout is None
                if idle:
                    shim.sync_thread_idle.set()
                try:
                    return super().wait(timeout)
                finally:
                    if idle:
                        shim.sync_thread_idle.clear()

        return Counting(lock)


class Writers:
    """Writer threads on one store, each creating one session; their outcomes by name."""

    def __init__(self, store: FileSessionStore) -> None:
        self.store = store
        self.outcomes: dict[str, BaseException | str] = {}
        self.threads: dict[str, threading.Thread] = {}

    def start(self, name: str) -> None:
        def write() -> None:
            context = ctx(user=name)
            try:
                self.outcomes[name] = self.store.create_session(context, data(context))
            except BaseException as error:
                self.outcomes[name] = error

        thread = threading.Thread(target=write, name=f"writer {name}")
        self.threads[name] = thread
        thread.start()

    def finished(self, name: str) -> bool:
        self.threads[name].join(TIMEOUT)
        return not self.threads[name].is_alive()


def sync_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(SYNC_THREAD)]


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> CountingWaits:
    shim = CountingWaits()
    monkeypatch.setattr("filestore.engine.groupcommit.threading", shim)
    return shim


def open_group(path: Path, io: HeldSyncs) -> FileSessionStore:
    return FileSessionStore(path, durability="group", io=io, preallocate_bytes=0)


def pipeline(store: FileSessionStore, io: HeldSyncs, waits: CountingWaits) -> Writers:
    """Bring ``store`` to: sync 0 (writer a's, led by a) done, sync 1 (b and c) running on the
    sync thread, d appended after sync 1 began and waiting. Each writer waits once."""
    writers = Writers(store)
    io.armed = True
    writers.start("a")
    assert io.began(0)
    writers.start("b")
    writers.start("c")
    assert waits.waiting(2)
    io.release(0)
    assert io.began(1)
    assert writers.finished("a")
    writers.start("d")
    assert waits.waiting(3)
    return writers


def test_the_next_sync_starts_on_the_sync_thread_and_wakes_only_its_writers(
    tmp_path: Path, waits: CountingWaits
) -> None:
    """Writes appended during a sync are covered by the next one, which the sync thread starts as
    soon as the previous returns: no woken writer runs it. A sync wakes only the writers it
    covered: d, appended during sync 1, sleeps on through sync 1's end (one wait in all), while
    b and c return with sync 2 still held."""
    io = HeldSyncs()
    store = open_group(tmp_path / "s", io)
    writers = pipeline(store, io, waits)
    io.release(1)
    assert io.began(2)
    assert writers.finished("b")
    assert writers.finished("c")
    assert writers.threads["d"].is_alive(), "d's record is in sync 2, still held"
    io.release(2)
    assert writers.finished("d")
    io.release_from(3)
    assert io.threads[0] == "writer a", "a lone writer syncs for itself"
    assert all(name.startswith(SYNC_THREAD) for name in io.threads[1:]), io.threads
    assert len(io.threads) == 3
    assert waits.waits == {"writer b": 1, "writer c": 1, "writer d": 1}
    io.armed = False
    store.close()
    with FileSessionStore(tmp_path / "s") as reopened:
        for name, key in writers.outcomes.items():
            assert isinstance(key, str)
            assert reopened.get_session(key) == data(ctx(user=name))


def test_a_failed_sync_reaches_the_writers_it_covered_and_those_pending(
    tmp_path: Path, waits: CountingWaits
) -> None:
    """When the sync thread's fdatasync fails, b and c (covered by it) and d (pending for the next)
    all raise its one WriteInDoubtError; the sync is never retried, and later writes are refused."""
    io = HeldSyncs()
    io.failing = {1}
    store = open_group(tmp_path / "s", io)
    writers = pipeline(store, io, waits)
    io.release(1)
    for name in "bcd":
        assert writers.finished(name)
    error = writers.outcomes["b"]
    assert isinstance(error, WriteInDoubtError)
    assert writers.outcomes["c"] is error
    assert writers.outcomes["d"] is error
    assert isinstance(writers.outcomes["a"], str)
    assert len(io.threads) == 2, "no sync after the failed one"
    with pytest.raises(StorePoisonedError):
        store.create_session(ctx(), data())
    io.release_from(2)
    store.close()
    assert sync_threads() == []


def test_close_syncs_the_writers_still_waiting_then_ends_the_sync_thread(
    tmp_path: Path, waits: CountingWaits
) -> None:
    """close() while syncs are held waits for them, syncs what is pending, and ends the sync
    thread; every writer waiting returns durable, none is left behind."""
    io = HeldSyncs()
    store = open_group(tmp_path / "s", io)
    writers = pipeline(store, io, waits)
    assert len(sync_threads()) == 1
    closer = threading.Thread(target=store.close)
    closer.start()
    io.release_from(1)
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    for name in "bcd":
        assert writers.finished(name)
    assert sync_threads() == []
    with FileSessionStore(tmp_path / "s") as reopened:
        for name, key in writers.outcomes.items():
            assert isinstance(key, str), key
            assert reopened.get_session(key) == data(ctx(user=name))


def test_a_failed_sync_on_close_reaches_the_waiting_writers(tmp_path: Path, waits: CountingWaits) -> None:
    """If the last sync (run by the sync thread while close() waits) fails, the writers it covered
    raise WriteInDoubtError, close() itself returns, and the sync thread ends."""
    io = HeldSyncs()
    io.failing = {2}
    store = open_group(tmp_path / "s", io)
    writers = pipeline(store, io, waits)
    closer = threading.Thread(target=store.close)
    closer.start()
    io.release_from(1)
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    for name in "bcd":
        assert writers.finished(name)
    assert isinstance(writers.outcomes["d"], WriteInDoubtError)
    assert all(isinstance(writers.outcomes[name], str) for name in "abc")
    assert sync_threads() == []


def test_a_handle_dropped_without_close_ends_its_sync_thread(tmp_path: Path, waits: CountingWaits) -> None:
    """The sync thread holds its handle only weakly while idle: a handle dropped without close()
    is collected, and its sync thread ends."""
    io = HeldSyncs()
    store = open_group(tmp_path / "s", io)
    writers = pipeline(store, io, waits)
    io.release_from(1)
    for name in "bcd":
        assert writers.finished(name)
    (thread,) = sync_threads()
    assert waits.sync_thread_idle.wait(TIMEOUT)
    del store, writers
    gc.collect()
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_a_lone_writer_never_starts_the_sync_thread(tmp_path: Path) -> None:
    """One writer at a time syncs its own records: no thread is started, no hand-off paid."""
    with FileSessionStore(tmp_path / "s", durability="group") as store:
        for step in range(5):
            store.create_session(ctx(), data(step=step))
        assert sync_threads() == []


def _close_in_child(store: FileSessionStore, queue: multiprocessing.Queue[str]) -> None:
    store.close()
    queue.put("closed")


def test_a_forked_child_closes_a_group_handle_whose_sync_thread_runs(
    tmp_path: Path, waits: CountingWaits
) -> None:
    """A child forked while the parent's sync thread holds a sync closes its copy of the handle
    without waiting for a thread it does not have; the parent's writers finish as usual."""
    io = HeldSyncs()
    store = open_group(tmp_path / "s", io)
    writers = pipeline(store, io, waits)
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_close_in_child, args=(store, queue))
    child.start()
    child.join(TIMEOUT)
    assert child.exitcode == 0
    assert queue.get(timeout=TIMEOUT) == "closed"
    io.release_from(1)
    for name in "bcd":
        assert writers.finished(name)
    store.close()
    assert sync_threads() == []
