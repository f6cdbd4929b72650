"""The command line as a shell runs it: a real ``python -m filestore`` process, its exit codes and signals.

Exit codes follow fsck(8) and the shell: 16 for a usage error, 130 when
interrupted (SIGINT), 143 when terminated (SIGTERM), 141 when stdout's
reader went away (``export | head``). An interrupted import says how far it
got, and running it again resumes. The processes are synchronised through
what they print on a pseudo-terminal (the progress bar is drawn once the
command runs), never with sleeps.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import attrs
import filelock
import pytest

import filestore
from filestore import FileSessionStore
from filestore.cli import main
from filestore.demo import demo_lock_path

from .support import ctx, data

FILESTORE = [sys.executable, "-m", "filestore"]
LIMIT = 60.0  # seconds before a test gives up waiting for a process: a failure, never a pause


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FILESTORE, *args], input=stdin.decode(), capture_output=True, text=True, check=False, timeout=LIMIT
    )


def make_store(path: Path, sessions: int) -> None:
    with FileSessionStore(path) as store:
        for number in range(sessions):
            tenant = ctx(user=f"user-{number}")
            paused = data(tenant, step=number)
            padded = attrs.evolve(paused, context_json=json.dumps({"n": number, "pad": "x" * 200}))
            store.create_session(tenant, padded)


def export_lines(path: Path) -> list[bytes]:
    done = subprocess.run([*FILESTORE, "export", str(path)], capture_output=True, check=True, timeout=LIMIT)
    return done.stdout.splitlines(keepends=True)


def read_until(fd: int, marker: bytes) -> bytes:
    """What the terminal ``fd`` shows until ``marker`` appears (fails after LIMIT seconds of silence)."""
    seen = b""
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], LIMIT)
        assert ready, f"no {marker!r} on the terminal; it showed {seen!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the other end closed (Linux raises EIO)
            chunk = b""
        assert chunk, f"the process ended before showing {marker!r}; it showed {seen!r}"
        seen += chunk
    return seen


def drain(fd: int) -> bytes:
    seen = b""
    while True:
        ready, _, _ = select.select([fd], [], [], LIMIT)
        assert ready, "the terminal stayed open"
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return seen
        if not chunk:
            return seen
        seen += chunk


@contextlib.contextmanager
def import_on_a_terminal(
    store: Path, first_lines: list[bytes]
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """An import reading a pipe that stays open after ``first_lines``, its stderr a terminal.

    Yields once the progress bar is drawn: the command is running, its
    signal handling in place, blocked reading its input.
    """
    controller, terminal = pty.openpty()
    # A terminal of no width gets no bar drawn: give it the classic 80 x 24.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(
        [*FILESTORE, "import", str(store), "-", "--batch-size", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    try:
        assert process.stdin is not None
        process.stdin.write(b"".join(first_lines))
        process.stdin.flush()
        read_until(controller, b"import")
        yield process, controller
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=LIMIT)
        if process.stdin is not None:
            process.stdin.close()
        os.close(controller)


@pytest.mark.parametrize(
    ("signal_number", "code", "word"),
    [(signal.SIGINT, 130, b"interrupted"), (signal.SIGTERM, 143, b"terminated")],
)
def test_an_interrupted_import_exits_as_the_shell_expects_and_resumes(
    tmp_path: Path, signal_number: int, code: int, word: bytes
) -> None:
    """SIGINT exits 130, SIGTERM 143, both saying how far the import got and that re-running resumes;
    the same command run again imports the rest and leaves the store equal to its source."""
    make_store(tmp_path / "source", sessions=6)
    lines = export_lines(tmp_path / "source")
    with import_on_a_terminal(tmp_path / "target", lines[:2]) as (process, terminal):
        process.send_signal(signal_number)
        assert process.wait(timeout=LIMIT) == code
        shown = drain(terminal)
    assert b"import interrupted after" in shown
    assert b"run the same command again to resume" in shown
    assert b"filestore: " + word in shown
    assert b"Traceback" not in shown
    again = run("import", str(tmp_path / "target"), "-", "--json", stdin=b"".join(lines))
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["imported"] + report["already_there"] == 6
    with FileSessionStore(tmp_path / "source") as source, FileSessionStore(tmp_path / "target") as target:
        assert set(target.iter_sessions()) == set(source.iter_sessions())


@pytest.mark.parametrize("sessions", [1, 200])
def test_export_into_a_closed_pipe_ends_quietly_with_141(tmp_path: Path, sessions: int) -> None:
    """`export | head`: a reader gone before the first line (1 session: found at the last flush;
    200: in the middle of writing) ends with 141, the shell's code for SIGPIPE, and no traceback."""
    make_store(tmp_path / "s", sessions=sessions)
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(
            [*FILESTORE, "export", str(tmp_path / "s")],
            stdout=writer,
            stderr=subprocess.PIPE,
            check=False,
            timeout=LIMIT,
        )
    finally:
        os.close(writer)
    assert done.returncode == 141, done.stderr
    assert b"Traceback" not in done.stderr
    assert b"Exception ignored" not in done.stderr


def test_bare_filestore_prints_help_and_exits_0() -> None:
    """`filestore` alone shows its commands on stdout and exits 0."""
    done = run()
    assert done.returncode == 0, done.stderr
    assert "Commands:" in done.stdout
    assert "fsck" in done.stdout


