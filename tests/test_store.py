"""FileSessionStore beyond the shared contract: options, limits, files, poisoning, fork."""

from __future__ import annotations

import multiprocessing
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
from filestore.engine.locking import network_filesystem

from .support import ctx, data
from .support.fileio import FailingIO, HookedIO


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


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    """In group mode, concurrent writers need fewer fdatasyncs than writes, and all land."""
    io = HookedIO()
    store = FileSessionStore(tmp_path / "s", durability="group", io=io, preallocate_bytes=0)
    before = io.calls["sync_data"]
    keys: list[str] = []
    keys_lock = threading.Lock()

    def writer(worker: int) -> None:
        context = ctx(user=f"w{worker}")
        for step in range(30):
            key = store.create_session(context, data(context, step=step))
            with keys_lock:
                keys.append(key)

    threads = [threading.Thread(target=writer, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    syncs = io.calls["sync_data"] - before
    assert len(keys) == 240
    assert syncs < 240
    store.close()
    with FileSessionStore(tmp_path / "s") as reopened:
        assert len(reopened) == 240


def test_group_commit_sync_failure_poisons_every_waiter(tmp_path: Path) -> None:
    """A failed group fsync raises StorePoisonedError to its writer and refuses later writes."""
    io = FailingIO()
    store = FileSessionStore(tmp_path / "s", durability="group", io=io)
    io.fail_on = "sync_data"
    with pytest.raises(StorePoisonedError):
        store.create_session(ctx(), data())
    io.fail_on = None
    with pytest.raises(StorePoisonedError):
        store.create_session(ctx(), data())
    store.close()


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
