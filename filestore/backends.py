"""One way to open any backend, and moving sessions between backends.

``open_store(spec)`` in the spirit of greentic-session's ``create_session_store``:

- ``"memory:"``: an ``InMemorySessionStore``;
- ``"redis://..."``, ``"rediss://..."``, ``"unix://..."``, ``"redis+cluster://HOST:PORT,..."``,
  ``"redis+sentinel://HOST:PORT,.../MASTER_NAME"``: a ``RedisSessionStore`` on one server, a
  Redis Cluster or the master Sentinel names (``?namespace=...`` picks the key namespace);
- anything else: a directory path, a ``FileSessionStore``.

``migrate(source, target)`` streams every live session, with its key, owner,
wait and deadline, from one store to another. Keys are kept, so re-running
after an interruption skips what already arrived; a key that holds different
data in the target is refused, never overwritten. It ends by checking the
counts.
"""

from __future__ import annotations

import inspect
import os
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

import attrs

from filestore.contract import SessionStore, StoredSession
from filestore.engine.options import callback
from filestore.engine.store import FileSessionStore
from filestore.errors import InvalidInputError
from filestore.memory import InMemorySessionStore
from filestore.progress import begin_phase, counted, phased_only
from filestore.redis_connect import SCHEMES
from filestore.redis_store import DEFAULT_NAMESPACE, RedisSessionStore
from filestore.waits import Clock, check_clock, is_expired, system_clock

_T = TypeVar("_T")

REDIS_SCHEMES: Final = SCHEMES


@runtime_checkable
class MovableStore(SessionStore, Protocol):
    """A store that can list its sessions and take keyed ones (every backend here can)."""

    def iter_sessions(self) -> Iterator[StoredSession]: ...

    def import_session(self, session: StoredSession) -> bool: ...


@attrs.frozen
class Target:
    """What a store spec names: ``kind`` is ``"memory"``, ``"redis"`` or ``"directory"``;
    ``location`` the Redis URL (without ``?namespace=``) or the directory."""

    kind: str
    location: str
    namespace: str = DEFAULT_NAMESPACE


def parse_target(spec: object, *, field: str = "spec") -> Target:
    """The store ``spec`` names (see module docs), for ``open_store`` and ``open_async_store``.

    ``spec`` is text (a ``str`` or ``os.PathLike``): anything else, ``bytes``
    included, is ``InvalidInputError`` naming ``field``, and so is a URL of
    another scheme or an empty string.
    """
    try:
        text = os.fspath(spec)  # type: ignore[call-overload]
    except TypeError:
        text = None
    if not isinstance(text, str):
        raise InvalidInputError(
            f"{field} must be a str (a directory, memory: or a redis:// URL), not {type(spec).__name__}",
            field=field,
            rule="a str",
        )
    if text == "memory:":
        return Target("memory", text)
    if text.startswith(REDIS_SCHEMES):
        parsed = urllib.parse.urlsplit(text)
        query = urllib.parse.parse_qs(parsed.query)
        namespace = query.pop("namespace", [DEFAULT_NAMESPACE])[0]
        rest = urllib.parse.urlencode({name: values[-1] for name, values in query.items()})
        return Target("redis", urllib.parse.urlunsplit(parsed._replace(query=rest)), namespace)
    if not text or "://" in text:
        raise InvalidInputError(
            f"not a store: {text!r} (use a directory, memory: or a redis:// URL)",
            field=field,
            rule="a store",
        )
    return Target("directory", text)


def open_store(spec: str | os.PathLike[str], **options: Any) -> MovableStore:
    """Open the store ``spec`` names (see module docs); ``options`` go to its constructor.

    Refused with ``InvalidInputError``: a ``spec`` ``parse_target`` refuses, a
    directory path the file store refuses (see
    ``filestore.engine.options.store_path``), and an option the store's
    constructor does not take (``memory:`` takes none).
    """
    target = parse_target(spec)
    if target.kind == "memory":
        check_options(InMemorySessionStore, options)
        return InMemorySessionStore()
    if target.kind == "redis":
        check_options(RedisSessionStore, options, given_by_spec=frozenset({"namespace"}))
        return RedisSessionStore(target.location, namespace=target.namespace, **options)
    check_options(FileSessionStore, options)
    return FileSessionStore(target.location, **options)


def check_options(
    kind: type, options: dict[str, Any], *, given_by_spec: frozenset[str] = frozenset()
) -> None:
    """Refuse an option ``kind``'s constructor does not take (Python would raise a bare ``TypeError``).

    ``given_by_spec`` are options the spec itself sets (a Redis URL's ``?namespace=``).
    """
    accepted = {
        name
        for name, parameter in inspect.signature(kind).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in given_by_spec
    }
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InvalidInputError(
            f"{kind.__name__} takes no option {', '.join(unknown)} "
            f"(it takes: {', '.join(sorted(accepted)) or 'none'})",
            field=unknown[0],
            rule="a known option",
        )


