"""fsck --repair after a misdirected write: every record whose bytes are intact is kept.

A misdirected write puts a valid frame of this log (or of an older generation)
where another record was. For stores of 20 and 50 records (creates, updates and
removes mixed), a copy of record ``source`` is written over record ``target``:

- of the same length (the frame fits, so the log still walks frame by frame,
  one record numbered out of place);
- of another length (the copy straddles the records after ``target``, or leaves
  the tail of ``target`` as garbage);
- from the generation before a compaction (it does not verify here).

Each damaged copy is checked against the model of ``state_of_intact_records``:
``fsck`` finds it (exit 4) and ``fsck --repair`` exits 1 (every session whose
latest record is intact keeps its latest value, so nothing is left
uncorrected); the store then opens, from its log alone, with exactly what the
intact records say (so no session has a value it never had), and the report
names every lost record it can know of: all but those after the last intact
record, which look like a log that ended earlier (documented).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs
import pytest

from filestore import FileSessionStore
from filestore.engine.fileio import OS_IO
from filestore.engine.framing import FLAG_SYNCED, KIND_SEAL, encode_frame
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME
from filestore.engine.logfile import LogFile
from filestore.engine.records import encode_seal
from filestore.offline.compact import compact
from filestore.offline.fsck import FsckAction, fsck

from .support.corruption import (
    Op,
    Pristine,
    State,
    build_pristine,
    frame_ends,
    larger_workload,
    observe,
    state_of_intact_records,
)

SAMPLE: Final = 40  # (source, target) pairs per store and kind of copy in the default lane


@attrs.frozen
class Store:
    """A closed store and the operations that wrote it, one record each."""

    pristine: Pristine
    operations: Sequence[Op]

    @property
    def count(self) -> int:
        return len(self.operations)

    def span(self, number: int) -> tuple[int, int]:
        """Where record ``number`` (from 1) lies in the log."""
        return self.pristine.ends[number - 1], self.pristine.ends[number]


@pytest.fixture(scope="module", params=[20, 50], ids=["20-records", "50-records"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Store:
    count: int = request.param
    operations = larger_workload(count, seed=count)
    directory = tmp_path_factory.mktemp(f"misdirected-{count}") / "store"
    return Store(build_pristine(directory, operations), operations)


def copied(store: Store, source: int, target: int) -> tuple[bytes, list[bool]]:
    """The log with record ``source``'s frame written at record ``target``'s offset (the file
    grows if the copy runs past its end), and which records' bytes are still whole."""
    log = bytearray(store.pristine.log)
    start, end = store.span(source)
    at = store.span(target)[0]
    frame = log[start:end]
    log[at : at + len(frame)] = frame
    damaged = bytes(log)
    original = store.pristine.log
    intact = [
        damaged[store.span(n)[0] : store.span(n)[1]] == original[store.span(n)[0] : store.span(n)[1]]
        for n in range(1, store.count + 1)
    ]
    # The copy is itself a whole, verified record ``source``: wherever it lies, it is intact.
    intact[source - 1] = True
    return damaged, intact


@attrs.frozen
class Outcome:
    """What fsck did with one damaged copy, compared whole with the expected outcome."""

    found: int
    repaired: int
    left: tuple[str, ...]
    lost: tuple[int, ...]
    state: State


def run_fsck(pristine: Pristine, where: Path, log: bytes) -> Outcome:
    """Damage a copy of the store, check it, repair it, check again, open it from its log alone."""
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(pristine.directory, where)
    (where / LOG_NAME).write_bytes(log)
    found = fsck(where)
    repaired = fsck(where, repair=True)
    left = tuple(f"{finding.kind}: {finding.detail}" for finding in fsck(where).errors)
    (where / SNAPSHOT_NAME).unlink(missing_ok=True)  # the log itself must hold the repaired state
    with FileSessionStore(where) as opened:
        state = observe(opened, pristine.users)
    return Outcome(found.exit_code, repaired.exit_code, left, tuple(repaired.lost), state)


def expected(store: Store, intact: list[bool]) -> Outcome:
    """The model: exit 4 then 1, clean after, the intact records' state, the knowable losses named."""
    last_intact = max(n for n in range(1, store.count + 1) if intact[n - 1])
    lost = tuple(n for n in range(1, last_intact) if not intact[n - 1])
    return Outcome(4, 1, (), lost, state_of_intact_records(store.pristine, store.operations, intact))


