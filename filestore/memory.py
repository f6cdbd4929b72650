"""``InMemorySessionStore``: the reference semantics, in a dict.

A product in its own right (tests, prototypes, single-process runners that
accept losing sessions on restart) and the model the property tests compare
the durable backends against.
"""

from __future__ import annotations

import datetime
import threading
import uuid
from collections.abc import Iterator

import attrs

from filestore.contract import (
    DEFAULT_MAX_RECORD_SIZE,
    ClosesOnExit,
    StoredSession,
    check_context_fence,
    check_ctx_preserved,
    check_max_record_size,
    check_record_size,
    check_stored_session,
    check_tenant_ctx,
    lookup_scope,
    points_lookup,
    session_scope,
)
from filestore.errors import InvalidInputError, SessionNotFoundError, StoreClosedError
from filestore.ids import SessionKey, SessionScope, UserId, check_key
from filestore.model import ReplyScope, SessionData, TenantCtx
from filestore.waits import (
    Clock,
    WaitAddress,
    check_clock,
    check_registration,
    deadline_ms,
    is_expired,
    only_wait,
    system_clock,
    wait_address,
    wait_lookup,
)


@attrs.frozen
class _Entry:
    data: SessionData
    scope: SessionScope
    wait: str | None = None  # the scope_hash of the scope entry pointing here
    deadline: int | None = None

    @property
    def address(self) -> WaitAddress | None:
        return None if self.wait is None else WaitAddress(self.scope, self.wait)


