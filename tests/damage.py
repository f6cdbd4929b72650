"""Helpers for the damage tests: build a small store, know its records, reopen damaged copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import attrs

from filestore import FileSessionStore, SessionData
from filestore.fileio import OsFileIO
from filestore.framing import FILE_HEADER_SIZE
from filestore.logfile import LogFile

from .test_contract import ctx, data

State = dict[str, str]


@attrs.frozen
class Pristine:
    """A closed store, its record boundaries, and its contents after each record."""

    directory: Path
    boundaries: list[int]  # boundaries[i]: where record i+1 ends (boundaries[-1]: the log's end)
    states: list[State]  # states[i]: contents once i records are applied

    @property
    def log(self) -> bytes:
        return (self.directory / "sessions.log").read_bytes()

    def state_at(self, offset: int) -> State:
        """The contents a log cut at ``offset`` must show: the records wholly before it."""
        complete = sum(1 for end in self.boundaries if end <= offset)
        return self.states[complete]


def build_pristine(directory: Path, operations: int, payload: int = 20) -> Pristine:
    """A store of creates, updates and removes, closed (so its log has no preallocated tail)."""
    states: list[State] = [{}]
    current: State = {}
    keys: list[str] = []
    with FileSessionStore(directory, preallocate_bytes=0) as store:
        for number in range(operations):
            user = f"u{number % 3}"
            if number % 4 == 3 and keys:
                key = keys.pop(0)
                store.remove_session(key)
                del current[key]
            elif number % 4 == 2 and keys:
                stored = data(ctx(user=_user_of(current[keys[-1]])), step=number)
                stored = SessionData(stored.tenant_ctx, stored.flow_id, stored.cursor, "u" * payload)
                store.update_session(keys[-1], stored)
                current[keys[-1]] = stored.to_json()
            else:
                stored = data(ctx(user=user), step=number)
                stored = SessionData(stored.tenant_ctx, stored.flow_id, stored.cursor, "c" * payload)
                key = store.create_session(ctx(user=user), stored)
                keys.append(key)
                current[key] = stored.to_json()
            states.append(dict(current))
    log = LogFile.open(OsFileIO(), str(directory))
    try:
        boundaries = [frame.end for _, frame, _ in log.frames(FILE_HEADER_SIZE) if frame is not None]
    finally:
        log.close()
    assert len(boundaries) == operations
    return Pristine(directory, boundaries, states)


def _user_of(session_json: str) -> str:
    return str(SessionData.from_json(session_json).tenant_ctx.effective_user)


def observe(directory: Path) -> State:
    """Open the store and read every session."""
    with FileSessionStore(directory) as store:
        return {
            str(key): session.to_json()
            for key in store.session_keys()
            if (session := store.get_session(key)) is not None
        }


def damaged_copy(pristine: Pristine, where: Path, log: bytes, *, keep_snapshot: bool) -> Path:
    """A copy of the pristine store with ``log`` as its log."""
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(pristine.directory, where)
    (where / "sessions.log").write_bytes(log)
    if not keep_snapshot:
        (where / "sessions.idx").unlink(missing_ok=True)
    return where


def side_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.glob("sessions.log.tr*"))}
