"""Recovering a damaged log header's store UUID and generation from what the records are salted with."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from filestore import FileSessionStore
from filestore.engine.fileio import OS_IO
from filestore.engine.framing import FILE_HEADER_SIZE, FileHeader
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME
from filestore.offline.compact import compact
from filestore.offline.fsck import fsck
from filestore.offline.headerrecovery import recover_header

from .support import ctx, data
from .support.corruption import frame_ends


def make_store(directory: Path, sessions: int = 3, compactions: int = 0) -> FileHeader:
    with FileSessionStore(directory, preallocate_bytes=0) as store:
        for number in range(sessions):
            store.create_session(ctx(user=f"u{number}"), data(ctx(user=f"u{number}")))
    for _ in range(compactions):
        compact(directory)
    header = FileHeader.decode((directory / LOG_NAME).read_bytes())
    assert header is not None
    return header


def write_header(directory: Path, raw: bytes) -> None:
    log = bytearray((directory / LOG_NAME).read_bytes())
    log[:FILE_HEADER_SIZE] = raw
    (directory / LOG_NAME).write_bytes(bytes(log))


@contextmanager
def opened(directory: Path) -> Iterator[int]:
    fd = OS_IO.open(str(directory / LOG_NAME))
    try:
        yield fd
    finally:
        OS_IO.close(fd)


def recovered(directory: Path) -> FileHeader | None:
    with opened(directory) as fd:
        found = recover_header(OS_IO, str(directory), fd)
    return None if found is None else found[0]


def test_a_zeroed_header_comes_back_from_the_identity_file_and_snapshot(tmp_path: Path) -> None:
    """All 40 bytes zeroed: the UUID from filestore.json, the generation found by the records."""
    header = make_store(tmp_path / "s", compactions=2)
    write_header(tmp_path / "s", bytes(FILE_HEADER_SIZE))
    assert recovered(tmp_path / "s") == header


def test_a_generation_no_file_remembers_is_found_by_search(tmp_path: Path) -> None:
    """Generation 4 with its field damaged and no snapshot or old log to hint at it: searched for."""
    header = make_store(tmp_path / "s", compactions=3)
    (tmp_path / "s" / SNAPSHOT_NAME).unlink()
    damaged = bytearray(header.encode())
    damaged[28:36] = (2**40).to_bytes(8, "little")
    write_header(tmp_path / "s", bytes(damaged))
    assert header.generation == 4
    assert recovered(tmp_path / "s") == header


def test_the_uuid_comes_from_the_damaged_header_when_the_identity_file_is_gone(tmp_path: Path) -> None:
    """No identity file, header CRC broken: the UUID left in the header is tried and verified."""
    header = make_store(tmp_path / "s")
    os.unlink(tmp_path / "s" / "filestore.json")
    damaged = bytearray(header.encode())
    damaged[-1] ^= 0xFF
    write_header(tmp_path / "s", bytes(damaged))
    assert recovered(tmp_path / "s") == header


def test_a_wrong_identity_everywhere_is_not_recovered(tmp_path: Path) -> None:
    """Identity file and header both name another store: nothing verifies, so nothing is guessed."""
    make_store(tmp_path / "s")
    other = uuid.uuid4()
    (tmp_path / "s" / "filestore.json").write_text(json.dumps({"store_uuid": str(other)}))
    write_header(tmp_path / "s", FileHeader(other, 1).encode()[:-1] + b"\x00")
    assert recovered(tmp_path / "s") is None


@pytest.mark.parametrize("generation", [1, 3])
def test_an_empty_log_takes_the_identity_files_uuid(tmp_path: Path, generation: int) -> None:
    """No record proves anything: the identity file's UUID, the snapshot's generation (else 1)."""
    directory = tmp_path / "s"
    make_store(directory, sessions=0, compactions=generation - 1)
    meta = json.loads((directory / "filestore.json").read_text())
    write_header(directory, bytes(FILE_HEADER_SIZE))
    found = recovered(directory)
    assert found is not None
    assert str(found.store_uuid) == meta["store_uuid"]
    expected = generation if (directory / SNAPSHOT_NAME).exists() else 1
    assert found.generation == expected


def zero_start(directory: Path, length: int) -> None:
    log = bytearray((directory / LOG_NAME).read_bytes())
    log[:length] = bytes(length)
    (directory / LOG_NAME).write_bytes(bytes(log))


def test_a_lost_header_and_first_records_are_found_by_a_later_records_salt(tmp_path: Path) -> None:
    """Header and first records zeroed in generation 5, no snapshot or old log to hint at it: the
    generation is the one whose salt verifies the records after the damage."""
    directory = tmp_path / "s"
    header = make_store(directory, sessions=12, compactions=4)
    (directory / SNAPSHOT_NAME).unlink()
    zero_start(directory, 512)
    assert header.generation == 5
    assert recovered(directory) == header


def test_records_of_an_older_generation_do_not_decide_the_generation(tmp_path: Path) -> None:
    """Header and records 1-2 zeroed in generation 3, record 3 overwritten by its copy from
    generation 1 (a misdirected write, so the first frame after the damage verifies under another
    generation): the generation whose salt verifies the most records after the damage wins."""
    directory = tmp_path / "s"
    make_store(directory, sessions=12)
    old, old_ends = (directory / LOG_NAME).read_bytes(), frame_ends(directory)
    compact(directory)
    compact(directory)
    log = (directory / LOG_NAME).read_bytes()
    header, ends = FileHeader.decode(log), frame_ends(directory)
    assert header is not None
    assert header.generation == 3
    assert ends[1:3] == old_ends[1:3], "compaction wrote record 3 where generation 1 had it"
    (directory / SNAPSHOT_NAME).unlink()
    damaged = bytes(ends[1]) + old[old_ends[1] : old_ends[2]] + log[ends[2] :]
    (directory / LOG_NAME).write_bytes(damaged)
    assert recovered(directory) == header


def test_a_header_no_record_can_vouch_for_is_left_as_it_is_and_said_so(tmp_path: Path) -> None:
    """Header zeroed and every record overwritten (nothing left that verifies under any generation):
    the repair changes nothing, exits 4 and says the header cannot be rebuilt and why; it never
    claims the store corrected."""
    directory = tmp_path / "s"
    make_store(directory, sessions=5, compactions=1)
    (directory / SNAPSHOT_NAME).unlink()
    size = (directory / LOG_NAME).stat().st_size
    (directory / LOG_NAME).write_bytes(bytes(FILE_HEADER_SIZE) + b"\xaa" * (size - FILE_HEADER_SIZE))
    before = (directory / LOG_NAME).read_bytes()
    for repair in (False, True):
        report = fsck(directory, repair=repair)
        assert report.exit_code == 4
        [finding] = [finding for finding in report.errors if finding.kind == "log-header"]
        assert "cannot be rebuilt" in finding.detail, finding.detail
        assert "no record" in finding.detail, finding.detail
        assert (directory / LOG_NAME).read_bytes() == before
