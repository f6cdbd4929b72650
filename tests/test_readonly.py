"""A store this process may not write (issue 16): checking needs no write access, and what
does need it says so with a typed error, never a bare ``[Errno 13]``/``[Errno 30]``.

The store is made on a small tmpfs that is then remounted read-only (root only, as CI runs;
skipped otherwise); ``EACCES`` on a read-only file is the same path, met through ``os.open``.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from filestore import FileSessionStore, StoreInUseError, StoreReadOnlyError, fsck, stats
from filestore.cli import main
from filestore.engine import locking

from .support import ctx, data
from .support.fulldisk import small_tmpfs


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    """A store of three sessions on a file system remounted read-only."""
    with small_tmpfs(tmp_path / "mnt", size="4m") as mount:
        store = mount / "s"
        with FileSessionStore(store) as writer:
            for number in range(3):
                tenant = ctx(user=f"user-{number}")
                writer.create_session(tenant, data(tenant, step=number))
        remounted = subprocess.run(
            [shutil.which("mount") or "/bin/mount", "-o", "remount,ro", str(mount)],
            capture_output=True,
            text=True,
            check=False,
        )
        if remounted.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {remounted.stderr.strip()}")
        yield store


def test_checking_a_read_only_store_needs_no_write_access(
    read_only_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fsck (without --repair) and stats work on a read-only store, as the library and the CLI."""
    report = fsck(read_only_store)
    assert (report.exit_code, report.sessions) == (0, 3)
    assert stats(read_only_store).sessions == 3
    assert main(["fsck", str(read_only_store)]) == 0
    assert main(["stats", str(read_only_store)]) == 0
    assert "Errno" not in capsys.readouterr().err


def test_writing_a_read_only_store_says_what_needs_write_access(
    read_only_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opening to write, compact and fsck --repair raise StoreReadOnlyError naming the file and
    saying that checking needs no write access; the CLI exits 8 with that one line."""
    with pytest.raises(StoreReadOnlyError) as opened:
        FileSessionStore(read_only_store)
    assert opened.value.path == str(read_only_store / "sessions.log")
    assert "fsck without --repair" in str(opened.value)
    with pytest.raises(StoreReadOnlyError):
        fsck(read_only_store, repair=True)
    for command in (["compact", str(read_only_store)], ["fsck", "--repair", str(read_only_store)]):
        assert main(command) == 8
        err = capsys.readouterr().err
        assert err.startswith("filestore: PermissionDenied: ")
        assert "cannot be opened for writing" in err


def test_a_read_only_lock_file_is_locked_through_a_read_only_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where opening a lock file to write is refused (EACCES: a file read-only to this account),
    the lock is taken on a read-only descriptor (flock needs no write access), and it excludes."""
    FileSessionStore(tmp_path / "s").close()
    real_open = os.open

    def refusing_writes(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refusing_writes)
    first = locking.Registration(str(tmp_path / "s"), exclusive=True)
    try:
        with pytest.raises(StoreInUseError):
            locking.Registration(str(tmp_path / "s"), exclusive=True)
    finally:
        first.close()
    (tmp_path / "new").mkdir()
    with pytest.raises(StoreReadOnlyError, match="cannot make"):
        locking.Registration(str(tmp_path / "new"), exclusive=False)


def test_export_and_migrate_read_a_read_only_store(
    read_only_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export and migrate open their source read-only: on a read-only file system both succeed,
    with every session, and the Python API reads it with ``read_only=True`` (writes refused)."""
    exported = tmp_path / "sessions.jsonl"
    assert main(["export", "--quiet", str(read_only_store), "-o", str(exported)]) == 0
    assert len(exported.read_text().splitlines()) == 3
    assert main(["migrate", "--quiet", str(read_only_store), str(tmp_path / "copy")]) == 0
    assert "Errno" not in capsys.readouterr().err
    with (
        FileSessionStore(tmp_path / "copy") as copy,
        FileSessionStore(read_only_store, read_only=True) as source,
    ):
        assert sorted(copy.session_keys()) == sorted(source.session_keys())
        assert len(source) == 3
        for key in source.session_keys():
            assert copy.get_session(key) == source.get_session(key)
        tenant = ctx(user="user-0")
        found = source.find_by_user(tenant, "user-0")
        assert found is not None
        assert found[1] == data(tenant, step=0)
        with pytest.raises(StoreReadOnlyError):
            source.create_session(tenant, data(tenant, step=9))


def test_export_reads_a_backups_files_on_a_read_only_mount(tmp_path: Path) -> None:
    """A store's files copied without LOCK and OPEN (which only the first writer makes) onto a
    file system then mounted read-only: export reads every session, and makes nothing."""
    with small_tmpfs(tmp_path / "mnt", size="4m") as mount:
        store = mount / "s"
        with FileSessionStore(store) as writer:
            for number in range(3):
                tenant = ctx(user=f"user-{number}")
                writer.create_session(tenant, data(tenant, step=number))
        for name in ("LOCK", "OPEN"):
            os.unlink(store / name)
        remounted = subprocess.run(
            [shutil.which("mount") or "/bin/mount", "-o", "remount,ro", str(mount)],
            capture_output=True,
            text=True,
            check=False,
        )
        if remounted.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {remounted.stderr.strip()}")
        exported = tmp_path / "sessions.jsonl"
        assert main(["export", "--quiet", str(store), "-o", str(exported)]) == 0
        assert len(exported.read_text().splitlines()) == 3
        assert sorted(os.listdir(store)) == ["filestore.json", "sessions.idx", "sessions.log"]
