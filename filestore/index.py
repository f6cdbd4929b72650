"""The in-memory index: where each live session's latest record is, and who it belongs to.

Two dicts, kept exact by ``apply``:

- ``entries``: key -> ``Entry(offset, size, scope)`` of the session's newest PUT;
- ``by_user``: user lookup scope -> key (the user's active session).

The same ``apply`` serves replay on open, catching up with other processes
and the store's own writes, so the three can never disagree.
"""

from __future__ import annotations

from typing import NamedTuple

from filestore.contract import SessionScope
from filestore.ids import SessionKey
from filestore.records import Put, Record


class Entry(NamedTuple):
    """Where a session's newest record is (frame offset and total size), and its owner."""

    offset: int
    size: int
    scope: SessionScope


class Index:
    """Key -> record location, and user -> key. Not thread-safe: the store locks."""

    def __init__(self) -> None:
        self.entries: dict[SessionKey, Entry] = {}
        self.by_user: dict[SessionScope, SessionKey] = {}
        # Scopes repeat across sessions: share one tuple per distinct scope.
        self._scopes: dict[SessionScope, SessionScope] = {}
        self.live_bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def intern(self, scope: SessionScope) -> SessionScope:
        return self._scopes.setdefault(scope, scope)

    def apply(self, record: Record, offset: int, size: int) -> None:
        """Apply one record found at ``offset`` (frame of ``size`` bytes)."""
        key = record.key
        previous = self.entries.get(key)
        if isinstance(record, Put):
            # A key's owner is fixed at creation; later PUTs keep it.
            scope = previous.scope if previous is not None else self.intern(record.scope)
            self.entries[key] = Entry(offset, size, scope)
            self.live_bytes += size - (previous.size if previous is not None else 0)
            if scope.user is not None:
                self.by_user[scope] = key
            return
        if previous is None:
            return
        del self.entries[key]
        self.live_bytes -= previous.size
        if self.by_user.get(previous.scope) == key:
            del self.by_user[previous.scope]

    def add(self, key: SessionKey, entry: Entry, *, user_points_here: bool) -> None:
        """Load one entry from a snapshot."""
        scope = self.intern(entry.scope)
        self.entries[key] = Entry(entry.offset, entry.size, scope)
        self.live_bytes += entry.size
        if user_points_here and scope.user is not None:
            self.by_user[scope] = key

    def drop_dangling(self, scope: SessionScope) -> None:
        """Forget a lookup entry whose session is gone."""
        key = self.by_user.get(scope)
        if key is not None and key not in self.entries:
            del self.by_user[scope]
