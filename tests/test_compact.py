"""Offline compaction: space reclaimed, contents kept, refused while in use, crash-safe at every step."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from filestore import FileSessionStore, StoreInUseError
from filestore.compact import compact
from filestore.fileio import OsFileIO
from filestore.fsck import fsck

from .test_contract import ctx, data

FORK = multiprocessing.get_context("fork")


def contents(path: Path) -> dict[str, object]:
    with FileSessionStore(path) as store:
        return {
            **{str(key): store.get_session(key) for key in store.session_keys()},
            **{f"user:{n}": store.find_by_user(ctx(), f"u{n}") for n in range(20)},
        }


def build(path: Path, sessions: int, payload: int = 1024) -> None:
    """``sessions`` live sessions, after nine dead records for each (90% dead)."""
    with FileSessionStore(path, durability="none") as store:
        for number in range(sessions):
            context = ctx(user=f"u{number % 20}")
            key = store.create_session(context, data(context, step=number))
            for version in range(8):
                stored = data(context, step=number)
                store.update_session(
                    key, type(stored)(context, stored.flow_id, stored.cursor, "x" * payload + str(version))
                )
            dead = store.create_session(context, data(context, step=-number))
            store.remove_session(dead)


def test_ninety_percent_dead_shrinks_to_live_size(tmp_path: Path) -> None:
    """With 90% dead records, disk bytes after compaction are within 1.1x of the live bytes."""
    build(tmp_path / "s", sessions=2000)
    before = contents(tmp_path / "s")
    report = compact(tmp_path / "s")
    disk = sum(
        (tmp_path / "s" / name).stat().st_size for name in ("sessions.log", "sessions.idx", "filestore.json")
    )
    assert disk <= 1.1 * report.live_bytes, (disk, report.live_bytes)
    assert report.bytes_after < report.bytes_before / 5
    assert contents(tmp_path / "s") == before
    assert not fsck(tmp_path / "s").errors


def test_refused_while_open_elsewhere_then_allowed(tmp_path: Path) -> None:
    """Compaction refuses while a handle is open; --keep-old keeps the previous generation."""
    build(tmp_path / "s", sessions=5)
    with FileSessionStore(tmp_path / "s"), pytest.raises(StoreInUseError):
        compact(tmp_path / "s")
    report = compact(tmp_path / "s", keep_old=True)
    assert report.old_log is not None
    assert (tmp_path / "s" / "sessions.log.old").exists()


class SimulatedCrash(BaseException):
    """Raised by CrashingIO: the process 'dies' here (the page cache survives, as in a kill)."""


class CrashingIO(OsFileIO):
    """Counts every mutating operation and crashes at the Nth."""

    def __init__(self, crash_at: int) -> None:
        self.crash_at = crash_at
        self.count = 0

    def _step(self) -> None:
        self.count += 1
        if self.count == self.crash_at:
            raise SimulatedCrash

    def open(self, path: str, *, create: bool = False, exclusive: bool = False, mode: int = 0o600) -> int:
        if create or exclusive:
            self._step()
        return super().open(path, create=create, exclusive=exclusive, mode=mode)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        self._step()
        super().pwrite(fd, data, offset)

    def sync_data(self, fd: int) -> None:
        self._step()
        super().sync_data(fd)

    def truncate(self, fd: int, size: int) -> None:
        self._step()
        super().truncate(fd, size)

    def rename(self, source: str, target: str) -> None:
        self._step()
        super().rename(source, target)

    def link(self, source: str, target: str) -> None:
        self._step()
        super().link(source, target)

    def unlink(self, path: str) -> None:
        self._step()
        super().unlink(path)

    def sync_dir(self, path: str) -> None:
        self._step()
        super().sync_dir(path)


def test_crash_at_every_step_leaves_a_complete_store(tmp_path: Path) -> None:
    """Crash compaction at step N for every N: the store reopens with exactly its contents."""
    build(tmp_path / "pristine", sessions=30, payload=200)
    expected = contents(tmp_path / "pristine")
    crash_at = 1
    while True:
        directory = tmp_path / f"crash{crash_at}"
        os.system(f"cp -r {tmp_path / 'pristine'} {directory}")  # noqa: S605 - our own temp paths
        io = CrashingIO(crash_at)
        try:
            compact(directory, io=io)
        except SimulatedCrash:
            assert contents(directory) == expected, f"crash at step {crash_at}"
            assert not fsck(directory).errors, f"crash at step {crash_at}"
            crash_at += 1
            continue
        assert contents(directory) == expected
        break
    assert crash_at > 8, "compaction should take several crashable steps"


def _compact_and_die(directory: str, operation: str) -> None:
    class DieAt(OsFileIO):
        def rename(self, source: str, target: str) -> None:
            if operation == "before-rename":
                os._exit(3)
            super().rename(source, target)
            if operation == "after-rename":
                os._exit(3)

    compact(directory, io=DieAt())


@pytest.mark.parametrize("operation", ["before-rename", "after-rename"])
def test_process_dying_around_the_switch(tmp_path: Path, operation: str) -> None:
    """A real process exit just before or after the switching rename leaves a complete store."""
    build(tmp_path / "s", sessions=10, payload=100)
    expected = contents(tmp_path / "s")
    child = FORK.Process(target=_compact_and_die, args=(str(tmp_path / "s"), operation))
    child.start()
    child.join(60)
    assert child.exitcode == 3
    assert contents(tmp_path / "s") == expected
    assert not fsck(tmp_path / "s").errors
