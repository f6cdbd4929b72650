"""FileSessionStore beyond the shared contract: options, limits, files, poisoning, fork."""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
import threading
from pathlib import Path

import pytest

from filestore import (
    CorruptionError,
    FileSessionStore,
    InvalidInputError,
    StoreClosedError,
    StorePoisonedError,
    UnsupportedFilesystemError,
)
from filestore.engine.fileio import OsFileIO
from filestore.engine.framing import RECORD_MAGIC
from filestore.engine.locking import network_filesystem

from .support import ctx, data
from .support.fileio import Call, FailingIO, HookedIO
from .support.permissions import mode_of, umask


def test_new_store_files_and_permissions(tmp_path: Path) -> None:
    """A new store is a 0700 directory of 0600 files: identity, log, and lock files."""
    with FileSessionStore(tmp_path / "s") as store:
        store.create_session(ctx(), data())
    directory = tmp_path / "s"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = {path.name for path in directory.iterdir()}
    assert {"filestore.json", "sessions.log", "sessions.idx", "LOCK", "OPEN"} <= names
    for name in ("filestore.json", "sessions.log", "sessions.idx"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600


@pytest.mark.parametrize(("dir_mode", "parent_mode"), [(0o700, 0o700), (0o750, 0o750), (0o770, 0o750)])
def test_missing_parents_are_made_with_dir_mode_under_umask_zero(
    tmp_path: Path, dir_mode: int, parent_mode: int
) -> None:
    """Missing parents get dir_mode less group/other write, not 0777: umask 0 opens nothing to others.

    Even a shared store (dir_mode 0o770) gets parents nobody else may write:
    whoever can write a parent can swap the store directory for their own.
    """
    with umask(0), FileSessionStore(tmp_path / "a" / "b" / "s", dir_mode=dir_mode) as store:
        store.create_session(ctx(), data())
    assert mode_of(tmp_path / "a") == parent_mode
    assert mode_of(tmp_path / "a" / "b") == parent_mode
    assert mode_of(tmp_path / "a" / "b" / "s") == dir_mode


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("durability", "sometimes"),
        ("max_record_size", 0),
        ("snapshot_every_records", -1),
        ("snapshot_every_bytes", 0),
        ("lock_timeout", -1.0),
    ],
)
def test_bad_options_are_invalid_input(tmp_path: Path, option: str, value: object) -> None:
    """Bad options raise InvalidInputError naming the option, and create nothing."""
    with pytest.raises(InvalidInputError) as info:
        FileSessionStore(tmp_path / "s", **{option: value})  # type: ignore[arg-type]
    assert info.value.field == option
    assert not (tmp_path / "s").exists()


def test_oversized_record_is_refused_and_nothing_written(tmp_path: Path) -> None:
    """A session over max_record_size is invalid input; the log does not grow."""
    with FileSessionStore(tmp_path / "s", max_record_size=4096, preallocate_bytes=0) as store:
        key = store.create_session(ctx(), data())
        size = (tmp_path / "s" / "sessions.log").stat().st_size
        big = data()
        big = type(big)(big.tenant_ctx, big.flow_id, big.cursor, "x" * 5000)
        with pytest.raises(InvalidInputError) as info:
            store.create_session(ctx(), big)
        assert info.value.field == "data"
        with pytest.raises(InvalidInputError):
            store.update_session(key, big)
        assert (tmp_path / "s" / "sessions.log").stat().st_size == size
        assert store.get_session(key) == data()


