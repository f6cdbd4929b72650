"""The store directory's trust check: refused when another account owns it or may write to it.

As ssh's StrictModes: a store directory (or a store file in it) owned by
another uid, or writable by group or others beyond what ``dir_mode`` /
``file_mode`` grant, is refused with ``UntrustedDirectoryError`` before
anything is written; root is checked like anyone. CI runs as root, so
"another owner" is made with ``os.chown`` to uid 65534 (skipped where the
tests may not chown).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path
from typing import Final

import pytest

from filestore import FileSessionStore, InvalidInputError, UntrustedDirectoryError
from filestore.engine.layout import temp_path

from .support import ctx, data
from .support.permissions import mode_of, umask

OTHER_UID: Final = 65534  # nobody


def give_away(path: Path) -> None:
    """Make ``path`` owned by another uid, or skip: only root may chown a file to someone else."""
    try:
        os.chown(path, OTHER_UID, -1, follow_symlinks=False)
    except PermissionError:
        pytest.skip("changing a file's owner needs root (CI runs as root)")


def make_store(path: Path, **options: object) -> str:
    """A closed store at ``path`` holding one session; its key."""
    with FileSessionStore(path, **options) as store:  # type: ignore[arg-type]
        return str(store.create_session(ctx(), data()))


def listing(path: Path) -> dict[str, int]:
    """Every name in ``path`` and its size: what a refused open must leave unchanged."""
    return {entry.name: entry.stat().st_size for entry in os.scandir(path)}


def test_a_directory_owned_by_another_uid_is_refused(tmp_path: Path) -> None:
    """An empty directory another account pre-created is refused, naming both uids, and nothing is written."""
    directory = tmp_path / "s"
    directory.mkdir(mode=0o755)
    give_away(directory)
    with pytest.raises(UntrustedDirectoryError) as info:
        FileSessionStore(directory)
    assert info.value.path == str(directory)
    assert info.value.uid == OTHER_UID
    assert f"uid {OTHER_UID}" in str(info.value)
    assert f"uid {os.geteuid()}" in str(info.value)
    assert "trust_directory=True" in str(info.value)
    assert listing(directory) == {}


def test_a_store_file_owned_by_another_uid_is_refused(tmp_path: Path) -> None:
    """A log (or any store file) another account owns is refused even in a directory we own."""
    make_store(tmp_path / "s")
    give_away(tmp_path / "s" / "sessions.log")
    before = listing(tmp_path / "s")
    with pytest.raises(UntrustedDirectoryError) as info:
        FileSessionStore(tmp_path / "s")
    assert info.value.path == str(tmp_path / "s" / "sessions.log")
    assert listing(tmp_path / "s") == before


@pytest.mark.parametrize(("mode", "who"), [(0o770, "group"), (0o757, "others"), (0o777, "group and others")])
def test_a_directory_writable_by_others_than_dir_mode_grants_is_refused(
    tmp_path: Path, mode: int, who: str
) -> None:
    """A group- or world-writable directory the default dir_mode never makes is refused, saying what to do."""
    directory = tmp_path / "s"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(UntrustedDirectoryError) as info:
        FileSessionStore(directory)
    assert info.value.mode == mode
    assert f"writable by {who}" in str(info.value)
    assert f"chmod go-w {directory}" in str(info.value)
    assert listing(directory) == {}


def test_a_group_writable_store_file_is_refused(tmp_path: Path) -> None:
    """A store file made group-writable behind the store's back (file_mode 0600) is refused."""
    make_store(tmp_path / "s")
    (tmp_path / "s" / "sessions.idx").chmod(0o620)
    with pytest.raises(UntrustedDirectoryError) as info:
        FileSessionStore(tmp_path / "s")
    assert info.value.path == str(tmp_path / "s" / "sessions.idx")


def test_a_store_made_group_writable_by_its_own_modes_opens(tmp_path: Path) -> None:
    """A store created with dir_mode 0o770 and file_mode 0o660 (under umask 0) reopens with the same modes."""
    options = {"dir_mode": 0o770, "file_mode": 0o660}
    with umask(0):
        key = make_store(tmp_path / "s", **options)
    assert mode_of(tmp_path / "s") == 0o770
    assert mode_of(tmp_path / "s" / "sessions.log") == 0o660
    with FileSessionStore(tmp_path / "s", **options) as store:  # type: ignore[arg-type]
        assert store.get_session(key) == data()


def test_trust_directory_opts_out_for_a_deliberately_shared_directory(tmp_path: Path) -> None:
    """trust_directory=True opens a directory another uid owns and others may write."""
    directory = tmp_path / "s"
    directory.mkdir()
    directory.chmod(0o777)
    give_away(directory)
    key = make_store(directory, trust_directory=True)
    with FileSessionStore(directory, trust_directory=True) as store:
        assert store.get_session(key) == data()


@pytest.mark.parametrize("value", [1, "yes", None])
def test_trust_directory_must_be_a_bool(tmp_path: Path, value: object) -> None:
    """trust_directory is validated like the other options: a non-bool is InvalidInputError, nothing made."""
    with pytest.raises(InvalidInputError) as info:
        FileSessionStore(tmp_path / "s", trust_directory=value)  # type: ignore[arg-type]
    assert info.value.field == "trust_directory"
    assert not (tmp_path / "s").exists()


def test_the_refusal_pickles_with_its_fields(tmp_path: Path) -> None:
    """The error raised by a refused open round-trips through pickle with path, uid and mode."""
    directory = tmp_path / "s"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(UntrustedDirectoryError) as info:
        FileSessionStore(directory)
    copy = pickle.loads(pickle.dumps(info.value))  # noqa: S301 - bytes made one line above
    assert isinstance(copy, UntrustedDirectoryError)
    assert (copy.path, copy.uid, copy.mode, str(copy)) == (
        info.value.path,
        info.value.uid,
        info.value.mode,
        str(info.value),
    )


def test_a_store_file_gone_between_listing_and_check_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temp file another process renames away while the check runs does not fail the open."""
    key = make_store(tmp_path / "s")
    temp = Path(temp_path(str(tmp_path / "s"), "sessions.idx"))
    temp.write_bytes(b"a snapshot being written")
    real_scandir = os.scandir

    def list_then_rename_away(path: str) -> contextlib.AbstractContextManager[list[os.DirEntry[str]]]:
        with real_scandir(path) as entries:
            listed = list(entries)
        monkeypatch.setattr(os, "scandir", real_scandir)
        temp.unlink()  # the other process's rename lands here
        return contextlib.nullcontext(listed)

    monkeypatch.setattr(os, "scandir", list_then_rename_away)
    with FileSessionStore(tmp_path / "s") as store:
        assert store.get_session(key) == data()
    assert os.scandir is real_scandir, "the check listed the directory"