def pairs(store: Store, *, same_length: bool) -> list[tuple[int, int]]:
    """Every (source, target) pair of distinct records whose frames are (or are not) of equal length."""
    size = {n: store.span(n)[1] - store.span(n)[0] for n in range(1, store.count + 1)}
    return [
        (source, target)
        for source in size
        for target in size
        if source != target and (size[source] == size[target]) == same_length
    ]


def sample(found: list[tuple[int, int]], everything: bool) -> list[tuple[int, int]]:
    """All pairs in the slow lane; a fixed sample (always with the first and last record) otherwise."""
    if everything or len(found) <= SAMPLE:
        return found
    last = max(target for _, target in found)
    edges = {pair for pair in found if pair[1] in (1, last)}
    rest = [pair for pair in found if pair not in edges]
    return sorted(edges | set(random.Random(len(found)).sample(rest, max(0, SAMPLE - len(edges)))))


def check_pairs(store: Store, tmp_path: Path, chosen: list[tuple[int, int]]) -> None:
    for source, target in chosen:
        log, intact = copied(store, source, target)
        outcome = run_fsck(store.pristine, tmp_path / "copy", log)
        assert outcome == expected(store, intact), f"record {source} copied over record {target}"


LANES: Final = [pytest.param(False, id="sampled"), pytest.param(True, marks=pytest.mark.slow, id="all")]


def test_the_stores_have_frames_of_equal_and_unequal_length(store: Store) -> None:
    """The workloads give the matrix something to do: both kinds of pair exist, and the
    frames the model assumes are the ones the engine walks."""
    assert frame_ends(store.pristine.directory) == list(store.pristine.ends[1:])
    assert len(pairs(store, same_length=True)) >= store.count
    assert len(pairs(store, same_length=False)) >= store.count


@pytest.mark.parametrize("everything", LANES)
def test_a_frame_copied_over_one_of_the_same_length(store: Store, tmp_path: Path, everything: bool) -> None:
    """A valid frame copied over another of the same length: only the overwritten record is lost
    (and named); the records after it, and the original of the copy, are kept."""
    check_pairs(store, tmp_path, sample(pairs(store, same_length=True), everything))


@pytest.mark.parametrize("everything", LANES)
def test_a_frame_copied_over_one_of_another_length(store: Store, tmp_path: Path, everything: bool) -> None:
    """A valid frame copied over another of a different length, straddling the records after it
    or leaving the rest of the target as garbage: only the records whose bytes it touched are lost."""
    check_pairs(store, tmp_path, sample(pairs(store, same_length=False), everything))


def test_the_reported_case_keeps_49_of_50_records(tmp_path: Path) -> None:
    """The issue's case: record 50 of 50 creates copied over an early record of the same length
    (10). The repair used to keep 9 sessions and set the rest aside as stale; it keeps the 49
    sessions whose records are intact and names record 10 as lost."""
    operations = [Op("create", user=f"u{n % 4}") for n in range(50)]
    built = Store(build_pristine(tmp_path / "store", operations), operations)
    assert built.span(50)[1] - built.span(50)[0] == built.span(10)[1] - built.span(10)[0]
    log, intact = copied(built, 50, 10)
    outcome = run_fsck(built.pristine, tmp_path / "copy", log)
    assert len(outcome.state.sessions) == 49
    assert outcome.lost == (10,)
    assert outcome == expected(built, intact)


