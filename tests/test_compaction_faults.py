"""Compaction that fails or is interrupted: the answer matches the generation, and nothing is left behind.

Issue 13 #12: a compaction on a nearly full disk could switch to the new
generation and still fail (exit 8), leaving a ``sessions.log.old`` link (the
old generation's space), a partial ``sessions.log.compact`` and a temp file;
a Ctrl-C did the same, and fsck then exited 4. Here an I/O error (once, or on
every call from then on), an interrupt before a call, and an interrupt just
after it hit every mutating step of offline and online compaction, and a
small tmpfs runs out of space at every step. After each: the call returned
(exit 0) exactly when the generation advanced, no file of the compaction is
left (after a persistent fault: once the store is next opened), fsck exits 0
and every session is intact.

Issue 13 #13: links planted at the names the store picks for side files,
kept old generations, compaction output and temp files are names taken,
never written through and never removed.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from filestore import FileSessionStore, StorePoisonedError
from filestore.cli import main
from filestore.engine.fileio import OsFileIO
from filestore.engine.framing import FILE_HEADER_SIZE, KIND_SEAL, verify_frame
from filestore.engine.layout import (
    COMPACT_NAME,
    LOG_NAME,
    OLD_NAME,
    SNAPSHOT_NAME,
    is_side_file,
    is_temp_name,
)
from filestore.engine.logfile import LogFile
from filestore.offline.compact import compact
from filestore.offline.fsck import FsckSeverity, fsck, iter_findings

from .support import ctx, data
from .support.fileio import MUTATING, Call, FaultyIO, HookedIO, os_error
from .support.fulldisk import small_tmpfs as mounted_tmpfs

USERS = 6
# What a store directory holds when nothing was left behind (the snapshot is optional).
CLEAN = frozenset({LOG_NAME, SNAPSHOT_NAME, "filestore.json", "LOCK", "OPEN"})
FAULTS = ("enospc", "eio-persistent", "interrupt", "interrupt-after")


def build(directory: Path, sessions: int = 12, payload: int = 300) -> None:
    """Live sessions of several users, each after dead versions (so compaction drops records)."""
    with FileSessionStore(directory, durability="none") as store:
        for number in range(sessions):
            context = ctx(user=f"u{number % USERS}")
            key = store.create_session(context, data(context, step=number))
            for version in range(3):
                stored = data(context, step=number)
                changed = type(stored)(context, stored.flow_id, stored.cursor, "x" * payload + str(version))
                store.update_session(key, changed)
            store.remove_session(store.create_session(context, data(context, step=-number)))


def contents(directory: Path) -> dict[str, object]:
    """Every session and every user lookup, read through a fresh handle."""
    with FileSessionStore(directory) as store:
        return observe(store)


def observe(store: FileSessionStore) -> dict[str, object]:
    return {
        **{str(key): store.get_session(key) for key in store.session_keys()},
        **{f"user:{n}": store.find_by_user(ctx(), f"u{n}") for n in range(USERS)},
    }


def generation(directory: Path) -> int:
    log = LogFile.open(OsFileIO(), str(directory), readonly=True)
    try:
        return log.header.generation
    finally:
        log.close()


def leftovers(directory: Path, *, kept: frozenset[str] = frozenset()) -> set[str]:
    """Names in ``directory`` beyond a clean store's (and ``kept``)."""
    return set(os.listdir(directory)) - CLEAN - kept


def cut_seals(directory: Path) -> frozenset[str]:
    """Side files holding exactly one verified seal: the seal of a compaction whose clean-up
    could not run, cut by the next writer and kept, as every cut is (documented in fsck)."""
    log = LogFile.open(OsFileIO(), str(directory), readonly=True)
    try:
        salt = log.header.salt
    finally:
        log.close()
    found = set()
    for name in os.listdir(directory):
        if is_side_file(name):
            frame = verify_frame(salt, (directory / name).read_bytes(), 0)
            if frame is not None and frame.kind == KIND_SEAL:
                found.add(name)
    return frozenset(found)


def mutating_steps(io: HookedIO) -> int:
    return sum(io.calls[operation] for operation in MUTATING)


def faulty(fault: str, step: int) -> FaultyIO:
    """A file layer that fails the ``step``-th mutating call as ``fault`` says."""
    if fault == "enospc":
        return FaultyIO(step, os_error(errno.ENOSPC), persistent=False)
    if fault == "eio-persistent":
        return FaultyIO(step, os_error(errno.EIO), persistent=True)
    return FaultyIO(step, KeyboardInterrupt, persistent=False, done=fault == "interrupt-after")


