"""Wait routing and TTLs on the file store (issue 14), answering as ``filestore.memory`` does.

``FileSessionStore`` gets these calls from ``WaitRouting``: each decides,
under the writer lock and caught up with other processes, which records to
append (``build`` functions), or reads the index (``read`` functions). The
scope entries themselves are kept by ``Index.apply``, so replay on open,
catching up with another process and a handle's own writes agree.

A session whose deadline is at or before ``clock()`` is expired: every call
treats it as gone, though its records stay until a ``purge_expired``, a
removal or a compaction drops them. A record written over an expired key
(registering or importing there) is preceded by a REMOVE of it, so the
expired session's lookup and scope entries go as the memory store's do;
the two records are one locked batch, and a crash between them only removes
a session no call could see.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TypeVar

from filestore.contract import (
    StoredSession,
    check_ctx_preserved,
    check_stored_session,
    check_tenant_ctx,
    lookup_scope,
)
from filestore.engine.index import Entry
from filestore.engine.logview import LogView
from filestore.engine.records import Put, Record, Remove
from filestore.errors import InvalidInputError
from filestore.ids import SessionKey, SessionScope, UserId, check_key
from filestore.model import ReplyScope, SessionData, TenantCtx
from filestore.waits import (
    Clock,
    WaitAddress,
    check_registration,
    deadline_ms,
    is_expired,
    only_wait,
    wait_address,
    wait_lookup,
)

_T = TypeVar("_T")
Build = Callable[[], "Record | list[Record] | None"]


def live_entry(view: LogView, key: SessionKey, now: int) -> Entry | None:
    """The entry of ``key`` unless it is missing or expired at ``now``."""
    entry = view.entry(key)
    if entry is None or is_expired(entry.deadline, now):
        return None
    return entry


def live_waits(view: LogView, owner: SessionScope, now: int) -> list[SessionKey]:
    """``owner``'s live waits, sorted (as ``list_waits_for_user`` answers)."""
    return sorted(SessionKey(key) for key in view.waits_of(owner) if live_entry(view, key, now) is not None)


def _replacing(view: LogView, key: SessionKey, now: int, put: Put) -> list[Record]:
    """``put``, preceded by a REMOVE of ``key`` if it holds an expired session (see the module docs)."""
    entry = view.entry(key)
    if entry is not None and is_expired(entry.deadline, now):
        return [Remove(key), put]
    return [put]


class WaitRouting:
    """The wait calls, ``purge_expired``, and the TTL-aware reads of ``FileSessionStore``."""

    _clock: Clock
    _view: LogView

    def _read(self, read: Callable[[LogView], _T]) -> _T:
        raise NotImplementedError  # pragma: no cover - FileSessionStore's

    def _write(self, build: Build, session: SessionData | None = None) -> None:
        raise NotImplementedError  # pragma: no cover - FileSessionStore's

    def _write_bulk(self, build: Callable[[], list[Record]]) -> None:
        raise NotImplementedError  # pragma: no cover - FileSessionStore's

    # -- the five calls' reads, TTL-aware ---------------------------------------------

    def get_session(self, key: SessionKey | str) -> SessionData | None:
        checked = check_key(key)

        def read(view: LogView) -> SessionData | None:
            entry = live_entry(view, checked, self._clock())
            return None if entry is None else view.read_session(checked, entry)

        return self._read(read)

    def find_by_user(self, ctx: TenantCtx, user: UserId | str) -> tuple[SessionKey, SessionData] | None:
        scope = lookup_scope(check_tenant_ctx(ctx), user)

        def read(view: LogView) -> tuple[SessionKey, SessionData] | None:
            now = self._clock()
            key = view.lookup(scope)
            entry = None if key is None else live_entry(view, key, now)
            if key is None or entry is None:
                # No lookup (or it points at an expired session): the waits answer.
                key = only_wait(live_waits(view, scope, now))
                if key is None:
                    return None
                entry = view.entry(key)
                assert entry is not None, "a live wait has an entry"
            return SessionKey(key), view.read_session(key, entry)

        return self._read(read)

    # -- wait routing ----------------------------------------------------------------

    def register_wait(
        self,
        ctx: TenantCtx,
        user_id: UserId | str,
        scope: ReplyScope,
        key: SessionKey | str,
        data: SessionData,
        ttl: datetime.timedelta | None = None,
    ) -> None:
        wait = check_registration(ctx, user_id, scope, key, data, ttl)
        data_cbor = wait.data.to_cbor()

        def build() -> list[Record]:
            view = self._view
            now = self._clock()
            deadline = deadline_ms(now, wait.ttl)
            existing = live_entry(view, wait.key, now)
            if existing is not None:
                check_ctx_preserved(view.read_session(wait.key, existing), wait.data)
            owner = wait.address.owner if existing is None else existing.scope
            # Never points the five-call lookup: only create and update do.
            put = Put(wait.key, owner, data_cbor, False, wait.address.scope_hash, deadline)
            return _replacing(view, wait.key, now, put)

        self._write(build, wait.data)

    def find_wait_by_scope(
        self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope
    ) -> SessionKey | None:
        address = wait_address(ctx, user_id, scope)

        def read(view: LogView) -> SessionKey | None:
            key = _pointed(view, address)
            if key is None or live_entry(view, key, self._clock()) is None:
                return None
            return SessionKey(key)

        return self._read(read)

    def list_waits_for_user(self, ctx: TenantCtx, user_id: UserId | str) -> list[SessionKey]:
        owner = wait_lookup(ctx, user_id)
        return self._read(lambda view: live_waits(view, owner, self._clock()))

    def clear_wait(self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope) -> None:
        address = wait_address(ctx, user_id, scope)

        def build() -> Record | None:
            # Expired or not: the memory store drops what the entry points at either way.
            key = _pointed(self._view, address)
            return None if key is None else Remove(key)

        self._write(build)

    def purge_expired(self) -> int:
        purged = 0

        def build() -> list[Record]:
            nonlocal purged
            now = self._clock()
            removes: list[Record] = [
                Remove(key) for key, entry in self._view.timed() if is_expired(entry.deadline, now)
            ]
            purged = len(removes)
            return removes

        self._write(build)
        return purged

    # -- moving stores -------------------------------------------------------------------

    def iter_sessions(self) -> Iterator[StoredSession]:
        """Every live session with its key, owner, lookup and wait state (for export and migrate)."""
        for key in self._read(LogView.keys):
            stored = self._read(partial(_stored, key=key, now=self._clock()))
            if stored is not None:  # else removed (or expired) meanwhile
                yield stored

    def import_session(self, session: StoredSession) -> bool:
        """Store a session under its own key and owner (moving sessions between stores).

        Returns ``False`` if the key already holds the equal session, wait and
        deadline (so an interrupted import can be re-run; the user lookup is
        still made to match ``session.active``); raises ``InvalidInputError``
        if it holds another, which is never overwritten, or if the session's
        wait is a scope entry another live key holds.
        """
        session = check_stored_session(session)
        fresh = True

        def build() -> list[Record] | None:
            nonlocal fresh
            records, fresh = _importing(self._view, session, self._clock())
            return records

        self._write(build, session.data)
        return fresh

    def import_batch(self, sessions: Sequence[StoredSession]) -> list[bool]:
        """``import_session`` for each of ``sessions``, written together and made durable by
        one sync (in the fsync and group modes): bulk import and migrate at the disk's speed.

        All or nothing: every session is checked (as ``import_session`` checks
        it) before any is written, and a batch naming one key twice, or two keys
        claiming one wait, is refused whole (``InvalidInputError``). Returns,
        for each session in order, whether it was new (``False``: already
        there). A power loss during the batch may keep some of its records
        without others, even a later one without an earlier one: opening then
        refuses until ``filestore fsck --repair``, which keeps every record
        written; importing the batch again completes it.
        """
        checked = [check_stored_session(session) for session in sessions]
        _refuse_twice_named(checked)
        fresh: list[bool] = []

        def build() -> list[Record]:
            fresh.clear()
            now = self._clock()
            records: list[Record] = []
            # The user lookups an earlier session of the batch takes: the view, read before any
            # of the batch is written, still shows them where they were.
            taken: set[SessionScope] = set()
            for session in checked:
                built, new = _importing(self._view, session, now, moved=session.scope in taken)
                records.extend(built or ())
                fresh.append(new)
                if built and session.active:
                    taken.add(session.scope)
            return records

        self._write_bulk(build)
        return fresh


