"""``FileSessionStore(read_only=True)`` (issue 16): a handle that reads a store and never
changes a byte of it, whatever state the store is in, while it follows other handles' writes.

The read-only file system itself is in tests/test_readonly.py; here the directory is writable,
so "changes nothing" is checked by comparing every file's name and bytes before and after.
"""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import shutil
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filestore import (
    CorruptionError,
    FileSessionStore,
    InvalidInputError,
    ReplyScope,
    StoreReadOnlyError,
    UntrustedDirectoryError,
)
from filestore.cli import main
from filestore.engine.fileio import OsFileIO
from filestore.engine.framing import FILE_HEADER_SIZE
from filestore.engine.locking import WriterLock
from filestore.engine.logfile import LogFile

from .support import ctx, data


def _tree(directory: Path) -> dict[str, str]:
    """Every file of ``directory``, by name: a digest of its bytes."""
    return {
        entry.name: hashlib.sha256(entry.read_bytes()).hexdigest()
        for entry in sorted(directory.iterdir())
        if entry.is_file()
    }


def _filled(directory: Path, sessions: int = 4) -> dict[str, int]:
    """A closed store of ``sessions`` sessions (users u0..); its keys by user, each at step = number."""
    keys = {}
    with FileSessionStore(directory, preallocate_bytes=0) as store:
        for number in range(sessions):
            tenant = ctx(user=f"u{number}")
            keys[str(store.create_session(tenant, data(tenant, step=number)))] = number
    return keys


def _check_reads(store: FileSessionStore, keys: dict[str, int]) -> None:
    assert sorted(map(str, store.session_keys())) == sorted(keys)
    for key, number in keys.items():
        tenant = ctx(user=f"u{number}")
        assert store.get_session(key) == data(tenant, step=number)
        found = store.find_by_user(tenant, f"u{number}")
        assert found is not None
        assert str(found[0]) == key


def _torn_tail(directory: Path) -> None:
    with (directory / "sessions.log").open("ab") as log:
        log.write(b"\x40\x00\x00\x00\x01\x02")  # a frame header promising more than follows


def _dead_seal(directory: Path) -> None:
    """What a compaction that died between its seal and its switch leaves behind."""
    log = LogFile.open(OsFileIO(), str(directory))
    try:
        log.adopt(log.scan(FILE_HEADER_SIZE, 1, lambda frame: None))
        log.append_seal(log.header.generation + 1)
    finally:
        log.close()


def _no_snapshot(directory: Path) -> None:
    (directory / "sessions.idx").unlink()


def _no_identity_file(directory: Path) -> None:
    (directory / "filestore.json").unlink()


def _leftover_temp(directory: Path) -> None:
    (directory / ".sessions.idx.tmp-1234").write_bytes(b"half a snapshot")


STATES: dict[str, Callable[[Path], None]] = {
    "clean": lambda directory: None,
    "torn tail": _torn_tail,
    "dead seal": _dead_seal,
    "no snapshot": _no_snapshot,
    "no identity file": _no_identity_file,
    "leftover temp file": _leftover_temp,
}


@pytest.mark.parametrize("state", sorted(STATES))
def test_a_read_only_handle_reads_every_state_and_changes_nothing(tmp_path: Path, state: str) -> None:
    """In each state a crash or a lost file may leave, a read-only handle reads every session and
    lookup, and the directory's files are byte for byte what they were (a writable handle would
    cut the tail or seal, rewrite the snapshot or identity file, remove the temp file)."""
    keys = _filled(tmp_path / "s")
    STATES[state](tmp_path / "s")
    before = _tree(tmp_path / "s")
    with FileSessionStore(tmp_path / "s", read_only=True) as store:
        _check_reads(store, keys)
        assert len(store) == len(keys)
    assert _tree(tmp_path / "s") == before


