"""The file store's options: durability modes, defaults, and their validation."""

from __future__ import annotations

import enum
import os
import stat
import threading
from collections.abc import Callable
from typing import Final

from filestore.errors import InvalidInputError

DEFAULT_SNAPSHOT_RECORDS: Final = 10_000
DEFAULT_SNAPSHOT_BYTES: Final = 64 << 20
DEFAULT_PREALLOCATE: Final = 1 << 20
DEFAULT_CACHE_SIZE: Final = 10_000
# More than any disk: a larger request is a mistake (and overflows fallocate's off_t).
MAX_BYTES: Final = 1 << 62

# Linux's limits on a path and on one of its names, in bytes of the file
# system encoding. A store path must leave room for the longest name the
# store writes inside it (a temp file: ".sessions.log.compact.<pid>.<hex>.tmp"),
# so the file system never refuses a name halfway through a write.
NAME_MAX: Final = 255
PATH_MAX: Final = 4096
_ROOM_FOR_NAMES: Final = 64


class Durability(enum.StrEnum):
    """When a write call returns, relative to the disk."""

    FSYNC = "fsync"
    """The record is written and fdatasync'd: survives power loss (default)."""
    GROUP = "group"
    """As FSYNC, but concurrent threads' records share one fdatasync."""
    NONE = "none"
    """Left to the OS: survives a crash of the process, not of the machine."""


def parse_durability(value: Durability | str) -> Durability:
    """``value`` as a ``Durability``, or ``InvalidInputError`` listing the choices."""
    try:
        return Durability(value)
    except ValueError:
        choices = ", ".join(mode.value for mode in Durability)
        raise InvalidInputError(
            f"durability must be one of {choices}, not {value!r}", field="durability", rule=choices
        ) from None


def count(name: str, value: int, *, minimum: int, maximum: int = MAX_BYTES) -> int:
    """``value`` if it is an integer in ``minimum..maximum``, else ``InvalidInputError`` naming it.

    ``True`` is not ``1``: a bool is refused.
    """
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise InvalidInputError(
            f"{name} must be an integer from {minimum} to {maximum}, not {value!r}",
            field=name,
            rule=f"{minimum}..{maximum}",
        )
    return value


def seconds(name: str, value: float) -> float:
    """``value`` as a finite number of seconds >= 0, else ``InvalidInputError`` naming it.

    NaN and infinity are refused: a lock wait longer than ``threading.TIMEOUT_MAX``
    (about 292 years) overflows the clock.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 <= value <= threading.TIMEOUT_MAX
    ):
        raise InvalidInputError(
            f"{name} must be a finite number of seconds >= 0, not {value!r}", field=name, rule=">= 0, finite"
        )
    return float(value)


def flag(name: str, value: bool) -> bool:
    """``value`` if it is a bool, else ``InvalidInputError`` naming it (``1`` or ``"yes"`` are not)."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, not {value!r}", field=name, rule="a bool")
    return value


def permission_bits(name: str, value: int, *, owner_needs: int) -> int:
    """``value`` as permission bits (``0o0`` to ``0o777``) granting the owner ``owner_needs``.

    A bool is refused (``True`` is not a mode), and so is a mode that locks
    the store's own process out of what it must do (read and write files;
    list, create in and enter its directory): it could only fail later,
    after files were made.
    """
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0o777:
        raise InvalidInputError(
            f"{name} must be permission bits from 0o0 to 0o777, not {value!r}",
            field=name,
            rule="an int from 0o0 to 0o777",
        )
    if value & owner_needs != owner_needs:
        raise InvalidInputError(
            f"{name} {value:#o} does not give the owner {stat.filemode(owner_needs)[1:4]}, "
            "which the store needs",
            field=name,
            rule=f"grants the owner {owner_needs:#o}",
        )
    return value


def callback(name: str, value: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """``value`` if it is ``None`` or callable, else ``InvalidInputError`` naming it."""
    if value is not None and not callable(value):
        raise InvalidInputError(
            f"{name} must be callable or None, not {type(value).__name__}", field=name, rule="callable"
        )
    return value


def store_path(value: str | os.PathLike[str], *, field: str = "path") -> str:
    """``value`` as an absolute store directory path, or ``InvalidInputError`` saying why not.

    A path is text (``str`` or a ``PathLike`` giving one): ``bytes`` are
    refused rather than guessed at; ``os.fsdecode`` turns them into the
    ``str`` that names the same file. Refused too: a NUL character, a lone
    surrogate the file system encoding cannot write, a name longer than
    ``NAME_MAX`` bytes, and a path too long to leave room under
    ``PATH_MAX`` for the store's own file names. Checked before anything is
    created, so a refused path leaves no trace.
    """
    try:
        text = os.fspath(value)
    except TypeError:
        text = None
    if not isinstance(text, str):
        hint = " (use os.fsdecode() to make it a str)" if isinstance(text, bytes) else ""
        raise InvalidInputError(
            f"{field} must be a str or os.PathLike path, not {type(value).__name__}{hint}",
            field=field,
            rule="a str path",
        )
    if not text:
        raise InvalidInputError(f"{field} must not be empty", field=field, rule="not empty")
    if "\0" in text:
        raise InvalidInputError(f"{field} {text!r} holds a NUL character", field=field, rule="no NUL")
    absolute = os.path.abspath(text)
    try:
        encoded = os.fsencode(absolute)
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{field} {text!r} holds a character the file system encoding cannot write (a lone surrogate)",
            field=field,
            rule="encodable",
        ) from None
    longest = max(len(name) for name in encoded.split(b"/"))
    if longest > NAME_MAX:
        raise InvalidInputError(
            f"{field} has a name of {longest} bytes, more than the file system's {NAME_MAX}",
            field=field,
            rule=f"names of at most {NAME_MAX} bytes",
        )
    if len(encoded) > PATH_MAX - _ROOM_FOR_NAMES:
        raise InvalidInputError(
            f"{field} is {len(encoded)} bytes long: the store's files in it would pass the "
            f"file system's {PATH_MAX}-byte limit; use a path of at most "
            f"{PATH_MAX - _ROOM_FOR_NAMES} bytes",
            field=field,
            rule=f"at most {PATH_MAX - _ROOM_FOR_NAMES} bytes",
        )
    return absolute
