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
- ``sequence``: a valid record out of place (see ``filestore.offline.logwalk``):
  a second copy of a record (duplicated, misdirected or stale: set aside,
  never replayed), the only copy of a record found out of place (kept, in its
  place in the sequence), or records missing;
- ``bad-payload``: a record whose checksum passes but whose payload does not
  decode, or whose session does not validate as a SessionData;
- ``orphan-remove`` / ``owner-change``: a tombstone for an unknown key, a PUT
  that moves a session to another owner (the store never writes either);
- ``wait-user``: a PUT whose wait belongs to a session whose data names no
  user, or another user than its owner's (``register_wait`` refuses both);
  repair rewrites it without the wait;
- ``snapshot``: the index snapshot is refused, or disagrees with the index
  rebuilt from the log, in its sessions, waits, deadlines or user lookups (a missing one
  is only a note: it is a cache);
- ``stray-file``: temp files (errors, removed by repair); side files and
  kept ``.old`` generations (notes: evidence, kept); an unfinished
  ``.compact`` and an ``.old`` that is a second name of the live log
  (notes: not evidence, they hold nothing the log does not; removed by
  repair and by the next open or compaction).

Every record number below the highest one kept that no valid record
carries is lost: the report's ``lost`` names them (and the finding about the
bytes where each was says so). A copy written over a record costs that
record, never the records after it. Two valid copies of one record with
different contents leave that finding uncorrected (exit 4): the copy in
sequence is kept, but nothing says it is the right one.

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
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Final

import attrs

from filestore.engine.directory import (
    leftovers,
    looks_like_a_store,
    read_meta_uuid,
    require_directory,
    store_file_mode,
    write_meta,
)
from filestore.engine.fileio import OS_IO, FileIO, write_side_file
from filestore.engine.framing import FILE_HEADER_SIZE, FileHeader, Frame, FrameRef
from filestore.engine.index import Index
from filestore.engine.layout import (
    LOG_NAME,
    META_NAME,
    SNAPSHOT_NAME,
    is_compact_name,
    is_old_name,
    is_side_file,
    is_temp_name,
)
from filestore.engine.logfile import LogFile
from filestore.engine.options import callback, flag, seconds, store_path
from filestore.engine.records import Put, Record, RecordDecodeError, decode_record
from filestore.engine.rewrite import rewrite_generation
from filestore.engine.snapshot import decode_snapshot, encode_snapshot, load_snapshot, write_snapshot
from filestore.errors import CorruptionError, InvalidInputError, message_of
from filestore.ids import SessionScope
from filestore.offline.exclusive import exclusive_store
from filestore.offline.findings import FsckAction, FsckFinding, FsckSeverity
from filestore.offline.headerrecovery import SEARCH_WINDOW, recover_header
from filestore.offline.logwalk import LogWalk, walk_log
from filestore.progress import begin_phase, counted

__all__ = [
    "EXIT_CLEAN",
    "EXIT_CORRECTED",
    "EXIT_UNCORRECTED",
    "FsckAction",
    "FsckFinding",
    "FsckReport",
    "FsckSeverity",
    "fsck",
    "iter_findings",
]

EXIT_CLEAN: Final = 0
EXIT_CORRECTED: Final = 1
EXIT_UNCORRECTED: Final = 4


@attrs.define
class FsckReport:
    """All findings, and the fsck(8) exit code they add up to."""

    path: str
    repair: bool
    records: int = 0
    sessions: int = 0
    findings: list[FsckFinding] = attrs.field(factory=list)
    lost: list[int] = attrs.field(factory=list)  # record numbers the log no longer holds

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
            "lost_records": self.lost,
            "findings": [finding.to_dict() for finding in self.findings],
        }


