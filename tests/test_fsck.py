"""fsck: every kind of damage found, nothing changed without --repair, repair keeps the evidence.

Each kind of damage in ``DAMAGE`` is applied to a copy of one small store;
the same test then checks what fsck finds (exit 4, the finding's kind), that
checking changed no byte of the directory, that ``--repair`` corrects it
(exit 1) keeping the damaged bytes in some file, and that fsck then reports
the store clean and it opens with every session the damage did not touch.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import attrs
import cbor2
import pytest

from filestore import (
    CorruptionError,
    FileSessionStore,
    InvalidInputError,
    LockTimeoutError,
    SessionData,
    StoreInUseError,
)
from filestore.engine.fileio import OS_IO
from filestore.engine.framing import FILE_HEADER_SIZE, FLAG_SYNCED, KIND_PUT, Frame, encode_frame
from filestore.engine.index import Index
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME, temp_path
from filestore.engine.logfile import LogFile
from filestore.engine.records import Put, Remove, decode_record
from filestore.engine.snapshot import encode_snapshot, write_snapshot
from filestore.ids import SessionKey, SessionScope, UserId
from filestore.offline.compact import compact
from filestore.offline.exclusive import replay
from filestore.offline.fsck import FsckAction, FsckReport, FsckSeverity, fsck, iter_findings

from .support import ctx, data
from .support.corruption import verified_snapshot
from .support.fileio import Call, HookedIO, SimulatedCrash, crashing_io
from .support.permissions import mode_of, umask
from .support.waiting import release_once_blocked

SESSIONS = 6
DAMAGED_RECORD = 2  # index of the record the middle-damage cases hit


@attrs.frozen
class Pristine:
    """A closed store of ``SESSIONS`` creates (record i creates ``keys[i]``) and its contents."""

    directory: Path
    keys: list[str]
    contents: dict[str, SessionData]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """One store built once per module; tests damage copies of it."""
    directory = tmp_path_factory.mktemp("fsck") / "pristine"
    with FileSessionStore(directory, preallocate_bytes=0) as store:
        keys = [
            str(store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)))
            for n in range(SESSIONS)
        ]
    return Pristine(directory, keys, contents(directory))


def copy_of(pristine: Pristine, where: Path) -> Path:
    shutil.copytree(pristine.directory, where)
    return where


def contents(directory: Path) -> dict[str, SessionData]:
    """Every session a normal handle sees, by key."""
    with FileSessionStore(directory) as store:
        return {str(key): found for key in store.session_keys() if (found := store.get_session(key))}


def directory_bytes(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` and its bytes."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}


def log_frames(directory: Path) -> list[Frame]:
    log = LogFile.open(OS_IO, str(directory))
    try:
        return [frame for _, frame, _ in log.frames(FILE_HEADER_SIZE) if frame is not None]
    finally:
        log.close()


def log_header_salt(directory: Path) -> int:
    log = LogFile.open(OS_IO, str(directory))
    try:
        return log.salt
    finally:
        log.close()


def kinds(report: FsckReport) -> list[str]:
    return [finding.kind for finding in report.errors]


# -- the damage catalogue ----------------------------------------------------------
# Each applies one kind of damage and returns the bytes repair must keep somewhere
# (None when there is nothing worth keeping: a temp file, a cache).


def torn_tail(directory: Path) -> bytes | None:
    garbage = b"\xf5\x1e\x01\x00half a record"
    with (directory / LOG_NAME).open("ab") as log:
        log.write(garbage)
    return garbage


def damaged_record(directory: Path) -> bytes | None:
    frame = log_frames(directory)[DAMAGED_RECORD]
    raw = bytearray((directory / LOG_NAME).read_bytes())
    raw[frame.offset + frame.size - 3] ^= 0x5A
    (directory / LOG_NAME).write_bytes(bytes(raw))
    return bytes(raw[frame.offset : frame.end])


def bad_payload(directory: Path) -> bytes | None:
    last = log_frames(directory)[-1]
    bad = encode_frame(
        log_header_salt(directory), KIND_PUT, FLAG_SYNCED, last.seq + 1, last.seq, b"\xa1\x01\x02"
    )
    with (directory / LOG_NAME).open("ab") as log:
        log.write(bad)
    return bad


def damaged_snapshot(directory: Path) -> bytes | None:
    raw = bytearray((directory / SNAPSHOT_NAME).read_bytes())
    raw[-5] ^= 0xFF
    (directory / SNAPSHOT_NAME).write_bytes(bytes(raw))
    return None


def _snapshot_edited(directory: Path, edit: Callable[[Index], None]) -> None:
    """Write a snapshot of the log's own index after ``edit``: its checksum and spot checks pass."""
    log = LogFile.open(OS_IO, str(directory))
    try:
        index, _ = replay(log)
        edit(index)
        snapshot = encode_snapshot(
            log.header,
            index,
            position=log.end,
            last_seq=log.last_seq,
            last_frame_offset=log.last_frame_offset,
            last_frame_crc=log.frame_crc_at(log.last_frame_offset),
        )
    finally:
        log.close()
    write_snapshot(OS_IO, str(directory), snapshot, mode=0o600)