@attrs.frozen
class MigrateReport:
    """What a migration did."""

    source_sessions: int
    copied: int
    already_there: int

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def migrate(
    source: MovableStore,
    target: MovableStore,
    *,
    progress: Callable[[int], None] | None = None,
    clock: Clock = system_clock,
) -> MigrateReport:
    """Copy every session of ``source`` into ``target``, keys, owners, waits and deadlines kept.

    Raises ``InvalidInputError`` if a key holds a different session in the
    target, or a wait's reply scope points at another key there. Expired
    sessions are not copied (the source never lists them). It ends by
    reading every source session back from the target: the count copied
    plus already there must be the source's, each one equal, except one
    whose deadline has passed by ``clock`` meanwhile (unix milliseconds; the
    stores' own clock if they have a manual one). ``progress`` is called
    with 1 per session copied; one that follows phases (see
    ``filestore.progress``) also with 1 per session verified.
    """
    check_movable(source, "source")
    check_movable(target, "target")
    progress = callback("progress", progress)
    clock = check_clock(clock)
    begin_phase(progress, "copy", session_count(source), "sessions")
    counts = copy_sessions(target, enumerate(source.iter_sessions(), 1), progress=progress)
    begin_phase(progress, "verify", counts.copied + counts.already_there, "sessions")
    missing = [
        session.key
        for session in counted(source.iter_sessions(), lambda _session: 1, phased_only(progress))
        if target.get_session(session.key) != session.data and not is_expired(session.deadline_ms, clock())
    ]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} sessions did not arrive intact (first: {missing[0]})",
            field="target",
            rule="complete",
        )
    return MigrateReport(counts.copied + counts.already_there, counts.copied, counts.already_there)


def session_count(store: object) -> int | None:
    """How many sessions ``store`` holds, if it can say so cheaply (``len``), else ``None``."""
    return len(store) if isinstance(store, Sized) else None


def check_movable(store: object, field: str) -> MovableStore:
    """``store`` if it is a store sessions can be moved out of and into, else ``InvalidInputError``."""
    if not isinstance(store, MovableStore):
        raise InvalidInputError(
            f"{field}: expected a session store (with iter_sessions and import_session), "
            f"not {type(store).__name__}",
            field=field,
            rule="a MovableStore",
        )
    return store


@attrs.frozen
class CopyCounts:
    """What ``copy_sessions`` did: sessions written, and sessions the target already held."""

    copied: int
    already_there: int


# Sessions a store that can (``import_batch``) writes together, with one sync.
BULK_BATCH: Final = 1000


def copy_sessions(
    target: MovableStore,
    numbered: Iterable[tuple[int, StoredSession]],
    *,
    progress: Callable[[int], None] | None = None,
    refused: Callable[[int, InvalidInputError], InvalidInputError] | None = None,
) -> CopyCounts:
    """``target.import_session`` each session (numbered, for errors), counting; ``progress(1)`` after each.

    A target with ``import_batch`` (the file store) takes them a thousand at
    a time, made durable by one sync. A session the target refuses (its key
    holds a different session) stops the copy with the target's
    ``InvalidInputError``, or with ``refused(number, error)`` when given; a
    batch is refused whole, then taken again one session at a time, so the
    refusal names its session, and the ones before it are copied, as
    without batches. Shared by ``migrate`` and
    ``filestore.transfer.import_sessions``.
    """
    bulk: Callable[[list[StoredSession]], list[bool]] | None = getattr(target, "import_batch", None)
    copied = already = 0

    def tally(fresh: bool) -> None:
        nonlocal copied, already
        if fresh:
            copied += 1
        else:
            already += 1
        if progress is not None:
            progress(1)

    for chunk in _chunks(numbered, BULK_BATCH if bulk is not None else 1):
        if bulk is not None:
            try:
                outcomes = bulk([session for _number, session in chunk])
            except InvalidInputError:
                pass  # nothing of it was written: again, one at a time
            else:
                for fresh in outcomes:
                    tally(fresh)
                continue
        # Counted one by one, so a refusal or an interrupt part-way tells how far it got.
        for number, session in chunk:
            tally(_import_one(target, number, session, refused))
    return CopyCounts(copied, already)


def _import_one(
    target: MovableStore,
    number: int,
    session: StoredSession,
    refused: Callable[[int, InvalidInputError], InvalidInputError] | None,
) -> bool:
    try:
        return target.import_session(session)
    except InvalidInputError as error:
        if refused is None:
            raise
        raise refused(number, error) from None


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
