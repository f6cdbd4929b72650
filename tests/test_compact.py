"""Offline compaction: space reclaimed, contents kept, refused while in use, crash-safe at every step."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from filestore import CorruptionError, FileSessionStore, StoreInUseError
from filestore.engine.fileio import OsFileIO
from filestore.engine.framing import FILE_HEADER_SIZE
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME
from filestore.engine.logfile import LogFile
from filestore.offline.compact import compact
from filestore.offline.fsck import fsck, iter_findings
from filestore.offline.stats import stats

from .support import ctx, data
from .support.fileio import ExitAt, SimulatedCrash, crashing_io
from .support.permissions import mode_of, umask
from .support.waiting import release_once_blocked

FORK = multiprocessing.get_context("fork")


def contents(path: Path) -> dict[str, object]:
    with FileSessionStore(path) as store:
        return {
            **{str(key): store.get_session(key) for key in store.session_keys()},
            **{f"user:{n}": store.find_by_user(ctx(), f"u{n}") for n in range(20)},
        }


def build(path: Path, sessions: int, payload: int = 1024, durability: str = "none") -> None:
    """``sessions`` live sessions, after nine dead records for each (90% dead)."""
    with FileSessionStore(path, durability=durability) as store:
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


def compactions_crashed_at_every_step(pristine: Path, work: Path) -> Iterator[tuple[int, Path, bool]]:
    """Copies of ``pristine`` compacted with a crash at step 1, 2, ... until a compaction runs
    through: ``(step, directory, crashed)`` for each, the last one not crashed."""
    crash_at = 1
    while True:
        directory = work / f"crash{crash_at}"
        shutil.copytree(pristine, directory)
        try:
            compact(directory, io=crashing_io(crash_at))
        except SimulatedCrash:
            yield crash_at, directory, True
            crash_at += 1
            continue
        yield crash_at, directory, False
        return


def test_crash_at_every_step_leaves_a_complete_store(tmp_path: Path) -> None:
    """Crash compaction at step N for every N: the store reopens with exactly its contents, fsck-clean."""
    build(tmp_path / "pristine", sessions=30, payload=200)
    expected = contents(tmp_path / "pristine")
    crashes = 0
    for step, directory, crashed in compactions_crashed_at_every_step(tmp_path / "pristine", tmp_path):
        assert contents(directory) == expected, f"crash at step {step}"
        if crashed:
            report = fsck(directory)
            assert not report.errors, f"crash at step {step}: {list(iter_findings(report))}"
            crashes += 1
    assert crashes > 8, "compaction should take several crashable steps"


def test_crash_at_every_step_then_fsck_repair_first(tmp_path: Path) -> None:
    """After a crash at any step, fsck --repair (before anyone opens the store) leaves it clean and whole."""
    build(tmp_path / "pristine", sessions=10, payload=50)
    expected = contents(tmp_path / "pristine")
    crashes = 0
    for step, directory, crashed in compactions_crashed_at_every_step(tmp_path / "pristine", tmp_path):
        if not crashed:
            continue
        repaired = fsck(directory, repair=True)
        assert repaired.exit_code in {0, 1}, f"crash at step {step}: {list(iter_findings(repaired))}"
        assert fsck(directory).exit_code == 0, f"crash at step {step}"
        assert contents(directory) == expected, f"crash at step {step}"
        crashes += 1
    assert crashes > 8, "compaction should take several crashable steps"


def test_progress_reports_every_byte_of_the_old_log(tmp_path: Path) -> None:
    """The progress callback adds up to the old log's records, header excluded."""
    build(tmp_path / "s", sessions=20, payload=100)
    used = stats(tmp_path / "s").log_bytes
    steps: list[int] = []
    compact(tmp_path / "s", progress=steps.append)
    assert sum(steps) == used - FILE_HEADER_SIZE


def test_torn_tail_is_kept_in_a_side_file_before_compacting(tmp_path: Path) -> None:
    """A torn tail is cut to a side file (not silently dropped), then the live sessions compacted."""
    build(tmp_path / "s", sessions=5)
    expected = contents(tmp_path / "s")
    with (tmp_path / "s" / "sessions.log").open("ab") as log:
        log.write(b"\xf5\x1e torn")
    compact(tmp_path / "s")
    assert (tmp_path / "s" / "sessions.log.tr1").read_bytes() == b"\xf5\x1e torn"
    assert contents(tmp_path / "s") == expected


def damage_first_record(directory: Path) -> dict[str, bytes]:
    """Flip a byte in the log's first record; every file's bytes afterwards."""
    raw = bytearray((directory / "sessions.log").read_bytes())
    raw[FILE_HEADER_SIZE + 40] ^= 0xFF
    (directory / "sessions.log").write_bytes(bytes(raw))
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def test_damage_in_the_middle_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    """A log damaged in the middle is not compacted (CorruptionError: run fsck --repair first)."""
    build(tmp_path / "s", sessions=5, durability="fsync")
    before = damage_first_record(tmp_path / "s")
    with pytest.raises(CorruptionError, match="fsck"):
        compact(tmp_path / "s")
    assert {path.name: path.read_bytes() for path in (tmp_path / "s").iterdir()} == before


def test_compaction_never_drops_valid_records_after_damage(tmp_path: Path) -> None:
    """Valid records after a damaged one are never cut by compaction, whatever the durability mode."""
    build(tmp_path / "s", sessions=5, durability="none")
    expected = contents(tmp_path / "s")
    before = damage_first_record(tmp_path / "s")
    with pytest.raises(CorruptionError, match="fsck"):
        compact(tmp_path / "s")
    assert {path.name: path.read_bytes() for path in (tmp_path / "s").iterdir()} == before
    assert fsck(tmp_path / "s", repair=True).exit_code == 1
    # The damaged record is the first session's create; its updates carry the whole session.
    assert contents(tmp_path / "s") == expected, "fsck --repair keeps every record after the damage"


