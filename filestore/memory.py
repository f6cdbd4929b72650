"""``InMemorySessionStore``: the reference semantics, in a dict.

A product in its own right (tests, prototypes, single-process runners that
accept losing sessions on restart) and the model the property tests compare
the durable backends against.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

from filestore.contract import (
    ClosesOnExit,
    StoredSession,
    check_context_fence,
    check_ctx_preserved,
    check_stored_session,
    check_tenant_ctx,
    lookup_scope,
    points_lookup,
    session_scope,
)
from filestore.errors import InvalidInputError, SessionNotFoundError, StoreClosedError
from filestore.ids import SessionKey, SessionScope, UserId, check_key
from filestore.model import SessionData, TenantCtx


class InMemorySessionStore(ClosesOnExit):
    """A thread-safe, dict-backed ``SessionStore``. Nothing survives the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[SessionKey, tuple[SessionData, SessionScope]] = {}
        self._by_user: dict[SessionScope, SessionKey] = {}
        self._closed = False

    def create_session(self, ctx: TenantCtx, data: SessionData) -> SessionKey:
        check_context_fence(ctx, data)
        scope = session_scope(ctx, data)
        key = SessionKey(str(uuid.uuid4()))
        with self._lock:
            self._check_open()
            self._sessions[key] = (data, scope)
            if scope.user is not None:
                self._by_user[scope] = key
        return key

    def get_session(self, key: SessionKey | str) -> SessionData | None:
        checked = check_key(key)
        with self._lock:
            self._check_open()
            entry = self._sessions.get(checked)
        return None if entry is None else entry[0]

    def update_session(self, key: SessionKey | str, data: SessionData) -> None:
        checked = check_key(key)
        with self._lock:
            self._check_open()
            entry = self._sessions.get(checked)
            if entry is None:
                raise SessionNotFoundError(f"no session with key {checked!s}", key=checked)
            stored, scope = entry
            check_ctx_preserved(stored, data)
            self._sessions[checked] = (data, scope)
            # The data names the scope's user (the check kept it): point its lookup here.
            if points_lookup(data):
                self._by_user[scope] = checked

    def remove_session(self, key: SessionKey | str) -> None:
        checked = check_key(key)
        with self._lock:
            self._check_open()
            entry = self._sessions.pop(checked, None)
            if entry is None:
                raise SessionNotFoundError(f"no session with key {checked!s}", key=checked)
            scope = entry[1]
            if self._by_user.get(scope) == checked:
                del self._by_user[scope]

    def find_by_user(self, ctx: TenantCtx, user: UserId | str) -> tuple[SessionKey, SessionData] | None:
        scope = lookup_scope(check_tenant_ctx(ctx), user)
        with self._lock:
            self._check_open()
            key = self._by_user.get(scope)
            if key is None:
                return None
            # Removing a session drops the lookup entry pointing at it: none dangles here.
            return key, self._sessions[key][0]

    def iter_sessions(self) -> Iterator[StoredSession]:
        """Every session with its key, owner and lookup state (a copy taken at the call)."""
        with self._lock:
            self._check_open()
            sessions = [
                StoredSession(key, scope, data, self._by_user.get(scope) == key)
                for key, (data, scope) in self._sessions.items()
            ]
        yield from sessions

    def import_session(self, session: StoredSession) -> bool:
        """Store a session under its own key and owner; ``False`` if already there, equal.

        ``InvalidInputError`` if the key holds a different session (never overwritten).
        """
        session = check_stored_session(session)
        key = session.key
        with self._lock:
            self._check_open()
            existing = self._sessions.get(key)
            if existing is not None and existing != (session.data, session.scope):
                raise InvalidInputError(
                    f"key {key} already holds a different session", field="key", rule="no overwrite"
                )
            self._sessions[key] = (session.data, session.scope)
            if session.active and session.scope.user is not None:
                self._by_user[session.scope] = key
            return existing is None

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")