def snapshot_missing_a_session(directory: Path) -> bytes | None:
    """A snapshot whose checksum and spot checks pass, but that forgot one session."""

    def forget_a_session(index: Index) -> None:
        forgotten = next(iter(index.entries))
        entry = index.entries.pop(forgotten)
        index.live_bytes -= entry.size
        index.by_user = {scope: key for scope, key in index.by_user.items() if key != forgotten}

    _snapshot_edited(directory, forget_a_session)
    return None


def snapshot_missing_a_lookup(directory: Path) -> bytes | None:
    """A snapshot whose sessions all agree with the log, but whose user lookup forgot one user."""

    def forget_a_lookup(index: Index) -> None:
        del index.by_user[next(iter(index.by_user))]

    _snapshot_edited(directory, forget_a_lookup)
    return None


def foreign_identity(directory: Path) -> bytes | None:
    meta = json.loads((directory / "filestore.json").read_text())
    meta["store_uuid"] = str(uuid.uuid4())
    (directory / "filestore.json").write_text(json.dumps(meta))
    return (directory / "filestore.json").read_bytes()


def stray_temp_file(directory: Path) -> bytes | None:
    Path(temp_path(str(directory), SNAPSHOT_NAME)).write_bytes(b"half a snapshot")
    return None


def interrupted_compaction(directory: Path) -> bytes | None:
    log = LogFile.open(OS_IO, str(directory))
    try:
        replay(log)
        seal = log.append_seal(log.header.generation + 1)
    finally:
        log.close()
    return (directory / LOG_NAME).read_bytes()[seal.offset : seal.end]


def damaged_header(directory: Path) -> bytes | None:
    """A flipped bit in the log's generation field: the header's CRC no longer holds."""
    raw = bytearray((directory / LOG_NAME).read_bytes())
    raw[30] ^= 0x04
    (directory / LOG_NAME).write_bytes(bytes(raw))
    return bytes(raw[:FILE_HEADER_SIZE])


def duplicated_record(directory: Path) -> bytes | None:
    """The disk wrote a record twice: a copy of record DAMAGED_RECORD right after it."""
    frame = log_frames(directory)[DAMAGED_RECORD]
    raw = (directory / LOG_NAME).read_bytes()
    copy = raw[frame.offset : frame.end]
    (directory / LOG_NAME).write_bytes(raw[: frame.end] + copy + raw[frame.end :])
    return copy


def duplicated_last_record(directory: Path) -> bytes | None:
    frame = log_frames(directory)[-1]
    copy = (directory / LOG_NAME).read_bytes()[frame.offset : frame.end]
    with (directory / LOG_NAME).open("ab") as log:
        log.write(copy)
    return copy


def missing_record(directory: Path) -> bytes | None:
    """Record DAMAGED_RECORD's bytes are gone, and the records after it moved up."""
    frame = log_frames(directory)[DAMAGED_RECORD]
    raw = (directory / LOG_NAME).read_bytes()
    (directory / LOG_NAME).write_bytes(raw[: frame.offset] + raw[frame.end :])
    return None


