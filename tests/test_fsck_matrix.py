"""fsck against the bit-flip and zeroed-block damage of ``test_bitflip_damage``: found, repaired, clean.

For each damaged copy of a closed store:

- ``fsck`` finds the damage (exit 4) and changes no byte;
- ``fsck --repair`` corrects it (exit 1), and ``fsck`` then reports the store
  clean (exit 0);
- the store opens, from its log alone, showing exactly what its intact
  records say: every record whose bytes survived, replayed in order (the
  model, ``state_of_intact_records``); only damaged records are lost;
- for a bit flip, the damaged record's (or file header's) bytes are kept in
  some file other than the log: a side file or the old generation.

One damage is beyond any log: zeros from a record boundary to the end of the
file look exactly like a log that ends there (fsck says clean, documented in
``docs/cli.md``). The model recognises it and expects that.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest

from filestore import FileSessionStore
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME
from filestore.offline.fsck import fsck

from .support.corruption import (
    BLOCK,
    SMALL,
    Op,
    Pristine,
    State,
    build_pristine,
    flip,
    larger_workload,
    observe,
    state_of_intact_records,
    verified_snapshot,
    zero_block,
)

LARGER = larger_workload(30, seed=7)


@attrs.frozen
class Store:
    """A closed store and the operations that wrote it, one record each."""

    pristine: Pristine
    operations: Sequence[Op]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(build_pristine(tmp_path_factory.mktemp("fsck-flips") / "store", SMALL), SMALL)


@pytest.fixture(scope="module")
def larger(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(build_pristine(tmp_path_factory.mktemp("fsck-larger") / "store", LARGER), LARGER)


@attrs.frozen
class Outcome:
    """What fsck did with one damaged copy, compared whole with the expected outcome."""

    found: int  # the check's exit code
    repaired: int  # the repair's exit code
    left: tuple[str, ...]  # the errors a check after the repair still finds: none, when it is clean
    state: State
    evidence_kept: bool


def run_fsck(pristine: Pristine, where: Path, log: bytes, evidence: bytes | None) -> Outcome:
    """Damage a copy, check it, repair it, check again, open it from its log alone."""
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(pristine.directory, where)
    (where / LOG_NAME).write_bytes(log)
    before = {path.name: path.read_bytes() for path in where.iterdir()}
    found = fsck(where)
    assert {path.name: path.read_bytes() for path in where.iterdir()} == before, "fsck changed the store"
    repaired = fsck(where, repair=True)
    left = tuple(f"{finding.kind}: {finding.detail}" for finding in fsck(where).errors)
    (where / SNAPSHOT_NAME).unlink(missing_ok=True)  # the log itself must hold the repaired state
    with FileSessionStore(where) as store:
        state = observe(store, pristine.users)
    kept = [path.read_bytes() for path in where.iterdir() if path.name != LOG_NAME]
    evidence_kept = evidence is None or any(evidence in raw for raw in kept)
    return Outcome(found.exit_code, repaired.exit_code, left, state, evidence_kept)


def expected_outcome(store: Store, log: bytes) -> tuple[Outcome, bytes | None]:
    """What fsck must do with ``log``, and the damaged bytes it must keep (``None``: nothing to keep)."""
    pristine = store.pristine
    original, ends = pristine.log, pristine.ends
    intact = [log[ends[j - 1] : ends[j]] == original[ends[j - 1] : ends[j]] for j in range(1, len(ends))]
    header_intact = log[: ends[0]] == original[: ends[0]]
    boundary = next((end for end in ends if not log[end:].strip(b"\0")), None)
    if header_intact and boundary is not None and log[:boundary] == original[:boundary]:
        # Zeros from a record boundary on: indistinguishable from a shorter log.
        return Outcome(0, 0, (), pristine.states[ends.index(boundary)], True), None
    damaged = [(0, ends[0])] if not header_intact else []
    damaged += [(ends[j - 1], ends[j]) for j in range(1, len(ends)) if not intact[j - 1]]
    start, end = damaged[0]
    evidence = log[start:end].rstrip(b"\0") or None  # a side file ends at the last non-zero byte
    return Outcome(4, 1, (), state_of_intact_records(pristine, store.operations, intact), True), evidence


def check(store: Store, where: Path, log: bytes, label: str) -> Outcome:
    expected, evidence = expected_outcome(store, log)
    outcome = run_fsck(store.pristine, where, log, evidence)
    assert outcome == expected, label
    return outcome


@pytest.mark.parametrize("name", ["small", "larger"])
def test_the_model_of_intact_records(request: pytest.FixtureRequest, name: str) -> None:
    """The model's baseline: all records intact is the final state; the first n, the state after n."""
    store: Store = request.getfixturevalue(name)
    count = len(store.operations)
    for done in range(count + 1):
        intact = [True] * done + [False] * (count - done)
        assert (
            state_of_intact_records(store.pristine, store.operations, intact) == store.pristine.states[done]
        )


