"""Bit flips and zeroed blocks anywhere in the log: a clean prefix or ``CorruptionError``, never wrong data.

Every test damages a copy of a closed store's log, deletes its snapshot (so
the whole log is read) and reopens it. The one property all damage must
keep: opening either shows the model's state after some prefix of the
operations, or raises ``CorruptionError`` naming the log with an integer
offset; any other exception fails the test.

Beyond it, the expected outcome follows from the format (``filestore.engine.framing``):
every record here was fdatasync'd, so each record's ``synced_through`` names
the one before it. Damage to the file header is refused; damage to record
``d`` followed by an intact record is refused at record ``d``'s offset;
damage that leaves no intact record after it is a torn tail: opening shows
the first ``d - 1`` records and keeps the cut bytes in a side file.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from filestore import CorruptionError, FileSessionStore
from filestore.engine.framing import FILE_HEADER_SIZE, FRAME_HEADER_SIZE
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME

from .support.corruption import (
    BLOCK,
    SMALL,
    Pristine,
    State,
    build_pristine,
    flip,
    larger_workload,
    observe,
    side_files,
    zero_block,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """A closed 4-record store (create, create, update, remove)."""
    return build_pristine(tmp_path_factory.mktemp("flips") / "store", SMALL)


@pytest.fixture(scope="module")
def larger(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """A closed 30-record store of mixed operations."""
    return build_pristine(tmp_path_factory.mktemp("flips-larger") / "store", larger_workload(30, seed=7))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch directory the damaged copies are made in, one at a time."""
    return tmp_path_factory.mktemp("flip-work")


@attrs.frozen
class Opened:
    """Opening succeeded: what the store showed, and the side files it left."""

    state: State
    evidence: dict[str, bytes]


@attrs.frozen
class Refused:
    """Opening raised ``CorruptionError`` at ``offset``."""

    offset: int


Outcome = Opened | Refused


def open_damaged(pristine: Pristine, where: Path, log: bytes) -> Outcome:
    """Open a snapshot-less copy of ``pristine`` whose log is ``log``; check the universal property."""
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(pristine.directory, where, ignore=shutil.ignore_patterns(SNAPSHOT_NAME))
    (where / LOG_NAME).write_bytes(log)
    refusal: CorruptionError | None = None
    try:
        with FileSessionStore(where) as store:
            state = observe(store, pristine.users)
    except CorruptionError as error:
        refusal = error
    if refusal is not None:
        assert refusal.path == str(where / LOG_NAME), f"the error names {refusal.path}, not the log"
        assert isinstance(refusal.offset, int)
        assert 0 <= refusal.offset <= len(log)
        assert "fsck" in str(refusal)
        return Refused(refusal.offset)
    assert state in pristine.states, "a damaged log opened with a state no prefix of the operations had"
    return Opened(state, side_files(where))


@attrs.frozen
class Expected:
    """The outcome the format's rules give for a damaged log (see the module docstring)."""

    outcome: Outcome


def expected_outcome(pristine: Pristine, log: bytes) -> Expected:
    """What opening ``log`` (a damaged copy of ``pristine.log``, same length or longer) must do."""
    original = pristine.log
    if log == original:
        return Expected(Opened(pristine.states[-1], {}))
    if log[:FILE_HEADER_SIZE] != original[:FILE_HEADER_SIZE]:
        return Expected(Refused(0))
    ends = pristine.ends
    intact = [log[ends[j - 1] : ends[j]] == original[ends[j - 1] : ends[j]] for j in range(1, len(ends))]
    first = intact.index(False) + 1 if False in intact else len(ends)
    start = ends[first - 1]
    if any(intact[first:]):
        return Expected(Refused(start))
    cut = log[start:].rstrip(b"\0")
    evidence = {f"{LOG_NAME}.tr1": cut} if cut else {}
    return Expected(Opened(pristine.states[first - 1], evidence))


