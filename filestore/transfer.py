"""Export and import: JSON Lines in greentic's JSON shape, to inspect, back up, or move stores.

One line per session (export format 2)::

    {"key": "...", "scope": {"env": .., "tenant_id": .., "team": .., "user": ..},
     "active": true, "wait": "<scope_hash>", "deadline_ms": 1800000000000,
     "session": {<SessionData in serde's JSON shape>}}

``active`` says whether the user lookup points at the session. ``wait`` (the
``scope_hash`` of the reply scope whose entry points at the session, a wait
of the scope's user) and ``deadline_ms`` (its TTL's deadline, unix
milliseconds) are written only when set, so a session without them is a
line of format 1 (before waits), which still imports. A format 1 reader
ignores the two fields: it would import a wait as a plain session without
its TTL. An expired session is not exported (the stores' ``iter_sessions``
leave it out), and a line whose deadline has passed when it is imported is
skipped and counted (``ImportReport.expired``).

Import validates a whole batch before writing any of it (a bad line refuses
the batch, naming its line number); sessions keep their keys, so re-running
an interrupted import skips what already arrived, and a key that holds
different data is refused, never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Final

import attrs

from filestore import serdejson
from filestore.backends import MovableStore, check_movable, copy_sessions, session_count
from filestore.contract import StoredSession, check_same_owner, check_stored_session
from filestore.engine.options import callback, count
from filestore.errors import InvalidInputError, TenantMismatchError, message_of
from filestore.fastdecode import fast_session
from filestore.ids import EnvId, SessionScope, TeamId, TenantId, UserId, check_key
from filestore.model import SessionData
from filestore.progress import begin_phase
from filestore.waits import Clock, WaitAddress, check_clock, is_expired, system_clock

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
    # Only when set: a session without a wait or TTL stays a format 1 line.
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
    begin_phase(progress, "export", session_count(store), "sessions")
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
        # The line was parsed here, by serdejson: the one-pass path may take its session
        # (it declines, to from_dict's exact error, anything it does not validate).
        raw = doc["session"]
        data = _same_owner(scope, fast_session(raw) or SessionData.from_dict(raw))
        # The store's own checks: a wait is a scope hash of a session naming its user, a
        # deadline is unix milliseconds within int64 (null, like absent, is none).
        stored = check_stored_session(
            StoredSession(key, scope, data, active, doc.get("wait"), doc.get("deadline_ms"))
        )
    except RecursionError:
        raise _bad_line(number, "nested too deeply") from None
    except json.JSONDecodeError as error:
        # Its own wording says "line 1 column 5", the line inside the document: ours has one line.
        raise _bad_line(number, f"not JSON ({error.msg} at column {error.colno})") from None
    except (ValueError, KeyError, TypeError) as error:
        raise _bad_line(
            number, f"missing field {error}" if isinstance(error, KeyError) else message_of(error)
        ) from None
    return stored


def _same_owner(scope: SessionScope, data: SessionData) -> SessionData:
    """``data`` unless its ``tenant_ctx`` names another owner than the line's ``scope`` (said so)."""
    try:
        return check_same_owner(scope, data)
    except TenantMismatchError as error:
        ctx = data.tenant_ctx
        said = {
            "env/tenant": (f"{scope.env}/{scope.tenant_id}", f"{ctx.env}/{ctx.tenant_id}"),
            "team": (_named("team", scope.team), _named("team", ctx.effective_team)),
            "user": (_named("user", scope.user), _named("user", ctx.effective_user)),
        }[error.part]
        raise InvalidInputError(
            f'"scope" names {said[0]} but "session" is for {said[1]}',
            field="scope",
            rule="scope and session.tenant_ctx name one owner",
        ) from None


def _named(what: str, value: object) -> str:
    return f"no {what}" if value is None else f"{what} {value}"


def _bad_line(number: int, detail: str) -> InvalidInputError:
    return InvalidInputError(f"line {number}: {detail}", field=f"line {number}", rule="a session line")


def _refused_line(number: int, error: InvalidInputError) -> InvalidInputError:
    return _bad_line(number, error.message)


