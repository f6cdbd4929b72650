"""The ``filestore`` command line: a thin shell over the library's functions.

``main(argv)`` returns the exit code, so tests call it in-process. Codes
follow fsck(8): 0 clean or done, 1 errors corrected, 4 errors left
uncorrected, 8 operational error (store in use, missing, bad input...),
16 usage error; and the shell's for a signal: 130 interrupted (SIGINT),
143 terminated (SIGTERM), 141 stdout closed (a pipe's reader went away).
Output is text, or one JSON document on stdout with ``--json``. Progress
bars go to stderr, only when it is a terminal and never under ``--json``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final, TextIO

import click

from filestore._version import __version__
from filestore.backends import REDIS_SCHEMES, MovableStore, open_store
from filestore.backends import migrate as migrate_stores
from filestore.clibars import Tally, input_size, log_size, progress_bar, resumable
from filestore.cliendings import Terminated, quiet_stdout, sigterm_unwinds
from filestore.contract import DEFAULT_MAX_RECORD_SIZE
from filestore.demo import run_demo
from filestore.engine.directory import require_directory, require_store
from filestore.errors import FilestoreError, InvalidInputError
from filestore.ids import SessionKey
from filestore.memory import InMemorySessionStore
from filestore.offline import fsck as fsck_module
from filestore.offline.compact import compact as compact_store
from filestore.offline.fsck import fsck as check_store
from filestore.offline.fsck import iter_findings
from filestore.offline.stats import stats as store_stats
from filestore.progress import counted
from filestore.transfer import DEFAULT_BATCH, export_sessions, import_sessions

# fsck's own codes (1 corrected, 4 uncorrected) come from its report's exit_code.
EXIT_OK: Final = 0
EXIT_OPERATIONAL: Final = 8
EXIT_USAGE: Final = 16
# What a shell reports for a process a signal ended: 128 + the signal's number.
EXIT_INTERRUPTED: Final = 128 + signal.SIGINT
EXIT_TERMINATED: Final = 128 + signal.SIGTERM
EXIT_BROKEN_PIPE: Final = 128 + signal.SIGPIPE

DEFAULT_DEMO_DIR: Final = "filestore-demo"


def _paragraph(doc: str | None, opening: str) -> str:
    """The paragraph of ``doc`` that starts with ``opening`` (so help text is never written twice)."""
    for paragraph in (doc or "").split("\n\n"):
        if paragraph.strip().startswith(opening):
            return " ".join(paragraph.split())
    raise RuntimeError(f"no paragraph starting {opening!r}")  # pragma: no cover - a docs bug


FSCK_HELP: Final = f"""Check the store in DIRECTORY; with --repair, fix what can be fixed.

\b
Checks: the identity file against the log header; every record's length
and checksum; sequence numbers; torn tails; damaged records in the middle;
a seal left by an interrupted compaction; that every payload decodes and
validates as a SessionData; that no record moves a session to another
owner; the index snapshot (its sessions and user lookups) against an index
rebuilt from the log; stray temp and side files.

\b
Without --repair nothing is changed. Repair never destroys evidence: cut
or skipped bytes go to side files (sessions.log.trN), a damaged log is
rewritten as a new generation switched in atomically, and the old one is
kept as sessions.log.old (sessions.log.oldN if an older one is kept).

{_paragraph(fsck_module.__doc__, "Not detected:")}

\b
Exit codes: 0 clean, 1 errors corrected, 4 errors left uncorrected,
8 operational error (for example: the store is open elsewhere).
"""


def _is_directory_spec(spec: str) -> bool:
    return spec != "memory:" and not spec.startswith(REDIS_SCHEMES)


def _open_any(spec: str, trust_directory: bool, **options: Any) -> MovableStore:
    """The store ``spec`` names, with ``options``; ``trust_directory`` reaches only a directory's store."""
    if trust_directory and _is_directory_spec(spec):
        return open_store(spec, trust_directory=True, **options)
    return open_store(spec, **options)


def _open_source(spec: str, trust_directory: bool) -> MovableStore:
    """The store ``spec`` names, to read from: a directory's store opened read-only (it
    need not be writable, and reading it changes nothing), refusing one that holds no store
    before anything is made in it (a store whose log is missing is damage: CorruptionError)."""
    if _is_directory_spec(spec):
        require_directory(spec)
        require_store(spec, "export and migrate read an existing store only")
        return _open_any(spec, trust_directory, read_only=True)
    return _open_any(spec, trust_directory)


