"""fsck streams the log: its memory follows the index, never the log's bytes.

A log of fat records (``SESSIONS`` sessions of about 1 MB each) is checked
and repaired under ``tracemalloc``; the peak of the Python heap fsck
allocates must stay below a quarter of the log's size. Reading the whole
log, or keeping every record's payload, costs at least the log's size (it
cost about four times that), whatever the damage: so the bound pins that
fsck reads frames a chunk at a time, keeps only where each record is, and
reads a payload again when it needs it.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from filestore import CorruptionError, FileSessionStore, SessionData
from filestore.engine.fileio import OS_IO
from filestore.engine.framing import FILE_HEADER_SIZE, FRAME_HEADER_SIZE, Probe
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME
from filestore.engine.logfile import READ_CHUNK, LogFile
from filestore.offline.compact import compact
from filestore.offline.fsck import EXIT_CLEAN, EXIT_CORRECTED, EXIT_UNCORRECTED, FsckReport, fsck

from .support import ctx, data

SESSIONS = 50
CONTEXT_BYTES = 1 << 20
PEAK_SHARE_OF_LOG = 3  # the peak must stay below the log's size divided by this


@attrs.frozen
class FatStore:
    """A closed store of ``SESSIONS`` sessions of about 1 MB each, and where its records are."""

    directory: Path
    offsets: list[int]  # record n (1-based) starts at offsets[n - 1]
    log_bytes: int


def _session(user: str, number: int) -> SessionData:
    return attrs.evolve(
        data(ctx(user=user), step=number),
        context_json=json.dumps({"n": number, "history": "x" * CONTEXT_BYTES}),
    )


@pytest.fixture(scope="module")
def fat_store(tmp_path_factory: pytest.TempPathFactory) -> FatStore:
    """Built once; each test works on a copy."""
    directory = tmp_path_factory.mktemp("fat") / "store"
    with FileSessionStore(directory, durability="none", preallocate_bytes=0) as store:
        for number in range(SESSIONS):
            store.create_session(ctx(user=f"u{number}"), _session(f"u{number}", number))
    log = (directory / LOG_NAME).read_bytes()
    offsets = []
    offset = FILE_HEADER_SIZE
    while offset < len(log):
        offsets.append(offset)
        offset += FRAME_HEADER_SIZE + int.from_bytes(log[offset + 20 : offset + 24], "little")
    assert len(offsets) == SESSIONS
    return FatStore(directory, offsets, len(log))


def _flip_in_record_3(store: FatStore, log: bytearray) -> None:
    """Damage in the middle: valid records follow a bad one, so fsck resynchronises past it."""
    log[store.offsets[2] + FRAME_HEADER_SIZE + 5] ^= 0xFF


def _copy_record_10_over_20(store: FatStore, log: bytearray) -> None:
    """A misdirected write: record 10's frame (same length) over record 20's, whose payloads
    fsck must compare to tell a copy from the original."""
    frame = bytes(log[store.offsets[9] : store.offsets[10]])
    log[store.offsets[19] : store.offsets[19] + len(frame)] = frame


def _torn_tail(store: FatStore, log: bytearray) -> None:
    """The last record half written."""
    del log[store.offsets[-1] + CONTEXT_BYTES // 2 :]


@attrs.frozen
class Case:
    damage: Callable[[FatStore, bytearray], None] | None
    repair: bool
    exit_code: int
    lost: list[int]


CASES = {
    "check-clean": Case(None, False, EXIT_CLEAN, []),
    "check-middle-damage": Case(_flip_in_record_3, False, EXIT_UNCORRECTED, [3]),
    "repair-middle-damage": Case(_flip_in_record_3, True, EXIT_CORRECTED, [3]),
    "repair-misdirected": Case(_copy_record_10_over_20, True, EXIT_CORRECTED, [20]),
    "repair-torn-tail": Case(_torn_tail, True, EXIT_CORRECTED, []),
}


def _traced_fsck(directory: Path, *, repair: bool) -> tuple[FsckReport, int]:
    """fsck's report, and the peak of the Python heap it allocated."""
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        report = fsck(directory, repair=repair)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    return report, peak


@pytest.mark.parametrize("name", sorted(CASES))
def test_fsck_memory_stays_far_below_the_log_size(fat_store: FatStore, tmp_path: Path, name: str) -> None:
    """fsck (and its repair) of a 50 MB log of 1 MB records, clean or damaged, allocates
    less than a third of the log's size at its peak, and finds exactly what it finds otherwise."""
    case = CASES[name]
    directory = tmp_path / "store"
    shutil.copytree(fat_store.directory, directory)
    if case.damage is not None:
        log = bytearray((directory / LOG_NAME).read_bytes())
        case.damage(fat_store, log)
        (directory / LOG_NAME).write_bytes(log)

    report, peak = _traced_fsck(directory, repair=case.repair)

    assert (report.exit_code, report.lost) == (case.exit_code, case.lost), list(report.to_dict().items())
    assert peak < fat_store.log_bytes // PEAK_SHARE_OF_LOG, (
        f"fsck allocated {peak:,} bytes at its peak for a log of {fat_store.log_bytes:,}"
    )
    if case.repair:
        after = fsck(directory)
        assert after.exit_code == EXIT_CLEAN, list(after.to_dict().items())
        assert after.sessions == SESSIONS - len(case.lost) - (name == "repair-torn-tail")


def test_opening_past_damage_in_the_middle_does_not_read_the_log_whole(
    fat_store: FatStore, tmp_path: Path
) -> None:
    """Opening (no snapshot: a replay) stops at a damaged record 3 of 50 and refuses, having
    looked for valid records after it a chunk at a time: under a third of the log allocated."""
    directory = tmp_path / "store"
    shutil.copytree(fat_store.directory, directory)
    (directory / SNAPSHOT_NAME).unlink()
    log = bytearray((directory / LOG_NAME).read_bytes())
    _flip_in_record_3(fat_store, log)
    (directory / LOG_NAME).write_bytes(log)

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        with pytest.raises(CorruptionError, match="fsck --repair") as refused:
            FileSessionStore(directory).close()
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()

    assert refused.value.offset == fat_store.offsets[2]
    assert peak < fat_store.log_bytes // PEAK_SHARE_OF_LOG, (
        f"opening allocated {peak:,} bytes at its peak for a log of {fat_store.log_bytes:,}"
    )


def test_records_longer_than_a_read_chunk_are_read_whole(tmp_path: Path) -> None:
    """A record longer than the log's read chunk (4 MB; records may reach 16 MB) is read
    whole wherever it starts: the chunked walk, fsck and compaction all keep it."""
    directory = tmp_path / "store"
    size = READ_CHUNK + (1 << 20)
    with FileSessionStore(directory, preallocate_bytes=0) as store:
        keys = [
            store.create_session(
                ctx(user=f"u{number}"),
                attrs.evolve(data(ctx(user=f"u{number}"), step=number), context_json=json.dumps("x" * size)),
            )
            for number in range(3)
        ]
    log = LogFile.open(OS_IO, str(directory), readonly=True)
    try:
        walked = [(probe, frame.seq if frame else None) for probe, frame, _ in log.frames(FILE_HEADER_SIZE)]
    finally:
        log.close()
    assert walked == [(Probe.FRAME, 1), (Probe.FRAME, 2), (Probe.FRAME, 3), (Probe.END, None)]
    report = fsck(directory)
    assert (report.exit_code, report.records) == (EXIT_CLEAN, 3), list(report.to_dict().items())
    assert compact(directory).live_records == 3
    with FileSessionStore(directory) as store:
        assert all(store.get_session(key) is not None for key in keys)
