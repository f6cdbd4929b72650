"""How the command line ends when the process is told to: SIGTERM unwinds as Ctrl-C does
(cleanups run), and a stdout whose reader went away is quieted so the last flush raises nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as Ctrl-C does (cleanups run)."""


def raise_terminated(_signal: int, _frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Make SIGTERM unwind like SIGINT while the command runs (main thread only: signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def quiet_stdout() -> None:
    """Point a closed stdout at /dev/null, so the interpreter's last flush raises nothing."""
    original = sys.__stdout__
    if original is None or sys.stdout is not original:
        return  # none, or captured in-process: not ours to touch
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, original.fileno())
        os.close(devnull)