def test_version() -> None:
    """`filestore --version` prints the package's version (filestore/_version.py) and exits 0."""
    done = run("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"filestore {filestore.__version__}"


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["fsck"],
        ["fsck", "DIR", "--bogus"],
        ["fsck", "DIR", "--wait", "-1"],
        ["compact", "DIR", "--wait", "soon"],
        ["import", "DIR", "-", "--batch-size", "0"],
        ["nosuchcommand"],
        ["stats", "redis://localhost:1"],
        ["stats", "memory:"],
    ],
)
def test_usage_errors_exit_16_and_change_nothing(tmp_path: Path, args: list[str]) -> None:
    """A usage error (an unknown option or command, a missing argument, a bad value, stats of a URL)
    exits 16 with click's hint on stderr, nothing on stdout, and makes no directory."""
    done = run(*(str(tmp_path / "DIR") if arg == "DIR" else arg for arg in args))
    assert done.returncode == 16, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert "Error" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_stats_of_a_url_says_it_takes_a_directory() -> None:
    """stats reads a directory's files: a Redis URL is refused saying so, and how to count instead."""
    done = run("stats", "redis://localhost:1")
    assert "stats reads a store directory" in done.stderr
    assert "filestore export URL | wc -l" in done.stderr


@pytest.mark.parametrize("argument", ["a\0b", "\ud800"])
def test_an_argument_no_command_line_carries_is_a_usage_error(tmp_path: Path, argument: str) -> None:
    """In-process, a NUL or a lone surrogate in argv is refused as a usage error (16), nothing made."""
    assert main(["fsck", str(tmp_path / argument)]) == 16
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args", [["fsck", "S"], ["compact", "S"], ["stats", "S"], ["export", "S"], ["migrate", "S", "T"]]
)
def test_a_missing_store_does_not_exist_in_every_command(tmp_path: Path, args: list[str]) -> None:
    """Every command says a missing directory "does not exist" (one wording), exits 8, makes nothing."""
    done = run(*(str(tmp_path / arg) if arg in {"S", "T"} else arg for arg in args))
    assert done.returncode == 8, done.stderr
    assert done.stderr.strip() == f"filestore: InvalidInput: {tmp_path / 'S'} does not exist"
    assert list(tmp_path.iterdir()) == []


def test_two_demos_on_one_new_directory_end_as_two_runs_in_turn(tmp_path: Path) -> None:
    """Two `filestore demo` runs started together on one new directory both succeed, never
    print a missing session, and leave what two runs one after the other leave."""
    demos = [
        subprocess.Popen(
            [*FILESTORE, "demo", str(tmp_path / "shared")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [demo.communicate(timeout=LIMIT) for demo in demos]
    for demo, (out, err) in zip(demos, outputs, strict=True):
        assert demo.returncode == 0, (out, err)
        assert "no session" not in out + err
    for _ in range(2):
        assert run("demo", str(tmp_path / "in-turn")).returncode == 0
    with FileSessionStore(tmp_path / "shared") as shared, FileSessionStore(tmp_path / "in-turn") as in_turn:
        assert sorted(stored.data.to_json() for stored in shared.iter_sessions()) == sorted(
            stored.data.to_json() for stored in in_turn.iter_sessions()
        )


def test_a_demo_waits_for_the_one_running(tmp_path: Path) -> None:
    """While another run holds the store, a demo says it waits, and goes on once that run ends."""
    FileSessionStore(tmp_path / "d").close()
    with filelock.FileLock(demo_lock_path(tmp_path / "d")):
        demo = subprocess.Popen(
            [*FILESTORE, "demo", str(tmp_path / "d")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert demo.stdout is not None
        lines = iter(demo.stdout.readline, "")
        assert "filestore demo: store at" in next(lines)
        assert "another demo is running" in next(lines)
    out, err = demo.communicate(timeout=LIMIT)
    assert demo.returncode == 0, err
    assert "2 sessions still paused" in out


def test_a_demo_lock_is_beside_the_store_however_it_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``demo .`` from inside the store, or the store named through ``..``: one lock, the file
    beside the store (``.`` put a ``..demo-lock`` inside it, and each spelling had its own lock,
    so two runs on one store raced again)."""
    store = tmp_path / "d"
    store.mkdir()
    monkeypatch.chdir(store)
    for spelling in [Path("."), Path("../d"), Path("../d/."), store]:
        assert demo_lock_path(spelling) == tmp_path.resolve() / ".d.demo-lock", spelling


def run_on_a_terminal(*args: str) -> tuple[int, bytes]:
    """Run a command with its stderr a terminal; its exit code and what the terminal showed."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen([*FILESTORE, *args], stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    try:
        shown = drain(controller)
        return process.wait(timeout=LIMIT), shown
    finally:
        os.close(controller)


def test_a_terminal_sees_each_phase_and_quiet_sees_none(tmp_path: Path) -> None:
    """On a terminal, fsck's bar moves through scan, verify and snapshot, and compact's through
    scan and copy; --quiet draws nothing."""
    make_store(tmp_path / "s", sessions=20)
    code, shown = run_on_a_terminal("fsck", str(tmp_path / "s"))
    assert code == 0
    positions = [shown.find(f"fsck: {phase}".encode()) for phase in ("scan", "verify", "snapshot")]
    assert -1 not in positions, shown
    assert positions == sorted(positions)
    code, shown = run_on_a_terminal("compact", str(tmp_path / "s"))
    assert code == 0
    assert b"compact: scan" in shown
    assert b"compact: copy" in shown
    for command in (["fsck", str(tmp_path / "s")], ["export", str(tmp_path / "s")]):
        code, shown = run_on_a_terminal(*command, "--quiet")
        assert code == 0
        assert command[0].encode() + b":" not in shown
        assert b"%" not in shown
