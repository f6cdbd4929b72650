"""Torn tails: the log cut at every byte of its last two records, and LevelDB's named tail cases.

After a cut, opening must show exactly the state after the records that are
still complete (the model's, replayed on ``InMemorySessionStore``), keep the
log's complete prefix byte for byte, and copy the cut bytes to a side file
``sessions.log.trN`` (none when the cut falls on a frame boundary). A snapshot
that covers past the cut must be refused; one that does not is used. A second
open changes nothing, and the store then accepts writes.

The side file holds the cut bytes less trailing zero bytes: a zero byte at
the end of the file cannot be told from preallocated space (``LogFile.check_tail``),
so the tests check that whatever the side file lacks is zeros.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final

import pytest

from filestore import CorruptionError, FileSessionStore
from filestore.engine.framing import FRAME_HEADER_SIZE
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME

from .support import ctx
from .support.corruption import (
    Op,
    Pristine,
    State,
    build_pristine,
    damaged_copy,
    frame_ends,
    observe,
    reopen,
    session_data,
    side_files,
    verified_snapshot,
)

# Creates, updates and removes; the last two records are a remove and an
# update, and both move a user lookup.
OPERATIONS: Final = (
    Op("create", user="u0"),
    Op("create", user="u1"),
    Op("create", user="u0"),
    Op("update", target=0),
    Op("remove", target=1),
    Op("update", target=2),
)
N: Final = len(OPERATIONS)
LENGTH_FIELD: Final = 20  # offset of the payload length (u32) in a frame header; see filestore.engine.framing


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """A closed 6-record store, with snapshots taken after records 4 and 5 kept aside."""
    return build_pristine(
        tmp_path_factory.mktemp("torn") / "store", OPERATIONS, snapshot_after=(N - 2, N - 1)
    )


def snapshot_of(pristine: Pristine, mode: str) -> tuple[bytes | None, int]:
    """The snapshot file of ``mode`` and the log position it covers (0 for none)."""
    if mode == "none":
        return None, 0
    if mode == "final":
        return (pristine.directory / SNAPSHOT_NAME).read_bytes(), pristine.ends[N]
    records = {"mid": N - 1, "early": N - 2}[mode]
    return pristine.snapshots[records], pristine.ends[records]


def check_recovery(
    pristine: Pristine, where: Path, log: bytes, snapshot: bytes | None, *, records: int, cut: bytes
) -> None:
    """Open the damaged copy: state after ``records`` records, ``cut`` kept aside, idempotent, writable."""
    damaged_copy(pristine, where, log, snapshot=snapshot)
    kept = pristine.ends[records]
    context = f"log of {len(log)} bytes, {records} records complete"

    assert reopen(where, pristine.users) == pristine.states[records], context
    assert (where / LOG_NAME).read_bytes() == pristine.log[:kept], context
    evidence = side_files(where)
    # Trailing zero bytes cannot be told from preallocated space, so they are not kept.
    assert evidence == ({f"{LOG_NAME}.tr1": cut.rstrip(b"\0")} if cut.rstrip(b"\0") else {}), context
    rewritten = verified_snapshot(where)
    assert rewritten is not None, f"{context}: the snapshot is not valid after reopening"
    assert rewritten.position == kept, context

    assert reopen(where, pristine.users) == pristine.states[records], f"{context}: second open"
    assert (where / LOG_NAME).read_bytes() == pristine.log[:kept], f"{context}: second open"
    assert side_files(where) == evidence, f"{context}: second open"

    with FileSessionStore(where) as store:
        key = store.create_session(ctx(user="late"), session_data("late", 99))
    after = reopen(where, (*pristine.users, "late"))
    expected = pristine.states[records]
    assert after == State(
        {**expected.sessions, str(key): session_data("late", 99)}, {**expected.lookup, "late": str(key)}
    ), f"{context}: the write after recovery"


def test_frame_boundaries_from_sizes_match_the_log_walk(pristine: Pristine) -> None:
    """The log's size after each write (preallocate_bytes=0) is where each walked frame ends."""
    assert frame_ends(pristine.directory) == list(pristine.ends[1:])
    assert len(pristine.log) == pristine.ends[N]
    assert pristine.states[N] == reopen(pristine.directory, pristine.users)


@pytest.mark.parametrize("mode", ["none", "final", "mid", "early"])
def test_cut_at_every_offset_of_the_last_two_records(pristine: Pristine, tmp_path: Path, mode: str) -> None:
    """Truncating anywhere in the last two records reopens to the complete ones, cut bytes kept."""
    # The snapshot left in place: none; the one close wrote (covers the whole log, so
    # refused after any cut); one written after record 5 (refused for cuts inside
    # record 5, used for cuts inside record 6); one written after record 4 (always used).
    snapshot, covers = snapshot_of(pristine, mode)
    for size in range(pristine.ends[N - 2], pristine.ends[N] + 1):
        records = pristine.complete_records(size)
        where = tmp_path / "cut"
        damaged_copy(pristine, where, pristine.log[:size], snapshot=snapshot)
        if snapshot is not None:
            refused = verified_snapshot(where) is None
            assert refused == (covers > size), f"cut at {size}: snapshot covering {covers}"
        check_recovery(
            pristine,
            where,
            pristine.log[:size],
            snapshot,
            records=records,
            cut=pristine.log[pristine.ends[records] : size],
        )