def test_missing_log_is_an_error_not_a_new_store(tmp_path: Path) -> None:
    """Metadata without a log refuses to open, and no empty log is created."""
    with FileSessionStore(tmp_path / "s") as store:
        store.create_session(ctx(), data())
    (tmp_path / "s" / "sessions.log").unlink()
    with pytest.raises(CorruptionError) as info:
        FileSessionStore(tmp_path / "s")
    assert "fsck" in str(info.value)
    assert not (tmp_path / "s" / "sessions.log").exists()


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    """A directory of someone else's files never becomes a store."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CorruptionError) as info:
        FileSessionStore(tmp_path)
    assert "not a filestore directory" in str(info.value)
    assert not (tmp_path / "sessions.log").exists()


def test_lost_identity_file_is_rewritten_from_the_log(tmp_path: Path) -> None:
    """The log is the truth: a missing filestore.json is rewritten, data intact."""
    with FileSessionStore(tmp_path / "s") as store:
        key = store.create_session(ctx(), data())
    (tmp_path / "s" / "filestore.json").unlink()
    with FileSessionStore(tmp_path / "s") as store:
        assert store.get_session(key) == data()
    assert (tmp_path / "s" / "filestore.json").exists()


def test_identity_file_of_another_store_is_refused(tmp_path: Path) -> None:
    """Mixing files of two stores in one directory is detected."""
    FileSessionStore(tmp_path / "a").close()
    FileSessionStore(tmp_path / "b").close()
    (tmp_path / "a" / "filestore.json").write_bytes((tmp_path / "b" / "filestore.json").read_bytes())
    with pytest.raises(CorruptionError):
        FileSessionStore(tmp_path / "a")


@pytest.mark.parametrize("operation", ["pwrite", "sync_data"])
def test_io_error_poisons_the_handle(tmp_path: Path, operation: str) -> None:
    """A failed write or fsync raises StorePoisonedError; the handle then refuses writes, reopen works."""
    io = FailingIO()
    store = FileSessionStore(tmp_path / "s", io=io)
    kept = store.create_session(ctx(), data(step=1))
    io.fail_on = operation
    with pytest.raises(StorePoisonedError) as info:
        store.create_session(ctx(), data(step=2))
    assert "EIO" in info.value.cause or "Input/output" in info.value.cause
    io.fail_on = None
    with pytest.raises(StorePoisonedError):
        store.update_session(kept, data(step=3))
    with pytest.raises(StorePoisonedError):
        store.remove_session(kept)
    assert store.get_session(kept) == data(step=1)
    store.close()
    with FileSessionStore(tmp_path / "s") as reopened:
        assert reopened.get_session(kept) == data(step=1)
        reopened.update_session(kept, data(step=4))
        assert reopened.get_session(kept) == data(step=4)


class RoundGateIO(OsFileIO):
    """Holds every fdatasync until all writers of the current round have appended their record.

    Records are counted by the frames written (``preallocate_bytes=0`` makes
    each append one ``pwrite`` starting with the record magic). A sync asked
    for mid-round therefore waits for the round to be complete, as a slow disk
    makes it wait in production, and the writers really do contend.
    """

    def __init__(self, writers: int) -> None:
        self.writers = writers
        self.appended = 0
        self.syncs = 0
        self._changed = threading.Condition()

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        super().pwrite(fd, data, offset)
        if data.startswith(RECORD_MAGIC):
            with self._changed:
                self.appended += 1
                self._changed.notify_all()

    def sync_data(self, fd: int) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.appended % self.writers == 0, timeout=60):
                raise AssertionError("a round's writers never all appended")
            self.syncs += 1
        super().sync_data(fd)


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    """In group mode, writers that append while a sync is in progress share the next one: 8 threads
    writing in lock-step rounds need at most 2 fdatasyncs per round of 8 writes, and all land."""
    writers, rounds = 8, 30
    io = RoundGateIO(writers)
    store = FileSessionStore(tmp_path / "s", durability="group", io=io, preallocate_bytes=0)
    io.appended = io.syncs = 0
    start_round = threading.Barrier(writers, timeout=60)
    keys: list[str] = []
    failures: list[BaseException] = []
    keys_lock = threading.Lock()

    def writer(worker: int) -> None:
        context = ctx(user=f"w{worker}")
        try:
            for step in range(rounds):
                start_round.wait()
                key = store.create_session(context, data(context, step=step))
                with keys_lock:
                    keys.append(key)
        except BaseException as error:
            failures.append(error)
            start_round.abort()

    threads = [threading.Thread(target=writer, args=(worker,)) for worker in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(keys) == writers * rounds
    assert io.appended == writers * rounds
    assert 1 <= io.syncs <= 2 * rounds
    store.close()
    with FileSessionStore(tmp_path / "s") as reopened:
        assert len(reopened) == writers * rounds


class CountingWaits:
    """``threading`` as ``filestore.engine.groupcommit`` sees it, except that its Condition counts
    the writers waiting on it and says when ``expected`` of them do.

    ``wait`` is entered holding the condition's lock and releases it only
    inside; so once ``all_waiting`` is set, the leader cannot take that lock
    to publish its outcome before the last waiter is truly asleep in ``wait``.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.waits = 0
        self.all_waiting = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(threading, name)

    def Condition(self, lock: threading.Lock) -> threading.Condition:
        shim = self

        class Counting(threading.Condition):
            def wait(self, timeout: float | None = None) -> bool:
                shim.waits += 1
                if shim.waits >= shim.expected:
                    shim.all_waiting.set()
                return super().wait(timeout)

        return Counting(lock)