def test_expected_outcomes_of_the_pristine_store(small: Pristine, workdir: Path) -> None:
    """The undamaged log opens to the final state with no side file (the baseline of the checks)."""
    assert open_damaged(small, workdir / "pristine", small.log) == Opened(small.states[-1], {})
    assert expected_outcome(small, small.log) == Expected(Opened(small.states[-1], {}))


def test_every_single_bit_flip(small: Pristine, workdir: Path) -> None:
    """Each bit of a 4-record log flipped in turn: a clean prefix or CorruptionError, as the rules say."""
    log = small.log
    tally: Counter[str] = Counter()
    for bit in range(len(log) * 8):
        damaged = flip(log, [bit])
        outcome = open_damaged(small, workdir / "flip", damaged)
        expected = expected_outcome(small, damaged)
        assert outcome == expected.outcome, f"bit {bit} (byte {bit // 8}) flipped"
        tally[type(outcome).__name__] += 1
    assert tally["Opened"] > 0, tally
    assert tally["Refused"] > 0, tally
    assert sum(tally.values()) == len(log) * 8
    # Only the last record's bits can be a torn tail; every other bit is refused.
    assert tally["Opened"] == (small.ends[-1] - small.ends[-2]) * 8


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(draw=st.data())
def test_random_flips_and_zeroed_blocks(larger: Pristine, workdir: Path, draw: st.DataObject) -> None:
    """Random bit flips, or a zeroed 512-byte block, in a 30-record log: a prefix or CorruptionError."""
    log = larger.log
    kind = draw.draw(st.sampled_from(["flips", "zero-block", "aligned-zero-block"]), label="kind")
    if kind == "flips":
        bits = draw.draw(st.lists(st.integers(0, len(log) * 8 - 1), min_size=1, max_size=8), label="bits")
        damaged = flip(log, bits)
    else:
        start = draw.draw(st.integers(0, len(log) - 1), label="block start")
        damaged = zero_block(log, start // BLOCK * BLOCK if kind == "aligned-zero-block" else start)
    outcome = open_damaged(larger, workdir / "random", damaged)
    expected = expected_outcome(larger, damaged)
    event(f"{kind}: {type(expected.outcome).__name__}")
    assert outcome == expected.outcome


def test_zeroed_blocks_at_every_aligned_offset(larger: Pristine, workdir: Path) -> None:
    """Every 512-byte-aligned block of the 30-record log zeroed in turn: a prefix or CorruptionError."""
    log = larger.log
    seen: Counter[str] = Counter()
    for start in range(0, len(log), BLOCK):
        damaged = zero_block(log, start)
        outcome = open_damaged(larger, workdir / "aligned", damaged)
        expected = expected_outcome(larger, damaged)
        seen[type(outcome).__name__] += 1
        assert outcome == expected.outcome, f"block at {start} zeroed"
    assert seen["Refused"] > 0, seen


# -- regressions: found by this module, pinned before the fix ----------------------


def test_zeroed_record_header_before_intact_records_is_refused(small: Pristine, workdir: Path) -> None:
    """A record whose frame header was zeroed, followed by intact durable records, is damage: refused."""
    start = small.ends[1]
    damaged = zero_block(small.log, start, FRAME_HEADER_SIZE)
    assert expected_outcome(small, damaged) == Expected(Refused(start))
    assert open_damaged(small, workdir / "zero-header", damaged) == Refused(start)


def test_zeroed_block_from_a_boundary_keeps_the_cut_bytes(small: Pristine, workdir: Path) -> None:
    """Zeros from a record boundary into the last record: the non-zero rest is cut to a side file."""
    start, last = small.ends[-3], small.ends[-2]
    damaged = zero_block(small.log, start, last - start + 10)
    expected = Opened(small.states[-3], {f"{LOG_NAME}.tr1": damaged[start:].rstrip(b"\0")})
    assert expected_outcome(small, damaged) == Expected(expected)
    assert open_damaged(small, workdir / "zero-run", damaged) == expected