def _append_record(directory: Path, record: Put | Remove) -> bytes:
    last = log_frames(directory)[-1]
    frame = encode_frame(
        log_header_salt(directory), record.kind, FLAG_SYNCED, last.seq + 1, last.seq, record.encode()
    )
    with (directory / LOG_NAME).open("ab") as log:
        log.write(frame)
    return frame


def orphan_remove(directory: Path) -> bytes | None:
    """A tombstone for a key the log never created (what a lost create leaves behind)."""
    return _append_record(directory, Remove(SessionKey(str(uuid.uuid4()))))


def owner_change(directory: Path) -> bytes | None:
    """A PUT of the first session, same content, under another user's scope."""
    first = decode_record(KIND_PUT, log_frames(directory)[0].payload)
    assert isinstance(first, Put)
    moved = SessionScope(first.scope.env, first.scope.tenant_id, first.scope.team, UserId("somebody-else"))
    return _append_record(directory, attrs.evolve(first, scope=moved))


@attrs.frozen
class Damage:
    """One kind of damage: how to make it, what fsck calls it, and whether opening refuses the store."""

    make: Callable[[Path], bytes | None]
    kind: str
    refuses_open: bool
    loses_record: bool = False


DAMAGE: dict[str, Damage] = {
    "torn-tail": Damage(torn_tail, "torn-tail", refuses_open=False),
    "damaged-record": Damage(damaged_record, "damaged-record", refuses_open=True, loses_record=True),
    "damaged-header": Damage(damaged_header, "log-header", refuses_open=True),
    "duplicated-record": Damage(duplicated_record, "sequence", refuses_open=True),
    "duplicated-last-record": Damage(duplicated_last_record, "sequence", refuses_open=False),
    "missing-record": Damage(missing_record, "sequence", refuses_open=True, loses_record=True),
    "orphan-remove": Damage(orphan_remove, "orphan-remove", refuses_open=False),
    "owner-change": Damage(owner_change, "owner-change", refuses_open=False),
    "bad-payload": Damage(bad_payload, "bad-payload", refuses_open=True),
    "damaged-snapshot": Damage(damaged_snapshot, "snapshot", refuses_open=False),
    "snapshot-missing-a-session": Damage(snapshot_missing_a_session, "snapshot", refuses_open=False),
    "snapshot-missing-a-lookup": Damage(snapshot_missing_a_lookup, "snapshot", refuses_open=False),
    "foreign-identity": Damage(foreign_identity, "identity", refuses_open=True),
    "stray-temp-file": Damage(stray_temp_file, "stray-file", refuses_open=False),
    "interrupted-compaction": Damage(interrupted_compaction, "interrupted-compaction", refuses_open=False),
}


def expected_after_repair(pristine: Pristine, damage: Damage) -> dict[str, SessionData]:
    """Every session, less the one whose only record was damaged."""
    lost = {pristine.keys[DAMAGED_RECORD]} if damage.loses_record else set()
    return {key: session for key, session in pristine.contents.items() if key not in lost}


# -- the tests -----------------------------------------------------------------------


def test_a_missing_snapshot_is_a_note_and_repair_writes_it(pristine: Pristine, tmp_path: Path) -> None:
    """The snapshot is a cache: without one fsck exits 0 with a note; --repair writes it."""
    directory = copy_of(pristine, tmp_path / "s")
    (directory / SNAPSHOT_NAME).unlink()
    report = fsck(directory)
    assert report.exit_code == 0
    assert [(finding.kind, finding.severity) for finding in report.findings] == [
        ("snapshot", FsckSeverity.NOTE)
    ]
    assert not (directory / SNAPSHOT_NAME).exists()
    repaired = fsck(directory, repair=True)
    assert repaired.exit_code == 0
    assert repaired.findings[0].action is FsckAction.WROTE_SNAPSHOT
    assert verified_snapshot(directory) is not None
    assert fsck(directory).findings == []