def fsck(
    path: str | os.PathLike[str],
    *,
    repair: bool = False,
    wait: float = 0.0,
    io: FileIO = OS_IO,
    progress: Callable[[int], None] | None = None,
) -> FsckReport:
    """Check the store at ``path``; with ``repair``, fix what can be fixed (see module docs).

    Holds the store exclusively (``StoreInUseError`` if others have it open,
    after ``wait`` seconds), so that it never mistakes a record being written
    for damage. ``progress`` is called with bytes done, in the phases
    ``scan`` (the whole log), ``verify`` (every record kept), ``rewrite``
    (a repair's new generation) and ``snapshot`` (see ``filestore.progress``).
    """
    directory = store_path(path)
    repair = flag("repair", repair)
    wait = seconds("wait", wait)
    progress = callback("progress", progress)
    require_directory(directory)
    if not looks_like_a_store(set(os.listdir(directory))):
        raise InvalidInputError(
            f"{directory} holds no filestore (no {LOG_NAME}, {META_NAME} or {SNAPSHOT_NAME})",
            field="path",
            rule="a store directory",
        )
    report = FsckReport(directory, repair)
    unrecoverable: list[str] = []

    def recover(fd: int) -> FileHeader | None:
        found = recover_header(io, directory, fd)
        if found is None:
            unrecoverable.append(
                "the file header is damaged and cannot be rebuilt: no record in the log's first "
                f"{SEARCH_WINDOW} bytes verifies with the store UUID of the identity file or the "
                "header and any generation, so its generation cannot be known; the log is left as "
                "it is (restore it from a backup)"
            )
            return None
        header, how = found
        report.findings.append(
            FsckFinding("log-header", FsckSeverity.ERROR, LOG_NAME, 0, f"the file header is damaged; {how}")
        )
        return header

    try:
        with exclusive_store(directory, wait=wait, io=io, recover_header=recover, readonly=not repair) as log:
            _check_log(io, directory, log, report, progress)
            # Still holding the store: a handle opened (or a compaction begun) after we let
            # go could have its own new file, under a name listed here, removed under it.
            _check_stray_files(io, directory, report, remove=report.repair)
    except CorruptionError as error:
        detail = unrecoverable[0] if unrecoverable else error.message
        report.findings.append(
            FsckFinding("log-header", FsckSeverity.ERROR, error.path, error.offset, detail)
        )
        # The store could not be held (its log header is beyond repair): report, remove nothing.
        _check_stray_files(io, directory, report, remove=False)
    return report


def _check_log(
    io: FileIO, directory: str, log: LogFile, report: FsckReport, progress: Callable[[int], None] | None
) -> None:
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
                kept = write_side_file(io, directory, META_NAME, io.read_file(meta_path))
                io.sync_dir(directory)
                outcome += f"; the old one is kept as {os.path.basename(kept)}"
            write_meta(io, directory, log.header, store_file_mode(directory))
            finding.resolve(FsckAction.REWROTE_IDENTITY, outcome)
        report.findings.append(finding)

    begin_phase(progress, "scan", io.size(log.fd), "B")
    walk = walk_log(log, progress)
    report.findings.extend(walk.findings)
    report.lost = walk.lost
    begin_phase(progress, "verify", sum(frame.size for frame in walk.good), "B")
    index, rewrite, replay_changed = _replay(log, walk.good, report, progress)
    report.records = len(walk.good)
    report.sessions = len(index)
    log.end = walk.end
    header_recovered = any(finding.kind == "log-header" for finding in report.findings)
    needs_rewrite = walk.rewrite or replay_changed or header_recovered
    if report.repair and needs_rewrite:
        del index  # the new generation gets an index of its own: never hold both
        begin_phase(progress, "rewrite", sum(frame.size for frame in rewrite.keep), "B")
        frames = counted(rewrite.frames(log), lambda frame: frame.size, progress)
        _repair_by_rewrite(io, directory, log, walk, frames, report)
        return
    if report.repair and walk.tail_cut is not None:
        log.adopt(log.scan(FILE_HEADER_SIZE, 1, lambda frame: None))
        # What follows the last record in place the walk found to be copies of records kept
        # (or a seal, or a torn tail): cut it all, copies too, into the side file.
        side = log.recover_tail(cut_copies=True)
        for finding in walk.tail_findings:
            finding.resolve(FsckAction.CUT, f"cut; the bytes are kept in {os.path.basename(side or '?')}")
    snapshot_bytes = _size_or_zero(os.path.join(directory, SNAPSHOT_NAME))
    begin_phase(progress, "snapshot", snapshot_bytes, "B")
    _check_snapshot(io, directory, log, index, walk, report)
    if progress is not None:
        progress(snapshot_bytes)