@contextlib.contextmanager
def _private_output(path: str) -> Iterator[TextIO]:
    """``path`` opened for writing (``-``: stdout); a new file is 0600 whatever the umask.

    A dump holds what the store keeps 0600, so it is made as private; an
    existing file is truncated and keeps the mode its owner gave it.
    """
    if path == "-":
        yield sys.stdout
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w", encoding="utf-8") as out:
        yield out


def _seconds(_context: click.Context, _parameter: click.Parameter, value: float) -> float:
    if not (value >= 0 and math.isfinite(value)):  # NaN or inf would make a wait endless
        raise click.BadParameter(f"{value} is not a finite number of seconds (0 or more)")
    return value


_WAIT_OPTION: Final = click.option(
    "--wait",
    type=float,
    default=0.0,
    show_default=True,
    callback=_seconds,
    metavar="SECONDS",
    help="Seconds to wait for other processes to close the store (0: refuse at once).",
)

_JSON_OPTION: Final = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")

_MAX_RECORD_OPTION: Final = click.option(
    "--max-record-size",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_RECORD_SIZE,
    show_default=True,
    metavar="BYTES",
    help="The target's limit on a session's data, encoded (the same on every backend).",
)

_QUIET_OPTION: Final = click.option(
    "--quiet", "-q", is_flag=True, help="Draw no progress bar (one is drawn only on a terminal anyway)."
)

_TRUST_OPTION: Final = click.option(
    "--trust-directory",
    is_flag=True,
    help="Open a store directory even if another account owns it or may write to it "
    "(only for a deliberately shared directory).",
)


