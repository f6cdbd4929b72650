"""Writing a new generation of the log and switching to it: shared by compact and fsck --repair.

Never a moment without a valid store. The steps, each crash-safe:

1. Write the new generation to ``sessions.log.compact`` (the first of
   ``.compact``, ``.compact2``... that nothing occupies; a regular file
   there is a stray of an earlier rewrite, removed first), generation + 1,
   same store UUID, records renumbered from 1; fdatasync it, fsync the directory.
2. Verify it by reading it back through the normal frame checks.
3. Only with ``keep_old``: hard-link the current log to ``sessions.log.old``
   and fsync the directory. An ``.old`` kept by an earlier repair or
   ``--keep-old`` is evidence and is never replaced: the link takes the
   first free ``sessions.log.oldN`` instead. Without ``keep_old`` there is
   no link: the rename below replaces the old log atomically, so the old
   generation stays the log's content until the switch is durable, and no
   second name can outlive the compaction holding the old generation's space.
4. Seal the old log: a synced SEAL record tells every open handle (which
   looks for new records before each call) that this generation is done,
   so none appends to it again; they wait for the writer lock and reload.
5. COMMIT POINT: rename ``sessions.log.compact`` over ``sessions.log``, fsync
   the directory.
6. Write the new generation's index snapshot (the old one names the old
   generation, so until then opening simply rebuilds it).

A failure or an interrupt (any ``BaseException``: ``KeyboardInterrupt``,
``SystemExit``, ``MemoryError``, ``asyncio.CancelledError``) before the
commit point undoes the rewrite: the seal is taken back (zeroed), the new
file and the link removed, and the exception raised; the store is the old
generation, as it was. After the commit point the generation has advanced,
and an error or a ``KeyboardInterrupt`` raises nothing: a failed or
interrupted directory fsync or snapshot write is reported in
``RewriteResult.warnings`` (a snapshot is a cache the next open rewrites).
Any other ``BaseException`` after the commit point (``SystemExit``,
cancellation, a simulated crash) is raised as it is, and the caller holding
the old log must complete the switch before it writes again: a live handle
steps back before its seal and follows it (``LogView.compact``; issue 20,
where such an interrupt left the handle appending to the replaced log).
What a crash (or a failing clean-up) leaves, the next open or rewrite
removes under the writer lock (``directory.remove_leftovers``); a seal at
the end of the log is cut by the next writer.

The caller holds the writer lock (and, offline, the exclusive registration).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Protocol

import attrs

from filestore.engine.directory import remove_leftovers, store_file_mode
from filestore.engine.fileio import FileIO
from filestore.engine.framing import (
    FILE_HEADER_SIZE,
    FLAG_SYNCED,
    KIND_PUT,
    FileHeader,
    Frame,
    encode_frame,
    frame_crc,
)
from filestore.engine.index import Index
from filestore.engine.layout import LOG_NAME, compact_name, old_name
from filestore.engine.logfile import LogFile
from filestore.engine.records import (
    Put,
    decode_record,
    is_put_of,
    put_has_wait_or_deadline,
    put_points_lookup,
)
from filestore.engine.snapshot import encode_snapshot, write_snapshot
from filestore.errors import CorruptionError, message_of

_WRITE_BATCH: Final = 4 << 20

logger = logging.getLogger("filestore")


class Sealer(Protocol):
    """The old log as the rewrite needs it: sealed before the switch, unsealed if it fails."""

    def append_seal(self, next_generation: int) -> object: ...

    def withdraw_seal(self) -> None: ...


@attrs.frozen
class RewriteResult:
    """What the new generation holds, and what did not get done after the switch.

    ``switch_durable`` is false when the directory fsync after the switching
    rename failed: a power loss may still bring back the old generation
    (complete, but without writes made to the new one since).
    ``warnings`` says, in words, each step after the switch that failed or
    was interrupted. ``snapshot_bytes`` is 0 when no snapshot was written.
    """

    generation: int
    records: int
    log_bytes: int
    snapshot_bytes: int
    old_log: str | None
    switch_durable: bool = True
    warnings: tuple[str, ...] = ()


@attrs.define
class _Made:
    """What a rewrite has made so far, for undoing it before the commit point."""

    compact_path: str | None = None
    compact_inode: tuple[int, int] | None = None
    old_path: str | None = None


def rewrite_generation(
    io: FileIO,
    directory: str,
    old_header: FileHeader,
    frames: Iterable[Frame],
    *,
    keep_old: bool,
    seal: Sealer | None,
    file_mode: int | None = None,
) -> RewriteResult:
    """Write ``frames`` (in order) as the next generation and switch to it atomically.

    Its files get ``file_mode``, by default the current log's mode. ``seal``
    is the old log, sealed before the switch (``None``: nobody else can have it open).
    Returns only if the generation advanced; raises (having undone its
    work) only if it did not. See the module docs.
    """
    if file_mode is None:
        file_mode = store_file_mode(directory)
    header = FileHeader(old_header.store_uuid, old_header.generation + 1)
    log_path = os.path.join(directory, LOG_NAME)
    made = _Made()
    index = Index()
    interrupted = False
    try:
        # An earlier rewrite's, which a crash kept from tidying up (temp files are the open's
        # to remove: a snapshot written beside the writer lock may be one).
        remove_leftovers(io, directory, temps=False)
        seq, end, last_frame_offset, last_frame_crc = _write_new_log(
            io, directory, made, header, frames, index, file_mode
        )
        compact_path = made.compact_path
        assert compact_path is not None, "set by _write_new_log"
        io.sync_dir(directory)
        _verify(io, directory, os.path.basename(compact_path), header, seq, end)
        if keep_old:
            made.old_path = _free_name(directory, old_name)
            io.link(log_path, made.old_path)
            io.sync_dir(directory)
        if seal is not None:
            seal.append_seal(header.generation)
        # COMMIT POINT: from here on the store is the new generation.
        io.rename(compact_path, log_path)
    except BaseException as error:
        if not _switched(log_path, made):
            _undo(io, directory, made, seal, log_path)
            raise
        if not isinstance(error, (Exception, KeyboardInterrupt)):
            raise  # switched: the caller completes it (see the module docs)
        interrupted = True  # the rename was done, then the call failed or was interrupted
    warnings: list[str] = []
    if interrupted:
        warnings.append("the switching rename was done, then failed or was interrupted")
    switch_durable = _finish(
        warnings, "make the switch durable (fsync of the directory)", lambda: io.sync_dir(directory)
    )
    snapshot = encode_snapshot(
        header,
        index,
        position=end,
        last_seq=seq,
        last_frame_offset=last_frame_offset,
        last_frame_crc=last_frame_crc,
    )
    written = not interrupted and _finish(
        warnings,
        "write the new generation's index snapshot (the next open writes it)",
        lambda: write_snapshot(io, directory, snapshot, mode=file_mode),
    )
    for warning in warnings:
        logger.warning(
            "filestore: %s switched to generation %d, but %s", directory, header.generation, warning
        )
    return RewriteResult(
        header.generation,
        seq,
        end,
        len(snapshot) if written else 0,
        made.old_path,
        switch_durable,
        tuple(warnings),
    )


def _finish(warnings: list[str], what: str, step: Callable[[], object]) -> bool:
    """Run a step after the commit point: its failure or interrupt is a warning, not an error
    (the generation advanced all the same). Whether it completed."""
    try:
        step()
    except Exception as error:  # after the switch, every failure is only reported
        warnings.append(f"could not {what}: {message_of(error)}")
        return False
    except KeyboardInterrupt:
        warnings.append(f"was interrupted before it could {what}")
        return False
    return True


def _switched(log_path: str, made: _Made) -> bool:
    """Whether ``sessions.log`` is already the new generation's file (the rename was done)."""
    if made.compact_inode is None:
        return False
    try:
        status = os.lstat(log_path)
    except OSError:
        return False
    return (status.st_dev, status.st_ino) == made.compact_inode