class InMemorySessionStore(ClosesOnExit):
    """A thread-safe, dict-backed ``SessionStore``. Nothing survives the process.

    ``clock`` gives unix milliseconds (TTL deadlines); the tests pass one they advance.
    """

    def __init__(
        self, *, clock: Clock = system_clock, max_record_size: int = DEFAULT_MAX_RECORD_SIZE
    ) -> None:
        self._clock = check_clock(clock)
        self.max_record_size = check_max_record_size(max_record_size)
        self._lock = threading.Lock()
        self._sessions: dict[SessionKey, _Entry] = {}
        self._by_user: dict[SessionScope, SessionKey] = {}
        # A user's waits: their lookup scope -> scope_hash -> key (the scope entries).
        self._waits: dict[SessionScope, dict[str, SessionKey]] = {}
        self._closed = False

    def create_session(self, ctx: TenantCtx, data: SessionData) -> SessionKey:
        check_context_fence(ctx, data)
        self._check_size(data, None)
        scope = session_scope(ctx, data)
        key = SessionKey(str(uuid.uuid4()))
        with self._lock:
            self._check_open()
            self._sessions[key] = _Entry(data, scope)
            if scope.user is not None:
                self._by_user[scope] = key
        return key

    def get_session(self, key: SessionKey | str) -> SessionData | None:
        checked = check_key(key)
        with self._lock:
            self._check_open()
            entry = self._live(checked)
        return None if entry is None else entry.data

    def update_session(self, key: SessionKey | str, data: SessionData) -> None:
        checked = check_key(key)
        with self._lock:
            self._check_open()
            entry = self._live(checked)
            if entry is None:
                raise SessionNotFoundError(f"no session with key {checked!s}", key=checked)
            check_ctx_preserved(entry.data, data)
            self._check_size(data, checked)
            # The TTL and the wait stay, as in greentic's in-memory store.
            self._sessions[checked] = attrs.evolve(entry, data=data)
            # The data names the scope's user (the check kept it): point its lookup here.
            if points_lookup(data):
                self._by_user[entry.scope] = checked

    def remove_session(self, key: SessionKey | str) -> None:
        checked = check_key(key)
        with self._lock:
            self._check_open()
            if self._live(checked) is None:
                raise SessionNotFoundError(f"no session with key {checked!s}", key=checked)
            self._drop(checked)

    def find_by_user(self, ctx: TenantCtx, user: UserId | str) -> tuple[SessionKey, SessionData] | None:
        scope = lookup_scope(check_tenant_ctx(ctx), user)
        with self._lock:
            self._check_open()
            key = self._by_user.get(scope)
            entry = None if key is None else self._live(key)
            if key is None or entry is None:
                key = only_wait(self._waits_of(scope))
                if key is None:
                    return None
                entry = self._sessions[key]
            return key, entry.data

    # -- wait routing ----------------------------------------------------------

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
        with self._lock:
            self._check_open()
            deadline = deadline_ms(self._clock(), wait.ttl)
            existing = self._live(wait.key)
            if existing is not None:
                check_ctx_preserved(existing.data, wait.data)
            self._check_size(wait.data, wait.key)
            if existing is not None:
                self._unpoint(wait.key, existing)
            owner, scope_hash = wait.address
            entries = self._waits.setdefault(owner, {})
            taken = entries.get(scope_hash)
            if taken is not None and taken != wait.key:
                # The other key leaves the user's waits; its session stays.
                self._sessions[taken] = attrs.evolve(self._sessions[taken], wait=None)
            entries[scope_hash] = wait.key
            self._sessions[wait.key] = _Entry(wait.data, owner, scope_hash, deadline)

    def find_wait_by_scope(
        self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope
    ) -> SessionKey | None:
        address = wait_address(ctx, user_id, scope)
        with self._lock:
            self._check_open()
            key = self._pointed(address)
            if key is None or self._live(key) is None:
                return None
            return key

    def list_waits_for_user(self, ctx: TenantCtx, user_id: UserId | str) -> list[SessionKey]:
        owner = wait_lookup(ctx, user_id)
        with self._lock:
            self._check_open()
            return self._waits_of(owner)

    def clear_wait(self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope) -> None:
        address = wait_address(ctx, user_id, scope)
        with self._lock:
            self._check_open()
            key = self._pointed(address)
            if key is not None:
                self._drop(key)

    def purge_expired(self) -> int:
        with self._lock:
            self._check_open()
            now = self._clock()
            expired = [key for key, entry in self._sessions.items() if is_expired(entry.deadline, now)]
            for key in expired:
                self._drop(key)
            return len(expired)

    # -- moving stores -----------------------------------------------------------

    def iter_sessions(self) -> Iterator[StoredSession]:
        """Every live session with its key, owner, lookup and wait state (a copy taken at the call)."""
        with self._lock:
            self._check_open()
            now = self._clock()
            sessions = [
                StoredSession(
                    key,
                    entry.scope,
                    entry.data,
                    active=self._by_user.get(entry.scope) == key,
                    wait=entry.wait,
                    deadline_ms=entry.deadline,
                )
                for key, entry in self._sessions.items()
                if not is_expired(entry.deadline, now)
            ]
        yield from sessions

    def import_session(self, session: StoredSession) -> bool:
        """Store a session under its own key and owner; ``False`` if already there, equal.

        ``InvalidInputError`` if the key holds a different session (never
        overwritten), or if its wait's scope entry points at another key.
        """
        session = check_stored_session(session)
        key = session.key
        with self._lock:
            self._check_open()
            imported = _Entry(session.data, session.scope, session.wait, session.deadline_ms)
            existing = self._live(key)
            if existing is not None and existing != imported:
                raise InvalidInputError(
                    f"key {key} already holds a different session", field="key", rule="no overwrite"
                )
            address = imported.address
            if address is not None:
                holder = self._pointed(address)
                # An expired holder is gone (_live drops it), as on the file store.
                if holder is not None and holder != key and self._live(holder) is not None:
                    raise InvalidInputError(
                        f"the wait of {key} is held by another key", field="wait", rule="one key per scope"
                    )
            # Checked where the file store writes a record: a new key, or the lookup to point.
            if existing is None or (session.active and self._by_user.get(session.scope) != key):
                self._check_size(session.data, key)
            self._sessions[key] = imported
            if address is not None:
                self._waits.setdefault(address.owner, {})[address.scope_hash] = key
            if session.active and session.scope.user is not None:
                self._by_user[session.scope] = key
            return existing is None

    def close(self) -> None:
        with self._lock:
            self._closed = True

    # -- under the lock ------------------------------------------------------------

    def _check_size(self, data: SessionData, key: SessionKey | None) -> None:
        check_record_size(len(data.to_cbor()), self.max_record_size, key)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    def _live(self, key: SessionKey) -> _Entry | None:
        """The entry of ``key`` unless it is missing or expired (an expired one is dropped)."""
        entry = self._sessions.get(key)
        if entry is not None and is_expired(entry.deadline, self._clock()):
            self._drop(key)
            return None
        return entry

    def _pointed(self, address: WaitAddress) -> SessionKey | None:
        return self._waits.get(address.owner, {}).get(address.scope_hash)

    def _waits_of(self, owner: SessionScope) -> list[SessionKey]:
        keys = list(self._waits.get(owner, {}).values())
        return sorted(key for key in keys if self._live(key) is not None)

    def _unpoint(self, key: SessionKey, entry: _Entry) -> None:
        """Delete the scope entry of ``key``'s wait, if it still points at ``key``."""
        address = entry.address
        if address is None:
            return
        entries = self._waits.get(address.owner, {})
        if entries.get(address.scope_hash) == key:
            del entries[address.scope_hash]
            if not entries:
                del self._waits[address.owner]

    def _drop(self, key: SessionKey) -> None:
        entry = self._sessions.pop(key)
        self._unpoint(key, entry)
        if self._by_user.get(entry.scope) == key:
            del self._by_user[entry.scope]
