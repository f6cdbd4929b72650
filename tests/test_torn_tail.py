"""Torn tails (LevelDB's log_test cases, ZODB's testRecover): cut at every byte of the last two records.

Opening must show exactly the records that are complete, keep the cut bytes
in a side file (less trailing zeros, which cannot be told from preallocated
space), change nothing more when opened again, and accept writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from filestore import FileSessionStore

from .damage import Pristine, build_pristine, damaged_copy, observe, side_files
from .test_contract import ctx, data


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    return build_pristine(tmp_path_factory.mktemp("torn") / "store", operations=6)


def check_recovers(pristine: Pristine, where: Path, log: bytes, cut_at: int, *, keep_snapshot: bool) -> None:
    damaged_copy(pristine, where, log, keep_snapshot=keep_snapshot)
    assert observe(where) == pristine.state_at(cut_at), f"cut at {cut_at}"
    boundary = max([end for end in pristine.boundaries if end <= cut_at], default=0)
    cut = log[max(boundary, 40) :].rstrip(b"\0")
    evidence = side_files(where)
    if cut:
        assert list(evidence.values()) == [cut], f"cut at {cut_at}: the side file must hold the cut bytes"
    else:
        assert evidence == {}
    assert observe(where) == pristine.state_at(cut_at), "a second open changed the store"
    assert side_files(where) == evidence
    with FileSessionStore(where) as store:
        key = store.create_session(ctx(user="after"), data(ctx(user="after")))
        assert store.get_session(key) == data(ctx(user="after"))


@pytest.mark.parametrize("keep_snapshot", [False, True], ids=["no-snapshot", "stale-snapshot"])
def test_truncation_at_every_offset_of_the_last_two_records(
    pristine: Pristine, tmp_path: Path, keep_snapshot: bool
) -> None:
    """Truncating the log anywhere inside its last two records reopens to the complete ones."""
    log = pristine.log
    start = pristine.boundaries[-3]
    for cut_at in range(start, len(log) + 1):
        check_recovers(pristine, tmp_path / "cut", log[:cut_at], cut_at, keep_snapshot=keep_snapshot)


def test_zero_filled_tail_is_a_clean_end(pristine: Pristine, tmp_path: Path) -> None:
    """Zeros after the last record (preallocated space) are the end of the log: nothing cut."""
    log = pristine.log + bytes(10_000)
    check_recovers(pristine, tmp_path / "z", log, len(log), keep_snapshot=False)
    assert side_files(tmp_path / "z") == {}


def test_garbage_filled_tail_is_cut(pristine: Pristine, tmp_path: Path) -> None:
    """Random bytes appended after the last record are cut, and kept in a side file."""
    garbage = os.urandom(3000).replace(b"\0", b"\1")
    damaged_copy(pristine, tmp_path / "g", pristine.log + garbage, keep_snapshot=False)
    assert observe(tmp_path / "g") == pristine.states[-1]
    assert list(side_files(tmp_path / "g").values()) == [garbage]


def test_partial_last_record_is_ignored(pristine: Pristine, tmp_path: Path) -> None:
    """A record whose tail never reached the disk (zeros instead) is cut."""
    log = bytearray(pristine.log)
    last_start = pristine.boundaries[-2]
    log[last_start + 40 :] = bytes(len(log) - last_start - 40)
    damaged_copy(pristine, tmp_path / "p", bytes(log), keep_snapshot=False)
    assert observe(tmp_path / "p") == pristine.states[-2]


def test_bad_length_at_end_is_ignored(pristine: Pristine, tmp_path: Path) -> None:
    """A last record whose length field is damaged is cut, not trusted."""
    log = bytearray(pristine.log)
    log[pristine.boundaries[-2] + 20] ^= 0x40
    damaged_copy(pristine, tmp_path / "l", bytes(log), keep_snapshot=False)
    assert observe(tmp_path / "l") == pristine.states[-2]


def test_checksum_mismatch_in_the_last_record_is_cut(pristine: Pristine, tmp_path: Path) -> None:
    """A flipped byte in the last record's payload fails its checksum: the record is cut."""
    log = bytearray(pristine.log)
    log[-5] ^= 0xFF
    damaged_copy(pristine, tmp_path / "c", bytes(log), keep_snapshot=True)
    assert observe(tmp_path / "c") == pristine.states[-2]
    assert side_files(tmp_path / "c")
