"""Export and import: JSON Lines in greentic's JSON shape, to inspect, back up, or move stores.

One line per session::

    {"key": "...", "scope": {"env": .., "tenant_id": .., "team": .., "user": ..},
     "active": true, "session": {<SessionData in serde's JSON shape>}}

``active`` says whether the user lookup points at the session. A session
with a wait or a TTL also has ``"wait"`` (its scope_hash) and
``"deadline_ms"`` (unix milliseconds), each only when set, so a store
without waits exports the lines it always did. Import
validates a whole batch before writing any of it (a bad line refuses the
batch, naming its line number); sessions keep their keys, so re-running an
interrupted import skips what already arrived, and a key that holds
different data is refused, never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Final

import attrs

from filestore import serdejson
from filestore.backends import MovableStore, check_movable, copy_sessions
from filestore.contract import StoredSession, check_same_owner, check_stored_session
from filestore.engine.options import callback, count
from filestore.errors import InvalidInputError
from filestore.ids import EnvId, SessionScope, TeamId, TenantId, UserId, check_key
from filestore.model import SessionData

DEFAULT_BATCH: Final = 1000

# Characters JSON leaves raw in strings but that str.splitlines() (and some
# other line readers) take for line breaks: escaped, so a line is one session
# however it is split. Control characters are escaped by json.dumps already.
_LINE_BREAKS: Final = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_LINE_BREAK_TABLE: Final = str.maketrans(_LINE_BREAKS)


def session_line(stored: StoredSession) -> str:
    """One export line (no line break inside it, by any reader's definition)."""
    scope = stored.scope
    line: dict[str, object] = {
        "key": str(stored.key),
        "scope": {"env": scope.env, "tenant_id": scope.tenant_id, "team": scope.team, "user": scope.user},
        "active": stored.active,
    }
    if stored.wait is not None:
        line["wait"] = stored.wait
    if stored.deadline_ms is not None:
        line["deadline_ms"] = stored.deadline_ms
    line["session"] = stored.data.to_dict()
    text = json.dumps(
        line,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return text.translate(_LINE_BREAK_TABLE)


def export_sessions(
    store: MovableStore, out: IO[str], *, progress: Callable[[int], None] | None = None
) -> int:
    """Write every session of ``store`` to ``out``; return how many.

    ``InvalidInputError`` if ``store`` is not a store, ``out`` has no
    ``write`` or ``progress`` is not callable (before anything is written).
    """
    check_movable(store, "store")
    if not callable(getattr(out, "write", None)) or getattr(out, "closed", False) is True:
        raise InvalidInputError(
            f"out: expected an open text stream, not {out!r}"[:200], field="out", rule="has write()"
        )
    progress = callback("progress", progress)
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
        doc: Any = serdejson.loads(text)
        if not isinstance(doc, dict):
            raise InvalidInputError("not a JSON object", field="line", rule="an object")
        raw_scope = doc["scope"]
        if not isinstance(raw_scope, dict):
            raise InvalidInputError("scope must be an object", field="scope", rule="an object")
        scope = SessionScope(
            EnvId.parse(raw_scope["env"], field="scope.env"),
            TenantId.parse(raw_scope["tenant_id"], field="scope.tenant_id"),
            None if raw_scope.get("team") is None else TeamId.parse(raw_scope["team"], field="scope.team"),
            None if raw_scope.get("user") is None else UserId.parse(raw_scope["user"], field="scope.user"),
        )
        active = doc.get("active", True)
        if not isinstance(active, bool):
            raise InvalidInputError("active must be true or false", field="active", rule="a boolean")
        key = check_key(doc["key"])
        data = check_same_owner(scope, SessionData.from_dict(doc["session"]))
        # check_stored_session checks the wait and deadline (import_session would, without the line).
        stored = check_stored_session(
            StoredSession(key, scope, data, active, doc.get("wait"), doc.get("deadline_ms"))
        )
    except RecursionError:
        raise _bad_line(number, "nested too deeply") from None
    except (ValueError, KeyError, TypeError) as error:
        raise _bad_line(
            number, f"missing field {error}" if isinstance(error, KeyError) else str(error)
        ) from None
    return stored


def _bad_line(number: int, detail: str) -> InvalidInputError:
    return InvalidInputError(f"line {number}: {detail}", field=f"line {number}", rule="a session line")


def _refused_line(number: int, error: InvalidInputError) -> InvalidInputError:
    return _bad_line(number, str(error))


@attrs.frozen
class ImportReport:
    """What an import did: lines read (blank ones aside), sessions written, sessions already there."""

    lines: int
    imported: int
    already_there: int

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def import_sessions(
    store: MovableStore,
    lines: Iterable[str] | Iterable[bytes],
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import JSON Lines into ``store``, all-or-nothing per batch of ``batch_size`` lines.

    Every line of a batch is parsed and validated, and every key checked
    against the batch and the store, before any of the batch is written:
    a bad line, or a key that holds a different session, raises
    ``InvalidInputError`` naming its line and leaves the batch unwritten
    (earlier batches stay written; re-running skips them). Blank lines are
    skipped. ``lines`` may be text or UTF-8 bytes (bytes give exact line
    numbers for a decoding error). ``progress`` is called with 1 per
    session written or skipped.

    A conflict that appears between the check and the write (another
    process writing the same key, or equal data under another owner) is
    still refused by the store, naming the line, but the lines of the batch
    before it are then written.
    """
    check_movable(store, "store")
    batch_size = count("batch_size", batch_size, minimum=1)
    progress = callback("progress", progress)
    if isinstance(lines, (str, bytes, bytearray)) or not isinstance(lines, Iterable):
        raise InvalidInputError(
            f"lines: expected an iterable of lines (a file, a list of str or bytes), "
            f"not {type(lines).__name__}",
            field="lines",
            rule="an iterable of lines",
        )
    seen = imported = already = 0
    batch: list[tuple[int, StoredSession]] = []

    def flush() -> None:
        nonlocal imported, already
        _check_batch(store, batch)
        counts = copy_sessions(store, batch, progress=progress, refused=_refused_line)
        imported += counts.copied
        already += counts.already_there
        batch.clear()

    for number, text in _numbered(lines):
        if not text.strip():
            continue
        seen += 1
        batch.append((number, parse_line(text, number)))
        if len(batch) >= batch_size:
            flush()
    flush()
    return ImportReport(seen, imported, already)


def _numbered(lines: Iterable[str] | Iterable[bytes]) -> Iterator[tuple[int, str]]:
    """``lines`` as text, numbered from 1; a line that is not UTF-8 is refused by its number.

    Give bytes (a file opened in binary) for exact numbers: a text stream
    decodes ahead in chunks, so its decoding error may name an earlier line.
    """
    iterator: Iterator[str | bytes] = iter(lines)
    number = 0
    while True:
        number += 1
        try:
            line = next(iterator)
            text = line.decode("utf-8") if isinstance(line, (bytes, bytearray)) else line
        except StopIteration:
            return
        except UnicodeDecodeError as error:
            raise _bad_line(number, f"not UTF-8 ({error.reason})") from None
        if not isinstance(text, str):
            raise _bad_line(number, f"expected str or bytes, not {type(line).__name__}")
        yield number, text


def _check_batch(store: MovableStore, batch: list[tuple[int, StoredSession]]) -> None:
    """Refuse a batch in which a key holds two different sessions, or one the store holds differently."""
    first_seen: dict[str, tuple[int, StoredSession]] = {}
    for number, stored in batch:
        earlier_number, earlier = first_seen.setdefault(stored.key, (number, stored))
        if attrs.evolve(earlier, active=stored.active) != stored:
            raise _bad_line(
                number, f"key {stored.key} is also on line {earlier_number}, with another session"
            )
    for number, stored in batch:
        existing = store.get_session(stored.key)
        if existing is not None and existing != stored.data:
            raise _bad_line(
                number, f"key {stored.key} already holds a different session; it is never overwritten"
            )
