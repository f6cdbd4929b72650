"""Export and import: JSON Lines in greentic's JSON shape, to inspect, back up, or move stores.

One line per session::

    {"key": "...", "scope": {"env": .., "tenant_id": .., "team": .., "user": ..},
     "active": true, "session": {<SessionData in serde's JSON shape>}}

``active`` says whether the user lookup points at the session. Import
validates a whole batch before writing any of it (a bad line refuses the
batch, naming its line number); sessions keep their keys, so re-running an
interrupted import skips what already arrived, and a key that holds
different data is refused, never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import IO, Any

import attrs

from filestore.backends import MovableStore
from filestore.contract import SessionScope, StoredSession, check_same_owner
from filestore.errors import InvalidInputError
from filestore.ids import EnvId, TeamId, TenantId, UserId, check_key
from filestore.model import SessionData

DEFAULT_BATCH: int = 1000


def session_line(stored: StoredSession) -> str:
    """One export line."""
    scope = stored.scope
    return json.dumps(
        {
            "key": str(stored.key),
            "scope": {"env": scope.env, "tenant_id": scope.tenant_id, "team": scope.team, "user": scope.user},
            "active": stored.active,
            "session": stored.data.to_dict(),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def export_sessions(
    store: MovableStore, out: IO[str], *, progress: Callable[[int], None] | None = None
) -> int:
    """Write every session of ``store`` to ``out``; return how many."""
    written = 0
    for stored in store.iter_sessions():
        out.write(session_line(stored) + "\n")
        written += 1
        if progress is not None:
            progress(1)
    return written


def parse_line(text: str, number: int) -> StoredSession:
    """One import line as a StoredSession; ``InvalidInputError`` naming the line otherwise."""
    try:
        doc: Any = json.loads(text)
        if not isinstance(doc, dict):
            raise InvalidInputError("not a JSON object", field="line", rule="an object")
        raw_scope = doc["scope"]
        scope = SessionScope(
            EnvId.parse(raw_scope["env"], field="scope.env"),
            TenantId.parse(raw_scope["tenant_id"], field="scope.tenant_id"),
            None if raw_scope.get("team") is None else TeamId.parse(raw_scope["team"], field="scope.team"),
            None if raw_scope.get("user") is None else UserId.parse(raw_scope["user"], field="scope.user"),
        )
        active = doc.get("active", True)
        if not isinstance(active, bool):
            raise InvalidInputError("active must be true or false", field="active", rule="a boolean")
        stored = StoredSession(check_key(doc["key"]), scope, SessionData.from_dict(doc["session"]), active)
        check_same_owner(scope, stored.data)
    except (ValueError, KeyError, TypeError) as error:
        detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
        raise InvalidInputError(
            f"line {number}: {detail}", field=f"line {number}", rule="a session line"
        ) from None
    return stored


@attrs.frozen
class ImportReport:
    """What an import did."""

    lines: int
    imported: int
    already_there: int

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def import_sessions(
    store: MovableStore,
    lines: Iterable[str],
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import JSON Lines into ``store``, all-or-nothing per batch of ``batch_size`` lines."""
    if batch_size < 1:
        raise InvalidInputError("batch_size must be at least 1", field="batch_size", rule=">= 1")
    seen = imported = already = 0
    batch: list[StoredSession] = []

    def flush() -> None:
        nonlocal imported, already
        for stored in batch:
            if store.import_session(stored):
                imported += 1
            else:
                already += 1
            if progress is not None:
                progress(1)
        batch.clear()

    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        seen += 1
        batch.append(parse_line(text, number))
        if len(batch) >= batch_size:
            flush()
    flush()
    return ImportReport(seen, imported, already)
