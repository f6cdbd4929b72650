"""A file store refuses a platform whose syncs its durability does not rest on, never running weaker.

Linux is the only platform the store supports. Each test here pretends to be
another (``sys.platform`` patched, in process): opening, the offline tools and
the command line raise ``UnsupportedPlatformError`` naming the platform, before
making or changing anything; the stores that keep nothing on local disk still work.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from filestore import (
    ErrorCode,
    FileSessionStore,
    InMemorySessionStore,
    UnsupportedPlatformError,
    compact,
    fsck,
    main,
    stats,
)

from .support import ctx, data

REFUSED = ["darwin", "freebsd14", "openbsd7", "cygwin"]


def directory_bytes(path: Path) -> dict[str, bytes]:
    """Every file of a directory (not recursive), name to content."""
    return {entry.name: entry.read_bytes() for entry in sorted(path.iterdir()) if entry.is_file()}


@pytest.fixture
def made_on_linux(tmp_path: Path) -> Path:
    """A store with one session, made before the platform is patched."""
    path = tmp_path / "store"
    with FileSessionStore(path) as store:
        store.create_session(ctx(), data())
    return path


@pytest.mark.parametrize("platform", REFUSED)
def test_opening_a_new_store_is_refused_and_makes_nothing(
    platform: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FileSessionStore on another platform raises UnsupportedPlatformError (greentic's Unavailable)
    naming it, and the directory is not made."""
    monkeypatch.setattr(sys, "platform", platform)
    path = tmp_path / "new" / "store"
    with pytest.raises(UnsupportedPlatformError) as refused:
        FileSessionStore(path)
    assert refused.value.platform == platform
    assert refused.value.path == str(path)
    assert refused.value.code is ErrorCode.UNAVAILABLE
    assert f"not on {platform}" in str(refused.value)
    assert not (tmp_path / "new").exists()


def test_macos_is_told_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On macOS the error says that fsync does not reach the disk, and what to use instead."""
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(UnsupportedPlatformError, match=r"macOS's fsync does not reach the disk") as refused:
        FileSessionStore(tmp_path / "store")
    assert "InMemorySessionStore or RedisSessionStore" in refused.value.message


@pytest.mark.parametrize(
    "tool",
    [
        pytest.param(lambda path: FileSessionStore(path).close(), id="open"),
        pytest.param(lambda path: FileSessionStore(path, durability="none").close(), id="open-none"),
        pytest.param(fsck, id="fsck"),
        pytest.param(lambda path: fsck(path, repair=True), id="fsck-repair"),
        pytest.param(compact, id="compact"),
        pytest.param(stats, id="stats"),
    ],
)
def test_an_existing_store_is_refused_and_left_as_it_was(
    tool: Callable[[Path], object], made_on_linux: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made on Linux, then reached on macOS: opening in any durability mode and every
    offline tool is refused, and no byte of the store changes."""
    before = directory_bytes(made_on_linux)
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(UnsupportedPlatformError):
        tool(made_on_linux)
    monkeypatch.undo()
    assert directory_bytes(made_on_linux) == before


@pytest.mark.parametrize("command", [["demo"], ["fsck"], ["compact"], ["stats"], ["export"]])
def test_the_command_line_refuses_with_an_operational_error(
    command: list[str],
    made_on_linux: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`filestore demo|fsck|compact|stats|export DIR` on macOS exits 8 (operational error), saying why."""
    monkeypatch.setattr(sys, "platform", "darwin")
    assert main([*command, str(made_on_linux)]) == 8
    assert "filestore keeps stores only on Linux, not on darwin" in capsys.readouterr().err


def test_the_memory_store_is_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """InMemorySessionStore keeps nothing on disk, so it makes no promise a platform could break."""
    monkeypatch.setattr(sys, "platform", "darwin")
    store = InMemorySessionStore()
    key = store.create_session(ctx(), data())
    assert store.get_session(key) == data()