class LeaderFailsIO(OsFileIO):
    """Once armed, every fdatasync fails with EIO and is counted; the first (the group leader's)
    first blocks until ``release`` is set."""

    def __init__(self, release: threading.Event) -> None:
        self.armed = False
        self.release = release
        self.leader_syncing = threading.Event()
        self.syncs = 0
        self._lock = threading.Lock()

    def sync_data(self, fd: int) -> None:
        if not self.armed:
            super().sync_data(fd)
            return
        with self._lock:
            self.syncs += 1
            leading = self.syncs == 1
        if leading:
            self.leader_syncing.set()
            self.release.wait(timeout=60)
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_group_commit_sync_failure_poisons_every_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed group fsync raises its one StorePoisonedError to the leader and to every writer
    waiting on that sync (none of which syncs itself), and the handle refuses later writes."""
    waiters = 3
    waits = CountingWaits(expected=waiters)
    monkeypatch.setattr("filestore.engine.groupcommit.threading", waits)
    io = LeaderFailsIO(release=waits.all_waiting)
    store = FileSessionStore(tmp_path / "s", durability="group", io=io, preallocate_bytes=0)
    io.armed = True
    outcomes: dict[str, BaseException | None] = {}

    def write(name: str) -> None:
        try:
            store.create_session(ctx(user=name), data(ctx(user=name)))
        except BaseException as error:
            outcomes[name] = error
        else:
            outcomes[name] = None

    leader = threading.Thread(target=write, args=("leader",))
    leader.start()
    assert io.leader_syncing.wait(timeout=60)
    followers = [threading.Thread(target=write, args=(f"w{number}",)) for number in range(waiters)]
    for thread in followers:
        thread.start()
    for thread in [leader, *followers]:
        thread.join()

    assert waits.waits == waiters, "every follower waited on the leader's sync"
    assert io.syncs == 1, "no waiter synced for itself"
    leader_error = outcomes.pop("leader")
    assert isinstance(leader_error, StorePoisonedError)
    assert "EIO" in leader_error.cause or "Input/output" in leader_error.cause
    assert len(outcomes) == waiters
    got_the_leaders_error = [name for name, error in outcomes.items() if error is leader_error]
    assert len(got_the_leaders_error) == waiters
    io.armed = False
    with pytest.raises(StorePoisonedError):
        store.create_session(ctx(), data())
    store.close()


class SequenceIO(HookedIO):
    """The real file layer, also keeping the order of the operations done (names only)."""

    def __init__(self) -> None:
        super().__init__()
        self.done: list[str] = []

    def after(self, call: Call) -> None:
        self.done.append(call.operation)


def _synced_after_last_record(done: list[str]) -> bool:
    """Whether an fdatasync was done after the last pwrite in ``done``."""
    last_write = len(done) - 1 - done[::-1].index("pwrite")
    return "sync_data" in done[last_write:]


def test_group_commit_syncs_every_kind_of_write_of_a_lone_writer(tmp_path: Path) -> None:
    """In group mode each call that writes a record (create, update, remove, and an import that
    points the lookup back) returns only after an fdatasync begun after its record was written;
    an import of a session already there, lookup as asked, writes and syncs nothing."""
    io = SequenceIO()
    store = FileSessionStore(tmp_path / "s", durability="group", io=io, preallocate_bytes=0)
    key = store.create_session(ctx(), data(step=1))
    assert _synced_after_last_record(io.done)
    io.done.clear()
    store.update_session(key, data(step=2))
    assert _synced_after_last_record(io.done)
    older = next(iter(store.iter_sessions()))
    store.create_session(ctx(), data(step=3))  # the user's newest: the lookup moves to it
    io.done.clear()
    assert store.import_session(older) is False
    assert _synced_after_last_record(io.done)
    io.done.clear()
    assert store.import_session(older) is False
    assert "pwrite" not in io.done
    assert "sync_data" not in io.done
    store.remove_session(key)
    assert _synced_after_last_record(io.done)
    store.close()


@pytest.mark.parametrize("compactor", ["this handle", "another handle"])
def test_group_commit_syncs_each_write_after_a_compaction(tmp_path: Path, compactor: str) -> None:
    """In group mode a lone writer returns only after an fdatasync that began after its record was
    written, also once a compaction (its own, or another handle's that it follows) has started a
    generation whose sequence numbers are lower than those already synced."""
    io = SequenceIO()
    store = FileSessionStore(tmp_path / "s", durability="group", io=io, preallocate_bytes=0)
    keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(4)]
    for key in keys:
        store.remove_session(key)
    if compactor == "this handle":
        store.compact()
    else:
        with FileSessionStore(tmp_path / "s") as other:
            other.compact()
    io.done.clear()
    key = store.create_session(ctx(), data(step=9))
    assert _synced_after_last_record(io.done), f"acknowledged unsynced: {io.done}"
    store.close()
    with FileSessionStore(tmp_path / "s") as reopened:
        assert reopened.get_session(key) == data(step=9)


def _use_in_child(store: FileSessionStore, key: str, queue: multiprocessing.Queue[str]) -> None:
    try:
        store.get_session(key)
    except StoreClosedError as error:
        queue.put(f"refused: {error}")
    else:
        queue.put("used")


def test_handle_refuses_use_after_fork(tmp_path: Path) -> None:
    """A handle inherited through fork() raises StoreClosedError in the child; the parent goes on."""
    store = FileSessionStore(tmp_path / "s")
    key = store.create_session(ctx(), data())
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_use_in_child, args=(store, key, queue))
    child.start()
    child.join(30)
    answer = queue.get(timeout=5)
    assert answer.startswith("refused")
    assert "fork" in answer
    assert store.get_session(key) == data()
    store.update_session(key, data(step=5))
    store.close()


def test_network_filesystem_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store on NFS is refused with UnsupportedFilesystemError, unless explicitly allowed."""
    monkeypatch.setattr("filestore.engine.directory.network_filesystem", lambda path: "nfs4")
    with pytest.raises(UnsupportedFilesystemError) as info:
        FileSessionStore(tmp_path / "s")
    assert info.value.fstype == "nfs4"
    with FileSessionStore(tmp_path / "s", allow_network_filesystem=True) as store:
        store.create_session(ctx(), data())


def test_mount_table_lookup_finds_local_tmp(tmp_path: Path) -> None:
    """The real mount-table lookup does not mistake the test's tmp directory for a network one."""
    assert network_filesystem(str(tmp_path)) is None


@pytest.mark.parametrize(("cache_size", "reads"), [(0, 2), (100, 1)])
def test_get_is_one_positioned_read(tmp_path: Path, cache_size: int, reads: int) -> None:
    """get_session peeks for new records, then reads the record (unless its decoded copy is cached)."""

    io = HookedIO()
    with FileSessionStore(tmp_path / "s", io=io, cache_size=cache_size) as store:
        keys = [store.create_session(ctx(), data(step=step)) for step in range(50)]
        io.calls.clear()
        assert store.get_session(keys[10]) == data(step=10)
        assert io.calls["pread"] == reads


def test_iteration_meets_a_closed_handle_with_store_closed(tmp_path: Path) -> None:
    """A handle closed while iter_sessions is paused raises StoreClosedError at the next step,
    rather than reading through a closed (or reused) descriptor."""
    store = FileSessionStore(tmp_path / "s")
    for step in range(2):
        store.create_session(ctx(user=f"u{step}"), data(ctx(user=f"u{step}"), step=step))
    sessions = store.iter_sessions()
    next(sessions)
    store.close()
    with pytest.raises(StoreClosedError):
        next(sessions)
