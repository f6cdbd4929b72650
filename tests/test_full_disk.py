"""A full disk, and an index snapshot that cannot be written (issue 13, #10 and #11).

The snapshot is a cache: failing to write it is a warning, never the failure
of a write whose record is durable, and never a reason a store cannot be
opened and read. A write call's answer matches what a reopen shows: it
returned, so it is stored; it raised ``StorePoisonedError``, so it is not;
it raised ``WriteInDoubtError``, so it may be (its record was written whole
but the sync after it failed). ``StoreFullError`` means nothing was stored
and the handle goes on: once there is room again, writes (and snapshots) resume.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from filestore import (
    FileSessionStore,
    SessionKey,
    StoreFullError,
    StorePoisonedError,
    WriteInDoubtError,
)
from filestore.engine.layout import SNAPSHOT_NAME, is_temp_name
from filestore.engine.snapshot import decode_snapshot
from filestore.offline.fsck import fsck

from .support import ctx, data
from .support.fileio import FailingIO
from .support.fulldisk import FullDiskIO, SnapshotFailsIO, fill, small_tmpfs

MODES = ["fsync", "group", "none"]


def temp_files(directory: Path) -> list[str]:
    """The temp files left in ``directory``."""
    return [name for name in os.listdir(directory) if is_temp_name(name)]


def snapshot_seq(directory: Path) -> int:
    """The last record number the snapshot in ``directory`` covers."""
    body = decode_snapshot((directory / SNAPSHOT_NAME).read_bytes())
    assert body is not None
    last_seq = body["last_seq"]
    assert isinstance(last_seq, int)
    return last_seq


def sessions_of(directory: Path) -> dict[str, str]:
    """Every session in the store at ``directory``, reopened, as key -> JSON."""
    with FileSessionStore(directory) as store:
        found = {}
        for key in store.session_keys():
            session = store.get_session(key)
            assert session is not None
            found[str(key)] = session.to_json()
        return found


@pytest.mark.parametrize("durability", MODES)
def test_a_snapshot_failing_after_a_durable_write_never_fails_the_write(
    tmp_path: Path, durability: str, caplog: pytest.LogCaptureFixture
) -> None:
    """#11: ENOSPC writing the snapshot a write made due: the write returns, the handle keeps
    writing, the temp file is removed, a warning says so, and a reopen holds every record."""
    directory = tmp_path / "s"
    io = SnapshotFailsIO(errno.ENOSPC)
    store = FileSessionStore(directory, durability=durability, snapshot_every_records=2, io=io)
    io.armed = True
    acknowledged: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="filestore"):
        for step in range(5):
            session = data(ctx(user=f"u{step}"), step=step)
            acknowledged[store.create_session(ctx(user=f"u{step}"), session)] = session.to_json()
        store.close()
    assert io.failures >= 1
    assert any("snapshot" in message for message in caplog.messages), caplog.messages
    assert temp_files(directory) == []
    assert sessions_of(directory) == acknowledged


def test_the_snapshot_is_retried_once_there_is_room(tmp_path: Path) -> None:
    """#10: after a failed snapshot, a later one (at the next interval) is written and covers
    every record; no failed attempt leaves a temp file."""
    directory = tmp_path / "s"
    io = SnapshotFailsIO(errno.ENOSPC)
    store = FileSessionStore(directory, snapshot_every_records=3, io=io)
    io.armed = True
    for step in range(3):
        store.create_session(ctx(user=f"u{step}"), data(ctx(user=f"u{step}"), step=step))
    # Waits for the snapshot the third write made due (written in the background), then fails too.
    with pytest.raises(StoreFullError):
        store.write_snapshot()
    assert io.failures == 2
    io.armed = False
    for step in range(3, 10):
        store.create_session(ctx(user=f"u{step}"), data(ctx(user=f"u{step}"), step=step))
    store.close()
    assert snapshot_seq(directory) == 10
    assert temp_files(directory) == []


@pytest.mark.parametrize(
    ("durability", "preallocate"), [("fsync", 1 << 20), ("group", 0)], ids=["fsync", "group"]
)
def test_a_failed_sync_after_a_whole_record_says_the_write_may_be_stored(
    tmp_path: Path, durability: str, preallocate: int
) -> None:
    """#11: the record was written whole, then its fdatasync failed: the call cannot know,
    and says so with ``WriteInDoubtError`` (the handle is poisoned). A reopen shows the record."""
    directory = tmp_path / "s"
    io = FailingIO()
    store = FileSessionStore(directory, durability=durability, preallocate_bytes=preallocate, io=io)
    kept = store.create_session(ctx(user="u1"), data(step=1))
    io.fail_on = "sync_data"
    with pytest.raises(WriteInDoubtError) as info:
        store.create_session(ctx(user="u2"), data(ctx(user="u2"), step=2))
    assert isinstance(info.value, StorePoisonedError)
    io.fail_on = None
    with pytest.raises(StorePoisonedError) as later:
        store.create_session(ctx(user="u3"), data(ctx(user="u3"), step=3))
    assert not isinstance(later.value, WriteInDoubtError), "a refused write is certainly not stored"
    store.close()
    stored = sessions_of(directory)
    assert stored[str(kept)] == data(step=1).to_json()
    assert data(ctx(user="u2"), step=2).to_json() in stored.values()


def test_a_failed_record_write_says_the_write_is_not_stored(tmp_path: Path) -> None:
    """#11: the record's own write failed: ``StorePoisonedError``, not the in-doubt error,
    and a reopen does not show it."""
    directory = tmp_path / "s"
    io = FailingIO()
    store = FileSessionStore(directory, io=io)
    kept = store.create_session(ctx(), data(step=1))
    io.fail_on = "pwrite"
    with pytest.raises(StorePoisonedError) as info:
        store.create_session(ctx(user="u2"), data(ctx(user="u2"), step=2))
    assert not isinstance(info.value, WriteInDoubtError)
    io.fail_on = None
    store.close()
    assert sessions_of(directory) == {str(kept): data(step=1).to_json()}


def make_store_without_snapshot(directory: Path, sessions: int) -> dict[SessionKey, str]:
    """A store of ``sessions`` sessions (user ``u<n>``) whose snapshot file is gone."""
    acknowledged = {}
    with FileSessionStore(directory, preallocate_bytes=4096) as store:
        for step in range(sessions):
            session = data(ctx(user=f"u{step}"), step=step)
            acknowledged[store.create_session(ctx(user=f"u{step}"), session)] = session.to_json()
    (directory / SNAPSHOT_NAME).unlink()
    return acknowledged


def check_reads(store: FileSessionStore, acknowledged: dict[SessionKey, str]) -> None:
    """Every session of ``make_store_without_snapshot`` reads back, by key and by its user."""
    for step, (key, session) in enumerate(acknowledged.items()):
        got = store.get_session(key)
        assert got is not None
        assert got.to_json() == session
        found = store.find_by_user(ctx(user=f"u{step}"), f"u{step}")
        assert found is not None
        assert found[0] == key


def test_opening_and_reading_while_no_snapshot_can_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """#10: opening wants to write the missing snapshot and cannot (the disk is full): it
    warns and goes on; every read works; no temp file is left."""
    directory = tmp_path / "s"
    acknowledged = make_store_without_snapshot(directory, 5)
    io = FullDiskIO()
    io.full = True
    with caplog.at_level(logging.WARNING, logger="filestore"):
        store = FileSessionStore(directory, io=io)
    assert io.refused >= 1
    assert any("snapshot" in message for message in caplog.messages), caplog.messages
    assert temp_files(directory) == []
    check_reads(store, acknowledged)
    assert len(store) == 5
    store.close()
    assert temp_files(directory) == []


def test_a_write_that_finds_no_room_stores_nothing_and_the_handle_goes_on(tmp_path: Path) -> None:
    """#10: the log cannot grow: the write raises ``StoreFullError`` (not a bare OSError, not
    poisoned), nothing is stored; once there is room the same handle writes again."""
    directory = tmp_path / "s"
    io = FullDiskIO()
    store = FileSessionStore(directory, preallocate_bytes=0, io=io)
    kept = store.create_session(ctx(), data(step=1))
    io.full = True
    with pytest.raises(StoreFullError) as info:
        store.create_session(ctx(user="u2"), data(ctx(user="u2"), step=2))
    assert not isinstance(info.value, StorePoisonedError)
    with pytest.raises(StoreFullError):
        store.update_session(kept, data(step=3))
    assert store.get_session(kept) == data(step=1)
    io.full = False
    store.update_session(kept, data(step=4))
    store.close()
    assert sessions_of(directory) == {str(kept): data(step=4).to_json()}
    assert not fsck(directory).errors


def test_a_real_full_disk_opens_reads_refuses_writes_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """#10, on a small tmpfs filled to the last byte: opening (which wants to write the missing
    snapshot) and every read work; writes raise ``StoreFullError`` once the preallocated space
    is used up; after space is freed the same handle writes and snapshots again, and a reopen
    holds exactly what the calls acknowledged."""
    with small_tmpfs(tmp_path / "mnt") as mount:
        directory = mount / "s"
        acknowledged = make_store_without_snapshot(directory, 5)
        filler = fill(mount)
        with caplog.at_level(logging.WARNING, logger="filestore"):
            store = FileSessionStore(directory, preallocate_bytes=4096)
        assert any("snapshot" in message for message in caplog.messages), caplog.messages
        check_reads(store, acknowledged)
        refused = 0
        for step in range(5, 200):
            more = data(ctx(user=f"u{step}"), step=step)
            try:
                acknowledged[store.create_session(ctx(user=f"u{step}"), more)] = more.to_json()
            except StoreFullError:
                refused += 1
                break
        assert refused == 1, "the preallocated space never ran out"
        first = next(iter(acknowledged))
        with pytest.raises(StoreFullError):
            store.update_session(first, data(ctx(user="u0"), step=99))
        filler.unlink()
        late = data(ctx(user="late"), step=500)
        acknowledged[store.create_session(ctx(user="late"), late)] = late.to_json()
        store.write_snapshot()
        store.close()
        assert temp_files(directory) == []
        assert snapshot_seq(directory) == len(acknowledged)
        assert sessions_of(directory) == acknowledged
        assert not fsck(directory).errors