@attrs.frozen
class ImportReport:
    """What an import did: lines read (blank ones aside), sessions written, sessions already there.

    ``expired`` counts the lines skipped because their session's deadline
    had passed when they were read (``lines`` is the sum of the three).
    """

    lines: int
    imported: int
    already_there: int
    expired: int = 0

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def import_sessions(
    store: MovableStore,
    lines: Iterable[str] | Iterable[bytes],
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
    clock: Clock = system_clock,
) -> ImportReport:
    """Import JSON Lines into ``store``, all-or-nothing per batch of ``batch_size`` lines.

    Every line of a batch is parsed and validated, and every key checked
    against the batch and the store, before any of the batch is written:
    a bad line (a malformed ``wait`` or ``deadline_ms`` too), a key that
    holds a different session, or two keys claiming one wait, raises
    ``InvalidInputError`` naming its line and leaves the batch unwritten
    (earlier batches stay written; re-running skips them). Blank lines are
    skipped. ``lines`` may be text or UTF-8 bytes (bytes give exact line
    numbers for a decoding error). ``progress`` is called with 1 per
    session written or skipped.

    A session whose ``deadline_ms`` has passed by ``clock`` (unix
    milliseconds; give the store's own clock if it has a manual one) is
    not written: the store would never show it. It is counted as
    ``expired``, after its line was validated like any other.

    A conflict that appears between the check and the write (another
    process writing the same key, or equal data under another owner), or
    one only the store can see (a key the store holds with equal data but
    another wait or deadline, a wait whose reply scope the store already
    points at another key) is still refused by the store, naming the line,
    but the lines of the batch before it are then written.
    """
    check_movable(store, "store")
    batch_size = count("batch_size", batch_size, minimum=1)
    progress = callback("progress", progress)
    clock = check_clock(clock)
    if isinstance(lines, (str, bytes, bytearray)) or not isinstance(lines, Iterable):
        raise InvalidInputError(
            f"lines: expected an iterable of lines (a file, a list of str or bytes), "
            f"not {type(lines).__name__}",
            field="lines",
            rule="an iterable of lines",
        )
    seen = imported = already = expired = 0
    batch: list[tuple[int, StoredSession]] = []

    def flush() -> None:
        nonlocal imported, already, expired
        now = clock()
        live = [(number, stored) for number, stored in batch if not is_expired(stored.deadline_ms, now)]
        _check_batch(store, live)
        counts = copy_sessions(store, live, progress=progress, refused=_refused_line)
        imported += counts.copied
        already += counts.already_there
        if progress is not None:
            for _skipped in range(len(batch) - len(live)):
                progress(1)
        expired += len(batch) - len(live)
        batch.clear()

    for number, text in _numbered(lines):
        if not text.strip():
            continue
        seen += 1
        batch.append((number, parse_line(text, number)))
        if len(batch) >= batch_size:
            flush()
    flush()
    return ImportReport(seen, imported, already, expired)


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
    """Refuse a batch in which a key holds two different sessions, or one the store holds differently.

    Two lines differ when their owner, data, wait or deadline do (the store
    would refuse the second); two keys may not claim the same wait (one
    reply scope of one user points at one key).
    """
    first_seen: dict[str, tuple[int, StoredSession]] = {}
    waits: dict[WaitAddress, tuple[int, StoredSession]] = {}
    for number, stored in batch:
        earlier_number, earlier = first_seen.setdefault(stored.key, (number, stored))
        if _kept(earlier) != _kept(stored):
            raise _bad_line(
                number, f"key {stored.key} is also on line {earlier_number}, with another session"
            )
        if stored.wait is not None:
            address = WaitAddress(stored.scope, stored.wait)
            holder_number, holder = waits.setdefault(address, (number, stored))
            if holder.key != stored.key:
                raise _bad_line(
                    number,
                    f"the wait of key {stored.key} (scope hash {stored.wait}) is also claimed by "
                    f"key {holder.key} on line {holder_number}",
                )
    for number, stored in batch:
        existing = store.get_session(stored.key)
        if existing is not None and existing != stored.data:
            raise _bad_line(
                number, f"key {stored.key} already holds a different session; it is never overwritten"
            )


def _kept(stored: StoredSession) -> tuple[object, ...]:
    """What a store keeps of a session: two lines of one key must agree on it (``active`` aside)."""
    return (stored.scope, stored.data, stored.wait, stored.deadline_ms)