def test_waits_for_the_other_handle_to_close(tmp_path: Path) -> None:
    """With ``wait``, compaction that finds the store open waits, and starts once the other handle
    closes (only after compaction found it open, so compaction that did not wait would fail)."""
    build(tmp_path / "s", sessions=5)
    store = FileSessionStore(tmp_path / "s")
    with release_once_blocked(store.close) as watcher:
        assert compact(tmp_path / "s", wait=30).generation == 2
    assert watcher.blocked


def _compact_and_die(directory: str, step: str) -> None:
    """Compact ``directory``, the process exiting (no clean-up at all) at ``step``."""
    at = {
        # The new generation is written, synced and verified; only --keep-old links the old log.
        "before-link": ExitAt("link"),
        "before-rename": ExitAt("rename", name=LOG_NAME),  # the old log is sealed
        "after-rename": ExitAt("rename", name=LOG_NAME, after=True),
        "during-snapshot": ExitAt("rename", name=SNAPSHOT_NAME),  # switched; no snapshot yet
    }
    compact(directory, io=at[step], keep_old=step == "before-link")


@pytest.mark.parametrize("step", ["before-link", "before-rename", "after-rename", "during-snapshot"])
def test_process_dying_around_the_switch(tmp_path: Path, step: str) -> None:
    """A real process exit at a chosen step around the switching rename leaves a complete store."""
    build(tmp_path / "s", sessions=10, payload=100)
    expected = contents(tmp_path / "s")
    child = FORK.Process(target=_compact_and_die, args=(str(tmp_path / "s"), step))
    child.start()
    child.join(60)
    assert child.exitcode == 3
    generation = stats(tmp_path / "s").generation
    assert generation == (1 if step.startswith("before") else 2)
    assert contents(tmp_path / "s") == expected
    assert not fsck(tmp_path / "s").errors


def test_a_kept_old_generation_is_never_replaced(tmp_path: Path) -> None:
    """Each --keep-old compaction keeps its own old generation: .old, then .old2, then .old3."""
    directory = tmp_path / "s"
    build(directory, 20)
    names = ["sessions.log.old", "sessions.log.old2", "sessions.log.old3"]
    for number, name in enumerate(names):
        with FileSessionStore(directory) as store:
            store.create_session(ctx(user=f"more{number}"), data(ctx(user=f"more{number}")))
        report = compact(directory, keep_old=True)
        assert report.old_log is not None
        assert os.path.basename(report.old_log) == name
    for generation, name in enumerate(names, start=1):
        log = LogFile.open(OsFileIO(), str(directory), name=name)
        try:
            assert log.header.generation == generation
        finally:
            log.close()
    assert {finding.file for finding in fsck(directory).findings} == set(names)


@pytest.mark.parametrize("keep_old", [False, True])
def test_a_stray_link_to_the_current_log_is_reused(tmp_path: Path, keep_old: bool) -> None:
    """A link to the live log left by a rewrite that stopped before its switch is not evidence: reused."""
    directory = tmp_path / "s"
    build(directory, 20)
    os.link(directory / "sessions.log", directory / "sessions.log.old")
    before = contents(directory)
    compact(directory, keep_old=keep_old)
    assert contents(directory) == before
    old_logs = sorted(path.name for path in directory.iterdir() if ".old" in path.name)
    assert old_logs == (["sessions.log.old"] if keep_old else [])


def test_compaction_keeps_the_stores_file_mode(tmp_path: Path) -> None:
    """A 0640 store stays 0640: the new generation's log and snapshot take the old log's mode, not 0600."""
    with umask(0o022):
        with FileSessionStore(tmp_path / "s", file_mode=0o640) as store:
            for step in range(3):
                store.update_session(store.create_session(ctx(), data()), data(step=step))
        compact(tmp_path / "s")
    assert mode_of(tmp_path / "s" / LOG_NAME) == 0o640
    assert mode_of(tmp_path / "s" / SNAPSHOT_NAME) == 0o640


@pytest.mark.parametrize("online", [True, False])
def test_a_lookup_kept_through_a_user_less_update_survives_compaction(tmp_path: Path, online: bool) -> None:
    """A session created for ctx's user with user-less data keeps its lookup through a user-less
    update (whose PUT does not point it), and compaction and reopening keep it, as they keep a
    lookup the update must not take back from the user's newer session."""
    path = tmp_path / "store"
    anonymous = data(ctx(user=None), step=1)
    with FileSessionStore(path) as store:
        kept = store.create_session(ctx(), anonymous)
        store.update_session(kept, data(ctx(user=None), step=2))
        older = store.create_session(ctx(user="u2"), data(ctx(user=None), step=3))
        newer = store.create_session(ctx(user="u2"), data(ctx(user="u2"), step=4))
        store.update_session(older, data(ctx(user=None), step=5))
        if online:
            store.compact()
    if not online:
        compact(path)
    with FileSessionStore(path) as reopened:
        assert reopened.find_by_user(ctx(), "u1") == (kept, data(ctx(user=None), step=2))
        assert reopened.find_by_user(ctx(), "u2") == (newer, data(ctx(user="u2"), step=4))
        reopened.remove_session(newer)
        assert reopened.find_by_user(ctx(), "u2") is None
        assert reopened.get_session(older) == data(ctx(user=None), step=5)
    assert not list(iter_findings(fsck(path)))
