"""The in-memory index: where each live session's latest record is, and who it belongs to.

Two dicts, kept exact by ``apply``:

- ``entries``: key -> ``Entry(offset, size, scope)`` of the session's newest PUT;
- ``by_user``: user lookup scope -> key (the user's active session).

The same ``apply`` serves replay on open, catching up with other processes
and the store's own writes, so the three can never disagree; ``apply_frame``
is the one way a verified frame read back from a log gets there.
"""

from __future__ import annotations

from itertools import repeat
from typing import NamedTuple, cast

from filestore.engine.framing import Frame
from filestore.engine.records import Put, Record, RecordDecodeError, decode_record
from filestore.errors import CorruptionError
from filestore.ids import SessionKey, SessionScope


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
            if scope.user is not None and record.points_lookup:
                self.by_user[scope] = key
            return
        if previous is None:
            return
        del self.entries[key]
        self.live_bytes -= previous.size
        if self.by_user.get(previous.scope) == key:
            del self.by_user[previous.scope]

    def apply_frame(self, frame: Frame, path: str) -> None:
        """Decode the verified ``frame`` read from the log at ``path`` and apply it.

        Raises ``CorruptionError`` (naming ``path`` and the frame's offset) if
        its payload does not decode: the checksum passed, so the record is
        damage the store cannot read past, for ``fsck`` to report.
        """
        try:
            record = decode_record(frame.kind, frame.payload)
        except RecordDecodeError as error:
            raise CorruptionError(
                f"{path}: record {frame.seq} at offset {frame.offset} passes its checksum "
                f"but does not decode ({error}); run `filestore fsck`",
                path=path,
                offset=frame.offset,
            ) from None
        self.apply(record, frame.offset, frame.size)

    @classmethod
    def from_columns(
        cls,
        keys: list[str],
        offsets: list[int],
        sizes: list[int],
        scopes: list[SessionScope],
        pointed: list[int],
    ) -> Index:
        """Build an index from a snapshot's columns (one item per key; ``pointed``: the
        positions of the keys the user lookup points at).

        Built in bulk, because opening a big store is mostly this: no per-key
        method calls, and keys stay the plain strings the snapshot decoded.
        """
        index = cls()
        # SessionKey is a str subclass with str's hash and equality: plain strings work as keys.
        as_keys = cast("list[SessionKey]", keys)
        rows = zip(offsets, sizes, scopes, strict=True)
        # tuple.__new__ through map: no Python-level call per entry.
        index.entries = dict(zip(as_keys, map(tuple.__new__, repeat(Entry), rows), strict=True))
        index.by_user = {
            scopes[number]: as_keys[number] for number in pointed if scopes[number].user is not None
        }
        index._scopes = {scope: scope for scope in scopes}
        index.live_bytes = sum(sizes)
        return index
