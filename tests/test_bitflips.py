"""Bit flips and zeroed blocks anywhere in the log: a clean prefix or the typed error, never wrong data.

After any single bit flip of a small store's log, opening either succeeds
with the contents after some prefix of its records (damage at the tail is
cut) or raises ``CorruptionError`` naming the log (damage before a record
known durable). Nothing else: no wrong data, no other exception.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filestore import CorruptionError

from .damage import Pristine, build_pristine, damaged_copy, observe


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    return build_pristine(tmp_path_factory.mktemp("flips") / "store", operations=4, payload=8)


@pytest.fixture(scope="module")
def larger(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    return build_pristine(tmp_path_factory.mktemp("flips-large") / "store", operations=30, payload=60)


def outcome(pristine: Pristine, where: Path, log: bytes) -> str:
    """'prefix' or 'refused'; fails the test on anything else."""
    damaged_copy(pristine, where, log, keep_snapshot=False)
    refused: CorruptionError | None = None
    try:
        seen = observe(where)
    except CorruptionError as error:
        refused = error
    if refused is not None:
        assert refused.path.endswith("sessions.log")
        assert isinstance(refused.offset, int)
        assert "fsck" in str(refused)
        return "refused"
    assert seen in pristine.states, "a damaged log opened with contents no prefix of it had"
    return "prefix"


def test_every_single_bit_flip(small: Pristine, tmp_path: Path) -> None:
    """Flip each bit of a 4-record log in turn: always a clean prefix or CorruptionError; both occur."""
    log = small.log
    outcomes = {"prefix": 0, "refused": 0}
    for bit in range(len(log) * 8):
        damaged = bytearray(log)
        damaged[bit // 8] ^= 1 << (bit % 8)
        outcomes[outcome(small, tmp_path / "flip", bytes(damaged))] += 1
    print(f"{len(log) * 8} bit flips: {outcomes}")
    assert outcomes["prefix"] > 0
    assert outcomes["refused"] > 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_bit_flips_and_zeroed_blocks(larger: Pristine, tmp_path: Path, data: st.DataObject) -> None:
    """Random bit flips, or a zeroed 512-byte block, anywhere in a 30-record log."""
    log = bytearray(larger.log)
    if data.draw(st.booleans(), label="zero a block"):
        start = data.draw(st.integers(0, len(log) - 1), label="block start")
        log[start : start + 512] = bytes(len(log[start : start + 512]))
    else:
        for bit in data.draw(
            st.lists(st.integers(0, len(log) * 8 - 1), min_size=1, max_size=4), label="bits"
        ):
            log[bit // 8] ^= 1 << (bit % 8)
    outcome(larger, tmp_path / "random", bytes(log))
