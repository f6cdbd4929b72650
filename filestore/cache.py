"""The decoded-session cache: the last sessions read or written, ready to hand out.

Decoding and validating a session costs most of a ``get`` (~12 of ~15 us).
Sessions are immutable, so the same object can be returned again; each entry
remembers the offset of the record it came from, so a newer record (written
here or by another process) is never shadowed by an older decoded copy.
"""

from __future__ import annotations

from collections import OrderedDict

from filestore.ids import SessionKey
from filestore.model import SessionData


class SessionCache:
    """A bounded LRU map of key -> (record offset, session). Not thread-safe: the store locks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[SessionKey, tuple[int, SessionData]] = OrderedDict()

    def get(self, key: SessionKey, offset: int) -> SessionData | None:
        """The session decoded from the record at ``offset``, if cached."""
        cached = self._entries.get(key)
        if cached is None or cached[0] != offset:
            return None
        self._entries.move_to_end(key)
        return cached[1]

    def put(self, key: SessionKey, offset: int, session: SessionData) -> None:
        if self.size == 0:
            return
        self._entries[key] = (offset, session)
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, key: SessionKey) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
