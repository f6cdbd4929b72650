"""``fsck``: verify a store, and repair it only when asked, never destroying evidence.

Checks, each reported as a ``FsckFinding`` (kind, file, offset, detail, and the
``FsckAction`` repair took, with its outcome in words):

- ``identity``: the identity file names the log's store UUID;
- ``log-header``: the log's header verifies (else its store UUID and
  generation are recovered from what the records' checksums are salted with,
  see ``filestore.offline.headerrecovery``; if that fails, nothing more can be read);
- ``torn-tail``: an incomplete or bad record at the end, with nothing valid after it;
- ``interrupted-compaction``: the current log ends with a seal (a compaction
  that stopped before its switch); repair cuts the seal;
- ``damaged-record``: a bad record followed by valid ones (damage in the middle);
- ``sequence``: sequence numbers of valid records not strictly increasing by one;
- ``bad-payload``: a record whose checksum passes but whose payload does not
  decode, or whose session does not validate as a SessionData;
- ``orphan-remove`` / ``owner-change``: a tombstone for an unknown key, a PUT
  that moves a session to another owner (the store never writes either);
- ``snapshot``: the index snapshot is refused, or disagrees with the index
  rebuilt from the log, in its sessions or its user lookups (a missing one
  is only a note: it is a cache);
- ``stray-file``: temp files (errors, removed by repair), and side files,
  ``.old`` and ``.compact`` files (notes: evidence, kept).

Repair (``repair=True``) needs the store to itself. It cuts a torn tail to a
side file; rewrites the log (after damage in the middle, records out of
sequence or that the store never writes, or a recovered header) as a new
generation of every record that verifies, skipping damaged bytes (kept in
a side file) and keeping the old generation as ``sessions.log.old`` (or the
first free ``sessions.log.oldN`` when an earlier one is kept); rewrites the
snapshot, and the identity file (keeping the old one as a side file);
removes temp files.

Not detected: lost acknowledged records at the very end of the log (cut
off, damaged or zeroed from a record boundary on: that looks exactly like a
write that never completed, or a log that ended there), damage inside the
preallocated zeros after the end, and changes that keep a CRC-32 valid
(about one in four billion random corruptions).
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Iterator
from typing import Final

import attrs

from filestore.engine.directory import looks_like_a_store, read_meta_uuid, store_file_mode, write_meta
from filestore.engine.fileio import OS_IO, FileIO
from filestore.engine.framing import FILE_HEADER_SIZE, KIND_SEAL, FileHeader, Frame, Probe
from filestore.engine.index import Index
from filestore.engine.layout import (
    COMPACT_NAME,
    LOG_NAME,
    META_NAME,
    SNAPSHOT_NAME,
    is_old_name,
    is_side_file,
    is_temp_name,
    side_file_name,
)
from filestore.engine.logfile import LogFile
from filestore.engine.records import Put, Record, RecordDecodeError, decode_record, decode_seal
from filestore.engine.rewrite import rewrite_generation
from filestore.engine.snapshot import encode_snapshot, load_snapshot, write_snapshot
from filestore.errors import CorruptionError, InvalidInputError
from filestore.offline.exclusive import exclusive_store
from filestore.offline.headerrecovery import recover_header

EXIT_CLEAN: Final = 0
EXIT_CORRECTED: Final = 1
EXIT_UNCORRECTED: Final = 4


class FsckSeverity(enum.StrEnum):
    ERROR = "error"
    NOTE = "note"


class FsckAction(enum.StrEnum):
    """What repair did about a finding; anything but ``NONE`` corrected it."""

    NONE = "none"  # nothing (no --repair, or nothing repair can do)
    CUT = "cut"  # bytes at the log's end cut, kept in a side file
    REWROTE_LOG = "rewrote-log"  # the log rewritten as a new generation, the old one kept
    REWROTE_IDENTITY = "rewrote-identity"  # from the log header, the old file kept
    WROTE_SNAPSHOT = "wrote-snapshot"  # from the log
    REMOVED = "removed"  # a temp file


@attrs.define
class FsckFinding:
    """One thing fsck found: what, where, and what repair did about it.

    ``outcome`` says the ``action`` in words, naming the file that keeps the
    evidence (side file, old log) where there is one.
    """

    kind: str
    severity: FsckSeverity
    file: str
    offset: int | None
    detail: str
    action: FsckAction = FsckAction.NONE
    outcome: str = ""

    def resolve(self, action: FsckAction, outcome: str) -> None:
        """Record that repair took ``action`` (described by ``outcome``)."""
        self.action, self.outcome = action, outcome

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "severity": self.severity.value,
            "file": self.file,
            "offset": self.offset,
            "detail": self.detail,
            "action": self.action.value,
            "outcome": self.outcome,
        }


@attrs.define
class FsckReport:
    """All findings, and the fsck(8) exit code they add up to."""

    path: str
    repair: bool
    records: int = 0
    sessions: int = 0
    findings: list[FsckFinding] = attrs.field(factory=list)

    @property
    def errors(self) -> list[FsckFinding]:
        return [finding for finding in self.findings if finding.severity is FsckSeverity.ERROR]

    @property
    def exit_code(self) -> int:
        """0 clean, 1 every error corrected, 4 errors left uncorrected."""
        errors = self.errors
        if not errors:
            return EXIT_CLEAN
        if all(finding.action is not FsckAction.NONE for finding in errors):
            return EXIT_CORRECTED
        return EXIT_UNCORRECTED

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "repair": self.repair,
            "records": self.records,
            "sessions": self.sessions,
            "exit_code": self.exit_code,
            "findings": [finding.to_dict() for finding in self.findings],
        }


@attrs.define
class _Walk:
    """What one pass over the log found."""

    good: list[Frame] = attrs.field(factory=list)
    damaged_ranges: list[tuple[int, int]] = attrs.field(factory=list)
    tail_cut: int | None = None
    tail_finding: FsckFinding | None = None
    gaps: bool = False
    end: int = FILE_HEADER_SIZE


def fsck(
    path: str | os.PathLike[str], *, repair: bool = False, wait: float = 0.0, io: FileIO = OS_IO
) -> FsckReport:
    """Check the store at ``path``; with ``repair``, fix what can be fixed (see module docs).

    Holds the store exclusively (``StoreInUseError`` if others have it open,
    after ``wait`` seconds), so that it never mistakes a record being written
    for damage.
    """
    directory = os.path.abspath(os.fspath(path))
    if not os.path.isdir(directory):
        raise InvalidInputError(f"{directory} is not a directory", field="path", rule="a store directory")
    if not looks_like_a_store(set(os.listdir(directory))):
        raise InvalidInputError(
            f"{directory} holds no filestore (no {LOG_NAME}, {META_NAME} or {SNAPSHOT_NAME})",
            field="path",
            rule="a store directory",
        )
    report = FsckReport(directory, repair)

    def recover(fd: int) -> FileHeader | None:
        found = recover_header(io, directory, fd)
        if found is not None:
            header, how = found
            report.findings.append(
                FsckFinding(
                    "log-header", FsckSeverity.ERROR, LOG_NAME, 0, f"the file header is damaged; {how}"
                )
            )
            return header
        return None

    try:
        with exclusive_store(directory, wait=wait, io=io, recover_header=recover) as log:
            _check_log(io, directory, log, report)
    except CorruptionError as error:
        report.findings.append(
            FsckFinding("log-header", FsckSeverity.ERROR, error.path, error.offset, str(error))
        )
    _check_stray_files(io, directory, report)
    return report


def _check_log(io: FileIO, directory: str, log: LogFile, report: FsckReport) -> None:
    meta_uuid = read_meta_uuid(io, os.path.join(directory, META_NAME))
    if meta_uuid != str(log.header.store_uuid):
        finding = FsckFinding(
            "identity",
            FsckSeverity.ERROR,
            META_NAME,
            None,
            f"the identity file names {meta_uuid}, the log {log.header.store_uuid}",
        )
        if report.repair:
            outcome = "rewrote the identity file from the log header"
            meta_path = os.path.join(directory, META_NAME)
            with contextlib.suppress(FileNotFoundError):
                kept = side_file_name(directory, META_NAME, os.path.exists)
                io.write_file(kept, io.read_file(meta_path))
                io.sync_dir(directory)
                outcome += f"; the old one is kept as {os.path.basename(kept)}"
            write_meta(io, directory, log.header, store_file_mode(directory))
            finding.resolve(FsckAction.REWROTE_IDENTITY, outcome)
        report.findings.append(finding)

    walk = _walk(log, report)
    index, rewrite_frames, replay_changed = _replay(walk.good, report)
    report.records = len(walk.good)
    report.sessions = len(index)
    log.end = walk.end
    header_recovered = any(finding.kind == "log-header" for finding in report.findings)
    needs_rewrite = bool(walk.damaged_ranges) or replay_changed or walk.gaps or header_recovered
    if report.repair and needs_rewrite:
        _repair_by_rewrite(io, directory, log, walk, rewrite_frames, report)
        return
    if report.repair and walk.tail_cut is not None:
        log.adopt(log.scan(FILE_HEADER_SIZE, 1, lambda frame: None))
        side = log.recover_tail()
        if walk.tail_finding is not None:
            walk.tail_finding.resolve(
                FsckAction.CUT, f"cut; the bytes are kept in {os.path.basename(side or '?')}"
            )
    _check_snapshot(io, directory, log, index, walk, report)


def _walk(log: LogFile, report: FsckReport) -> _Walk:
    """Every frame that verifies and belongs, in order, with bad regions classified as tail or middle.

    A verified record numbered below the one expected (a duplicate, or a stale
    copy of an earlier record) does not belong: it is set aside like damage,
    so that replaying it can never roll a session back. A record numbered
    above it belongs, but the records in between are missing.
    """
    walk = _Walk()
    expected = 1
    offset = FILE_HEADER_SIZE
    while True:
        why, stop_offset = Probe.END.value, offset
        stale: FsckFinding | None = None
        for kind, frame, at in log.frames(offset):
            if frame is None:
                why, stop_offset = kind.value, at
                break
            if frame.kind == KIND_SEAL:
                walk.tail_cut = frame.offset
                walk.tail_finding = FsckFinding(
                    "interrupted-compaction",
                    FsckSeverity.ERROR,
                    LOG_NAME,
                    frame.offset,
                    f"the log ends with a seal naming generation {decode_seal(frame.payload)}, "
                    "but it is still the current log: a compaction stopped before its switch",
                )
                report.findings.append(walk.tail_finding)
                return walk
            if frame.seq < expected:
                stale = FsckFinding(
                    "sequence",
                    FsckSeverity.ERROR,
                    LOG_NAME,
                    frame.offset,
                    f"record {frame.seq} again where {expected} was expected "
                    "(a duplicated or stale record; it is not replayed)",
                )
                report.findings.append(stale)
                stop_offset = frame.offset
                break
            if frame.seq > expected:
                walk.gaps = True
                report.findings.append(
                    FsckFinding(
                        "sequence",
                        FsckSeverity.ERROR,
                        LOG_NAME,
                        frame.offset,
                        f"record {frame.seq} where {expected} was expected "
                        f"(records {expected} to {frame.seq - 1} are missing)",
                    )
                )
            walk.good.append(frame)
            expected = frame.seq + 1
            walk.end = frame.end
        after = log.resync(stop_offset, expected)
        if not after.later:
            if after.cut:
                walk.tail_cut = stop_offset
                walk.tail_finding = stale or FsckFinding(
                    "torn-tail",
                    FsckSeverity.ERROR,
                    LOG_NAME,
                    stop_offset,
                    f"{len(after.cut)} bytes after the last valid record "
                    f"(record {expected} never completed, or was damaged)",
                )
                if stale is None:
                    report.findings.append(walk.tail_finding)
            return walk
        resume = after.later[0].offset
        walk.damaged_ranges.append((stop_offset, resume))
        if stale is None:
            report.findings.append(
                FsckFinding(
                    "damaged-record",
                    FsckSeverity.ERROR,
                    LOG_NAME,
                    stop_offset,
                    f"{resume - stop_offset} bytes do not verify ({why}), "
                    f"valid records resume at offset {resume} with record {after.later[0].seq}",
                )
            )
        offset = resume
        expected = after.later[0].seq


def _replay(frames: list[Frame], report: FsckReport) -> tuple[Index, list[Frame], bool]:
    """Rebuild the index from verified frames, reporting records the store would never write.

    Leaves in ``frames`` only the records that decode. Also returns what a
    rewrite should write, and whether it differs from the log: records that
    do not decode or validate, and tombstones of unknown keys, are left out;
    a PUT that moves a session to another owner is re-encoded with the owner
    the index keeps (the first), so the rewritten log shows what this one shows.
    """
    index = Index()
    changed = False
    decoded: list[Frame] = []
    keep: list[Frame] = []
    for frame in frames:
        try:
            record: Record = decode_record(frame.kind, frame.payload)
            if isinstance(record, Put):
                record.session()
        except (RecordDecodeError, InvalidInputError) as error:
            changed = True
            report.findings.append(
                FsckFinding("bad-payload", FsckSeverity.ERROR, LOG_NAME, frame.offset, str(error))
            )
            continue
        previous = index.entries.get(record.key)
        if isinstance(record, Put) and previous is not None and previous.scope != record.scope:
            report.findings.append(
                FsckFinding(
                    "owner-change",
                    FsckSeverity.ERROR,
                    LOG_NAME,
                    frame.offset,
                    f"session {record.key} moves from {tuple(previous.scope)} to {tuple(record.scope)}; "
                    "the store keeps the first owner",
                )
            )
            changed = True
            keep.append(attrs.evolve(frame, payload=attrs.evolve(record, scope=previous.scope).encode()))
        elif not isinstance(record, Put) and previous is None:
            report.findings.append(
                FsckFinding(
                    "orphan-remove",
                    FsckSeverity.ERROR,
                    LOG_NAME,
                    frame.offset,
                    f"removes unknown key {record.key}",
                )
            )
            changed = True
        else:
            keep.append(frame)
        index.apply(record, frame.offset, frame.size)
        decoded.append(frame)
    frames[:] = decoded
    return index, keep, changed


def _check_snapshot(
    io: FileIO, directory: str, log: LogFile, index: Index, walk: _Walk, report: FsckReport
) -> None:
    path = os.path.join(directory, SNAPSHOT_NAME)
    snapshot, why = load_snapshot(io, path, log.fd, log.header, io.size(log.fd))
    problem: str | None = None
    severity = FsckSeverity.ERROR
    if snapshot is None and why == "no snapshot":
        if not walk.good:
            return
        # Only a cache is missing (a process died before its first one, or
        # someone deleted it): the next open replays the log and writes one.
        problem, severity = (
            "there is no index snapshot: the next open replays the whole log",
            FsckSeverity.NOTE,
        )
    elif snapshot is None:
        problem = f"the snapshot is refused: {why}"
    else:
        as_of = Index()
        for frame in walk.good:
            if frame.end > snapshot.position:
                break
            as_of.apply_frame(frame, log.path)
        # The user lookups a replay builds are exact by construction (Index.apply),
        # so the snapshot's are the only ones that can be wrong.
        if as_of.entries != snapshot.index.entries:
            problem = "the snapshot disagrees with the index rebuilt from the log (its sessions)"
        elif as_of.by_user != snapshot.index.by_user:
            problem = "the snapshot disagrees with the index rebuilt from the log (its user lookups)"
    if problem is None:
        return
    finding = FsckFinding("snapshot", severity, SNAPSHOT_NAME, None, problem)
    if report.repair:
        last = walk.good[-1] if walk.good else None
        data = encode_snapshot(
            log.header,
            index,
            position=last.end if last else FILE_HEADER_SIZE,
            last_seq=last.seq if last else 0,
            last_frame_offset=last.offset if last else 0,
            last_frame_crc=log.frame_crc_at(last.offset) if last else 0,
        )
        write_snapshot(io, directory, data, mode=store_file_mode(directory))
        finding.resolve(FsckAction.WROTE_SNAPSHOT, "wrote the snapshot from the log")
    report.findings.append(finding)


def _repair_by_rewrite(
    io: FileIO, directory: str, log: LogFile, walk: _Walk, frames: list[Frame], report: FsckReport
) -> None:
    """Write every verified record into a new generation, keeping the damaged bytes and old log."""
    for start, stop in walk.damaged_ranges:
        side = side_file_name(directory, LOG_NAME, os.path.exists)
        io.write_file(side, io.pread(log.fd, stop - start, start))
    io.sync_dir(directory)
    log.adopt(log.scan(FILE_HEADER_SIZE, 1, lambda frame: None))
    result = rewrite_generation(io, directory, log.header, frames, keep_old=True, seal=_no_seal)
    outcome = (
        f"rewrote the log as generation {result.generation}; "
        f"old log kept as {os.path.basename(result.old_log or '?')}"
    )
    for finding in report.findings:
        if finding.severity is FsckSeverity.ERROR and finding.kind != "identity":
            finding.resolve(FsckAction.REWROTE_LOG, outcome)


def _no_seal(next_generation: int) -> None:
    """A repair runs with the store to itself, and its old log may be damaged: no seal."""


def _check_stray_files(io: FileIO, directory: str, report: FsckReport) -> None:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return
    for name in names:
        full = os.path.join(directory, name)
        if is_temp_name(name):
            finding = FsckFinding(
                "stray-file", FsckSeverity.ERROR, name, None, "a temp file left by an interrupted write"
            )
            if report.repair:
                io.unlink(full)
                finding.resolve(FsckAction.REMOVED, "removed")
            report.findings.append(finding)
        elif is_side_file(name) or is_old_name(name) or name == COMPACT_NAME:
            report.findings.append(
                FsckFinding(
                    "stray-file",
                    FsckSeverity.NOTE,
                    name,
                    None,
                    "evidence kept by recovery or compaction; delete it once you no longer need it",
                )
            )


def iter_findings(report: FsckReport) -> Iterator[str]:
    """Human-readable lines for a report."""
    for finding in report.findings:
        where = f"{finding.file}" + (f" @{finding.offset}" if finding.offset is not None else "")
        done = finding.outcome or finding.action.value
        yield f"{finding.severity.value}: {finding.kind}: {where}: {finding.detail} [{done}]"