def _size_or_zero(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


@attrs.define
class _Rewrite:
    """What a rewrite should write: the records to keep, and the owner to re-encode some
    with (by offset), read again from the log as they are written."""

    keep: list[FrameRef] = attrs.field(factory=list)
    owners: dict[int, SessionScope] = attrs.field(factory=dict)
    # PUTs (by offset) to write without their wait.
    unwaited: set[int] = attrs.field(factory=set)

    def frames(self, log: LogFile) -> Iterator[Frame]:
        for frame in log.frames_at(self.keep):
            owner = self.owners.get(frame.offset)
            if owner is None and frame.offset not in self.unwaited:
                yield frame
                continue
            record = decode_record(frame.kind, frame.payload)
            assert isinstance(record, Put), "only a PUT moves a session to another owner or has a wait"
            if owner is not None:
                record = attrs.evolve(record, scope=owner)
            if frame.offset in self.unwaited:
                record = attrs.evolve(record, wait=None)
            yield attrs.evolve(frame, payload=record.encode())


def _replay(
    log: LogFile, frames: list[FrameRef], report: FsckReport, progress: Callable[[int], None] | None
) -> tuple[Index, _Rewrite, bool]:
    """Rebuild the index from verified frames, reporting records the store would never write.

    Leaves in ``frames`` only the records that decode. Also returns what a
    rewrite should write, and whether it differs from the log: records that
    do not decode or validate, and tombstones of unknown keys, are left out;
    a PUT that moves a session to another owner is re-encoded with the owner
    the index keeps (the first), so the rewritten log shows what this one shows.
    """
    index = Index()
    changed = False
    decoded: list[FrameRef] = []
    rewrite = _Rewrite()
    for ref, frame in zip(
        frames, counted(log.frames_at(frames), lambda frame: frame.size, progress), strict=True
    ):
        try:
            record: Record = decode_record(frame.kind, frame.payload)
            session = record.session() if isinstance(record, Put) else None
        except (RecordDecodeError, InvalidInputError) as error:
            changed = True
            report.findings.append(
                FsckFinding("bad-payload", FsckSeverity.ERROR, LOG_NAME, frame.offset, message_of(error))
            )
            continue
        previous = index.entries.get(record.key)
        if isinstance(record, Put) and record.wait is not None and session is not None:
            owner = record.scope if previous is None else previous.scope
            user = session.tenant_ctx.effective_user
            if user is None or user != owner.user:
                names = "no user" if user is None else f"user {user}"
                report.findings.append(
                    FsckFinding(
                        "wait-user",
                        FsckSeverity.ERROR,
                        LOG_NAME,
                        frame.offset,
                        f"session {record.key} has a wait, but its data names {names}, "
                        f"its owner {owner.user}; repair drops the wait",
                    )
                )
                changed = True
                rewrite.unwaited.add(ref.offset)
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
            rewrite.keep.append(ref)
            rewrite.owners[ref.offset] = previous.scope
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
            rewrite.keep.append(ref)
        index.apply(record, frame.offset, frame.size, frame.seq)
        decoded.append(ref)
    frames[:] = decoded
    return index, rewrite, changed


def _check_snapshot(
    io: FileIO, directory: str, log: LogFile, index: Index, walk: LogWalk, report: FsckReport
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
    elif snapshot is None and _of_an_earlier_generation(io, path, log.header):
        # What a compaction leaves when it stopped after its switch, before
        # writing the new snapshot: as harmless as none (the next open writes one).
        problem, severity = (
            f"the index snapshot is {why}: a compaction stopped before writing the new one; "
            "the next open replays the whole log and writes it",
            FsckSeverity.NOTE,
        )
    elif snapshot is None:
        problem = f"the snapshot is refused: {why}"
    else:
        as_of = index
        if any(ref.end > snapshot.position for ref in walk.good):
            # Only when the snapshot covers less than the log (else the index is the same
            # replay): a second index, never a second copy of the log.
            as_of = Index()
            covered = itertools.takewhile(lambda ref: ref.end <= snapshot.position, walk.good)
            for frame in log.frames_at(covered):
                as_of.apply_frame(frame, log.path)
        # The user lookups a replay builds are exact by construction (Index.apply),
        # so the snapshot's are the only ones that can be wrong.
        if as_of.entries != snapshot.index.entries:
            what = "sessions"
            if _places(as_of) == _places(snapshot.index):
                what = "waits or deadlines"
            problem = f"the snapshot disagrees with the index rebuilt from the log (its {what})"
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


def _places(index: Index) -> dict[str, tuple[object, ...]]:
    """Each entry without its wait and deadline: where its record is, its owner and number."""
    return {key: tuple(entry[:4]) for key, entry in index.entries.items()}


def _of_an_earlier_generation(io: FileIO, path: str, header: FileHeader) -> bool:
    """Whether the snapshot at ``path`` verifies as one of this store's earlier generations."""
    try:
        body = decode_snapshot(io.read_file(path))
    except OSError:
        return False
    if body is None:
        return False
    generation = body.get("generation")
    return (
        body.get("store_uuid") == header.store_uuid.bytes
        and isinstance(generation, int)
        and generation < header.generation
    )


def _repair_by_rewrite(
    io: FileIO, directory: str, log: LogFile, walk: LogWalk, frames: Iterator[Frame], report: FsckReport
) -> None:
    """Write every verified record into a new generation, keeping the damaged bytes and old log."""
    for start, stop in walk.damaged_ranges:
        write_side_file(io, directory, LOG_NAME, io.pread(log.fd, stop - start, start))
    io.sync_dir(directory)
    log.adopt(log.scan(FILE_HEADER_SIZE, 1, lambda frame: None))
    # No seal: a repair runs with the store to itself, and its old log may be damaged.
    result = rewrite_generation(io, directory, log.header, frames, keep_old=True, seal=None)
    outcome = (
        f"rewrote the log as generation {result.generation}; "
        f"old log kept as {os.path.basename(result.old_log or '?')}"
    )
    for finding in report.findings:
        if finding in walk.unresolvable:
            finding.outcome = f"left as it is ({outcome}, which holds both copies)"
        elif finding.severity is FsckSeverity.ERROR and finding.kind != "identity":
            finding.resolve(FsckAction.REWROTE_LOG, outcome)


def _check_stray_files(io: FileIO, directory: str, report: FsckReport, *, remove: bool) -> None:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return
    unfinished = set(leftovers(directory, names))
    for name in names:
        full = os.path.join(directory, name)
        if name in unfinished and not is_temp_name(name):
            finding = FsckFinding(
                "stray-file",
                FsckSeverity.NOTE,
                name,
                None,
                "left by a compaction that stopped before its switch (a new generation never "
                "switched to, or a second name of the live log): not evidence, it holds nothing the "
                "log does not; the next open or compaction removes it",
            )
            if remove:
                io.unlink(full)
                finding.resolve(FsckAction.REMOVED, "removed")
            report.findings.append(finding)
        elif is_temp_name(name):
            finding = FsckFinding(
                "stray-file", FsckSeverity.ERROR, name, None, "a temp file left by an interrupted write"
            )
            if remove:
                io.unlink(full)
                finding.resolve(FsckAction.REMOVED, "removed")
            report.findings.append(finding)
        elif is_side_file(name) or is_old_name(name) or is_compact_name(name):
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