def assert_clean_and_whole(
    directory: Path, expected: dict[str, object], why: str, *, kept: frozenset[str] = frozenset()
) -> None:
    """Nothing left behind (but ``kept``), fsck exits 0 (before anyone opens the store),
    every session intact."""
    assert leftovers(directory, kept=kept) == set(), why
    report = fsck(directory)
    assert report.exit_code == 0, f"{why}: {list(iter_findings(report))}"
    assert contents(directory) == expected, why


def copies(pristine: Path, work: Path, steps: int) -> Iterator[tuple[int, Path]]:
    for step in range(1, steps + 1):
        directory = work / f"step{step}"
        shutil.copytree(pristine, directory)
        yield step, directory


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    directory = tmp_path_factory.mktemp("pristine") / "s"
    build(directory)
    return directory, contents(directory)


@pytest.mark.parametrize("fault", FAULTS)
def test_offline_compaction_fault_at_every_step(
    tmp_path: Path, pristine: tuple[Path, dict[str, object]], fault: str
) -> None:
    """compact() returns iff the generation advanced; it leaves no file of its own (a persistent
    fault: none once the store is opened), no .old, an fsck-clean store with every session."""
    source, expected = pristine
    counter = HookedIO()
    shutil.copytree(source, tmp_path / "count")
    compact(tmp_path / "count", io=counter)
    steps = mutating_steps(counter)
    outcomes: set[bool] = set()
    for step, directory in copies(source, tmp_path, steps):
        why = f"{fault} at step {step} of {steps}"
        io = faulty(fault, step)
        try:
            report = compact(directory, io=io)
        except (OSError, KeyboardInterrupt):
            returned = False
        else:
            returned = True
            assert report.generation == 2, why
        assert io.fired, why
        io.enabled = False
        assert returned == (generation(directory) == 2), why
        outcomes.add(returned)
        if fault == "eio-persistent":
            # Clean-up could not run (every call failed): the next open tidies up.
            FileSessionStore(directory).close()
        kept = cut_seals(directory) if fault == "eio-persistent" else frozenset()
        assert_clean_and_whole(directory, expected, why, kept=kept)
    assert outcomes == {True, False}, "faults both before and after the switch"


@pytest.mark.parametrize("fault", FAULTS)
def test_online_compaction_fault_at_every_step(
    tmp_path: Path, pristine: tuple[Path, dict[str, object]], fault: str
) -> None:
    """store.compact() returns iff the generation advanced; both handles then read every
    session, a healthy handle writes on, and after closing nothing is left and fsck exits 0."""
    source, expected = pristine
    counter = HookedIO()
    shutil.copytree(source, tmp_path / "count")
    with FileSessionStore(tmp_path / "count", io=counter) as store:
        before = mutating_steps(counter)
        store.compact()
        steps = mutating_steps(counter) - before
    outcomes: set[bool] = set()
    for step, directory in copies(source, tmp_path, steps):
        why = f"{fault} at step {step} of {steps}"
        io = faulty(fault, step)
        io.enabled = False
        with FileSessionStore(directory, io=io) as store, FileSessionStore(directory) as other:
            io.enabled = True
            try:
                store.compact()
            except (StorePoisonedError, KeyboardInterrupt):
                returned = False
            else:
                returned = True
            assert io.fired, why
            io.enabled = False
            assert returned == (generation(directory) == 2), why
            outcomes.add(returned)
            assert observe(store) == expected == observe(other), why
            late = ctx(user="late")
            key = other.create_session(late, data(late, step=step))
            assert store.get_session(key) == data(late, step=step), why
        with_late = dict(expected)
        with_late[str(key)] = data(late, step=step)
        if fault == "eio-persistent":
            FileSessionStore(directory).close()
        kept = cut_seals(directory) if fault == "eio-persistent" else frozenset()
        assert_clean_and_whole(directory, with_late, why, kept=kept)
    assert outcomes == {True, False}, "faults both before and after the switch"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test (root only; skipped with the reason elsewhere)."""
    with mounted_tmpfs(tmp_path / "tmpfs", size="4m") as mount:
        yield mount


def fill_to(mount: Path, free: int) -> Path:
    """Write a filler file so that about ``free`` bytes stay available on ``mount``."""
    filler = mount / "filler"
    status = os.statvfs(mount)
    available = status.f_bavail * status.f_frsize
    with filler.open("wb") as out:
        out.write(b"\0" * max(available - free, 0))
    return filler


def test_compaction_on_a_full_tmpfs_at_every_amount_of_free_space(
    tmp_path: Path, small_tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`filestore compact` with 0, 4 KiB, 8 KiB... free (running out while writing the new
    generation, and while writing the snapshot after the switch): exit 0 iff the generation
    advanced, a warning for the snapshot; no leftovers, fsck exit 0 while the disk is still
    full, every session intact."""
    source = tmp_path / "pristine"
    build(source, sessions=40, payload=1500)
    expected = contents(source)
    outcomes: dict[bool, int] = {True: 0, False: 0}
    snapshot_warnings = 0
    free = 0
    while outcomes[True] < 2:
        directory = small_tmpfs / "s"
        shutil.copytree(source, directory)
        filler = fill_to(small_tmpfs, free)
        capsys.readouterr()
        code = main(["compact", str(directory)])
        why = f"{free} bytes free: exit {code}"
        if code == 0 and "warning: switched to generation 2, but could not write" in capsys.readouterr().out:
            snapshot_warnings += 1
        advanced = generation(directory) == 2
        assert code in {0, 8}, why
        assert (code == 0) == advanced, why
        outcomes[advanced] += 1
        assert leftovers(directory) == set(), why
        report = fsck(directory)
        assert report.exit_code == 0, f"{why}: {list(iter_findings(report))}"
        filler.unlink()
        assert contents(directory) == expected, why
        shutil.rmtree(directory)
        free += 4096
    assert outcomes[False] >= 3, f"space ran out at several steps: {outcomes}"
    assert snapshot_warnings >= 1, "space ran out after the switch, too"


