"""What the command line shows while a long command runs: a progress bar on stderr that
starts over at each phase (see ``filestore.progress``), and the tally an import or migrate
keeps so that, interrupted, it can say how far it got."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import click
from tqdm import tqdm

from filestore.engine.layout import LOG_NAME


class Bar:
    """A progress bar on stderr that starts over, with its own total, at each phase
    (see ``filestore.progress``): a total and a time left that hold for the phase."""

    def __init__(self, command: str, unit: str, total: int | None) -> None:
        self._command = command
        self._meter = tqdm(
            desc=command, unit=unit, unit_scale=True, total=total, file=sys.stderr, leave=False
        )

    def __call__(self, amount: int) -> None:
        total = self._meter.total
        # Never past the total: a phase's total may be an estimate (a log's preallocated tail).
        self._meter.update(amount if total is None else min(amount, max(total - int(self._meter.n), 0)))

    def phase(self, name: str, total: int | None, unit: str) -> None:
        self._meter.unit = unit
        self._meter.reset(total=total)
        self._meter.set_description(f"{self._command}: {name}")

    def close(self) -> None:
        self._meter.close()


@contextlib.contextmanager
def progress_bar(enabled: bool, command: str, unit: str, total: int | None = None) -> Iterator[Bar | None]:
    """A bar drawn on stderr, or None when it is off (``--quiet``, ``--json``) or stderr is no terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    bar = Bar(command, unit, total)
    try:
        yield bar
    finally:
        bar.close()


class Tally:
    """Counts the sessions an import or migrate has stored (its ``copy`` phase), passing what it
    is told on to ``bar`` once there is one."""

    def __init__(self) -> None:
        self.stored = 0
        self.bar: Bar | None = None
        self._phase = "copy"

    def __call__(self, amount: int) -> None:
        if self._phase == "copy":
            self.stored += amount
        if self.bar is not None:
            self.bar(amount)

    def phase(self, name: str, total: int | None, unit: str) -> None:
        self._phase = name
        if self.bar is not None:
            self.bar.phase(name, total, unit)


@contextlib.contextmanager
def resumable(tally: Tally, what: str) -> Iterator[None]:
    """Say, when interrupted, how far an import or migrate got and that re-running resumes."""
    try:
        yield
    except KeyboardInterrupt:
        # An import also passes over sessions whose deadline has passed: they count as done.
        done = (
            "stored, found already there or skipped as expired"
            if what == "import"
            else "stored or found already there"
        )
        click.echo(
            f"filestore: {what} interrupted after {tally.stored} sessions ({done}); "
            "run the same command again to resume (what arrived is skipped)",
            err=True,
        )
        raise


def input_size(source: BinaryIO) -> int | None:
    """The size of a regular file given as input (None for a pipe or a terminal)."""
    try:
        status = os.fstat(source.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def log_size(directory: Path) -> int | None:
    try:
        return (directory / LOG_NAME).stat().st_size
    except OSError:
        return None
