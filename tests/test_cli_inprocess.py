"""The command line's endings, in-process through ``main``: what a Ctrl-C, a SIGTERM, an end of
input or a closed stdout inside a command turns into (exit code and one line), and how far an
interrupted import or migrate says it got. The same endings on a real process, with real signals,
are in ``test_cli_process.py``."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from filestore import FileSessionStore
from filestore import cli as cli_module
from filestore.cli import main, main_entry
from filestore.cliendings import Terminated

from .support import ctx, data


def make_store(path: Path) -> None:
    with FileSessionStore(path) as store:
        store.create_session(ctx(), data())


def raising_after(stored: int, error: BaseException) -> Callable[..., Any]:
    """A stand-in for import_sessions / migrate: reports ``stored`` sessions, then raises ``error``."""

    def run(*_args: object, progress: Callable[[int], None] | None = None, **_kwargs: object) -> Any:
        if progress is None:
            return None  # import's dry run of its first batch, into a memory store: passes
        phase = getattr(progress, "phase", None)
        if phase is not None:
            phase("copy", stored + 1, "sessions")
        for _ in range(stored):
            progress(1)
        if phase is not None:
            phase("verify", stored, "sessions")
            progress(1)  # a verified session is not a stored one
        raise error

    return run


@pytest.mark.parametrize(
    ("error", "code", "ending"),
    [
        (KeyboardInterrupt(), 130, "filestore: interrupted"),
        (Terminated(), 143, "filestore: terminated"),
    ],
)
@pytest.mark.parametrize("command", ["import", "migrate"])
def test_an_interrupted_import_or_migrate_says_how_far_it_got(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    error: BaseException,
    code: int,
    ending: str,
) -> None:
    """Interrupted (SIGINT: 130; SIGTERM: 143) after storing 3 sessions, the command says 3 (the
    verify phase's count is not added), that re-running resumes, then how it ended."""
    make_store(tmp_path / "source")
    (tmp_path / "in.jsonl").write_text("")
    if command == "import":
        monkeypatch.setattr(cli_module, "import_sessions", raising_after(3, error))
        argv = ["import", str(tmp_path / "target"), str(tmp_path / "in.jsonl")]
    else:
        monkeypatch.setattr(cli_module, "migrate_stores", raising_after(3, error))
        argv = ["migrate", str(tmp_path / "source"), str(tmp_path / "target")]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert f"filestore: {command} interrupted after 3 sessions" in err
    assert "run the same command again to resume" in err
    assert err.rstrip().endswith(ending)


def test_an_end_of_input_is_an_operational_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An EOFError inside a command (click's Abort without an interrupt) is exit 8, said so."""
    (tmp_path / "in.jsonl").write_text("")
    monkeypatch.setattr(cli_module, "import_sessions", raising_after(0, EOFError()))
    assert main(["import", str(tmp_path / "t"), str(tmp_path / "in.jsonl")]) == 8
    assert capsys.readouterr().err.rstrip().endswith("filestore: aborted (end of input)")


@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), OSError(32, "Broken pipe")])
def test_a_closed_stdout_inside_a_command_is_141_and_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: OSError
) -> None:
    """A closed pipe met while a command writes (BrokenPipeError, or an OSError of EPIPE) ends with
    141 and says nothing; another OSError is still an operational error naming it."""
    make_store(tmp_path / "s")

    def closed(*_args: object, **_kwargs: object) -> int:
        raise error

    monkeypatch.setattr(cli_module, "export_sessions", closed)
    assert main(["export", str(tmp_path / "s")]) == 141
    assert capsys.readouterr().err == ""

    def failing(*_args: object, **_kwargs: object) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(cli_module, "export_sessions", failing)
    assert main(["export", str(tmp_path / "s")]) == 8
    assert "Input/output error" in capsys.readouterr().err


def test_an_argument_that_is_no_string_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """main() called with a non-str argument: 16, naming the argument."""
    assert main(["fsck", 5]) == 16  # type: ignore[list-item]
    assert "argument 2 is a int, not a str" in capsys.readouterr().err


def test_the_console_script_exits_with_mains_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """main_entry (the installed `filestore`) raises SystemExit with main's code."""
    monkeypatch.setattr(sys, "argv", ["filestore", "--version"])
    with pytest.raises(SystemExit) as ended:
        main_entry()
    assert ended.value.code == 0


def test_main_runs_off_the_main_thread() -> None:
    """From a thread (where no signal handler can be installed) main runs all the same."""
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(main(["--version"])))
    worker.start()
    worker.join()
    assert codes == [0]