def _undo(io: FileIO, directory: str, made: _Made, seal: Sealer | None, log_path: str) -> None:
    """Before the commit point: take back the seal, remove the new file and the link.

    Best effort (on a failing disk this may fail too: the next open or
    rewrite removes what is left, and cuts a seal left at the log's end).
    """
    if seal is not None:
        with contextlib.suppress(OSError):
            seal.withdraw_seal()
    removed = False
    for path in (made.compact_path, made.old_path):
        if path is None:
            continue
        try:
            status = os.lstat(path)
            if not stat.S_ISREG(status.st_mode):
                continue  # never ours: we create only regular files, and only where nothing was
            if path == made.old_path and not os.path.samestat(status, os.lstat(log_path)):
                continue  # not (or no longer) a second name of the live log
            if path == made.compact_path and made.compact_inode not in {None, (status.st_dev, status.st_ino)}:
                continue
            io.unlink(path)
            removed = True
        except OSError:
            continue
    if removed:
        with contextlib.suppress(OSError):
            io.sync_dir(directory)


def _free_name(directory: str, name: Callable[[int], str]) -> str:
    """The first of ``name(1)``, ``name(2)``... in ``directory`` that nothing occupies.

    A link there, even a dangling one, is a name taken. A regular file at a
    compaction name that survived ``remove_leftovers`` is not ours either.
    """
    number = 1
    while os.path.lexists(path := os.path.join(directory, name(number))):
        number += 1
    return path


