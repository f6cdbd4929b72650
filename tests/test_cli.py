"""The command line, in-process through main(argv): exit codes, --json output, help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filestore import FileSessionStore
from filestore.cli import main

from .test_contract import ctx, data

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
    """fsck --help lists what it cannot see, and its exit codes."""
    main(["fsck", "--help"])
    out = capsys.readouterr().out
    assert "Not detected" in out
    assert "4 errors left uncorrected" in out


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
    """A missing store, a store in use, or a bad argument is exit 8 with a message."""
    assert main(["fsck", str(tmp_path / "missing")]) == 8
    make_store(tmp_path / "s")
    with FileSessionStore(tmp_path / "s"):
        assert main(["compact", str(tmp_path / "s")]) == 8
        assert "open" in capsys.readouterr().err
        assert main(["fsck", str(tmp_path / "s"), "--repair"]) == 8
    assert main(["compact", str(tmp_path / "s"), "--bogus"]) == 8
    assert main(["stats", str(tmp_path / "missing")]) == 8


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
    assert json.loads(capsys.readouterr().out) == {"lines": 5, "imported": 5, "already_there": 0}
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