def test_clean_store_exits_0(pristine: Pristine, tmp_path: Path) -> None:
    """A store written and closed normally has no findings at all, and fsck counts it."""
    report = fsck(copy_of(pristine, tmp_path / "s"))
    assert report.findings == []
    assert (report.exit_code, report.records, report.sessions) == (0, SESSIONS, SESSIONS)
    assert report.to_dict()["exit_code"] == 0


def test_new_empty_store_is_clean(tmp_path: Path) -> None:
    """A store with no records yet (and so no snapshot) is clean."""
    FileSessionStore(tmp_path / "s").close()
    assert fsck(tmp_path / "s").findings == []


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_damage_is_found_then_repaired(pristine: Pristine, tmp_path: Path, name: str) -> None:
    """fsck finds the damage (4) changing nothing; --repair fixes it (1) keeping evidence; then 0."""
    damage = DAMAGE[name]
    directory = copy_of(pristine, tmp_path / "s")
    evidence = damage.make(directory)
    if damage.refuses_open:
        probe = copy_of(Pristine(directory, [], {}), tmp_path / "probe")
        with pytest.raises(CorruptionError):
            FileSessionStore(probe)

    damaged = directory_bytes(directory)
    report = fsck(directory)
    assert report.exit_code == 4, list(iter_findings(report))
    assert damage.kind in kinds(report)
    assert all(finding.action == "none" for finding in report.findings)
    assert directory_bytes(directory) == damaged, "fsck without --repair changed the directory"

    repaired = fsck(directory, repair=True)
    assert repaired.exit_code == 1, list(iter_findings(repaired))
    assert damage.kind in kinds(repaired)
    if evidence is not None:
        kept = {name: raw for name, raw in directory_bytes(directory).items() if name != LOG_NAME}
        assert any(evidence in raw for raw in kept.values()), "the damaged bytes were not kept"

    after = fsck(directory)
    assert after.exit_code == 0, list(iter_findings(after))
    assert all(finding.severity is FsckSeverity.NOTE for finding in after.findings)
    assert contents(directory) == expected_after_repair(pristine, damage)
    assert fsck(directory).exit_code == 0, "opening the repaired store found more to fix"


def test_torn_tail_side_file_holds_exactly_the_cut_bytes(pristine: Pristine, tmp_path: Path) -> None:
    """The torn tail is reported at the old end of the log, and repair moves exactly it to a side file."""
    directory = copy_of(pristine, tmp_path / "s")
    end = (directory / LOG_NAME).stat().st_size
    garbage = torn_tail(directory)
    [finding] = fsck(directory).findings
    assert (finding.kind, finding.file, finding.offset) == ("torn-tail", LOG_NAME, end)
    fsck(directory, repair=True)
    assert (directory / "sessions.log.tr1").read_bytes() == garbage
    assert (directory / LOG_NAME).stat().st_size == end


def test_middle_damage_repair_keeps_the_old_log_and_the_damaged_bytes(
    pristine: Pristine, tmp_path: Path
) -> None:
    """Repair of damage in the middle: a new generation; the old log and the bad bytes are kept."""
    directory = copy_of(pristine, tmp_path / "s")
    damaged_frame = damaged_record(directory)
    damaged_log = (directory / LOG_NAME).read_bytes()
    report = fsck(directory)
    [finding] = [finding for finding in report.errors if finding.kind == "damaged-record"]
    assert finding.offset == log_frames(pristine.directory)[DAMAGED_RECORD].offset
    repaired = fsck(directory, repair=True)
    assert repaired.errors[0].action is FsckAction.REWROTE_LOG
    assert "generation 2" in repaired.errors[0].outcome
    assert (directory / "sessions.log.old").read_bytes() == damaged_log
    assert (directory / "sessions.log.tr1").read_bytes() == damaged_frame
    notes = {finding.file for finding in fsck(directory).findings}
    assert notes == {"sessions.log.old", "sessions.log.tr1"}


