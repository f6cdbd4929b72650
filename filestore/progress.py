"""Progress of the long-running tools, phase by phase.

Every tool that may take long (``fsck``, ``compact``, ``migrate``, the
imports and exports) takes ``progress``: a callable given the amount of
work done since its last call. If it also has a method
``phase(name, total, unit)``, it is told as each phase begins: its name
(``"scan"``, ``"verify"``, ``"rewrite"``, ``"copy"``...), the work it will
take (``None`` if unknown) and the unit (``"B"``, bytes; ``"sessions"``).
A bar can then show a total and a time left that hold for the phase, rather
than stalling near the end of one pass while another runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

_T = TypeVar("_T")


@runtime_checkable
class PhasedProgress(Protocol):
    """A progress callback that is also told where each phase begins."""

    def __call__(self, amount: int) -> None: ...

    def phase(self, name: str, total: int | None, unit: str) -> None: ...


def begin_phase(progress: Callable[[int], None] | None, name: str, total: int | None, unit: str) -> None:
    """Tell ``progress`` that phase ``name`` begins, if it wants to know."""
    if isinstance(progress, PhasedProgress):
        progress.phase(name, total, unit)


def phased_only(progress: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """``progress`` if it follows phases, else ``None``: for the work of a phase added later
    (compact's scan, migrate's verify), which a plain callback, summing one pass, never saw."""
    return progress if isinstance(progress, PhasedProgress) else None


def counted(
    items: Iterable[_T], size: Callable[[_T], int], progress: Callable[[int], None] | None
) -> Iterator[_T]:
    """``items``, reporting each one's ``size`` to ``progress`` once it has been taken."""
    for item in items:
        yield item
        if progress is not None:
            progress(size(item))