def test_every_write_of_a_read_only_handle_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """Each write call, compaction and snapshot raises StoreReadOnlyError naming the store, and
    nothing reaches the disk."""
    keys = _filled(tmp_path / "s")
    key = next(iter(keys))
    tenant = ctx(user="u0")
    scope = ReplyScope(conversation="conversation-1")
    before = _tree(tmp_path / "s")
    store = FileSessionStore(tmp_path / "s", read_only=True)
    session = store.get_session(key)
    assert session is not None
    stored = next(iter(store.iter_sessions()))
    writes: list[Callable[[], object]] = [
        lambda: store.create_session(tenant, data(tenant, step=9)),
        lambda: store.update_session(key, session),
        lambda: store.remove_session(key),
        lambda: store.register_wait(tenant, "u0", scope, key, data(tenant, step=9)),
        lambda: store.clear_wait(tenant, "u0", scope),
        lambda: store.import_session(stored),
        lambda: store.import_batch([stored]),
        store.compact,
        store.write_snapshot,
    ]
    for write in writes:
        with pytest.raises(StoreReadOnlyError) as refused:
            write()
        assert refused.value.path == str(tmp_path / "s")
        assert "read_only" in str(refused.value)
    _check_reads(store, keys)
    store.close()
    assert _tree(tmp_path / "s") == before


def test_a_read_only_handle_follows_writes_and_compactions_of_another(tmp_path: Path) -> None:
    """Creates, updates, removes and an online compaction by a writable handle are seen by the
    read-only one at its next call; a dead seal it stopped at is passed once a writer cuts it."""
    keys = _filled(tmp_path / "s")
    reader = FileSessionStore(tmp_path / "s", read_only=True)
    with FileSessionStore(tmp_path / "s", preallocate_bytes=0) as writer:
        tenant = ctx(user="u9")
        new = writer.create_session(tenant, data(tenant, step=9))
        assert reader.get_session(new) == data(tenant, step=9)
        first = next(iter(keys))
        writer.remove_session(first)
        assert reader.get_session(first) is None
        writer.compact()
        writer.update_session(new, data(tenant, step=10))
        assert reader.get_session(new) == data(tenant, step=10)
        assert len(reader) == len(keys)
    _dead_seal(tmp_path / "s")
    assert reader.get_session(new) == data(tenant, step=10)  # stops at the seal, changes nothing
    with FileSessionStore(tmp_path / "s", preallocate_bytes=0) as writer:  # cuts the seal
        writer.update_session(new, data(tenant, step=11))
    assert reader.get_session(new) == data(tenant, step=11)
    reader.close()


def test_a_read_only_handle_refuses_damage_as_a_writable_one_does(tmp_path: Path) -> None:
    """Intact records after a damaged one are damage, not a torn tail: CorruptionError, as for a
    writable handle, rather than silently reading up to the damage."""
    _filled(tmp_path / "s", sessions=6)
    log = tmp_path / "s" / "sessions.log"
    raw = bytearray(log.read_bytes())
    raw[FILE_HEADER_SIZE + 12] ^= 0xFF  # inside the first record; five intact ones follow
    log.write_bytes(bytes(raw))
    os.unlink(tmp_path / "s" / "sessions.idx")
    with pytest.raises(CorruptionError):
        FileSessionStore(tmp_path / "s", read_only=True)
    with pytest.raises(CorruptionError):
        FileSessionStore(tmp_path / "s")


def test_read_only_opens_an_existing_store_only(tmp_path: Path) -> None:
    """A missing directory, an empty one or a non-bool read_only is InvalidInputError, and
    nothing is made."""
    with pytest.raises(InvalidInputError, match="does not exist"):
        FileSessionStore(tmp_path / "missing", read_only=True)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="holds no store"):
        FileSessionStore(tmp_path / "empty", read_only=True)
    assert sorted(os.listdir(tmp_path / "empty")) == ["LOCK", "OPEN"]  # the lock files only
    with pytest.raises(InvalidInputError):
        FileSessionStore(tmp_path / "empty", read_only=1)  # type: ignore[arg-type]


def test_a_read_only_handle_calls_a_store_whose_log_is_missing_damage(tmp_path: Path) -> None:
    """A directory that holds a store's identity file and snapshot but no log is a store whose
    data may be missing: CorruptionError with recovery advice, as a writable handle says, not
    InvalidInputError's "holds no store" (which sends an operator to look elsewhere)."""
    _filled(tmp_path / "s")
    os.rename(tmp_path / "s" / "sessions.log", tmp_path / "moved.log")
    before = _tree(tmp_path / "s")
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match="log is missing"):
            FileSessionStore(tmp_path / "s", read_only=read_only)
    assert _tree(tmp_path / "s") == before


