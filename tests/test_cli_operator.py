"""What an operator meets at the command line (issue 16): failures that leave nothing behind,
and import errors said in one line, in the input's terms."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from filestore import FileSessionStore, RedisSessionStore
from filestore.cli import main
from filestore.errors import BackendUnavailableError

from .support import ctx, data

UNREACHABLE = "redis://127.0.0.1:1"  # nothing listens on port 1


def export_of(tmp_path: Path, sessions: int = 3) -> list[str]:
    with FileSessionStore(tmp_path / "source") as store:
        for number in range(sessions):
            tenant = ctx(user=f"user-{number}")
            store.create_session(tenant, data(tenant, step=number))
    assert main(["export", str(tmp_path / "source"), "-o", str(tmp_path / "dump.jsonl")]) == 0
    return (tmp_path / "dump.jsonl").read_text().splitlines()


def test_a_failed_first_batch_makes_no_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A gzip file, or a bad line in the first batch, stops the import before the target is made."""
    lines = export_of(tmp_path)
    (tmp_path / "dump.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    assert main(["import", str(tmp_path / "new"), str(tmp_path / "dump.gz")]) == 8
    assert "line 1: not UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    (tmp_path / "bad.jsonl").write_text("\n".join([*lines[:2], "{", lines[2]]) + "\n")
    assert main(["import", str(tmp_path / "new"), str(tmp_path / "bad.jsonl"), "--batch-size", "5"]) == 8
    assert "line 3: not JSON" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_bad_line_after_the_first_batch_keeps_the_batches_before_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once the first batch is good the target is made: a bad later batch stops there, the
    earlier ones stored, as before (re-running after a fix resumes)."""
    lines = export_of(tmp_path)
    (tmp_path / "bad.jsonl").write_text("\n".join([*lines[:2], "{", lines[2]]) + "\n")
    assert main(["import", str(tmp_path / "new"), str(tmp_path / "bad.jsonl"), "--batch-size", "2"]) == 8
    assert "line 3: not JSON" in capsys.readouterr().err
    with FileSessionStore(tmp_path / "new") as store:
        assert len(store) == 2


def test_migrate_from_an_unreachable_redis_makes_no_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable source is exit 8 with one line naming it, no traceback, and no empty target."""
    assert main(["migrate", UNREACHABLE, str(tmp_path / "target")]) == 8
    err = capsys.readouterr().err
    assert err.startswith("filestore: Unavailable: Redis at redis://127.0.0.1:1 is unavailable")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "target").exists()


def test_listing_an_unreachable_redis_is_backend_unavailable() -> None:
    """iter_sessions talks to the server as it goes: an unreachable one is BackendUnavailableError,
    never redis-py's own ConnectionError escaping from the iteration."""
    store = RedisSessionStore(UNREACHABLE)
    try:
        with pytest.raises(BackendUnavailableError):
            list(store.iter_sessions())
        with pytest.raises(BackendUnavailableError):
            store.purge_expired()
    finally:
        store.close()


def test_import_errors_are_one_line_in_the_inputs_terms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line that is not JSON names the column, not a 'line 1' inside the line; a line whose scope
    and session disagree on the owner says which field names whom."""
    line = json.loads(export_of(tmp_path, sessions=1)[0])
    capsys.readouterr()
    cases = {
        "x{": "line 1: not JSON (Expecting value at column 1)",
        json.dumps({**line, "scope": {**line["scope"], "user": "zed"}}): (
            'line 1: "scope" names user zed but "session" is for user user-0'
        ),
        json.dumps({**line, "scope": {**line["scope"], "team": None, "user": None}}): (
            'line 1: "scope" names no team but "session" is for team support'
        ),
        json.dumps({**line, "scope": {**line["scope"], "tenant_id": "other"}}): (
            'line 1: "scope" names dev/other but "session" is for dev/acme'
        ),
    }
    for text, expected in cases.items():
        (tmp_path / "one.jsonl").write_text(text + "\n")
        assert main(["import", str(tmp_path / "target"), str(tmp_path / "one.jsonl")]) == 8
        err = capsys.readouterr().err
        assert err == f"filestore: InvalidInput: {expected}\n"
        assert not (tmp_path / "target").exists()