def test_side_files_are_notes_not_errors(pristine: Pristine, tmp_path: Path) -> None:
    """Side files, .old and .compact are evidence: reported as notes (exit 0), never removed."""
    directory = copy_of(pristine, tmp_path / "s")
    for name in ("sessions.log.tr1", "sessions.log.tr12", "sessions.log.old", "sessions.log.compact"):
        (directory / name).write_bytes(b"evidence")
    for repair in (False, True):
        report = fsck(directory, repair=repair)
        assert report.exit_code == 0
        assert sorted(finding.file for finding in report.findings) == [
            "sessions.log.compact",
            "sessions.log.old",
            "sessions.log.tr1",
            "sessions.log.tr12",
        ]
        assert {finding.severity for finding in report.findings} == {FsckSeverity.NOTE}
    assert (directory / "sessions.log.tr12").read_bytes() == b"evidence"


def test_identity_mismatch_names_both_uuids(pristine: Pristine, tmp_path: Path) -> None:
    """An identity file naming another store: an error naming both UUIDs; repair follows the log."""
    directory = copy_of(pristine, tmp_path / "s")
    foreign_identity(directory)
    foreign = json.loads((directory / "filestore.json").read_text())["store_uuid"]
    [finding] = fsck(directory).errors
    assert finding.kind == "identity"
    assert foreign in finding.detail
    fsck(directory, repair=True)
    original = json.loads((pristine.directory / "filestore.json").read_text())["store_uuid"]
    assert json.loads((directory / "filestore.json").read_text())["store_uuid"] == original


def test_repair_rewrites_a_snapshot_that_forgot_a_session(pristine: Pristine, tmp_path: Path) -> None:
    """A snapshot that passes its own checks but misses a session is caught, and rewritten whole."""
    directory = copy_of(pristine, tmp_path / "s")
    snapshot_missing_a_session(directory)
    assert kinds(fsck(directory)) == ["snapshot"]
    fsck(directory, repair=True)
    snapshot = verified_snapshot(directory)
    assert snapshot is not None, "the rewritten snapshot is refused"
    assert len(snapshot.index) == SESSIONS


def test_stray_temp_file_is_kept_without_repair_and_removed_with_it(
    pristine: Pristine, tmp_path: Path
) -> None:
    """A temp file left by an interrupted write is an error; only --repair removes it."""
    directory = copy_of(pristine, tmp_path / "s")
    stray_temp_file(directory)
    [temp] = [path for path in directory.iterdir() if path.name.endswith(".tmp")]
    assert kinds(fsck(directory)) == ["stray-file"]
    assert temp.exists()
    assert fsck(directory, repair=True).errors[0].action is FsckAction.REMOVED
    assert not temp.exists()


class _OpensAtEachUnlink(HookedIO):
    """Tries to open the store just before each file fsck removes; records whether it could."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.opened_during_removal: list[str] = []
        self.refused_during_removal: list[str] = []

    def before(self, call: Call) -> None:
        super().before(call)
        if call.operation != "unlink":
            return
        try:
            FileSessionStore(self.directory, lock_timeout=0.05).close()
        except (StoreInUseError, LockTimeoutError):
            self.refused_during_removal.append(os.path.basename(call.path))
        else:
            self.opened_during_removal.append(os.path.basename(call.path))


def test_repair_removes_stray_files_while_it_holds_the_store(pristine: Pristine, tmp_path: Path) -> None:
    """fsck --repair removes a temp file and a compaction's leftovers only while it still holds
    the store exclusively: a handle opened (or a compaction started) meanwhile could otherwise
    have its own new file, under a name fsck listed, removed under it."""
    directory = copy_of(pristine, tmp_path / "s")
    stray_temp_file(directory)
    io = _OpensAtEachUnlink(directory)
    report = fsck(directory, repair=True, io=io)
    assert [finding.action for finding in report.findings if finding.kind == "stray-file"] == [
        FsckAction.REMOVED
    ]
    assert io.opened_during_removal == []
    assert len(io.refused_during_removal) == 1


def test_refused_while_the_store_is_open_unless_it_closes_in_time(pristine: Pristine, tmp_path: Path) -> None:
    """fsck needs the store to itself: StoreInUseError, or waiting for the other handle to close."""
    directory = copy_of(pristine, tmp_path / "s")
    store = FileSessionStore(directory)
    with pytest.raises(StoreInUseError):
        fsck(directory)
    with release_once_blocked(store.close) as watcher:
        assert fsck(directory, wait=30).exit_code == 0
    assert watcher.blocked


@pytest.mark.parametrize("contents", [[], ["notes.txt"]])
def test_a_directory_holding_no_store_is_invalid_input(tmp_path: Path, contents: list[str]) -> None:
    """An empty or unrelated directory is the wrong argument (exit 8), not a damaged store (4)."""
    for name in contents:
        (tmp_path / name).write_text("mine")
    with pytest.raises(InvalidInputError, match="holds no filestore"):
        fsck(tmp_path, repair=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == contents


def test_not_a_directory_is_invalid_input(tmp_path: Path) -> None:
    """A path that is not a directory is refused before anything is opened."""
    with pytest.raises(InvalidInputError):
        fsck(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError):
        fsck(tmp_path / "file")


def test_directory_without_a_log_is_an_uncorrectable_error(tmp_path: Path) -> None:
    """A directory with a store's files but no log: exit 4 naming the log, and nothing created."""
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "filestore.json").write_text("{}")
    report = fsck(tmp_path / "s", repair=True)
    assert report.exit_code == 4
    assert kinds(report) == ["log-header"]
    assert sorted(path.name for path in (tmp_path / "s").iterdir()) == ["filestore.json"]