def _emit(as_json: bool, document: dict[str, object], lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        for line in lines:
            click.echo(line)


class _ClosedPipe(Exception):
    """stdout's reader went away (``export | head``): not an error to report, but exit 141."""


class _Commands(click.Group):
    """The command group, passing a closed stdout up to ``main`` (click would exit 1 on it)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except OSError as error:
            if error.errno == errno.EPIPE:
                raise _ClosedPipe from error
            raise


@click.group(
    cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True
)
@click.version_option(__version__, prog_name="filestore", message="%(prog)s %(version)s")
@click.pass_context
def cli(context: click.Context) -> None:
    """filestore: run the demo; check, compact, inspect and move session stores."""
    if context.invoked_subcommand is None:
        click.echo(context.get_help())


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DEMO_DIR)
def demo(directory: Path) -> None:
    """Play a flow runner pausing and resuming sessions across a restart.

    DIRECTORY defaults to ./filestore-demo; running the demo again resumes
    the sessions a previous run left paused.
    """
    run_demo(directory, say=click.echo)


@cli.command(help=FSCK_HELP)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--repair", is_flag=True, help="Fix what can be fixed (needs the store to itself).")
@_WAIT_OPTION
@_JSON_OPTION
@_QUIET_OPTION
def fsck(directory: Path, repair: bool, wait: float, as_json: bool, quiet: bool) -> int:
    with progress_bar(not (as_json or quiet), "fsck", "B", log_size(directory)) as bar:
        report = check_store(directory, repair=repair, wait=wait, progress=bar)
    summary = (
        f"{report.path}: {report.records} records, {report.sessions} sessions, {len(report.errors)} errors"
    )
    _emit(as_json, report.to_dict(), [*iter_findings(report), summary])
    return report.exit_code


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--keep-old",
    is_flag=True,
    help="Keep the previous generation as sessions.log.old (or the first free sessions.log.oldN).",
)
@_WAIT_OPTION
@_JSON_OPTION
@_QUIET_OPTION
def compact(directory: Path, keep_old: bool, wait: float, as_json: bool, quiet: bool) -> int:
    """Rewrite only the live sessions of the store in DIRECTORY, offline.

    Refuses (exit 8) while other processes have the store open, unless they
    close within --wait seconds, and when a bad record is followed by valid
    ones (run fsck first). Crash-safe at every step. Exits 0 if and only if
    the store switched to the new generation; a failure or Ctrl-C before
    that removes what the compaction wrote (exit 8); steps after it that
    failed (the snapshot, on a full disk) are printed as warnings.
    """
    with progress_bar(not (as_json or quiet), "compact", "B", log_size(directory)) as bar:
        report = compact_store(directory, keep_old=keep_old, wait=wait, progress=bar)
    _emit(
        as_json,
        report.to_dict(),
        [
            f"{report.path}: generation {report.generation}, {report.live_records} live records kept, "
            f"{report.dropped_records} dropped",
            f"bytes before: {report.bytes_before}, after: {report.bytes_after} (live: {report.live_bytes})",
            *(f"warning: switched to generation {report.generation}, but {text}" for text in report.warnings),
        ],
    )
    return EXIT_OK


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@_JSON_OPTION
def stats(directory: str, as_json: bool) -> int:
    """Count what is in the store in DIRECTORY, without blocking its writers.

    It reads the store's files, so it takes a directory only; for another
    store, `filestore export STORE | wc -l` counts its sessions.
    """
    if not _is_directory_spec(directory):
        raise click.BadParameter(
            f"{directory} is not a directory: stats reads a store directory's files "
            "(to count a Redis store's sessions: filestore export URL | wc -l)",
            param_hint="DIRECTORY",
        )
    report = store_stats(directory)
    snapshot = (
        "none that verifies (opening replays the whole log)"
        if report.snapshot_position is None
        else f"{report.snapshot_bytes} bytes, covers the log to {report.snapshot_position} "
        f"(record {report.snapshot_last_seq}), written {report.snapshot_age_seconds} s ago"
    )
    _emit(
        as_json,
        report.to_dict(),
        [
            f"store {report.store_uuid}, generation {report.generation}",
            f"sessions: {report.sessions}, active users: {report.users}, records: {report.records}",
            f"live bytes: {report.live_bytes}, dead: {report.dead_bytes} ({report.dead_ratio:.1%})",
            f"log: {report.log_bytes} bytes used of {report.log_file_bytes}",
            f"snapshot: {snapshot}",
            *(f"  {name}: {size}" for name, size in report.files.items()),
        ],
    )
    return EXIT_OK


@cli.command(name="export")
@click.argument("store")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="File to write (default: stdout); a new file is made 0600.",
)
@_TRUST_OPTION
@_QUIET_OPTION
def export_command(store: str, output: str, trust_directory: bool, quiet: bool) -> int:
    """Write every session of STORE (a directory, memory: or a redis:// URL) as JSON Lines."""
    with (
        _open_source(store, trust_directory) as source,
        _private_output(output) as out,
        progress_bar(not quiet, "export", "sessions") as bar,
    ):
        count = export_sessions(source, out, progress=bar)
    click.echo(f"exported {count} sessions", err=True)
    return EXIT_OK


@cli.command(name="import")
@click.argument("store")
# Binary, so that a line that is not UTF-8 is refused with its own number.
@click.argument("source", type=click.File("rb"))
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Lines validated together before any of them is written.",
)
@_JSON_OPTION
@_TRUST_OPTION
@_QUIET_OPTION
@_MAX_RECORD_OPTION
def import_command(
    store: str,
    source: BinaryIO,
    batch_size: int,
    as_json: bool,
    trust_directory: bool,
    quiet: bool,
    max_record_size: int,
) -> int:
    """Import JSON Lines from SOURCE (a file, or - for stdin) into STORE.

    STORE is a directory (made if missing), memory: or a redis:// URL. Each
    batch is validated whole before any of it is written; a bad line, or a
    key that already holds a different session, stops the import (exit 8)
    naming its line number, with nothing of its batch written. Re-running
    skips sessions already there; a session whose deadline has passed is
    skipped and counted as expired.
    """
    # The bar follows the input's bytes; the tally counts the sessions stored.
    tally = Tally()
    with resumable(tally, "import"):
        lines = _first_batch_checked(source, batch_size, max_record_size)
        with (
            _open_any(store, trust_directory, max_record_size=max_record_size) as target,
            progress_bar(not (as_json or quiet), "import", "B", input_size(source)) as bar,
        ):
            report = import_sessions(target, counted(lines, len, bar), batch_size=batch_size, progress=tally)
    _emit(
        as_json,
        report.to_dict(),
        [
            f"{report.lines} lines: {report.imported} imported, {report.already_there} already there"
            + (f", {report.expired} expired (skipped)" if report.expired else "")
        ],
    )
    return EXIT_OK


@cli.command()
@click.argument("source")
@click.argument("target")
@_JSON_OPTION
@_TRUST_OPTION
@_QUIET_OPTION
@_MAX_RECORD_OPTION
def migrate(
    source: str, target: str, as_json: bool, trust_directory: bool, quiet: bool, max_record_size: int
) -> int:
    """Move every session from SOURCE to TARGET (directories, memory: or redis:// URLs).

    Keys, owners and user lookups are kept; re-running after an interruption
    skips what already arrived; a key holding different data in TARGET stops
    the migration (exit 8) rather than being overwritten. Ends by reading
    every session back from TARGET.
    """
    tally = Tally()
    with (
        resumable(tally, "migrate"),
        _open_source(source, trust_directory) as origin,
        _reached(origin) as origin,
        _open_any(target, trust_directory, max_record_size=max_record_size) as destination,
        progress_bar(not (as_json or quiet), "migrate", "sessions") as tally.bar,
    ):
        report = migrate_stores(origin, destination, progress=tally)
    _emit(
        as_json,
        report.to_dict(),
        [
            f"{report.source_sessions} sessions: {report.copied} copied, "
            f"{report.already_there} already there; all verified in {target}"
        ],
    )
    return EXIT_OK


class ArgumentError(InvalidInputError):
    """An argument no command line could carry: a usage error (exit 16)."""


def _first_batch_checked(source: BinaryIO, batch_size: int, max_record_size: int) -> Iterator[bytes]:
    """The input's lines, its first batch validated before the target is opened.

    A bad first batch (a gzip file, a line that is no session) then leaves no
    new, empty store behind: it is imported into a throwaway memory store
    first, which checks everything but what only the target knows.
    """
    head = list(itertools.islice(source, batch_size))
    import_sessions(InMemorySessionStore(max_record_size=max_record_size), head, batch_size=batch_size)
    return itertools.chain(head, source)


@contextlib.contextmanager
def _reached(store: MovableStore) -> Iterator[MovableStore]:
    """``store``, once one read has reached it: an unreachable source stops a migrate before
    it makes its target."""
    store.get_session(SessionKey(str(uuid.uuid4())))
    yield store


def _check_arguments(argv: list[str]) -> None:
    """Refuse an argument no command line could carry (NUL, a lone surrogate) before click sees it.

    ``main`` is also called in-process, where such a string would reach
    click's own path checks and escape as a bare ``ValueError``.
    """
    for number, argument in enumerate(argv, 1):
        if not isinstance(argument, str):
            raise ArgumentError(
                f"argument {number} is a {type(argument).__name__}, not a str",
                field="argv",
                rule="str arguments",
            )
        try:
            os.fsencode(argument)
        except UnicodeEncodeError:
            raise ArgumentError(
                f"argument {number} holds a lone surrogate, which no command line can carry",
                field="argv",
                rule="encodable",
            ) from None
        if "\0" in argument:
            raise ArgumentError(f"argument {number} holds a NUL character", field="argv", rule="no NUL")


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        with sigterm_unwinds():
            _check_arguments(sys.argv[1:] if argv is None else argv)
            result = cli.main(args=argv, prog_name="filestore", standalone_mode=False)
            sys.stdout.flush()  # here, so that a closed pipe is found while we can still answer 141
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.UsageError as error:
        error.show()
        return EXIT_USAGE
    except click.ClickException as error:
        error.show()
        return EXIT_OPERATIONAL
    except click.exceptions.Abort as error:
        # click turns Ctrl-C (and our SIGTERM) into Abort, keeping the cause; EOF too.
        if isinstance(error.__cause__, Terminated):
            click.echo("filestore: terminated", err=True)
            return EXIT_TERMINATED
        if isinstance(error.__cause__, KeyboardInterrupt):
            click.echo("filestore: interrupted", err=True)
            return EXIT_INTERRUPTED
        click.echo("filestore: aborted (end of input)", err=True)
        return EXIT_OPERATIONAL
    except (_ClosedPipe, BrokenPipeError):
        quiet_stdout()
        return EXIT_BROKEN_PIPE
    except ArgumentError as error:
        click.echo(f"filestore: {error}", err=True)
        return EXIT_USAGE
    except (FilestoreError, OSError) as error:
        click.echo(f"filestore: {error}", err=True)
        return EXIT_OPERATIONAL
    return int(result) if isinstance(result, int) else EXIT_OK


def main_entry() -> None:
    """The ``filestore`` console script."""
    raise SystemExit(main())