def _write_new_log(
    io: FileIO,
    directory: str,
    made: _Made,
    header: FileHeader,
    frames: Iterable[Frame],
    index: Index,
    file_mode: int,
) -> tuple[int, int, int, int]:
    """Write the new log at the first free compaction name (noting it and its inode in
    ``made``); return its last sequence number, end, and last frame's offset and CRC."""
    while True:
        made.compact_path = _free_name(directory, compact_name)
        try:
            fd = io.open(made.compact_path, exclusive=True, mode=file_mode)
        except FileExistsError:
            continue  # taken since we looked (a link planted there): the next name
        break
    try:
        status = os.fstat(fd)
        made.compact_inode = (status.st_dev, status.st_ino)
        salt = header.salt
        pending = [header.encode()]
        pending_bytes = FILE_HEADER_SIZE
        written = 0
        end = FILE_HEADER_SIZE
        seq = 0
        last_frame_offset = 0
        last_frame_crc = 0
        for frame in frames:
            seq += 1
            # Everything in a rewritten log is synced before it becomes current.
            data = encode_frame(salt, frame.kind, FLAG_SYNCED, seq, seq - 1, frame.payload)
            index.apply(decode_record(frame.kind, frame.payload), end, len(data), seq)
            pending.append(data)
            pending_bytes += len(data)
            last_frame_offset = end
            last_frame_crc = frame_crc(data)
            end += len(data)
            if pending_bytes >= _WRITE_BATCH:
                io.pwrite(fd, b"".join(pending), written)
                written += pending_bytes
                pending, pending_bytes = [], 0
        io.pwrite(fd, b"".join(pending), written)
        io.sync_data(fd)
    finally:
        io.close(fd)
    return seq, end, last_frame_offset, last_frame_crc


def _verify(io: FileIO, directory: str, name: str, header: FileHeader, seq: int, end: int) -> None:
    """Read the new generation back: every frame verifies, in sequence, ending at ``end``."""
    log = LogFile.open(io, directory, name=name)
    try:
        if log.header != header:
            raise CorruptionError("the new generation's header reads back wrong", path=log.path, offset=0)
        result = log.scan(FILE_HEADER_SIZE, 1, lambda frame: None)
        if result.last_seq != seq or result.end != end or result.stopped_at_bad:
            raise CorruptionError(
                f"the new generation reads back {result.last_seq} records ending at {result.end}, "
                f"expected {seq} ending at {end}; the old generation is untouched",
                path=log.path,
                offset=result.end,
            )
    finally:
        log.close()


def live_frames(
    log: LogFile,
    index: Index,
    progress: Callable[[int], None] | None = None,
    *,
    now: int | None = None,
) -> Iterator[Frame]:
    """The newest PUT of every live session, in log order, ready for a new generation.

    A session expired at ``now`` (unix ms; ``None``: keep all) is left out,
    and with it its lookup and scope entries. A record is re-encoded with the
    wait its index entry has now: one whose scope entry another key took
    over must not take it back when the new generation is replayed (whatever
    the order of the two records). The log order is kept all the same.

    Each is copied as a PUT that points its user's lookup exactly when the
    lookup points at it now, so the new generation has exactly the old one's
    lookups: one the lookup no longer points at (its user's newer session was
    removed) is re-encoded as a PUT that does not point it, and one the
    lookup points at although its newest PUT does not (a user-less update of
    a session created for the ctx's user) as one that does.
    """
    live = {
        entry.offset: (key, entry)
        for key, entry in index.items()
        if now is None or entry.deadline is None or now < entry.deadline
    }
    for _, frame, _ in log.frames(FILE_HEADER_SIZE, stop=log.end):
        if frame is None:
            return
        if progress is not None:
            progress(frame.size)
        found = live.get(frame.offset)
        if found is None:
            continue
        key, entry = found
        if (
            frame.kind != KIND_PUT
            or not entry.matches(frame)
            or not is_put_of(frame.payload, key, entry.scope)
        ):
            # A valid record written at the wrong place: copying it would give the new
            # generation two of another session and none of this one, or an older value of
            # this one as its newest.
            raise CorruptionError(
                f"{log.path}: the record at offset {frame.offset} is not the one the index expects "
                "there (another session's or an older one, a misdirected write?); the old "
                "generation is untouched: "
                "run `filestore fsck --repair`",
                path=log.path,
                offset=frame.offset,
            )
        active = index.lookup(entry.scope) == key
        if not put_has_wait_or_deadline(frame.payload) and (
            entry.scope.user is None or put_points_lookup(frame.payload) == active
        ):
            yield frame
            continue
        record = decode_record(frame.kind, frame.payload)
        assert isinstance(record, Put), "index entries point at PUT records"
        points = active if entry.scope.user is not None else record.points_lookup
        wanted = attrs.evolve(record, points_lookup=points, wait=entry.wait)
        yield frame if wanted == record else attrs.evolve(frame, payload=wanted.encode())