@pytest.mark.parametrize("name", ["damaged-record", "damaged-header"])
def test_crash_at_every_step_of_a_repair_then_repair_again(
    pristine: Pristine, tmp_path: Path, name: str
) -> None:
    """A repair that crashes at any step, repaired again, ends clean with every undamaged session."""
    expected = expected_after_repair(pristine, DAMAGE[name])
    crash_at = 1
    while True:
        directory = copy_of(pristine, tmp_path / f"crash{crash_at}")
        DAMAGE[name].make(directory)
        try:
            fsck(directory, repair=True, io=crashing_io(crash_at))
        except SimulatedCrash:
            assert fsck(directory, repair=True).exit_code in {0, 1}, f"crash at step {crash_at}"
            assert fsck(directory).exit_code == 0, f"crash at step {crash_at}"
            assert contents(directory) == expected, f"crash at step {crash_at}"
            crash_at += 1
            continue
        break
    assert crash_at > 8, "a repair by rewrite should take several crashable steps"


# -- records out of sequence, and evidence kept across rewrites -------------------------


@pytest.mark.parametrize("where", ["middle", "end"])
def test_repair_fixes_a_duplicated_record(pristine: Pristine, tmp_path: Path, where: str) -> None:
    """A record duplicated by the disk (a copy of record 2 after it, or of the last record) is repaired."""
    directory = copy_of(pristine, tmp_path / "s")
    frames = log_frames(directory)
    raw = (directory / LOG_NAME).read_bytes()
    copied = frames[1] if where == "middle" else frames[-1]
    at = copied.end
    (directory / LOG_NAME).write_bytes(raw[:at] + raw[copied.offset : copied.end] + raw[at:])
    assert kinds(fsck(directory)) == (["sequence", "snapshot"] if where == "middle" else ["sequence"])
    assert fsck(directory, repair=True).exit_code == 1
    assert fsck(directory).exit_code == 0
    (directory / SNAPSHOT_NAME).unlink()  # the engine must accept the log itself, not a snapshot of it
    assert contents(directory) == pristine.contents


def test_the_log_a_repair_kept_survives_a_later_compaction(pristine: Pristine, tmp_path: Path) -> None:
    """The damaged log fsck --repair kept as sessions.log.old is not deleted by the next compaction."""
    directory = copy_of(pristine, tmp_path / "s")
    damaged_record(directory)
    damaged_log = (directory / LOG_NAME).read_bytes()
    assert fsck(directory, repair=True).exit_code == 1
    compact(directory)
    assert damaged_log in directory_bytes(directory).values()


