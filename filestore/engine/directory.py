"""The store directory: making it, telling a store from a stranger, and its identity file.

Layout::

    filestore.json   identity (format, version, store UUID); written after the log
    sessions.log     the log (filestore.engine.framing)
    sessions.idx     the index snapshot (filestore.engine.snapshot)
    LOCK, OPEN       lock files (filestore.engine.locking); never deleted
    sessions.log.trN bytes cut from a torn tail, kept as evidence

Rule: never create a new store where data may be missing. An empty (or new)
directory becomes a store; a directory with the store's metadata, snapshot
or side files but no log is an error with recovery advice; a directory of
other files is refused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import uuid
from typing import Final

from filestore.engine.fileio import FileIO, replace_file, require_supported_platform
from filestore.engine.framing import FileHeader
from filestore.engine.layout import (
    BOOKKEEPING,
    LOG_NAME,
    META_NAME,
    SNAPSHOT_NAME,
    is_compact_name,
    is_old_name,
    is_side_file,
    is_temp_name,
)
from filestore.engine.locking import held_by_a_writer, network_filesystem, planted_link
from filestore.engine.logfile import LogFile
from filestore.errors import (
    CorruptionError,
    InvalidInputError,
    UnsupportedFilesystemError,
    UntrustedDirectoryError,
)

META_FORMAT: Final = "filestore"
META_VERSION: Final = 1
_WRITE_BY_OTHERS: Final = stat.S_IWGRP | stat.S_IWOTH
# What the file system answers about a path itself (rather than about the disk):
# making the store directory fails on these because of the path the caller gave.
_PATH_REFUSALS: Final = frozenset({errno.ELOOP, errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.EROFS})

logger = logging.getLogger("filestore")


def require_directory(path: str) -> None:
    """Refuse a store path that is missing or not a directory, in the one wording every tool uses;
    and any store on a platform the store does not support (``require_supported_platform``)."""
    require_supported_platform(path)
    if os.path.isdir(path):
        return
    if os.path.lexists(path):
        raise InvalidInputError(f"{path} is not a directory", field="path", rule="a store directory")
    raise InvalidInputError(f"{path} does not exist", field="path", rule="an existing store directory")


def prepare_directory(io: FileIO, path: str, dir_mode: int) -> None:
    """Make ``path`` (mode ``dir_mode``) and its missing parents durably; refuse a non-directory.

    Parents get ``dir_mode`` less group and other write: whoever may write
    a parent can swap the store directory for one of their own. Nothing is
    made on a platform the store does not support (``require_supported_platform``).
    """
    require_supported_platform(path)
    if os.path.isdir(path):
        return
    if os.path.lexists(path):
        raise InvalidInputError(f"{path} exists and is not a directory", field="path", rule="a directory")
    missing = [path]
    while not os.path.isdir(parent := os.path.dirname(missing[-1])):
        missing.append(parent)
    # Each level by hand, not os.makedirs: its parents get 0o777 less the
    # umask, which under umask 0 is a world-writable directory above the store.
    for directory in reversed(missing):
        try:
            os.mkdir(directory, dir_mode if directory == path else dir_mode & ~_WRITE_BY_OTHERS)
        except FileExistsError:
            continue  # another process made it first
        except NotADirectoryError:
            raise InvalidInputError(
                f"{path} cannot be made: a part of it above is a file, not a directory",
                field="path",
                rule="a directory",
            ) from None
        except OSError as error:
            if error.errno not in _PATH_REFUSALS:
                raise
            raise InvalidInputError(
                f"{path} cannot be made: {error.strerror} ({directory})",
                field="path",
                rule="a directory this process can make",
            ) from error
        io.sync_dir(os.path.dirname(directory))


def refuse_links(path: str) -> None:
    """Refuse a store directory in which a store file is a symbolic link: ``UntrustedDirectoryError``.

    The store opens its files with ``O_NOFOLLOW`` and so never writes
    through a link, but then fails midway with ``ELOOP``; refusing them all
    here, before anything is created, names the link and leaves the
    directory as it was. Runs even with ``trust_directory=True``: a link
    planted at ``LOCK``, ``OPEN`` or ``sessions.log`` could make the store
    write where its owner never meant it to. Links at side-file, ``.old``,
    compaction and temp names are not refused: the store never opens those
    names, it passes over any taken one to the next free name.
    """
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.name in _OPENED_FILES and entry.is_symlink():
                raise planted_link(entry.path)


def check_trusted(path: str, *, dir_mode: int, file_mode: int) -> None:
    """Refuse a directory another account could write to: ``UntrustedDirectoryError``.

    As ssh's StrictModes: the directory and every store file in it must be
    owned by the effective uid (root included), and writable by group or
    others only where ``dir_mode`` / ``file_mode`` grant it, i.e. only as the
    store itself would have made them. Anyone else who may write there could
    plant a session this store would serve, or read the ones it writes. Runs
    before anything is created in the directory.
    """
    euid = os.geteuid()
    _check_trusted_entry(path, os.stat(path), euid, dir_mode, "dir_mode")
    with os.scandir(path) as entries:
        for entry in entries:
            if not _is_store_file(entry.name):
                continue
            try:
                status = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # a temp file another handle renamed meanwhile: nothing left to trust
            _check_trusted_entry(entry.path, status, euid, file_mode, "file_mode")


# The names the store opens by name; every other store name is created fresh (O_EXCL).
_OPENED_FILES: Final = frozenset({LOG_NAME, SNAPSHOT_NAME, META_NAME} | BOOKKEEPING)


def _is_store_file(name: str) -> bool:
    return (
        name in {LOG_NAME, SNAPSHOT_NAME, META_NAME} | BOOKKEEPING
        or is_compact_name(name)
        or is_old_name(name)
        or is_side_file(name)
        or is_temp_name(name)
    )


def _check_trusted_entry(path: str, status: os.stat_result, euid: int, granted: int, option: str) -> None:
    mode = stat.S_IMODE(status.st_mode)
    if status.st_uid != euid:
        raise UntrustedDirectoryError(
            f"{path} is owned by uid {status.st_uid}, not by this process's uid {euid}: its owner "
            "could plant a session this store would serve, and read the ones it writes. Use a "
            f"directory owned by uid {euid} (or chown it), or pass trust_directory=True if the "
            "sharing is deliberate",
            path=path,
            uid=status.st_uid,
            mode=mode,
        )
    # A symlink's own mode means nothing, and the store never opens through one.
    extra = 0 if stat.S_ISLNK(status.st_mode) else mode & _WRITE_BY_OTHERS & ~granted
    if extra:
        who = {stat.S_IWGRP: "group", stat.S_IWOTH: "others"}.get(extra, "group and others")
        raise UntrustedDirectoryError(
            f"{path} is writable by {who} (mode {mode:#o}), which the store's {option} {granted:#o} "
            "never makes: whoever else may write there could plant a session this store would "
            f"serve. Run `chmod go-w {path}`; if the sharing is deliberate, open with a {option} "
            "that grants it, or with trust_directory=True",
            path=path,
            uid=status.st_uid,
            mode=mode,
        )


def store_file_mode(path: str) -> int:
    """The permission bits of the store's files: its log's, which every rewritten file takes.

    The offline tools are not given the ``file_mode`` the store was made
    with; they keep the one it has, so a rewrite never widens or narrows it.
    """
    return stat.S_IMODE(os.stat(os.path.join(path, LOG_NAME)).st_mode)


def check_filesystem(path: str, *, allow: bool) -> None:
    """Refuse a store on NFS/SMB (``UnsupportedFilesystemError``) unless ``allow``; then warn."""
    fstype = network_filesystem(path)
    if fstype is None:
        return
    if not allow:
        raise UnsupportedFilesystemError(
            f"{path} is on a {fstype} file system, where file locks and fsync are not "
            "reliable across hosts; use a local file system (or pass allow_network_filesystem=True "
            "if only one host ever opens the store)",
            path=path,
            fstype=fstype,
        )
    logger.warning("filestore: %s is on a %s file system; you accepted the risk", path, fstype)


def needs_housekeeping(path: str) -> bool:
    """Whether opening must take the writer lock to tidy the directory (see ``open_or_create_log``)."""
    names = os.listdir(path)
    return LOG_NAME not in names or META_NAME not in names or bool(leftovers(path, names))


def leftovers(path: str, names: list[str]) -> list[str]:
    """Which of ``names`` (in the store directory ``path``) are files an interrupted write or
    rewrite left behind, holding nothing the store does not: temp files, a new generation never
    switched to (``sessions.log.compact[N]``), a second name of the live log (``sessions.log.old[N]``
    linked before a switch that never came). Only regular files: a link is nobody's leftover.

    Safe to remove only under the writer lock, which every such write holds.
    """
    found: list[str] = []
    try:
        log: os.stat_result | None = os.lstat(os.path.join(path, LOG_NAME))
    except FileNotFoundError:
        log = None  # then a new generation or an old name may be all that is left: keep them
    for name in names:
        rewrite_file = is_compact_name(name) or is_old_name(name)
        if not (is_temp_name(name) or (rewrite_file and log is not None)):
            continue
        try:
            status = os.lstat(os.path.join(path, name))
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(status.st_mode):
            continue
        if is_old_name(name) and log is not None and not os.path.samestat(status, log):
            continue  # a previous generation kept on purpose: evidence
        found.append(name)
    return found


def open_existing_log(io: FileIO, path: str, file_mode: int, *, readonly: bool = False) -> LogFile:
    """Open the store's log, checking it against the identity file (rewritten if missing,
    unless ``readonly``: then a missing one is left missing, and the log opened for reading)."""
    log = LogFile.open(io, path, readonly=readonly)
    try:
        _check_meta(io, path, log, set(os.listdir(path)), file_mode, rewrite=not readonly)
    except BaseException:
        log.close()
        raise
    return log


def remove_leftovers(io: FileIO, path: str, *, temps: bool = True) -> None:
    """Delete what interrupted writes and rewrites left behind (see ``leftovers``); temp
    files only if ``temps``.

    Only under the writer lock: every such file is written under it, so none
    of them can belong to a write still in progress, but an index snapshot's
    temp file, which is written without it and ``flock``ed meanwhile: one held
    by a live writer is left alone.
    """
    stray = [
        name
        for name in leftovers(path, os.listdir(path))
        if not is_temp_name(name) or (temps and not held_by_a_writer(os.path.join(path, name)))
    ]
    for name in stray:
        with contextlib.suppress(FileNotFoundError):
            io.unlink(os.path.join(path, name))
    if stray:
        io.sync_dir(path)


def looks_like_a_store(names: set[str]) -> bool:
    """Whether a directory holding ``names`` is (or was) a filestore, even with its log missing."""
    return bool(names & {LOG_NAME, META_NAME, SNAPSHOT_NAME}) or any(
        name.startswith(LOG_NAME + ".") for name in names
    )


def missing_log(path: str, ours: set[str]) -> CorruptionError:
    """The error for a directory holding the files ``ours`` but no log: a store whose log is
    missing (data may be lost: never open it as a new or empty store), or other files."""
    evidence = ", ".join(sorted(ours))
    hint = (
        "this looks like a filestore whose log is missing; do not write to it: look for "
        "sessions.log.old or a backup, and run `filestore fsck`"
        if looks_like_a_store(ours)
        else "it is not a filestore directory; pick an empty or new directory"
    )
    return CorruptionError(
        f"{path} holds {evidence} but no {LOG_NAME}: {hint}", path=os.path.join(path, LOG_NAME), offset=0
    )


def require_store(path: str, why: str) -> None:
    """Refuse a directory that holds no log: ``CorruptionError`` if it holds a store's other
    files (its log is missing: damage), else ``InvalidInputError`` ("holds no store", ``why``)."""
    names = set(os.listdir(path))
    if LOG_NAME in names:
        return
    ours = {name for name in names if not name.startswith(".")} - BOOKKEEPING
    if looks_like_a_store(ours):
        raise missing_log(path, ours)
    raise InvalidInputError(
        f"{path} holds no store (no {LOG_NAME}); {why}", field="path", rule="an existing store"
    )


def open_or_create_log(io: FileIO, path: str, file_mode: int) -> LogFile:
    """Open the store's log, or make a new store if the directory holds none.

    Call with the writer lock held, so two processes never both create one.
    """
    remove_leftovers(io, path)
    names = set(os.listdir(path))
    if LOG_NAME in names:
        return open_existing_log(io, path, file_mode)
    ours = {name for name in names if not name.startswith(".")} - BOOKKEEPING
    if ours:
        raise missing_log(path, ours)
    header = FileHeader(uuid.uuid4(), generation=1)
    log = LogFile.create(io, path, header, mode=file_mode)
    write_meta(io, path, header, file_mode)
    return log


def _check_meta(
    io: FileIO, path: str, log: LogFile, names: set[str], file_mode: int, *, rewrite: bool
) -> None:
    meta_path = os.path.join(path, META_NAME)
    if META_NAME not in names:
        if not rewrite:
            return
        # The log is the truth and the metadata is written after it, so a
        # crash between the two (or a lost file) is finished here.
        write_meta(io, path, log.header, file_mode)
        return
    if read_meta_uuid(io, meta_path) != str(log.header.store_uuid):
        raise CorruptionError(
            f"{meta_path} does not name the store UUID of {log.path}: files of two stores are "
            "mixed in one directory; run `filestore fsck`",
            path=meta_path,
            offset=0,
        )


def read_meta_uuid(io: FileIO, meta_path: str) -> str | None:
    """The store UUID the identity file names, or ``None`` if it is unreadable."""
    try:
        meta = json.loads(io.read_file(meta_path))
    except (ValueError, OSError):
        return None
    value = meta.get("store_uuid") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def write_meta(io: FileIO, path: str, header: FileHeader, file_mode: int) -> None:
    """Atomically (re)write the identity file for the log ``header`` describes."""
    meta = {"format": META_FORMAT, "version": META_VERSION, "store_uuid": str(header.store_uuid)}
    replace_file(io, path, META_NAME, json.dumps(meta).encode(), mode=file_mode)