def test_fsck_does_not_call_an_unfinished_compaction_evidence(tmp_path: Path) -> None:
    """A half-written sessions.log.compact and a second name of the live log are notes that say
    they are not evidence; repair removes them, and so does the next open."""
    build(tmp_path / "s", sessions=4)
    expected = contents(tmp_path / "s")
    shutil.copytree(tmp_path / "s", tmp_path / "opened")
    for directory in (tmp_path / "s", tmp_path / "opened"):
        log = (directory / LOG_NAME).read_bytes()
        (directory / COMPACT_NAME).write_bytes(log[: FILE_HEADER_SIZE + 100])
        os.link(directory / LOG_NAME, directory / OLD_NAME)
    report = fsck(tmp_path / "s")
    assert report.exit_code == 0
    notes = {finding.file: finding for finding in report.findings}
    for name in (COMPACT_NAME, OLD_NAME):
        assert notes[name].severity is FsckSeverity.NOTE
        assert "not evidence" in notes[name].detail, notes[name].detail
    fsck(tmp_path / "s", repair=True)
    assert leftovers(tmp_path / "s") == set()
    assert contents(tmp_path / "opened") == expected
    assert leftovers(tmp_path / "opened") == set()


# -- #13: links at the names the store picks ------------------------------------------------


def plant(at: Path, target: Path) -> None:
    os.symlink(target, at)


def links_and_victim(directory: Path, victim: Path, names: list[str]) -> dict[str, str]:
    return {name: os.readlink(directory / name) for name in names} | {"victim": victim.read_text()}


@pytest.mark.parametrize("dangling", [True, False], ids=["dangling", "to-a-victim"])
def test_a_torn_tail_is_cut_past_links_at_side_file_names(tmp_path: Path, dangling: bool) -> None:
    """Links at sessions.log.tr1 and .tr2 are passed over: the store opens, the cut bytes go to
    .tr3, the links and the file they point at are unchanged."""
    directory = tmp_path / "s"
    build(directory, sessions=4)
    expected = contents(directory)
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_text("not yours")
    names = ["sessions.log.tr1", "sessions.log.tr2"]
    for name in names:
        plant(directory / name, victim)
    before = links_and_victim(directory, victim, names) if not dangling else None
    with (directory / LOG_NAME).open("r+b") as log_file:
        log_file.seek(0, os.SEEK_END)
        log_file.write(b"\xf5\x1e torn")
    with FileSessionStore(directory) as store:
        assert observe(store) == expected
        store.create_session(ctx(), data(step=99))
    assert (directory / "sessions.log.tr3").read_bytes() == b"\xf5\x1e torn"
    assert all(os.readlink(directory / name) == str(victim) for name in names)
    assert dangling != victim.exists()
    if before is not None:
        assert links_and_victim(directory, victim, names) == before