def bits_to_flip(log: bytes, stride: int) -> list[int]:
    """Every bit of the file header and the first record's frame header, then every ``stride``-th bit."""
    dense = range((40 + 28) * 8)
    return sorted(set(dense) | set(range(0, len(log) * 8, stride)))


@pytest.mark.parametrize(
    "stride", [pytest.param(13, id="sampled"), pytest.param(1, marks=pytest.mark.slow, id="all")]
)
def test_single_bit_flips(small: Store, tmp_path: Path, stride: int) -> None:
    """Bit flips in the 4-record log (every bit in the slow lane): each found and repaired."""
    tally: Counter[int] = Counter()
    log = small.pristine.log
    for bit in bits_to_flip(log, stride):
        outcome = check(small, tmp_path / "flip", flip(log, [bit]), f"bit {bit} (byte {bit // 8})")
        tally[outcome.found] += 1
    assert set(tally) == {4}, tally


def test_zeroed_blocks_at_every_offset(larger: Store, tmp_path: Path) -> None:
    """A 512-byte block of the 30-record log zeroed from every 37th byte: found and repaired, or,
    when the zeros start at a record boundary and run to the end, indistinguishable from a short log."""
    tally: Counter[int] = Counter()
    log = larger.pristine.log
    for start in range(0, len(log), 37):
        outcome = check(larger, tmp_path / "zero", zero_block(log, start, BLOCK), f"zeros at {start}")
        tally[outcome.found] += 1
    assert tally[4] > 0, tally


def test_header_zeroed_with_the_first_records(larger: Store, tmp_path: Path) -> None:
    """The header and the records in the first block zeroed: the identity still comes back
    (from the identity file and the snapshot's generation), and every later record is kept."""
    outcome = check(
        larger, tmp_path / "zero", zero_block(larger.pristine.log, 0, BLOCK), "first block zeroed"
    )
    assert outcome.found == 4


def test_header_of_an_empty_log_is_rebuilt(tmp_path: Path) -> None:
    """A store with no record yet and a damaged header: rebuilt from the identity file, then usable."""
    directory = tmp_path / "s"
    FileSessionStore(directory).close()
    raw = bytearray((directory / LOG_NAME).read_bytes())
    raw[20] ^= 0x10
    (directory / LOG_NAME).write_bytes(bytes(raw))
    assert fsck(directory).exit_code == 4
    assert fsck(directory, repair=True).exit_code == 1
    assert fsck(directory).exit_code == 0
    with FileSessionStore(directory) as store:
        assert list(store.session_keys()) == []


def test_every_truncation(small: Store, tmp_path: Path) -> None:
    """The 4-record log cut at every byte: inside a record, a torn tail: found, cut to a side file,
    then clean, with the complete records kept. At a record boundary the log itself looks whole,
    but the snapshot written at close still covers the lost records: fsck finds that (the one
    trace such a cut leaves) and rewrites the snapshot."""
    pristine = small.pristine
    tally: Counter[int] = Counter()
    for size in range(pristine.ends[0], len(pristine.log) + 1):
        log = pristine.log[:size]
        complete = pristine.complete_records(size)
        if size == len(pristine.log):
            expected = Outcome(0, 0, (), pristine.states[complete], True)
            evidence = None
        elif size in pristine.ends:
            expected = Outcome(4, 1, (), pristine.states[complete], True)
            evidence = None
        else:
            expected = Outcome(4, 1, (), pristine.states[complete], True)
            evidence = log[pristine.ends[complete] :].rstrip(b"\0")
        outcome = run_fsck(pristine, tmp_path / "cut", log, evidence)
        assert outcome == expected, f"cut at {size}"
        tally[outcome.found] += 1
    assert tally == {0: 1, 4: len(pristine.log) - pristine.ends[0]}


def test_every_snapshot_bit_flip_is_found_and_rewritten(small: Store, tmp_path: Path) -> None:
    """Each bit of the index snapshot flipped (every 7th): fsck finds it, repair
    rewrites it, and the store then opens with its snapshot accepted, showing the final state."""
    pristine = small.pristine
    snapshot = (pristine.directory / SNAPSHOT_NAME).read_bytes()
    for bit in range(0, len(snapshot) * 8, 7):
        where = tmp_path / "snap"
        if where.exists():
            shutil.rmtree(where)
        shutil.copytree(pristine.directory, where)
        (where / SNAPSHOT_NAME).write_bytes(flip(snapshot, [bit]))
        found = fsck(where)
        assert [finding.kind for finding in found.errors] == ["snapshot"], f"bit {bit}"
        assert fsck(where, repair=True).exit_code == 1, f"bit {bit}"
        assert fsck(where).exit_code == 0, f"bit {bit}"
        assert verified_snapshot(where) is not None, f"bit {bit}: the rewritten snapshot is refused"
        with FileSessionStore(where) as store:
            assert observe(store, pristine.users) == pristine.states[-1], f"bit {bit}"
