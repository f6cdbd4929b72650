"""One way to open any backend, and moving sessions between backends.

``open_store(spec)`` in the spirit of greentic-session's ``create_session_store``:

- ``"memory:"``: an ``InMemorySessionStore``;
- ``"redis://..."``, ``"rediss://..."``, ``"unix://..."``: a ``RedisSessionStore``
  (``?namespace=...`` picks the key namespace);
- anything else: a directory path, a ``FileSessionStore``.

``migrate(source, target)`` streams every session, with its key and owner,
from one store to another. Keys are kept, so re-running after an
interruption skips what already arrived; a key that holds different data in
the target is refused, never overwritten. It ends by checking the counts.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, Protocol

import attrs

from filestore.contract import SessionStore, StoredSession
from filestore.engine.store import FileSessionStore
from filestore.errors import InvalidInputError
from filestore.memory import InMemorySessionStore
from filestore.redis_store import DEFAULT_NAMESPACE, RedisSessionStore

REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")


class MovableStore(SessionStore, Protocol):
    """A store that can list its sessions and take keyed ones (every backend here can)."""

    def iter_sessions(self) -> Iterator[StoredSession]: ...

    def import_session(self, session: StoredSession) -> bool: ...


def open_store(spec: str | os.PathLike[str], **options: Any) -> MovableStore:
    """Open the store ``spec`` names (see module docs); ``options`` go to its constructor."""
    text = os.fspath(spec)
    if text == "memory:":
        return InMemorySessionStore()
    if text.startswith(REDIS_SCHEMES):
        parsed = urllib.parse.urlsplit(text)
        query = urllib.parse.parse_qs(parsed.query)
        namespace = query.pop("namespace", [DEFAULT_NAMESPACE])[0]
        rest = urllib.parse.urlencode({name: values[-1] for name, values in query.items()})
        url = urllib.parse.urlunsplit(parsed._replace(query=rest))
        return RedisSessionStore(url, namespace=namespace, **options)
    if not text or "://" in text:
        raise InvalidInputError(
            f"not a store: {text!r} (use a directory, memory: or a redis:// URL)",
            field="spec",
            rule="a store",
        )
    return FileSessionStore(text, **options)


@attrs.frozen
class MigrateReport:
    """What a migration did."""

    source_sessions: int
    copied: int
    already_there: int

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def migrate(
    source: MovableStore, target: MovableStore, *, progress: Callable[[int], None] | None = None
) -> MigrateReport:
    """Copy every session of ``source`` into ``target``, keys and owners kept.

    Raises ``InvalidInputError`` if a key holds different data in the target.
    It ends by reading every source session back from the target: the count
    copied plus already there must be the source's, each one equal.
    """
    counts = copy_sessions(target, enumerate(source.iter_sessions(), 1), progress=progress)
    missing = [
        session.key for session in source.iter_sessions() if target.get_session(session.key) != session.data
    ]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} sessions did not arrive intact (first: {missing[0]})",
            field="target",
            rule="complete",
        )
    return MigrateReport(counts.copied + counts.already_there, counts.copied, counts.already_there)


@attrs.frozen
class CopyCounts:
    """What ``copy_sessions`` did: sessions written, and sessions the target already held."""

    copied: int
    already_there: int


def copy_sessions(
    target: MovableStore,
    numbered: Iterable[tuple[int, StoredSession]],
    *,
    progress: Callable[[int], None] | None = None,
    refused: Callable[[int, InvalidInputError], InvalidInputError] | None = None,
) -> CopyCounts:
    """``target.import_session`` each session (numbered, for errors), counting; ``progress(1)`` after each.

    A session the target refuses (its key holds a different session) stops
    the copy with the target's ``InvalidInputError``, or with
    ``refused(number, error)`` when given. Shared by ``migrate`` and
    ``filestore.transfer.import_sessions``.
    """
    copied = already = 0
    for number, session in numbered:
        try:
            fresh = target.import_session(session)
        except InvalidInputError as error:
            if refused is None:
                raise
            raise refused(number, error) from None
        if fresh:
            copied += 1
        else:
            already += 1
        if progress is not None:
            progress(1)
    return CopyCounts(copied, already)
