"""Damage in the middle of the log, in every durability mode: opening never cuts a record that verifies.

A bad record followed by valid ones is not a torn tail, whatever the mode
the log was written in and however its writer ended (killed, or closed
cleanly): opening refuses with ``CorruptionError`` naming the bad record's
offset and pointing at ``filestore fsck --repair``, changes no file, and
the repair then keeps every record whose bytes are intact.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Final

import pytest

from filestore import CorruptionError, FileSessionStore, SessionKey, compact, fsck
from filestore.engine.fileio import OS_IO
from filestore.engine.framing import FILE_HEADER_SIZE, Frame
from filestore.engine.layout import LOG_NAME
from filestore.engine.logfile import LogFile

from .support import ctx, data

FORK = multiprocessing.get_context("fork")
SESSIONS: Final = 20
DAMAGED: Final = 3  # the record number damaged, counted from 1


def write_sessions(directory: Path, durability: str, keys_file: Path, *, kill: bool) -> None:
    """Create ``SESSIONS`` sessions (one record each), write their keys to ``keys_file``; then die
    by SIGKILL if ``kill``, else close the store."""
    store = FileSessionStore(directory, durability=durability)
    keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(SESSIONS)]
    keys_file.write_text("\n".join(keys))
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)
    store.close()


def log_frames(directory: Path) -> list[Frame]:
    """The log's verified frames, in order."""
    log = LogFile.open(OS_IO, str(directory))
    try:
        return [frame for _, frame, _ in log.frames(FILE_HEADER_SIZE) if frame is not None]
    finally:
        log.close()


def files(directory: Path) -> dict[str, bytes]:
    """Every file of the store but its lock files, by name."""
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.name not in {"LOCK", "OPEN"}}


@pytest.mark.parametrize("ending", ["killed", "closed"])
@pytest.mark.parametrize("durability", ["fsync", "group", "none"])
def test_two_damaged_bytes_in_record_3_of_20_refuse_the_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str, ending: str
) -> None:
    """Two damaged bytes in record 3 of 20: opening raises CorruptionError at record 3's offset
    pointing at `filestore fsck --repair`, leaves every file as it was (no side file), and the
    repair keeps the 19 intact sessions, which the store then shows.

    A clean close leaves a snapshot, from which opening would not read the log at all: its spot
    checks are made to cover every key, so it is refused (as it is when a spot check lands on
    record 3) and the log replayed."""
    monkeypatch.setattr("filestore.engine.snapshot.SPOT_CHECKS", SESSIONS)
    directory, keys_file = tmp_path / "s", tmp_path / "keys"
    writer = FORK.Process(
        target=write_sessions, args=(directory, durability, keys_file), kwargs={"kill": ending == "killed"}
    )
    writer.start()
    writer.join()
    assert writer.exitcode == (-signal.SIGKILL if ending == "killed" else 0)
    keys = [SessionKey(line) for line in keys_file.read_text().splitlines()]
    written = log_frames(directory)
    assert [frame.seq for frame in written] == list(range(1, SESSIONS + 1))
    victim = written[DAMAGED - 1]
    raw = bytearray((directory / LOG_NAME).read_bytes())
    for at in (victim.offset + 40, victim.offset + 41):
        raw[at] ^= 0x5A
    (directory / LOG_NAME).write_bytes(bytes(raw))
    before = files(directory)

    with pytest.raises(CorruptionError, match="fsck --repair") as info:
        FileSessionStore(directory, durability=durability)
    assert info.value.offset == victim.offset
    assert files(directory) == before, "a refused open changes nothing, and cuts nothing to a side file"

    assert fsck(directory, repair=True).exit_code == 1
    with FileSessionStore(directory, durability=durability) as store:
        assert len(store) == SESSIONS - 1
        for number, key in enumerate(keys):
            expected = None if number == DAMAGED - 1 else data(ctx(user=f"u{number}"), step=number)
            assert store.get_session(key) == expected


def test_damage_a_snapshot_covers_is_found_on_read_and_by_fsck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What docs/format.md says of damage the index snapshot covers: opening replays only the
    log after the snapshot, so it opens; a read or update of the session whose current record is
    damaged raises CorruptionError (the others read as before; removing it reads nothing); a
    damaged record no session points at any more is never read; fsck, which reads every record,
    reports both (exit 4); compaction refuses.

    The snapshot's spot checks are turned off, so the damage is never found by chance on open."""
    monkeypatch.setattr("filestore.engine.snapshot.SPOT_CHECKS", 0)
    directory = tmp_path / "s"
    with FileSessionStore(directory) as store:
        keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(3)]
        store.update_session(keys[0], data(ctx(user="u0"), step=10))  # record 1 is now dead
    assert (directory / "sessions.idx").exists()
    frames = log_frames(directory)
    raw = bytearray((directory / LOG_NAME).read_bytes())
    for victim in (frames[0], frames[1]):  # the dead first value of u0, and u1's only record
        raw[victim.offset + 40] ^= 0x5A
    (directory / LOG_NAME).write_bytes(bytes(raw))

    with FileSessionStore(directory) as store:
        assert store.get_session(keys[0]) == data(ctx(user="u0"), step=10)
        assert store.get_session(keys[2]) == data(ctx(user="u2"), step=2)
        with pytest.raises(CorruptionError, match="no longer verifies"):
            store.get_session(keys[1])
        with pytest.raises(CorruptionError, match="no longer verifies"):
            store.find_by_user(ctx(user="u1"), "u1")
        with pytest.raises(CorruptionError, match="no longer verifies"):
            store.update_session(keys[1], data(ctx(user="u1"), step=11))
        store.remove_session(keys[1])  # reads nothing: the damaged record is now a dead one
        assert store.get_session(keys[1]) is None
    report = fsck(directory)
    assert report.exit_code == 4
    assert [finding.offset for finding in report.errors if finding.kind == "damaged-record"] == [
        frames[0].offset
    ]
    assert list(report.lost) == [1, 2]
    with pytest.raises(CorruptionError, match="fsck --repair"):
        compact(directory)