def _importing(
    view: LogView, session: StoredSession, now: int, *, moved: bool = False
) -> tuple[list[Record] | None, bool]:
    """What importing ``session`` writes (``None``: nothing), and whether its key was new; the
    refusals of ``import_session``. ``moved``: its user's lookup was taken since ``view`` was read."""
    key = session.key
    entry = live_entry(view, key, now)
    if entry is not None:
        same = (entry.scope, entry.wait, entry.deadline) == (session.scope, session.wait, session.deadline_ms)
        if not same or view.read_session(key, entry) != session.data:
            raise InvalidInputError(
                f"key {key} already holds a different session", field="key", rule="no overwrite"
            )
    if session.wait is not None:
        holder = view.pointed_wait(session.scope, session.wait)
        if holder is not None and holder != key and live_entry(view, holder, now) is not None:
            raise InvalidInputError(
                f"the wait of {key} is held by another key", field="wait", rule="one key per scope"
            )
    if entry is not None and (not session.active or (view.is_active(key, entry) and not moved)):
        return None, False
    put = Put(key, session.scope, session.data.to_cbor(), session.active, session.wait, session.deadline_ms)
    return _replacing(view, key, now, put), entry is None


def _refuse_twice_named(sessions: Sequence[StoredSession]) -> None:
    """Refuse a batch that names a key twice, or whose sessions claim one wait twice: its
    sessions are checked against the store before any is written, so not against each other."""
    keys: set[SessionKey] = set()
    waits: set[tuple[SessionScope, str]] = set()
    for session in sessions:
        if session.key in keys:
            raise InvalidInputError(
                f"key {session.key} is twice in one batch; nothing was stored",
                field="key",
                rule="once a batch",
            )
        keys.add(session.key)
        if session.wait is not None:
            claim = (session.scope, session.wait)
            if claim in waits:
                raise InvalidInputError(
                    f"two sessions of one batch claim the wait of {session.key}; nothing was stored",
                    field="wait",
                    rule="one key per scope",
                )
            waits.add(claim)


def _pointed(view: LogView, address: WaitAddress) -> SessionKey | None:
    return view.pointed_wait(address.owner, address.scope_hash)


def _stored(view: LogView, key: SessionKey, now: int) -> StoredSession | None:
    entry = live_entry(view, key, now)
    if entry is None:
        return None
    return StoredSession(
        key,
        entry.scope,
        view.read_session(key, entry),
        view.is_active(key, entry),
        entry.wait,
        entry.deadline,
    )