def test_a_stale_record_never_rolls_a_session_back(tmp_path: Path) -> None:
    """An old version of a session found between newer records: open refuses, repair sets it aside."""
    directory = tmp_path / "s"
    with FileSessionStore(directory, preallocate_bytes=0) as store:
        key = store.create_session(ctx(), data(step=1))
        store.update_session(key, data(step=2))
        other = store.create_session(ctx(user="other"), data(ctx(user="other")))
    frames = log_frames(directory)
    raw = (directory / LOG_NAME).read_bytes()
    stale = raw[frames[0].offset : frames[0].end]
    (directory / LOG_NAME).write_bytes(raw[: frames[1].end] + stale + raw[frames[1].end :])
    (directory / SNAPSHOT_NAME).unlink()
    with pytest.raises(CorruptionError):
        FileSessionStore(directory)  # cutting from the stale record on would drop the acknowledged third
    found = fsck(directory)
    assert [(finding.kind, finding.offset) for finding in found.errors] == [("sequence", frames[1].end)]
    assert fsck(directory, repair=True).exit_code == 1
    assert fsck(directory).exit_code == 0
    assert contents(directory) == {str(key): data(step=2), str(other): data(ctx(user="other"))}
    kept = [raw for name, raw in directory_bytes(directory).items() if name.startswith("sessions.log.tr")]
    assert kept == [stale]


def test_a_bad_payload_the_snapshot_covers_is_a_bad_payload_finding(tmp_path: Path) -> None:
    """A record that checksums but does not decode, inside the range the index snapshot covers
    (an update superseded it, so the snapshot never points at it and opening never reads it), is
    reported as that record's bad payload only: the snapshot comparison skips it rather than
    failing fsck as a damaged header; repair drops it and the newer data stays."""
    directory = tmp_path / "s"
    with FileSessionStore(directory, preallocate_bytes=0) as store:
        first = store.create_session(ctx(user="u1"), data(ctx(user="u1"), step=1))
        store.update_session(first, data(ctx(user="u1"), step=2))
        second = store.create_session(ctx(user="u2"), data(ctx(user="u2"), step=3))
    superseded = log_frames(directory)[0]
    size = len(superseded.payload)
    # A CBOR text string of exactly the old payload's length: the frame keeps its place.
    payload = next(p for m in range(size, 0, -1) if len(p := cbor2.dumps("x" * m)) == size)
    raw = bytearray((directory / LOG_NAME).read_bytes())
    raw[superseded.offset : superseded.end] = encode_frame(
        log_header_salt(directory),
        superseded.kind,
        superseded.flags,
        superseded.seq,
        superseded.synced_through,
        payload,
    )
    (directory / LOG_NAME).write_bytes(bytes(raw))
    assert verified_snapshot(directory) is not None

    report = fsck(directory)
    assert [(finding.kind, finding.offset) for finding in report.errors] == [
        ("bad-payload", superseded.offset)
    ]
    assert report.exit_code == 4
    repaired = fsck(directory, repair=True)
    assert repaired.exit_code == 1
    assert fsck(directory).exit_code == 0
    with FileSessionStore(directory) as reopened:
        assert reopened.get_session(first) == data(ctx(user="u1"), step=2)
        assert reopened.get_session(second) == data(ctx(user="u2"), step=3)


@pytest.mark.parametrize("damage", [damaged_record, foreign_identity, snapshot_missing_a_session])
def test_repair_keeps_the_stores_file_mode(
    pristine: Pristine, tmp_path: Path, damage: Callable[[Path], bytes | None]
) -> None:
    """Whatever repair rewrites (log, snapshot, identity) keeps a 0640 store's mode instead of 0600."""
    directory = copy_of(pristine, tmp_path / "s")
    names = (LOG_NAME, SNAPSHOT_NAME, "filestore.json")
    for name in names:
        (directory / name).chmod(0o640)
    damage(directory)
    with umask(0o022):
        assert fsck(directory, repair=True).exit_code == 1
    assert {name: mode_of(directory / name) for name in names} == dict.fromkeys(names, 0o640)