@pytest.mark.parametrize("mode", ["none", "final"])
def test_zero_filled_tail_is_a_clean_end(pristine: Pristine, tmp_path: Path, mode: str) -> None:
    """Zeros after the last record (preallocated space) end the log: nothing cut, no side file."""
    snapshot, _ = snapshot_of(pristine, mode)
    check_recovery(pristine, tmp_path / "z", pristine.log + bytes(10_000), snapshot, records=N, cut=b"")


@pytest.mark.parametrize("mode", ["none", "final"])
def test_garbage_filled_tail_is_cut_to_a_side_file(pristine: Pristine, tmp_path: Path, mode: str) -> None:
    """Random bytes after the last record (ALICE's garbage append) are cut and kept in a side file."""
    snapshot, _ = snapshot_of(pristine, mode)
    garbage = bytes((n * 151 + 7) % 251 + 1 for n in range(3000))
    check_recovery(pristine, tmp_path / "g", pristine.log + garbage, snapshot, records=N, cut=garbage)


@pytest.mark.parametrize("keep", [1, FRAME_HEADER_SIZE - 1, FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + 5, -1])
def test_partial_last_record_is_ignored(pristine: Pristine, tmp_path: Path, keep: int) -> None:
    """A last record cut short (inside its header or its payload) is dropped and kept aside."""
    start = pristine.ends[N - 1]
    size = pristine.ends[N] - 1 if keep == -1 else start + keep
    log = pristine.log[:size]
    check_recovery(pristine, tmp_path / "p", log, None, records=N - 1, cut=log[start:])


def test_partial_last_record_in_preallocated_space_is_ignored(pristine: Pristine, tmp_path: Path) -> None:
    """A last record whose second half never reached the disk (zeros there) is dropped and kept aside."""
    start, end = pristine.ends[N - 1], pristine.ends[N]
    middle = (start + end) // 2
    log = pristine.log[:middle] + bytes(end - middle + 4096)
    check_recovery(pristine, tmp_path / "pz", log, None, records=N - 1, cut=log[start:])


@pytest.mark.parametrize("length", ["longer-than-the-file", "one-less", "one-more", "over-the-format-limit"])
def test_bad_length_at_end_is_ignored(pristine: Pristine, tmp_path: Path, length: str) -> None:
    """A last record whose length field is damaged is cut, not trusted to find the next frame."""
    start, end = pristine.ends[N - 1], pristine.ends[N]
    payload = end - start - FRAME_HEADER_SIZE
    value = {
        "longer-than-the-file": payload + 1000,
        "one-less": payload - 1,
        "one-more": payload + 1,
        "over-the-format-limit": 0xFFFF_FFFF,
    }[length]
    log = bytearray(pristine.log)
    struct.pack_into("<I", log, start + LENGTH_FIELD, value)
    check_recovery(pristine, tmp_path / "l", bytes(log), None, records=N - 1, cut=bytes(log[start:]))


@pytest.mark.parametrize("mode", ["none", "final", "mid"])
def test_checksum_mismatch_in_the_last_record_is_cut(pristine: Pristine, tmp_path: Path, mode: str) -> None:
    """A flipped payload byte in the last record fails its checksum: that record is cut and kept aside."""
    snapshot, _ = snapshot_of(pristine, mode)
    start = pristine.ends[N - 1]
    log = bytearray(pristine.log)
    log[start + FRAME_HEADER_SIZE + 3] ^= 0x55
    check_recovery(pristine, tmp_path / "c", bytes(log), snapshot, records=N - 1, cut=bytes(log[start:]))


def test_checksum_mismatch_before_an_intact_record_is_refused(pristine: Pristine, tmp_path: Path) -> None:
    """A damaged next-to-last record followed by an intact, later-synced one is refused, nothing cut."""
    start = pristine.ends[N - 2]
    log = bytearray(pristine.log)
    log[start + FRAME_HEADER_SIZE + 3] ^= 0x55
    where = damaged_copy(pristine, tmp_path / "m", bytes(log), snapshot=None)
    for _attempt in range(2):
        with pytest.raises(CorruptionError) as info:
            FileSessionStore(where)
        assert info.value.path == str(where / LOG_NAME)
        assert info.value.offset == start
        assert "fsck" in str(info.value)
        assert (where / LOG_NAME).read_bytes() == bytes(log), "a refused open changed the log"
        assert side_files(where) == {}


def test_recovered_store_reads_like_the_model(pristine: Pristine, tmp_path: Path) -> None:
    """After a cut, a handle kept open reads exactly the model's state (no reopen in between)."""
    where = damaged_copy(pristine, tmp_path / "o", pristine.log[: pristine.ends[N] - 3], snapshot=None)
    with FileSessionStore(where) as store:
        assert observe(store, pristine.users) == pristine.states[N - 1]
        assert len(store.session_keys()) == len(pristine.states[N - 1].sessions)
