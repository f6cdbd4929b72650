"""Every file name in a store directory, and the predicates on them.

A store directory holds:

    sessions.log          the append-only log (the current generation)
    sessions.idx          the index snapshot (optional: opening rebuilds it)
    filestore.json        the store's identity (format, version, store UUID)
    LOCK                  the writer lock (flock)
    OPEN                  open handles' shared registrations (flock)
    sessions.log.compact  a new generation being written by a rewrite
    sessions.log.old[N]   a previous generation kept by a rewrite (evidence)
    <name>.trN            bytes cut from ``sessions.log`` or ``filestore.json`` (evidence)
    .<name>.<pid>.<hex>.tmp  a file being written before its atomic rename

The names live here once so that the engine, the offline tools and the tests
agree on them; nothing else spells a name or a pattern out by hand.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
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

_OLD_PATTERN: Final = re.compile(rf"^{re.escape(OLD_NAME)}(?:[2-9]|[1-9]\d+)?$")
_SIDE_FILE_PATTERN: Final = re.compile(rf"^(?:{re.escape(LOG_NAME)}|{re.escape(META_NAME)})\.tr[1-9]\d*$")
_TEMP_PATTERN: Final = re.compile(r"^\.[^/]+\.\d+\.[0-9a-f]{8}\.tmp$")


def old_name(number: int) -> str:
    """The name of the ``number``-th kept generation: ``sessions.log.old``, then ``.old2``..."""
    return OLD_NAME if number == 1 else f"{OLD_NAME}{number}"


def is_old_name(name: str) -> bool:
    """Whether ``name`` is a previous generation kept by a rewrite."""
    return _OLD_PATTERN.match(name) is not None


def side_file_name(directory: str, base: str, exists: Callable[[str], bool]) -> str:
    """The first free ``<base>.trN`` path in ``directory``, for bytes cut from ``base``."""
    number = 1
    while exists(os.path.join(directory, f"{base}.tr{number}")):
        number += 1
    return os.path.join(directory, f"{base}.tr{number}")


def is_side_file(name: str) -> bool:
    """Whether ``name`` holds bytes cut from the log or the identity file."""
    return _SIDE_FILE_PATTERN.match(name) is not None


def temp_path(directory: str, name: str) -> str:
    """A fresh temp name for a file that will be renamed to ``name``: unique per process and call."""
    return os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of our temp files (left behind if a crash hit before its rename)."""
    return _TEMP_PATTERN.match(name) is not None
