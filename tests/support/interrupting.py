"""Interrupting the file layer: ``KeyboardInterrupt``, ``SystemExit``, ``MemoryError`` or
``asyncio.CancelledError`` raised at one chosen call, as a signal or a cancellation may arrive
at any point of a Python program (issue 20).

``InterruptAt`` counts every call of the file layer (every operation, reads and closes
included, not only the mutating ones ``FaultyIO`` counts) that ``matches``, and raises
``fault()`` at the ``nth``: before the call is done, or, with ``after``, once it is done (an
interrupt landing just after a rename, a sync or a close). It fires once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Final

from .fileio import Call, HookedIO

# The four interrupts of the issue: none is an ``OSError``, and only ``MemoryError`` is an ``Exception``.
INTERRUPTS: Final[dict[str, type[BaseException]]] = {
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": SystemExit,
    "MemoryError": MemoryError,
    "CancelledError": asyncio.CancelledError,
}


def every_call(call: Call) -> bool:
    """Match every call."""
    return True


def on(operation: str, name: str | None = None) -> Callable[[Call], bool]:
    """Match the calls of ``operation`` (naming a file called ``name``, when given)."""
    return lambda call: call.operation == operation and (name is None or os.path.basename(call.path) == name)


class InterruptAt(HookedIO):
    """Raises ``fault()`` at the ``nth`` call that ``matches`` (before it, or ``after`` it); once.

    ``armed = False`` stops counting (set it while opening, or to reopen through
    the same object); ``fired`` says whether it was raised, ``at`` the call it hit.
    """

    def __init__(
        self,
        nth: int,
        fault: type[BaseException],
        *,
        after: bool = False,
        matches: Callable[[Call], bool] = every_call,
    ) -> None:
        super().__init__()
        self.nth = nth
        self.fault = fault
        self.raise_after = after
        self.matches = matches
        self.seen = 0
        self.fired = False
        self.at: Call | None = None
        self.armed = True

    def _due(self, call: Call) -> bool:
        return self.armed and not self.fired and self.matches(call) and self.seen == self.nth

    def before(self, call: Call) -> None:
        super().before(call)
        if self.armed and not self.fired and self.matches(call):
            with self._lock:
                self.seen += 1
            if not self.raise_after and self._due(call):
                self.fired, self.at = True, call
                raise self.fault()

    def after(self, call: Call) -> None:
        if self.raise_after and self._due(call):
            self.fired, self.at = True, call
            raise self.fault()