def test_export_and_migrate_call_a_store_whose_log_is_missing_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export and migrate from a store whose log is missing say so (exit 8, "log is missing",
    with the advice), not that the directory "is not a filestore"; an empty one still is none."""
    _filled(tmp_path / "s")
    os.rename(tmp_path / "s" / "sessions.log", tmp_path / "moved.log")
    (tmp_path / "empty").mkdir()
    for command in (["export", str(tmp_path / "s")], ["migrate", str(tmp_path / "s"), "memory:"]):
        assert main(command) == 8
        assert "log is missing" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "empty")]) == 8
    assert "holds no store" in capsys.readouterr().err
    assert os.listdir(tmp_path / "empty") == []  # refused before any lock file was made


def test_a_read_only_handle_reads_where_its_lock_files_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup's files in a directory this account may not write, without LOCK and OPEN (which
    only the first writer makes): a read-only handle opens and reads, making nothing, even at a
    dead seal (which it follows under the lock). Once a writer (another account) has made them,
    the handle locks as every handle does, and follows that writer's writes and compactions."""
    keys = _filled(tmp_path / "s")
    for name in ("LOCK", "OPEN"):
        os.unlink(tmp_path / "s" / name)
    _dead_seal(tmp_path / "s")
    before = _tree(tmp_path / "s")
    real_open = os.open
    refusing = [True]

    def refusing_writes(path: str, flags: int, mode: int = 0o777, **kwargs: object) -> int:
        if refusing[0] and flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refusing_writes)
    FileSessionStore(tmp_path / "s", read_only=True).close()
    reader = FileSessionStore(tmp_path / "s", read_only=True)
    _check_reads(reader, keys)
    assert _tree(tmp_path / "s") == before
    refusing[0] = False
    key = next(iter(keys))
    tenant = ctx(user=f"u{keys[key]}")
    with FileSessionStore(tmp_path / "s", preallocate_bytes=0) as writer:  # makes LOCK and OPEN
        writer.update_session(key, data(tenant, step=20))
        assert reader.get_session(key) == data(tenant, step=20)
        writer.compact()
        writer.update_session(key, data(tenant, step=21))
        assert reader.get_session(key) == data(tenant, step=21)
        assert len(reader) == len(keys)
    reader.close()


