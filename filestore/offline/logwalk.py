"""fsck's reading of a damaged log: which verified records to keep, which to set aside, which are lost.

A log holds its records numbered 1, 2, 3, ... one after the other. Damage can
leave bytes that do not verify (a torn write, flipped bits, a zeroed block, a
frame of another generation) and also frames that verify but are out of place:
a misdirected write copies a valid frame of this log over another record, a
disk duplicates a write. Such a copy must cost at most the record it overwrote,
never the records around it.

So the walk first collects every frame that verifies (walking frame by frame,
and past bytes that do not verify by searching for the next valid frame), then
decides:

- the records *in place* are the longest run of frames whose numbers increase
  in file order (of two equal copies, the earlier); everything else is out of
  place;
- an out-of-place frame whose number is also in place is a copy: set aside
  (never replayed, so it can never roll a session back). If its bytes differ
  from the kept one, nothing says which is right: that finding is left
  uncorrected;
- an out-of-place frame with a number found nowhere else is the only copy of
  that record: kept, and replayed in its place in the sequence;
- the numbers below the highest kept one that no frame carries are lost, and
  named. Records lost after the last one kept cannot be told from a log that
  ended earlier.

A seal (the last record of a generation that compaction replaced) is kept as
the interrupted compaction it is only at the very end; anywhere else it is a
copy, set aside.

The walk streams the log: it reads frames a chunk at a time and keeps only
where each record is (``FrameRef``: offset, size, kind, number), never a
payload, so its memory follows the number of records, not the log's bytes.
The few payloads a decision needs (two copies compared, a seal's
generation) are read again by offset, and so are the records a repair
rewrites (``LogFile.frames_at``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Final

import attrs

from filestore.engine.framing import FILE_HEADER_SIZE, KIND_SEAL, FrameRef, Probe
from filestore.engine.layout import LOG_NAME
from filestore.engine.logfile import LogFile
from filestore.engine.records import decode_seal
from filestore.offline.findings import FsckFinding, FsckSeverity

_NONE: Final = -1


@attrs.frozen
class _Bad:
    """Bytes that do not verify, from ``start`` to the next valid frame (or the end of the file)."""

    start: int
    stop: int
    why: str
    next_frame: FrameRef


@attrs.define
class LogWalk:
    """What one pass over the log found, and what a repair must do about it."""

    good: list[FrameRef] = attrs.field(factory=list)  # the records to keep, in sequence order
    findings: list[FsckFinding] = attrs.field(factory=list)  # in file order
    damaged_ranges: list[tuple[int, int]] = attrs.field(factory=list)  # bytes set aside
    tail_cut: int | None = None  # with no rewrite: cut the log here
    tail_findings: list[FsckFinding] = attrs.field(factory=list)  # what that cut corrects
    rewrite: bool = False  # records lost, out of place, or set aside before the log's end
    lost: list[int] = attrs.field(factory=list)
    unresolvable: list[FsckFinding] = attrs.field(factory=list)
    end: int = FILE_HEADER_SIZE  # the end of the last record kept in place


def walk_log(log: LogFile, progress: Callable[[int], None] | None = None) -> LogWalk:
    """Read the whole log and decide, record by record (see the module's docs); ``progress``
    is told the bytes read."""
    frames, bad, tail = _collect(log, progress)
    walk = LogWalk()
    found: list[tuple[int, FsckFinding]] = []

    seal: FrameRef | None = None
    if frames and frames[-1].kind == KIND_SEAL and all(f.seq < frames[-1].seq for f in frames[:-1]):
        seal = frames.pop()
    in_place = _in_place(frames)
    by_seq: dict[int, FrameRef] = {frames[i].seq: frames[i] for i in in_place}
    last_in_place = frames[max(in_place)] if in_place else None
    walk.end = last_in_place.end if last_in_place else FILE_HEADER_SIZE
    aside = _sort_out(log, frames, in_place, by_seq, found, walk)
    walk.good = sorted(by_seq.values(), key=lambda frame: frame.seq)
    for item in bad:
        found.append(
            (
                item.start,
                _error(
                    "damaged-record",
                    item.start,
                    f"{item.stop - item.start} bytes do not verify ({item.why}), the next valid "
                    f"record is {item.next_frame.seq} at offset {item.next_frame.offset}",
                ),
            )
        )
    found.sort(key=lambda pair: pair[0])
    _name_lost(walk, found)

    # Only a clean run of records 1..n in place, followed by nothing but copies,
    # a seal or a torn tail, is corrected by a cut; anything else by a rewrite.
    after_end = [frame.offset for frame in aside if frame.offset >= walk.end]
    walk.rewrite = (
        walk.rewrite
        or bool(walk.lost)
        or bool(walk.unresolvable)
        or bool(bad)
        or len(after_end) != len(aside)
        or (seal is not None and (bool(aside) or seal.offset != walk.end))
    )
    walk.damaged_ranges = [(frame.offset, frame.end) for frame in aside]
    walk.damaged_ranges += [(item.start, item.stop) for item in bad]
    walk.damaged_ranges.sort()
    walk.findings = [finding for _, finding in found]
    walk.findings += _end_findings(log, seal, tail, walk.good[-1].seq + 1 if walk.good else 1)
    if not walk.rewrite and (aside or seal is not None or tail is not None):
        walk.tail_cut = walk.end
        walk.tail_findings = [finding for finding in walk.findings if finding.severity is FsckSeverity.ERROR]
    return walk


def _sort_out(
    log: LogFile,
    frames: list[FrameRef],
    in_place: set[int],
    by_seq: dict[int, FrameRef],
    found: list[tuple[int, FsckFinding]],
    walk: LogWalk,
) -> list[FrameRef]:
    """Decide about each frame out of place: keep the only copy of a record (adding it to
    ``by_seq``), set a second copy or a stray seal aside (returned). Findings go to ``found``."""
    aside: list[FrameRef] = []
    for i, frame in enumerate(frames):
        if i in in_place:
            continue
        kept = by_seq.get(frame.seq)
        if frame.kind == KIND_SEAL:
            finding = _error(
                "sequence",
                frame.offset,
                f"a seal (record {frame.seq}, naming generation {_seal_generation(log, frame)}) in "
                "the middle of the log: a misdirected or duplicated write; it is not replayed",
            )
        elif kept is None:
            by_seq[frame.seq] = frame
            walk.rewrite = True
            finding = _error(
                "sequence",
                frame.offset,
                f"record {frame.seq} is out of place (its only copy); it is replayed "
                "in its place in the sequence",
            )
            found.append((frame.offset, finding))
            continue
        elif kept.kind == frame.kind and _payload(log, kept) == _payload(log, frame):
            finding = _error(
                "sequence",
                frame.offset,
                f"record {frame.seq} again (first at offset {kept.offset}): a duplicated, "
                "misdirected or stale write; it is not replayed",
            )
        else:
            finding = _error(
                "sequence",
                frame.offset,
                f"record {frame.seq} again, with other contents than at offset {kept.offset}: "
                "the copy in sequence is kept, but nothing says which is right",
            )
            walk.unresolvable.append(finding)
        aside.append(frame)
        found.append((frame.offset, finding))

    return aside


def _end_findings(
    log: LogFile, seal: FrameRef | None, tail: tuple[int, int] | None, expected: int
) -> list[FsckFinding]:
    """What ends the log: a seal (a compaction that never switched), or else a torn tail."""
    if seal is not None:
        return [
            _error(
                "interrupted-compaction",
                seal.offset,
                f"the log ends with a seal naming generation {_seal_generation(log, seal)}, "
                "but it is still the current log: a compaction stopped before its switch",
            )
        ]
    if tail is not None:
        start, length = tail
        return [
            _error(
                "torn-tail",
                start,
                f"{length} bytes after the last valid record "
                f"(record {expected} never completed, or was damaged)",
            )
        ]
    return []


def _collect(
    log: LogFile, progress: Callable[[int], None] | None
) -> tuple[list[FrameRef], list[_Bad], tuple[int, int] | None]:
    """Where every verified frame is, in file order; the bad regions between them; a torn
    tail (its offset and length, preallocated zeros excluded) after the last one."""
    frames: list[FrameRef] = []
    bad: list[_Bad] = []
    offset = FILE_HEADER_SIZE
    done = 0  # bytes reported, the file header's included

    def advance(to: int) -> None:
        nonlocal done
        if progress is not None and to > done:
            progress(to - done)
            done = to

    while True:
        why, stop = Probe.END.value, offset
        for kind, frame, at in log.frames(offset):
            if frame is None:
                why, stop = kind.value, at
                break
            frames.append(FrameRef.of(frame))
            advance(frame.offset + frame.size)
        resume = next(log.valid_frames(stop), None)
        if resume is None:
            advance(log.io.size(log.fd))
            data_end = log.data_end(stop)
            return frames, bad, (stop, data_end - stop) if data_end > stop else None
        bad.append(_Bad(stop, resume.offset, why, FrameRef.of(resume)))
        advance(resume.offset)
        offset = resume.offset


def _in_place(frames: list[FrameRef]) -> set[int]:
    """The indexes of the longest run of frames numbered in increasing order (file order),
    preferring the earlier of equal copies; seals never belong."""
    tails: list[int] = []  # tails[k]: the frame ending the best run of length k + 1 found so far
    tail_seqs: list[int] = []  # their numbers, increasing
    parent = [_NONE] * len(frames)
    for i, frame in enumerate(frames):
        if frame.kind == KIND_SEAL:
            continue
        at = bisect.bisect_left(tail_seqs, frame.seq)
        if at < len(tails) and tail_seqs[at] == frame.seq:
            continue  # an equal copy later in the file: the earlier one stays
        parent[i] = tails[at - 1] if at else _NONE
        if at == len(tails):
            tails.append(i)
            tail_seqs.append(frame.seq)
        else:
            tails[at], tail_seqs[at] = i, frame.seq
    chain: set[int] = set()
    i = tails[-1] if tails else _NONE
    while i != _NONE:
        chain.add(i)
        i = parent[i]
    return chain


def _name_lost(walk: LogWalk, found: list[tuple[int, FsckFinding]]) -> None:
    """Name the numbers below the highest kept record that no frame carries.

    Each run of lost numbers is told in the finding about the bytes where it
    was (damaged bytes, or a copy written over it); without one (records cut
    out of the file) in a finding of its own.
    """
    previous: FrameRef | None = None
    for frame in walk.good:
        first = previous.seq + 1 if previous else 1
        if frame.seq > first:
            walk.lost.extend(range(first, frame.seq))
            numbers = f"record {first}" if frame.seq == first + 1 else f"records {first} to {frame.seq - 1}"
            region_start = previous.end if previous else FILE_HEADER_SIZE
            in_order = previous is None or previous.offset < frame.offset
            there = [finding for at, finding in found if in_order and region_start <= at < frame.offset]
            if there:
                there[0].detail += f"; {numbers} lost"
            else:
                found.append(
                    (
                        frame.offset,
                        _error(
                            "sequence",
                            frame.offset,
                            f"record {frame.seq} where {first} was expected ({numbers} missing, lost)",
                        ),
                    )
                )
        previous = frame
    found.sort(key=lambda pair: pair[0])


def _payload(log: LogFile, ref: FrameRef) -> bytes:
    """The payload of a frame the walk found, read again (the walk keeps none), alone."""
    return next(log.frames_at([ref], chunk=0)).payload


def _seal_generation(log: LogFile, seal: FrameRef) -> int:
    return decode_seal(_payload(log, seal))


def _error(kind: str, offset: int, detail: str) -> FsckFinding:
    return FsckFinding(kind, FsckSeverity.ERROR, LOG_NAME, offset, detail)
