"""Progress that says something (issue 16): each long tool reports its phases in order, and the
work reported in a phase adds up to exactly the total it announced, on clean and damaged stores,
so a bar reaches its end at the end of each phase rather than stalling at 96% through another."""

from __future__ import annotations

import io
from collections.abc import Callable, Sized
from pathlib import Path

import attrs
import pytest

from filestore import FileSessionStore, InMemorySessionStore
from filestore.backends import migrate
from filestore.engine.layout import LOG_NAME
from filestore.offline.compact import compact
from filestore.offline.fsck import fsck
from filestore.progress import PhasedProgress
from filestore.transfer import export_sessions

from .support import ctx, data


@attrs.define
class Phases:
    """A PhasedProgress that records each phase's name, total, unit and the amounts reported in it."""

    seen: list[tuple[str, int | None, str, int]] = attrs.field(factory=list)

    def __call__(self, amount: int) -> None:
        assert self.seen, "work reported before any phase began"
        name, total, unit, done = self.seen[-1]
        self.seen[-1] = (name, total, unit, done + amount)

    def phase(self, name: str, total: int | None, unit: str) -> None:
        self.seen.append((name, total, unit, 0))

    def names(self) -> list[str]:
        return [name for name, *_ in self.seen]

    def assert_each_phase_ends_at_its_total(self) -> None:
        for name, total, _unit, done in self.seen:
            assert done == total, f"phase {name}: reported {done} of {total}"


def make_store(path: Path, sessions: int = 30, removed: int = 10) -> None:
    with FileSessionStore(path) as store:
        keys = []
        for number in range(sessions):
            tenant = ctx(user=f"user-{number}")
            keys.append(store.create_session(tenant, data(tenant, step=number)))
        for key in keys[:removed]:
            store.remove_session(key)


def torn(path: Path) -> None:
    with (path / LOG_NAME).open("ab") as log:
        log.write(b"\xf5\x1e\x01\x00half a record")


def damaged_in_the_middle(path: Path) -> None:
    raw = bytearray((path / LOG_NAME).read_bytes())
    raw[len(raw) // 2] ^= 0x5A
    (path / LOG_NAME).write_bytes(bytes(raw))


def no_damage(path: Path) -> None:
    del path


@pytest.mark.parametrize("damage", [no_damage, torn, damaged_in_the_middle])
@pytest.mark.parametrize("repair", [False, True])
def test_fsck_reports_scan_verify_rewrite_snapshot_each_to_its_total(
    tmp_path: Path, damage: Callable[[Path], None], repair: bool
) -> None:
    """fsck: scan (the whole log, bad regions and torn tail included), verify, a repair's
    rewrite where there is one, then the snapshot; each phase's bytes add up to its total."""
    make_store(tmp_path / "s")
    damage(tmp_path / "s")
    phases = Phases()
    assert isinstance(phases, PhasedProgress)
    fsck(tmp_path / "s", repair=repair, progress=phases)
    expected = ["scan", "verify"]
    if repair and damage is damaged_in_the_middle:
        expected.append("rewrite")
    else:
        expected.append("snapshot")
    assert phases.names() == expected
    assert all(unit == "B" for _name, _total, unit, _done in phases.seen)
    phases.assert_each_phase_ends_at_its_total()


@pytest.mark.parametrize("damage", [no_damage, torn])
def test_compact_reports_scan_then_copy_each_to_its_total(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    """compact: scan (rebuilding the index; a preallocated or torn tail counted at its end), then copy."""
    make_store(tmp_path / "s")
    damage(tmp_path / "s")
    phases = Phases()
    compact(tmp_path / "s", progress=phases)
    assert phases.names() == ["scan", "copy"]
    phases.assert_each_phase_ends_at_its_total()


def test_migrate_reports_copy_then_verify_in_sessions(tmp_path: Path) -> None:
    """migrate: copy then verify, one per session, each to the source's count (a first run and a
    re-run that finds everything there alike)."""
    make_store(tmp_path / "s")
    for _run in range(2):
        phases = Phases()
        with FileSessionStore(tmp_path / "s") as source, FileSessionStore(tmp_path / "t") as target:
            migrate(source, target, progress=phases)
        assert [(name, total, unit) for name, total, unit, _ in phases.seen] == [
            ("copy", 20, "sessions"),
            ("verify", 20, "sessions"),
        ]
        phases.assert_each_phase_ends_at_its_total()


def test_a_store_that_cannot_count_announces_no_total() -> None:
    """A source without a cheap count (no len) announces its phase with no total, not a guess."""
    source = InMemorySessionStore()
    tenant = ctx()
    source.create_session(tenant, data(tenant))
    assert not isinstance(source, Sized)
    phases = Phases()
    export_sessions(source, io.StringIO(), progress=phases)
    assert phases.seen == [("export", None, "sessions", 1)]


def test_a_plain_callable_gets_one_pass_as_before(tmp_path: Path) -> None:
    """A progress that is a plain function (no phase method) gets what it got before phases:
    compact's copy pass only (the log's bytes once), migrate's copies only (one per session)."""
    make_store(tmp_path / "s")
    log_bytes = (tmp_path / "s" / LOG_NAME).stat().st_size
    amounts: list[int] = []
    compact(tmp_path / "s", progress=amounts.append)
    assert 0 < sum(amounts) <= log_bytes
    ticks: list[int] = []
    with FileSessionStore(tmp_path / "s") as source, FileSessionStore(tmp_path / "t") as target:
        migrate(source, target, progress=ticks.append)
    assert ticks == [1] * 20