def test_a_frame_of_the_previous_generation(tmp_path: Path) -> None:
    """After ``compact --keep-old``, a frame of the old generation copied over a current record of
    the same length does not verify: that record is lost (and named), every other one kept."""
    operations = larger_workload(30, seed=3)
    built = build_pristine(tmp_path / "store", operations)
    directory = built.directory
    compact(directory, keep_old=True)
    old = (directory / f"{LOG_NAME}.old").read_bytes()
    assert old.startswith(built.log)  # and the seal compaction wrote after it
    old_ends = built.ends
    current = (directory / LOG_NAME).read_bytes()
    ends = frame_ends(directory)
    starts = [old_ends[0], *ends[:-1]]
    with FileSessionStore(directory) as opened:
        final = observe(opened, built.users)
    for number, (start, end) in enumerate(zip(starts, ends, strict=True), start=1):
        sources = [j for j in range(1, len(old_ends)) if old_ends[j] - old_ends[j - 1] == end - start]
        if not sources:
            continue
        source = sources[0]
        frame = old[old_ends[source - 1] : old_ends[source]]
        log = current[:start] + frame + current[end:]
        where = tmp_path / "copy"
        if where.exists():
            shutil.rmtree(where)
        shutil.copytree(directory, where)
        (where / LOG_NAME).write_bytes(log)
        assert fsck(where).exit_code == 4, f"record {number}"
        repaired = fsck(where, repair=True)
        assert repaired.exit_code == 1, f"record {number}"
        assert repaired.lost == ([number] if number < len(ends) else []), f"record {number}"
        (where / SNAPSHOT_NAME).unlink()
        with FileSessionStore(where) as opened:
            after = observe(opened, built.users)
        changed = {key for key in final.sessions if after.sessions.get(key) != final.sessions[key]}
        assert len(changed) <= 1, f"record {number}"
        assert after.sessions.keys() <= final.sessions.keys(), f"record {number}"


def test_two_different_copies_of_a_record_are_left_uncorrected(tmp_path: Path) -> None:
    """A second valid record 2 with other contents (nothing a single misdirected write makes):
    repair keeps the one in sequence, but cannot know it is the right one, so it exits 4 and
    says so; the old log (with both) is kept."""
    operations = larger_workload(6, seed=1)
    built = Store(build_pristine(tmp_path / "store", operations), operations)
    directory = built.pristine.directory
    log = LogFile.open(OS_IO, str(directory))
    try:
        salt = log.salt
        other = log.read_frame(built.span(5)[0], built.span(5)[1] - built.span(5)[0])
    finally:
        log.close()
    assert other is not None
    impostor = encode_frame(salt, other.kind, other.flags, 2, other.synced_through, other.payload)
    at = built.span(4)[1]
    raw = built.pristine.log
    (directory / LOG_NAME).write_bytes(raw[:at] + impostor + raw[at:])
    repaired = fsck(directory, repair=True)
    (conflict,) = [finding for finding in repaired.errors if finding.offset == at]
    assert "nothing says which is right" in conflict.detail
    assert conflict.action is FsckAction.NONE
    assert repaired.exit_code == 4
    assert repaired.lost == []
    assert (directory / f"{LOG_NAME}.old").read_bytes().startswith(raw[:at] + impostor)
    (directory / SNAPSHOT_NAME).unlink()
    with FileSessionStore(directory) as opened:
        assert observe(opened, built.pristine.users) == built.pristine.states[-1]


def moved_log(store: Store, order: Sequence[int], extra: bytes = b"") -> bytes:
    """The log's header, then the records numbered in ``order`` (``0``: ``extra``), byte for byte."""
    log = store.pristine.log
    parts = [log[: store.pristine.ends[0]]]
    parts += [extra if number == 0 else log[slice(*store.span(number))] for number in order]
    return b"".join(parts)


def test_the_only_copy_of_a_record_out_of_place_is_kept(tmp_path: Path) -> None:
    """Record 5's only copy lies between records 2 and 3: it is out of place but intact, so the
    repair keeps it, replayed in its place in the sequence; nothing is lost."""
    operations = larger_workload(6, seed=2)
    built = Store(build_pristine(tmp_path / "store", operations), operations)
    outcome = run_fsck(built.pristine, tmp_path / "copy", moved_log(built, [1, 2, 5, 3, 4, 6]))
    assert outcome == Outcome(4, 1, (), (), built.pristine.states[-1])


def test_a_seal_in_the_middle_is_set_aside(tmp_path: Path) -> None:
    """A seal (the record that ends a compacted generation) found between records 2 and 3, a
    misdirected copy: it is set aside, not taken for an interrupted compaction, and every record
    after it is kept."""
    operations = larger_workload(6, seed=4)
    built = Store(build_pristine(tmp_path / "store", operations), operations)
    log = LogFile.open(OS_IO, str(built.pristine.directory))
    try:
        seal = encode_frame(log.salt, KIND_SEAL, FLAG_SYNCED, 7, 6, encode_seal(2))
    finally:
        log.close()
    damaged = moved_log(built, [1, 2, 0, 3, 4, 5, 6], extra=seal)
    outcome = run_fsck(built.pristine, tmp_path / "copy", damaged)
    assert outcome == Outcome(4, 1, (), (), built.pristine.states[-1])