def test_a_link_planted_where_a_missing_lock_file_belongs_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only handle that opened without LOCK (it could not be made) looks for it again at
    each lock; a symbolic link found there is UntrustedDirectoryError naming it, as at open."""
    keys = _filled(tmp_path / "s")
    for name in ("LOCK", "OPEN"):
        os.unlink(tmp_path / "s" / name)
    _dead_seal(tmp_path / "s")
    real_open = os.open

    def refusing_writes(path: str, flags: int, mode: int = 0o777, **kwargs: object) -> int:
        if flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refusing_writes)
    with FileSessionStore(tmp_path / "s", read_only=True) as reader:
        _check_reads(reader, keys)
        (tmp_path / "elsewhere").write_bytes(b"")
        os.symlink(tmp_path / "elsewhere", tmp_path / "s" / "LOCK")
        log = tmp_path / "s" / "sessions.log"
        shutil.copyfile(log, tmp_path / "copy.log")
        os.replace(tmp_path / "copy.log", log)  # a new file at the seal: followed under the lock
        with pytest.raises(UntrustedDirectoryError) as refused:
            reader.get_session(next(iter(keys)))
        assert refused.value.path == str(tmp_path / "s" / "LOCK")


def test_a_read_only_handle_at_a_dead_seal_reads_without_the_writer_lock(tmp_path: Path) -> None:
    """At the seal of a compaction that died (which it may not cut), a read-only handle's reads
    neither wait for the writer lock nor reopen the log while the log is still the sealed file:
    a reader of a backup no writer will ever open is not slowed or blocked at every call."""
    keys = _filled(tmp_path / "s")
    _dead_seal(tmp_path / "s")
    reader = FileSessionStore(tmp_path / "s", read_only=True, lock_timeout=0)
    holder = WriterLock(str(tmp_path / "s"), timeout=0)  # its own descriptor: as another process
    with holder:
        _check_reads(reader, keys)
    holder.close()
    # The log put back as a copy of itself (a restore): a new file, looked at under the lock,
    # whose seal is still dead: read up to, as before.
    log = tmp_path / "s" / "sessions.log"
    shutil.copyfile(log, tmp_path / "copy.log")
    os.replace(tmp_path / "copy.log", log)
    before = _tree(tmp_path / "s")
    _check_reads(reader, keys)
    reader.close()
    assert _tree(tmp_path / "s") == before


def _writer_process(directory: Path, conn: Connection) -> None:
    """In a child: at each message, run it on a writable handle and answer; a crash on "crash"."""
    with FileSessionStore(directory, preallocate_bytes=0) as writer:
        while (order := conn.recv()) != "stop":
            if order == "create":
                tenant = ctx(user="u9")
                conn.send(str(writer.create_session(tenant, data(tenant, step=9))))
            elif order == "compact":
                writer.compact()
                conn.send("compacted")
            else:  # "crash": a compaction dies between its seal and its switch
                _dead_seal(directory)
                os._exit(0)


def test_a_read_only_handle_follows_a_writer_process_over_a_torn_tail_and_a_dead_seal(
    tmp_path: Path,
) -> None:
    """Another process cuts the torn tail the read-only handle read up to and writes a different
    record at that offset, compacts, then dies mid-compaction; a second one cuts that seal and
    writes on. The handle reads, at each step, exactly what was written (no torn or stale
    session), and it wrote nothing itself."""
    directory = tmp_path / "s"
    keys = _filled(directory, sessions=3)
    whole = (directory / "sessions.log").stat().st_size
    with FileSessionStore(directory, preallocate_bytes=0) as writer:
        tenant = ctx(user="u3")
        torn = str(writer.create_session(tenant, data(tenant, step=3)))
    os.truncate(directory / "sessions.log", whole + 40)  # that record, torn
    os.unlink(directory / "sessions.idx")
    before = _tree(directory)
    reader = FileSessionStore(directory, read_only=True)
    _check_reads(reader, keys)
    assert reader.get_session(torn) is None
    assert _tree(directory) == before
    for step in range(2):
        ours, theirs = multiprocessing.get_context("fork").Pipe()
        child = multiprocessing.get_context("fork").Process(target=_writer_process, args=(directory, theirs))
        child.start()
        ours.send("create")
        new = ours.recv()
        assert reader.get_session(new) == data(ctx(user="u9"), step=9)
        assert reader.get_session(torn) is None
        ours.send("compact")
        assert ours.recv() == "compacted"
        keys[new] = 9
        ours.send("crash" if step == 0 else "stop")
        child.join()
        assert child.exitcode == 0
        assert sorted(map(str, reader.session_keys())) == sorted(keys)
        assert reader.get_session(new) == data(ctx(user="u9"), step=9)
    assert len(reader) == len(keys) == 5
    reader.close()


_operations = st.lists(
    st.tuples(st.sampled_from(["create", "update", "remove", "compact"]), st.integers(0, 5)),
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=_operations)
def test_a_read_only_handle_always_sees_what_a_model_says(
    tmp_path_factory: pytest.TempPathFactory, operations: list[tuple[str, int]]
) -> None:
    """Against a dict model: after every operation of a writable handle (compactions among
    them), a read-only handle opened at the start answers every key as the model does."""
    directory = tmp_path_factory.mktemp("ro")
    model: dict[str, tuple[int, int]] = {}  # key: (user number, step)
    with (
        FileSessionStore(directory, preallocate_bytes=0, snapshot_every_records=4) as writer,
        FileSessionStore(directory, read_only=True) as reader,
    ):
        for operation, number in operations:
            live = sorted(model)
            if operation == "create":
                tenant = ctx(user=f"u{number}")
                model[str(writer.create_session(tenant, data(tenant, step=number)))] = (number, number)
            elif operation == "compact":
                writer.compact()
            elif live:
                key = live[number % len(live)]
                user, step = model[key]
                if operation == "update":
                    owner = ctx(user=f"u{user}")
                    writer.update_session(key, data(owner, step=step + 100))
                    model[key] = (user, step + 100)
                else:
                    writer.remove_session(key)
                    del model[key]
            assert sorted(map(str, reader.session_keys())) == sorted(model)
            for key, (user, step) in model.items():
                assert reader.get_session(key) == data(ctx(user=f"u{user}"), step=step)
