"""Every file name in a store directory, and the predicates on them.

A store directory holds:

    sessions.log          the append-only log (the current generation)
    sessions.idx          the index snapshot (optional: opening rebuilds it)
    filestore.json        the store's identity (format, version, store UUID)
    LOCK                  the writer lock (flock)
    OPEN                  open handles' shared registrations (flock)
    sessions.log.compact[N]  a new generation being written by a rewrite
    sessions.log.old[N]   a previous generation kept by a rewrite (evidence)
    <name>.trN            bytes cut from ``sessions.log`` or ``filestore.json`` (evidence)
    .<name>.<pid>.<hex>.tmp  a file being written before its atomic rename

The names live here once so that the engine, the offline tools and the tests
agree on them; nothing else spells a name or a pattern out by hand.

A numbered name (``.trN``, ``.oldN``, ``.compactN``) is picked as the first
one nothing occupies: a symlink there, even a dangling one, is a name taken
(``os.path.lexists``), never written through and never removed, and files
are created with ``O_EXCL | O_NOFOLLOW`` so a link planted meanwhile is
refused rather than followed.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from typing import Final

LOG_NAME: Final = "sessions.log"
SNAPSHOT_NAME: Final = "sessions.idx"
META_NAME: Final = "filestore.json"
LOCK_NAME: Final = "LOCK"
REGISTRATION_NAME: Final = "OPEN"
COMPACT_NAME: Final = LOG_NAME + ".compact"
OLD_NAME: Final = LOG_NAME + ".old"
# Files of ours that may sit in a directory before the store exists in it.
BOOKKEEPING: Final = frozenset({LOCK_NAME, REGISTRATION_NAME})

_NUMBER: Final = r"(?:[2-9]|[1-9]\d+)?"
_OLD_PATTERN: Final = re.compile(rf"^{re.escape(OLD_NAME)}{_NUMBER}$")
_COMPACT_PATTERN: Final = re.compile(rf"^{re.escape(COMPACT_NAME)}{_NUMBER}$")
_SIDE_FILE_PATTERN: Final = re.compile(rf"^(?:{re.escape(LOG_NAME)}|{re.escape(META_NAME)})\.tr[1-9]\d*$")
_TEMP_PATTERN: Final = re.compile(r"^\.[^/]+\.\d+\.[0-9a-f]{8}\.tmp$")


def old_name(number: int) -> str:
    """The name of the ``number``-th kept generation: ``sessions.log.old``, then ``.old2``..."""
    return OLD_NAME if number == 1 else f"{OLD_NAME}{number}"


def is_old_name(name: str) -> bool:
    """Whether ``name`` is a previous generation kept by a rewrite."""
    return _OLD_PATTERN.match(name) is not None


def compact_name(number: int) -> str:
    """The ``number``-th name for a new generation: ``sessions.log.compact``, then ``.compact2``..."""
    return COMPACT_NAME if number == 1 else f"{COMPACT_NAME}{number}"


def is_compact_name(name: str) -> bool:
    """Whether ``name`` is (a candidate name of) a new generation being written by a rewrite."""
    return _COMPACT_PATTERN.match(name) is not None


def side_file_names(base: str) -> Iterator[str]:
    """``<base>.tr1``, ``<base>.tr2``...: the names for bytes cut from ``base``, in the order tried."""
    return (f"{base}.tr{number}" for number in itertools.count(1))


def is_side_file(name: str) -> bool:
    """Whether ``name`` holds bytes cut from the log or the identity file."""
    return _SIDE_FILE_PATTERN.match(name) is not None


def temp_path(directory: str, name: str) -> str:
    """A fresh temp path for a file that will be renamed to ``name``: unique per process and call."""
    return os.path.join(directory, next(temp_names(name)))


def temp_names(name: str, tries: int = 64) -> Iterator[str]:
    """Fresh temp names for a file that will be renamed to ``name``: unique per process and call.

    More than one, since a name may turn out taken (a link planted there).
    """
    return (f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp" for _ in range(tries))


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of our temp files (left behind if a crash hit before its rename)."""
    return _TEMP_PATTERN.match(name) is not None