COMPACTION_NAMES = [OLD_NAME, "sessions.log.old2", COMPACT_NAME]


@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
@pytest.mark.parametrize("keep_old", [False, True], ids=["drop-old", "keep-old"])
@pytest.mark.parametrize("dangling", [True, False], ids=["dangling", "to-a-victim"])
def test_compaction_passes_over_links_at_its_names(
    tmp_path: Path, dangling: bool, keep_old: bool, online: bool
) -> None:
    """Links at sessions.log.old, .old2 and .compact are names taken: compaction succeeds,
    keeps the old generation (if asked) as .old3, and the links and their target are unchanged."""
    directory = tmp_path / "s"
    build(directory, sessions=4)
    expected = contents(directory)
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_text("not yours")
    for name in COMPACTION_NAMES:
        plant(directory / name, victim)
    if online:
        with FileSessionStore(directory) as store:
            result = store.compact(keep_old=keep_old)
            old_log = result.old_log
    else:
        old_log = compact(directory, keep_old=keep_old).old_log
    assert generation(directory) == 2
    assert (os.path.basename(old_log) if old_log else None) == ("sessions.log.old3" if keep_old else None)
    assert all(os.readlink(directory / name) == str(victim) for name in COMPACTION_NAMES)
    assert (victim.read_text() == "not yours") if not dangling else not victim.exists()
    assert contents(directory) == expected
    kept = frozenset(COMPACTION_NAMES) | ({"sessions.log.old3"} if keep_old else set())
    assert leftovers(directory, kept=kept) == set()


class PlantsLinksAtTempNames(HookedIO):
    """Plants a link to ``victim`` at the temp name each write first draws, just before the
    store creates it there (the name it draws next is left alone)."""

    def __init__(self, victim: Path) -> None:
        super().__init__()
        self.victim = victim
        self.planted: list[str] = []
        self._retrying = False

    def before(self, call: Call) -> None:
        super().before(call)
        if call.operation == "create" and is_temp_name(os.path.basename(call.path)):
            if not self._retrying:
                self.planted.append(call.path)
                os.symlink(self.victim, call.path)
            self._retrying = not self._retrying


def test_links_at_temp_names_are_passed_over(tmp_path: Path) -> None:
    """A link planted at the very temp name the store draws (for the snapshot, the identity
    file, a new log) makes it draw another: creating, snapshotting and compacting work, the
    victim is unchanged."""
    victim = tmp_path / "victim"
    victim.write_text("not yours")
    io = PlantsLinksAtTempNames(victim)
    directory = tmp_path / "s"
    with FileSessionStore(directory, io=io) as store:
        key = store.create_session(ctx(), data(step=1))
        store.write_snapshot()
        store.compact()
    compact(directory, io=io)
    assert len(io.planted) >= 4
    assert victim.read_text() == "not yours"
    assert contents(directory)[str(key)] == data(step=1)
    for path in io.planted:
        os.unlink(path)
    assert leftovers(directory) == set()


@pytest.mark.parametrize(("target", "advanced"), [(LOG_NAME, False), (SNAPSHOT_NAME, True)])
def test_ctrl_c_during_filestore_compact(
    tmp_path: Path,
    pristine: tuple[Path, dict[str, object]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target: str,
    advanced: bool,
) -> None:
    """A Ctrl-C just before the switching rename: exit 130 and the old generation; just before the
    snapshot's rename (after the switch): exit 0, the new generation and a warning. Either way
    nothing is left behind and fsck exits 0."""
    source, expected = pristine
    directory = tmp_path / "s"
    shutil.copytree(source, directory)
    rename = OsFileIO.rename

    def interrupted(self: OsFileIO, path: str, to: str) -> None:
        if os.path.basename(to) == target:
            raise KeyboardInterrupt
        rename(self, path, to)

    monkeypatch.setattr(OsFileIO, "rename", interrupted)
    code = main(["compact", str(directory)])
    monkeypatch.undo()
    assert code == (0 if advanced else 130)
    assert generation(directory) == (2 if advanced else 1)
    assert ("warning: switched to generation 2" in capsys.readouterr().out) == advanced
    assert_clean_and_whole(directory, expected, f"Ctrl-C before the rename to {target}")
