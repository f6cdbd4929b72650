"""The file store's options: durability modes, defaults, and their validation."""

from __future__ import annotations

import enum
from typing import Final

from filestore.errors import InvalidInputError

DEFAULT_MAX_RECORD_SIZE: Final = 16 << 20
DEFAULT_SNAPSHOT_RECORDS: Final = 10_000
DEFAULT_SNAPSHOT_BYTES: Final = 64 << 20
DEFAULT_PREALLOCATE: Final = 1 << 20
DEFAULT_CACHE_SIZE: Final = 10_000


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


def count(name: str, value: int, *, minimum: int) -> int:
    """``value`` if it is an integer of at least ``minimum``, else ``InvalidInputError`` naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidInputError(
            f"{name} must be an integer >= {minimum}, not {value!r}", field=name, rule=f">= {minimum}"
        )
    return value


def seconds(name: str, value: float) -> float:
    """``value`` as a number of seconds >= 0, else ``InvalidInputError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidInputError(
            f"{name} must be a number of seconds >= 0, not {value!r}", field=name, rule=">= 0"
        )
    return float(value)


def flag(name: str, value: bool) -> bool:
    """``value`` if it is a bool, else ``InvalidInputError`` naming it (``1`` or ``"yes"`` are not)."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, not {value!r}", field=name, rule="a bool")
    return value
