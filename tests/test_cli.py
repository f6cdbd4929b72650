"""The command line, in-process through main(argv): exit codes, --json output, help.

Also the library functions only the command line uses: ``stats`` and the
JSON Lines ``export_sessions``/``import_sessions`` (with a property test:
export then import into an empty store gives equal contents).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from filestore import FileSessionStore, InvalidInputError, SessionData, SessionKey
from filestore.cli import main
from filestore.contract import StoredSession, session_scope
from filestore.engine.locking import Registration, WriterLock
from filestore.offline import fsck as fsck_module
from filestore.offline.stats import stats
from filestore.transfer import export_sessions, import_sessions, parse_line, session_line

from .support import ctx, data
from .support.fileio import ReadOnlyIO
from .support.permissions import mode_of, umask
from .support.strategies import ids, session_datas, small_session_datas
from .support.waiting import release_once_blocked

COMMANDS = ["demo", "fsck", "compact", "stats", "export", "import", "migrate"]


def make_store(path: Path, sessions: int = 5) -> list[str]:
    with FileSessionStore(path, preallocate_bytes=0) as store:
        return [
            store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(sessions)
        ]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`filestore COMMAND --help` exits 0 and describes the command."""
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out
    assert len(out.splitlines()) > 4


def test_fsck_help_says_what_it_does_not_detect(capsys: pytest.CaptureFixture[str]) -> None:
    """fsck --help carries the fsck module's own "Not detected" paragraph, and the exit codes."""
    main(["fsck", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    [not_detected] = [
        " ".join(paragraph.split())
        for paragraph in (fsck_module.__doc__ or "").split("\n\n")
        if paragraph.strip().startswith("Not detected")
    ]
    assert not_detected in out
    assert "4 errors left uncorrected" in out
    assert "Without --repair nothing is changed" in out


def test_demo_runs_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's demo runs, restarts, and a second run resumes what the first left paused."""
    assert main(["demo", str(tmp_path / "demo")]) == 0
    first = capsys.readouterr().out
    assert "runner restarts" in first
    assert "2 sessions still paused" in first
    assert main(["demo", str(tmp_path / "demo")]) == 0
    assert "opened with 2 paused sessions" in capsys.readouterr().out


def test_fsck_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fsck: 0 clean, 4 with damage, 1 once repaired, then 0; JSON reports parse."""
    make_store(tmp_path / "s")
    assert main(["fsck", str(tmp_path / "s"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exit_code"] == 0
    with (tmp_path / "s" / "sessions.log").open("ab") as log:
        log.write(b"\xf5\x1e torn")
    assert main(["fsck", str(tmp_path / "s"), "--json"]) == 4
    report = json.loads(capsys.readouterr().out)
    assert [finding["kind"] for finding in report["findings"]] == ["torn-tail"]
    assert main(["fsck", str(tmp_path / "s"), "--repair"]) == 1
    assert "torn-tail" in capsys.readouterr().out
    assert main(["fsck", str(tmp_path / "s")]) == 0


def test_operational_errors_exit_8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing store or a store in use is exit 8 with a message; a missing one "does not exist"."""
    assert main(["fsck", str(tmp_path / "missing")]) == 8
    assert "missing does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    for command in ("fsck", "compact", "stats", "export"):
        assert main([command, str(tmp_path / "empty")]) == 8, command
        assert "filestore" in capsys.readouterr().err
    make_store(tmp_path / "s")
    with FileSessionStore(tmp_path / "s"):
        assert main(["compact", str(tmp_path / "s")]) == 8
        assert "open" in capsys.readouterr().err
        assert main(["fsck", str(tmp_path / "s"), "--repair"]) == 8
    for command in ("compact", "stats", "export"):
        assert main([command, str(tmp_path / "missing")]) == 8, command
        assert "missing does not exist" in capsys.readouterr().err, command


def test_compact_and_stats_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """compact prints sizes before and after; stats counts sessions and dead bytes."""
    keys = make_store(tmp_path / "s", sessions=20)
    with FileSessionStore(tmp_path / "s") as store:
        for key in keys[:15]:
            store.remove_session(key)
    assert main(["stats", str(tmp_path / "s"), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["sessions"] == 5
    assert before["dead_ratio"] > 0.5
    assert main(["compact", str(tmp_path / "s"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["live_records"] == 5
    assert report["dropped_records"] == 30
    assert report["bytes_after"] < report["bytes_before"]
    assert main(["stats", str(tmp_path / "s"), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert (after["sessions"], after["dead_bytes"], after["generation"]) == (5, 0, 2)


def test_export_import_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """export then import into an empty store gives equal contents; re-import skips everything."""
    keys = make_store(tmp_path / "a")
    dump = tmp_path / "dump.jsonl"
    assert main(["export", str(tmp_path / "a"), "--output", str(dump)]) == 0
    lines = dump.read_text().splitlines()
    assert len(lines) == 5
    assert json.loads(lines[0])["session"]["tenant_ctx"]["env"] == "dev"
    assert main(["import", str(tmp_path / "b"), str(dump), "--json"]) == 0
    report = {"lines": 5, "imported": 5, "already_there": 0, "expired": 0}
    assert json.loads(capsys.readouterr().out) == report
    assert main(["import", str(tmp_path / "b"), str(dump), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["already_there"] == 5
    with FileSessionStore(tmp_path / "a") as source, FileSessionStore(tmp_path / "b") as copy:
        for number, key in enumerate(keys):
            assert copy.get_session(key) == source.get_session(key)
            assert copy.find_by_user(ctx(), f"u{number}") == source.find_by_user(ctx(), f"u{number}")


def test_import_refuses_a_bad_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad line stops the import with exit 8 naming its line; its batch is not written."""
    make_store(tmp_path / "a")
    dump = tmp_path / "dump.jsonl"
    main(["export", str(tmp_path / "a"), "--output", str(dump)])
    lines = dump.read_text().splitlines()
    lines.insert(3, '{"key": "k", "scope": {"env": "dev"}}')
    dump.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["import", str(tmp_path / "b"), str(dump)]) == 8
    assert "line 4" in capsys.readouterr().err
    with FileSessionStore(tmp_path / "b") as target:
        assert len(target) == 0


def test_migrate_between_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """migrate copies everything, verifies it, and a re-run copies nothing."""
    make_store(tmp_path / "a", sessions=7)
    assert main(["migrate", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"source_sessions": 7, "copied": 7, "already_there": 0}
    assert main(["migrate", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["already_there"] == 7


# -- fsck ----------------------------------------------------------------------------


def test_fsck_text_names_each_finding_and_sums_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Text output: one line per finding (severity, kind, file and offset, action), then a summary."""
    make_store(tmp_path / "s")
    end = (tmp_path / "s" / "sessions.log").stat().st_size
    with (tmp_path / "s" / "sessions.log").open("ab") as log:
        log.write(b"torn")
    assert main(["fsck", str(tmp_path / "s")]) == 4
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"error: torn-tail: sessions.log @{end}: ")
    assert lines[0].endswith("[none]")
    assert lines[-1].endswith("5 records, 5 sessions, 1 errors")


def test_fsck_middle_damage_4_then_repaired_1_then_clean_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Damage in the middle: 4; --repair rewrites (1, every action named in JSON); then 0."""
    make_store(tmp_path / "s")
    raw = bytearray((tmp_path / "s" / "sessions.log").read_bytes())
    raw[60] ^= 0xFF
    (tmp_path / "s" / "sessions.log").write_bytes(bytes(raw))
    assert main(["fsck", str(tmp_path / "s"), "--json"]) == 4
    assert "damaged-record" in {f["kind"] for f in json.loads(capsys.readouterr().out)["findings"]}
    assert main(["fsck", str(tmp_path / "s"), "--repair", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == 1
    assert {f["action"] for f in report["findings"] if f["severity"] == "error"} == {"rewrote-log"}
    assert main(["fsck", str(tmp_path / "s")]) == 0
    with FileSessionStore(tmp_path / "s") as store:
        assert len(store) == 4


def test_fsck_in_use_is_8_with_a_one_line_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fsck of a store another handle has open: exit 8, one line on stderr, nothing on stdout."""
    make_store(tmp_path / "s")
    with FileSessionStore(tmp_path / "s"):
        assert main(["fsck", str(tmp_path / "s"), "--json"]) == 8
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("filestore: ")


@pytest.mark.parametrize("command", ["fsck", "compact"])
def test_wait_outlasts_a_handle_that_closes_after_the_command_found_it(tmp_path: Path, command: str) -> None:
    """--wait SECONDS: the command finds the store open, waits, and runs once the other handle
    closes (which it does only after the command found it open: without --wait, that is exit 8)."""
    make_store(tmp_path / "s")
    store = FileSessionStore(tmp_path / "s")
    with release_once_blocked(store.close) as watcher:
        assert main([command, str(tmp_path / "s"), "--wait", "30"]) == 0
    assert watcher.blocked


@pytest.mark.parametrize("wait", ["-1", "nan", "inf", "soon"])
def test_wait_must_be_seconds(tmp_path: Path, wait: str) -> None:
    """--wait refuses negative numbers, NaN and inf (endless waits) and words: a usage error, exit 16."""
    make_store(tmp_path / "s")
    assert main(["fsck", str(tmp_path / "s"), "--wait", wait]) == 16
    assert main(["compact", str(tmp_path / "s"), "--wait", wait]) == 16


def test_fsck_of_a_store_without_its_log_is_4_of_no_store_at_all_8(tmp_path: Path) -> None:
    """A store whose log is gone is damage fsck cannot fix (4); a directory holding no store at
    all, or no directory, is the wrong argument (8), as for every other command."""
    make_store(tmp_path / "s")
    (tmp_path / "s" / "sessions.log").unlink()
    assert main(["fsck", str(tmp_path / "s")]) == 4
    (tmp_path / "empty").mkdir()
    assert main(["fsck", str(tmp_path / "empty")]) == 8
    assert main(["fsck", str(tmp_path / "missing")]) == 8


# -- compact -------------------------------------------------------------------------


def test_compact_text_prints_bytes_before_and_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compact's text output names the new generation and the bytes before and after."""
    keys = make_store(tmp_path / "s", sessions=10)
    with FileSessionStore(tmp_path / "s") as store:
        for key in keys[:8]:
            store.remove_session(key)
    assert main(["compact", str(tmp_path / "s"), "--keep-old"]) == 0
    out = capsys.readouterr().out
    assert "generation 2, 2 live records kept, 16 dropped" in out
    assert "bytes before: " in out
    assert (tmp_path / "s" / "sessions.log.old").exists()


def test_compact_lock_timeout_is_8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A writer lock held past the wait (a stuck process): exit 8, naming the lock."""
    make_store(tmp_path / "s")
    lock = WriterLock(str(tmp_path / "s"), timeout=1)
    try:
        with lock:
            assert main(["compact", str(tmp_path / "s")]) == 8
    finally:
        lock.close()
    assert "writer lock" in capsys.readouterr().err


def test_compact_json_is_one_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """compact --json prints exactly one JSON document, and no progress bar even on a terminal."""
    make_store(tmp_path / "s")
    with terminal_stderr():
        assert main(["compact", str(tmp_path / "s"), "--json", "--keep-old"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["old_log"].endswith("sessions.log.old")
    assert report["generation"] == 2
    assert captured.err == ""


# -- progress bars -------------------------------------------------------------------


class terminal_stderr:
    """Make ``sys.stderr`` (pytest's capture) claim to be a terminal, as within a shell."""

    def __enter__(self) -> None:
        self.stream = sys.stderr
        self.saved = self.stream.isatty
        self.stream.isatty = lambda: True  # type: ignore[method-assign]

    def __exit__(self, *exc_info: object) -> None:
        self.stream.isatty = self.saved  # type: ignore[method-assign]


@pytest.mark.parametrize("command", ["fsck", "compact", "export", "import"])
def test_progress_bar_only_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """compact, fsck, export and import draw a progress bar on stderr only when it is a terminal."""
    make_store(tmp_path / "s")
    dump = tmp_path / "dump.jsonl"
    main(["export", str(tmp_path / "s"), "-o", str(dump)])
    argv = {
        "fsck": ["fsck", str(tmp_path / "s")],
        "compact": ["compact", str(tmp_path / "s")],
        "export": ["export", str(tmp_path / "s"), "-o", str(tmp_path / "again.jsonl")],
        "import": ["import", str(tmp_path / "t"), str(dump)],
    }[command]
    capsys.readouterr()
    assert main(argv) == 0
    assert "|" not in capsys.readouterr().err
    with terminal_stderr():
        assert main(argv) == 0
    assert f"{command}:" in capsys.readouterr().err


# -- stats ---------------------------------------------------------------------------


def test_stats_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """stats in text: store, sessions, dead ratio, snapshot and every file."""
    make_store(tmp_path / "s")
    assert main(["stats", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "sessions: 5, active users: 5, records: 5" in out
    assert "dead: 0 (0.0%)" in out
    assert "covers the log to" in out
    assert "  sessions.log: " in out


def test_stats_counts_and_sizes(tmp_path: Path) -> None:
    """stats: sessions, users with an active session, live and dead bytes, snapshot, file sizes."""
    keys = make_store(tmp_path / "s", sessions=6)
    with FileSessionStore(tmp_path / "s", preallocate_bytes=0) as store:
        store.remove_session(keys[0])
        store.update_session(keys[1], data(ctx(user="u1"), step=99))
        store.create_session(ctx(user="u2"), data(ctx(user="u2"), step=7))  # u2's second session
    report = stats(tmp_path / "s")
    log_size = (tmp_path / "s" / "sessions.log").stat().st_size
    assert (report.sessions, report.users, report.records) == (6, 5, 9)
    assert report.generation == 1
    assert report.log_bytes == report.log_file_bytes == log_size
    assert report.dead_bytes == log_size - 40 - report.live_bytes > 0
    assert report.dead_ratio == round(report.dead_bytes / (log_size - 40), 4)
    assert report.snapshot_position == log_size
    assert report.snapshot_last_seq == 9
    assert report.snapshot_bytes == (tmp_path / "s" / "sessions.idx").stat().st_size
    assert report.snapshot_age_seconds is not None
    assert 0 <= report.snapshot_age_seconds < 60
    assert report.files == {path.name: path.stat().st_size for path in sorted((tmp_path / "s").iterdir())}
    assert (
        report.to_dict()["store_uuid"]
        == json.loads((tmp_path / "s" / "filestore.json").read_text())["store_uuid"]
    )


def test_stats_without_a_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no snapshot, stats replays the log; the snapshot fields are null."""
    make_store(tmp_path / "s")
    (tmp_path / "s" / "sessions.idx").unlink()
    assert main(["stats", str(tmp_path / "s"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sessions"] == 5
    assert [report[name] for name in report if name.startswith("snapshot_")] == [None] * 4
    assert (tmp_path / "s" / "sessions.idx").exists() is False, "stats wrote a snapshot"


def test_stats_never_waits_for_locks_and_sees_records_not_yet_snapshotted(tmp_path: Path) -> None:
    """stats runs while a handle writes, the writer lock is held and an offline tool holds the store."""
    make_store(tmp_path / "s")
    with FileSessionStore(tmp_path / "s") as store:
        store.create_session(ctx(user="late"), data(ctx(user="late")))
        lock = WriterLock(str(tmp_path / "s"), timeout=1)
        try:
            with lock:
                assert stats(tmp_path / "s").sessions == 6
        finally:
            lock.close()
    exclusive = Registration(str(tmp_path / "s"), exclusive=True)
    try:
        assert stats(tmp_path / "s").sessions == 6
    finally:
        exclusive.close()


def test_stats_opens_nothing_for_writing_and_creates_nothing(tmp_path: Path) -> None:
    """stats opens every file read-only and writes nothing, not even the lock files."""
    make_store(tmp_path / "s")
    with FileSessionStore(tmp_path / "s") as store:
        store.create_session(ctx(user="late"), data(ctx(user="late")))  # past the snapshot
        for name in ("LOCK", "OPEN"):
            (tmp_path / "s" / name).unlink()
        before = {path.name: path.read_bytes() for path in (tmp_path / "s").iterdir()}
        assert stats(tmp_path / "s", io=ReadOnlyIO()).sessions == 6
        assert {path.name: path.read_bytes() for path in (tmp_path / "s").iterdir()} == before
    (tmp_path / "s" / "sessions.idx").unlink()
    assert stats(tmp_path / "s", io=ReadOnlyIO()).sessions == 6


def test_stats_of_something_else_is_8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """stats of an empty directory or a damaged log header: exit 8 with a message; nothing created."""
    (tmp_path / "empty").mkdir()
    assert main(["stats", str(tmp_path / "empty")]) == 8
    assert "not a filestore" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []
    make_store(tmp_path / "s")
    with (tmp_path / "s" / "sessions.log").open("r+b") as log:
        log.write(b"X")
    assert main(["stats", str(tmp_path / "s")]) == 8
    assert "header" in capsys.readouterr().err


# -- export / import -----------------------------------------------------------------


def test_export_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """export with no --output writes JSON Lines to stdout, the count to stderr."""
    keys = make_store(tmp_path / "s", sessions=3)
    assert main(["export", str(tmp_path / "s")]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert sorted(line["key"] for line in lines) == sorted(keys)
    assert {line["scope"]["user"] for line in lines} == {"u0", "u1", "u2"}
    assert all(line["active"] for line in lines)
    assert set(lines[0]) == {"key", "scope", "active", "session"}
    assert set(lines[0]["scope"]) == {"env", "tenant_id", "team", "user"}
    assert captured.err == "exported 3 sessions\n"


@pytest.mark.parametrize("mask", [0, 0o022], ids=oct)
def test_export_file_is_created_0600_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    """export -o makes its dump 0600, as private as the store it copies, under any umask."""
    make_store(tmp_path / "s", sessions=2)
    dump = tmp_path / "dump.jsonl"
    with umask(mask):
        assert main(["export", str(tmp_path / "s"), "-o", str(dump)]) == 0
    assert mode_of(dump) == 0o600
    assert len(dump.read_text().splitlines()) == 2


@pytest.mark.parametrize("command", ["export", "import", "migrate"])
def test_a_shared_store_directory_needs_trust_directory(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A group/world-writable store is refused (exit 8, saying why) unless --trust-directory is given."""
    make_store(tmp_path / "s", sessions=2)
    (tmp_path / "s").chmod(0o777)
    dump = tmp_path / "dump.jsonl"
    dump.write_text("")
    argv = {
        "export": ["export", str(tmp_path / "s"), "-o", str(tmp_path / "out.jsonl")],
        "import": ["import", str(tmp_path / "s"), str(dump)],
        "migrate": ["migrate", str(tmp_path / "s"), "memory:"],
    }[command]
    assert main(argv) == 8
    assert "writable by group and others" in capsys.readouterr().err
    assert main([*argv, "--trust-directory"]) == 0


def test_export_lines_hold_no_line_break_of_any_reader(tmp_path: Path) -> None:
    """U+0085, U+2028 and U+2029 in a session are escaped: str.splitlines() gives one line per session."""
    odd = "a\x85b\u2028c\u2029d\re\nf"
    with FileSessionStore(tmp_path / "a") as source:
        session = data(ctx(user="u1"))
        session = SessionData(session.tenant_ctx, session.flow_id, session.cursor, odd)
        source.create_session(ctx(user="u1"), session)
        source.create_session(ctx(user="u2"), data(ctx(user="u2")))
        buffer = io.StringIO()
        export_sessions(source, buffer)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2
    assert odd in {json.loads(line)["session"]["context_json"] for line in lines}
    with FileSessionStore(tmp_path / "a") as source, FileSessionStore(tmp_path / "b") as target:
        assert import_sessions(target, lines).imported == 2
        assert set(target.iter_sessions()) == set(source.iter_sessions())


def test_export_of_a_missing_store_is_8_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export never makes a new, empty store out of a mistyped path."""
    assert main(["export", str(tmp_path / "typo" / "s")]) == 8
    assert "typo/s does not exist" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
    assert main(["migrate", str(tmp_path / "typo"), str(tmp_path / "b")]) == 8


def test_import_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """import DIR - reads the lines from stdin."""
    make_store(tmp_path / "a", sessions=4)
    main(["export", str(tmp_path / "a"), "-o", str(tmp_path / "dump.jsonl")])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((tmp_path / "dump.jsonl").read_bytes())))
    capsys.readouterr()
    assert main(["import", str(tmp_path / "b"), "-"]) == 0
    assert capsys.readouterr().out == "4 lines: 4 imported, 0 already there\n"


def test_import_says_how_many_expired_sessions_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line whose deadline has passed is not imported; the summary and --json count it as expired."""
    lines = exported_lines(tmp_path, sessions=3)
    lines[1] = json.dumps(dict(json.loads(lines[1]), deadline_ms=1))
    dump = write_lines(tmp_path / "dump.jsonl", lines)
    capsys.readouterr()
    assert main(["import", str(tmp_path / "b"), str(dump)]) == 0
    assert capsys.readouterr().out == "3 lines: 2 imported, 0 already there, 1 expired (skipped)\n"
    assert keys_in(tmp_path / "b") == {json.loads(line)["key"] for line in (lines[0], lines[2])}
    assert main(["import", str(tmp_path / "b"), str(dump), "--json"]) == 0
    report = {"lines": 3, "imported": 0, "already_there": 2, "expired": 1}
    assert json.loads(capsys.readouterr().out) == report


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def exported_lines(tmp_path: Path, sessions: int) -> list[str]:
    make_store(tmp_path / "a", sessions=sessions)
    buffer = io.StringIO()
    with FileSessionStore(tmp_path / "a") as source:
        export_sessions(source, buffer)
    return buffer.getvalue().splitlines()


def keys_in(directory: Path) -> set[str]:
    with FileSessionStore(directory) as store:
        return {str(key) for key in store.session_keys()}


def test_import_is_all_or_nothing_per_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With --batch-size 2 and a bad 4th line, lines 1-2 are imported and nothing of lines 3-4."""
    lines = exported_lines(tmp_path, sessions=5)
    bad = json.loads(lines[3])
    lines[3] = json.dumps(dict(bad, session=dict(bad["session"], flow_id=7)))
    dump = write_lines(tmp_path / "dump.jsonl", lines)
    assert main(["import", str(tmp_path / "b"), str(dump), "--batch-size", "2"]) == 8
    err = capsys.readouterr().err
    assert err.startswith("filestore: InvalidInput: line 4: ")
    assert len(err.strip().splitlines()) == 1
    assert keys_in(tmp_path / "b") == {json.loads(line)["key"] for line in lines[:2]}


def test_import_refuses_a_key_holding_another_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key the target holds with other data stops the import at its line; none of its batch is written."""
    lines = exported_lines(tmp_path, sessions=3)
    first = json.loads(lines[0])
    target_keys = {first["key"]}
    changed = dict(first, session=dict(first["session"], context_json='{"changed":true}'))
    write_lines(tmp_path / "one.jsonl", [json.dumps(changed)])
    assert main(["import", str(tmp_path / "b"), str(tmp_path / "one.jsonl")]) == 0
    dump = write_lines(tmp_path / "dump.jsonl", [lines[1], lines[2], lines[0]])
    assert main(["import", str(tmp_path / "b"), str(dump)]) == 8
    assert "line 3: key " in capsys.readouterr().err
    assert keys_in(tmp_path / "b") == target_keys
    with FileSessionStore(tmp_path / "b") as store:
        found = store.get_session(first["key"])
        assert found is not None
        assert found.context_json == '{"changed":true}'


def test_import_refuses_one_key_twice_with_different_sessions(tmp_path: Path) -> None:
    """Two lines with one key and different sessions: the second is refused, naming both lines."""
    lines = exported_lines(tmp_path, sessions=2)
    first = json.loads(lines[0])
    changed = dict(first, session=dict(first["session"], context_json="{}"))
    target = FileSessionStore(tmp_path / "b")
    try:
        with pytest.raises(InvalidInputError, match=r"line 3: .* also on line 1"):
            import_sessions(target, [lines[0], lines[1], json.dumps(changed)])
        assert len(target) == 0
        assert import_sessions(target, [lines[0], lines[1], lines[0]]).to_dict() == {
            "lines": 3,
            "imported": 2,
            "already_there": 1,
            "expired": 0,
        }
    finally:
        target.close()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe not utf-8", "line 3: not UTF-8"),
        (b"[" * 100_000, "line 3: nested too deeply"),
        (b"[1, 2]", "line 3: not a JSON object"),
        (b'{"key": "k"}', "line 3: missing field 'scope'"),
        (b"{not json", "line 3: "),
        (b'{"key": "k", "key": "k"}', "line 3: duplicate field 'key'"),
    ],
)
def test_import_names_the_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes, message: str
) -> None:
    """Bad bytes, nesting, a non-object, a missing or doubled field, bad JSON: 8 naming line 3; none kept."""
    lines = exported_lines(tmp_path, sessions=3)
    (tmp_path / "dump.jsonl").write_bytes(
        lines[0].encode() + b"\n\n" + raw + b"\n" + lines[1].encode() + b"\n"
    )
    assert main(["import", str(tmp_path / "b"), str(tmp_path / "dump.jsonl")]) == 8
    assert capsys.readouterr().err.startswith(f"filestore: InvalidInput: {message}")
    assert keys_in(tmp_path / "b") == set()


def test_import_batch_size_must_be_positive(tmp_path: Path) -> None:
    """--batch-size 0 is a usage error (16); the library refuses it too."""
    write_lines(tmp_path / "empty.jsonl", [])
    assert main(["import", str(tmp_path / "b"), str(tmp_path / "empty.jsonl"), "--batch-size", "0"]) == 16
    with FileSessionStore(tmp_path / "c") as store, pytest.raises(InvalidInputError):
        import_sessions(store, [], batch_size=0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

# Any object with the line's field names: almost never a session.
arbitrary_lines = st.dictionaries(
    st.sampled_from(["key", "scope", "session", "active", "extra"]), json_values
)


@st.composite
def stored_sessions(draw: st.DrawFn) -> StoredSession:
    """A session as a store would export it: any valid session, key and owner, active or not."""
    session = draw(session_datas())
    creating_ctx = session.tenant_ctx
    if creating_ctx.effective_user is None:
        # The session's user may come from the creating context, or there may be none.
        creating_ctx = creating_ctx.with_user(draw(st.none() | ids()))
    key = draw(st.uuids().map(str) | ids())
    return StoredSession(SessionKey(key), session_scope(creating_ctx, session), session, draw(st.booleans()))


@st.composite
def mutated_lines(draw: st.DrawFn) -> tuple[dict[str, object], StoredSession | None]:
    """An export line of a valid session, as a JSON object, and the session it must parse to;
    or, most of the time, that line with one field dropped, replaced by any JSON value, or added
    (anywhere in its tree), and ``None``: the mutation may or may not leave a valid line."""
    stored = draw(stored_sessions())
    document = json.loads(session_line(stored))
    mutation = draw(st.sampled_from(["none", "drop", "replace", "add"]))
    if mutation == "none":
        return document, stored
    parent = document
    while True:
        name = draw(st.sampled_from(sorted(parent)))
        child = parent[name]
        if not (isinstance(child, dict) and child) or draw(st.booleans()):
            break
        parent = child
    if mutation == "drop":
        del parent[name]
    elif mutation == "replace":
        parent[name] = draw(json_values)
    else:
        parent[draw(st.text(max_size=8))] = draw(json_values)
    return document, None


def test_parse_line_accepts_a_session_or_names_the_line() -> None:
    """Any JSON object is either a session or InvalidInputError naming its line, never another
    error; an exported line parses to the very session exported. Both outcomes occur."""
    outcomes: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None)
    @given(arbitrary_lines.map(lambda document: (document, None)) | mutated_lines())
    def check(case: tuple[dict[str, object], StoredSession | None]) -> None:
        document, expected = case
        text = json.dumps(document)
        try:
            stored: StoredSession | None = parse_line(text, 12)
        except InvalidInputError:
            stored = None
        if stored is None:
            assert expected is None, "an exported line was refused"
            with pytest.raises(InvalidInputError, match=r"^InvalidInput: line 12: ") as refused:
                parse_line(text, 12)
            assert refused.value.field == "line 12"
            outcomes["refused"] += 1
            event("refused")
        else:
            if expected is not None:
                assert stored == expected
            assert parse_line(session_line(stored), 3) == stored
            outcomes["accepted"] += 1
            event("accepted")

    check()
    assert outcomes["accepted"] > 0
    assert outcomes["refused"] > 0


Step = tuple[SessionData, str | None] | int


@st.composite
def store_histories(draw: st.DrawFn) -> list[Step]:
    """Creates (a session, and a user for the creating context if the session names none) and removes
    (of the n-th session created, modulo)."""
    return draw(
        st.lists(
            st.tuples(small_session_datas(), st.none() | st.just("u9")) | st.integers(0, 20), max_size=12
        )
    )


def play(store: FileSessionStore, history: list[Step]) -> None:
    created: list[SessionKey] = []
    for step in history:
        if isinstance(step, int):
            if created and (key := created[step % len(created)]) in store.session_keys():
                store.remove_session(key)
            continue
        session, ctx_user = step
        context = session.tenant_ctx
        if context.effective_user is None and ctx_user is not None:
            context = context.with_user(ctx_user)
        created.append(store.create_session(context, session))


# Every owner of the small world (tests/strategies.py), and user u9 given by the creating context.
LOOKUPS = [
    (ctx(env, tenant, team, None), user)
    for env in ("dev", "prod")
    for tenant in ("acme", "globex")
    for team in (None, "support")
    for user in ("u1", "u2", "u9")
]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(store_histories())
def test_export_then_import_gives_equal_contents(history: list[Step]) -> None:
    """Export, then import into an empty store: the same keys, owners, sessions and user lookups."""
    with (
        tempfile.TemporaryDirectory() as temp,
        FileSessionStore(Path(temp) / "a", durability="none") as source,
        FileSessionStore(Path(temp) / "b", durability="none") as target,
    ):
        play(source, history)
        buffer = io.StringIO()
        assert export_sessions(source, buffer) == len(source)
        report = import_sessions(target, io.StringIO(buffer.getvalue()), batch_size=3)
        assert (report.imported, report.already_there) == (len(source), 0)
        assert set(target.iter_sessions()) == set(source.iter_sessions())
        for lookup, user in LOOKUPS:
            assert target.find_by_user(lookup, user) == source.find_by_user(lookup, user)


def test_python_m_filestore_runs_the_command_line(tmp_path: Path) -> None:
    """`python -m filestore stats DIR --json` runs the same command line in a new process."""
    make_store(tmp_path / "s", sessions=2)
    done = subprocess.run(
        [sys.executable, "-m", "filestore", "stats", str(tmp_path / "s"), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sessions"] == 2
