"""The in-memory index: where each live session's latest record is, and who it belongs to.

Two maps, kept exact by ``apply``:

- key -> ``Entry(offset, size, scope, seq, wait, deadline)`` of the session's newest PUT (``get``);
- user lookup scope -> key, the user's active session (``lookup``);
- owner -> scope hash -> key, the scope entries of waits (``pointed_wait``).

The same ``apply`` serves replay on open, catching up with other processes
and the store's own writes, so the three can never disagree; ``apply_frame``
is the one way a verified frame read back from a log gets there.

Copy-on-write for the snapshot: ``freeze`` hands the two dicts, as they are,
to a snapshot writer on another thread (O(1), where a copy of a million
entries takes tens of milliseconds), and until ``thaw`` every change goes to
two small overlay dicts instead, read first; ``thaw`` folds them back in, a
chunk at a time, at a cost proportional to the changes made meanwhile, not
to the index.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import repeat
from typing import NamedTuple, cast

import attrs

from filestore.engine.framing import Frame
from filestore.engine.records import Put, Record, RecordDecodeError, Remove, decode_record
from filestore.errors import CorruptionError
from filestore.ids import SessionKey, SessionScope


class Entry(NamedTuple):
    """Where a session's newest record is (frame offset and total size), its owner, its
    sequence number, its wait and its deadline.

    ``seq`` is what tells that record from the session's older ones: a valid
    older record of the same key, owner and length copied over the newest
    passes every other check, so each read compares the frame's number with it
    (``matches``). ``wait`` is the scope hash whose scope entry ``(scope,
    wait)`` points at the key (``None`` once another key took it over, even if
    the record still names it); ``deadline`` the unix-millisecond TTL deadline.
    """

    offset: int
    size: int
    scope: SessionScope
    seq: int
    wait: str | None = None
    deadline: int | None = None

    def matches(self, frame: Frame) -> bool:
        """Whether the verified ``frame`` read at this entry's offset is the record it names."""
        return frame.seq == self.seq


@attrs.frozen
class IndexView:
    """The index as it was when frozen: ``entries`` and ``by_user`` are not changed until the
    index is thawed, so another thread may read them without a lock."""

    entries: Mapping[SessionKey, Entry]
    by_user: Mapping[SessionScope, SessionKey]
    live_bytes: int


class Index:
    """Key -> record location, user -> key, and scope entry -> key. Not thread-safe: the store locks.

    ``entries`` and ``by_user`` are the whole index only while it is not
    frozen (always, for the offline tools); the live store reads through
    ``get``, ``lookup``, ``items`` and ``len``, which see the overlay too.
    ``waits`` (owner -> scope hash -> key) is never frozen: it is derived from
    the entries' ``wait`` (an entry exists iff that session's wait is that
    hash), so a snapshot stores only the entries and ``from_columns`` rebuilds it.
    """

    def __init__(self) -> None:
        self.entries: dict[SessionKey, Entry] = {}
        self.by_user: dict[SessionScope, SessionKey] = {}
        self.waits: dict[SessionScope, dict[str, SessionKey]] = {}
        # Scopes repeat across sessions: share one tuple per distinct scope. Record sizes
        # repeat too (sessions of one shape): one int object per distinct size, not one per
        # entry (28 bytes each), which pays for most of what ``Entry.seq`` costs.
        self._scopes: dict[SessionScope, SessionScope] = {}
        self._sizes: dict[int, int] = {}
        self.live_bytes = 0
        # Live entries with a deadline: while there are none, nothing can be expired.
        self.timed = 0
        # While frozen: the changes since (None: removed), read before the frozen dicts.
        self._changed: dict[SessionKey, Entry | None] | None = None
        self._pointed: dict[SessionScope, SessionKey | None] = {}
        self._length = 0

    def __len__(self) -> int:
        return len(self.entries) if self._changed is None else self._length

    def intern(self, scope: SessionScope) -> SessionScope:
        return self._scopes.setdefault(scope, scope)

    # -- reading --------------------------------------------------------------

    def get(self, key: SessionKey) -> Entry | None:
        """Where the live session ``key`` is, and its owner; ``None`` if there is none."""
        changed = self._changed
        if changed is not None and key in changed:
            return changed[key]
        return self.entries.get(key)

    def lookup(self, scope: SessionScope) -> SessionKey | None:
        """The key the user lookup ``scope`` points at, if any."""
        if self._changed is not None and scope in self._pointed:
            return self._pointed[scope]
        return self.by_user.get(scope)

    def pointed_wait(self, owner: SessionScope, scope_hash: str) -> SessionKey | None:
        """The key the scope entry ``(owner, scope_hash)`` points at, if any (expired or not)."""
        return self.waits.get(owner, {}).get(scope_hash)

    def waits_of(self, owner: SessionScope) -> list[SessionKey]:
        """The keys ``owner``'s scope entries point at (expired or not), in no particular order."""
        return list(self.waits.get(owner, {}).values())

    def items(self) -> Iterator[tuple[SessionKey, Entry]]:
        """Every live session's key and entry, in no particular order."""
        changed = self._changed
        if changed is None:
            yield from self.entries.items()
            return
        for key, entry in self.entries.items():
            if key not in changed:
                yield key, entry
        for key, maybe in changed.items():
            if maybe is not None:
                yield key, maybe

    def live_keys(self) -> list[SessionKey]:
        """The key of every live session, in no particular order."""
        if self._changed is None:
            return list(self.entries)
        return [key for key, _ in self.items()]

    # -- changing ---------------------------------------------------------------

    def apply(self, record: Record, offset: int, size: int, seq: int) -> None:
        """Apply one record found at ``offset`` (frame of ``size`` bytes, number ``seq``).

        The scope entries follow the memory store's rules: a PUT with a wait
        takes that scope entry from any other key (whose entry loses its
        wait; its session stays), and a PUT or REMOVE of a key deletes the
        key's old scope entry only if it still points at the key.
        """
        key = record.key
        previous = self.get(key)
        frozen = self._changed is not None
        if not frozen and (previous is None or previous.wait is None):
            # Replay of a big log is mostly this: plain dict operations.
            if isinstance(record, Put) and record.wait is None:
                self._put_direct(key, record, previous, offset, size, seq)
                return
            if isinstance(record, Remove) and previous is not None:
                self._remove_direct(key, previous)
                return
        if isinstance(record, Put):
            # A key's owner is fixed at creation; later PUTs keep it.
            scope = previous.scope if previous is not None else self.intern(record.scope)
            if previous is not None and previous.wait is not None:
                self._unpoint_wait(key, previous)
            wait = record.wait
            if wait is not None:
                self._take_wait(key, scope, wait)
            self._set(
                key, Entry(offset, self._sizes.setdefault(size, size), scope, seq, wait, record.deadline)
            )
            if previous is None:
                self._length += frozen
            else:
                self.live_bytes -= previous.size
                self.timed -= previous.deadline is not None
            self.live_bytes += size
            self.timed += record.deadline is not None
            if scope.user is not None and record.points_lookup:
                self._point(scope, key)
            return
        if previous is None:
            return
        if previous.wait is not None:
            self._unpoint_wait(key, previous)
        self._set(key, None)
        self.live_bytes -= previous.size
        self.timed -= previous.deadline is not None
        self._length -= frozen
        if self.lookup(previous.scope) == key:
            self._point(previous.scope, None)

    def _put_direct(
        self, key: SessionKey, record: Put, previous: Entry | None, offset: int, size: int, seq: int
    ) -> None:
        """``apply`` of a PUT with no wait over an entry with none, the index not frozen."""
        if previous is None:
            scope = self.intern(record.scope)
        else:
            scope = previous.scope
            self.live_bytes -= previous.size
            self.timed -= previous.deadline is not None
        self.entries[key] = Entry(
            offset, self._sizes.setdefault(size, size), scope, seq, None, record.deadline
        )
        self.live_bytes += size
        self.timed += record.deadline is not None
        if scope.user is not None and record.points_lookup:
            self.by_user[scope] = key

    def _remove_direct(self, key: SessionKey, previous: Entry) -> None:
        """``apply`` of a REMOVE of an entry with no wait, the index not frozen."""
        del self.entries[key]
        self.live_bytes -= previous.size
        self.timed -= previous.deadline is not None
        if self.by_user.get(previous.scope) == key:
            del self.by_user[previous.scope]

    def _set(self, key: SessionKey, entry: Entry | None) -> None:
        changed = self._changed
        if changed is not None:
            changed[key] = entry
        elif entry is None:
            del self.entries[key]
        else:
            self.entries[key] = entry

    def _point(self, scope: SessionScope, key: SessionKey | None) -> None:
        if self._changed is not None:
            self._pointed[scope] = key
        elif key is None:
            del self.by_user[scope]
        else:
            self.by_user[scope] = key

    def _take_wait(self, key: SessionKey, owner: SessionScope, scope_hash: str) -> None:
        """Point the scope entry ``(owner, scope_hash)`` at ``key``; a key it pointed at loses its wait."""
        entries = self.waits.setdefault(owner, {})
        taken = entries.get(scope_hash)
        if taken is not None and taken != key:
            other = self.get(taken)
            assert other is not None, "a scope entry points at a live session"
            self._set(taken, other._replace(wait=None))
        entries[scope_hash] = key

    def _unpoint_wait(self, key: SessionKey, entry: Entry) -> None:
        """Delete the scope entry of ``entry``'s wait, if it still points at ``key``."""
        entries = self.waits.get(entry.scope)
        if entries is not None and entry.wait is not None and entries.get(entry.wait) == key:
            del entries[entry.wait]
            if not entries:
                del self.waits[entry.scope]

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
        self.apply(record, frame.offset, frame.size, frame.seq)

    # -- copy-on-write ------------------------------------------------------------

    @property
    def frozen(self) -> bool:
        """Whether a view handed out by ``freeze`` is still being read."""
        return self._changed is not None

    def freeze(self) -> IndexView:
        """The index as it is now, for another thread to read until ``thaw``; O(1)."""
        if self._changed is not None:
            raise RuntimeError("the index is already frozen")  # one snapshot at a time
        self._length = len(self.entries)
        self._changed, self._pointed = {}, {}
        return IndexView(self.entries, self.by_user, self.live_bytes)

    def thaw(self, limit: int | None = None) -> bool:
        """The frozen view is no longer read: fold the changes made since into the index, at
        most ``limit`` of them (all by default); whether all are in (the index then thawed).

        A little at a time, the store's mutex let go between, so no call waits for
        the changes a long snapshot saw; reads stay right throughout, since a change
        leaves the overlay only once it is in the index.
        """
        changed, pointed = self._changed, self._pointed
        if changed is None:
            return True
        room = len(changed) + len(pointed) if limit is None else limit
        for _ in range(min(room, len(changed))):
            key, entry = changed.popitem()
            if entry is None:
                self.entries.pop(key, None)
            else:
                self.entries[key] = entry
            room -= 1
        for _ in range(min(room, len(pointed))):
            scope, pointed_key = pointed.popitem()
            if pointed_key is None:
                self.by_user.pop(scope, None)
            else:
                self.by_user[scope] = pointed_key
        if changed or pointed:
            return False
        self._changed = None
        return True

    @classmethod
    def from_columns(
        cls,
        keys: list[str],
        offsets: list[int],
        sizes: list[int],
        scopes: list[SessionScope],
        seqs: list[int],
        pointed: list[int],
        waits: Mapping[int, str] | None = None,
        deadlines: Mapping[int, int] | None = None,
    ) -> Index:
        """Build an index from a snapshot's columns (one item per key; ``pointed``: the
        positions of the keys the user lookup points at; ``waits`` and ``deadlines``: by
        position, those of the keys that have one). ``ValueError`` if two keys hold one
        scope entry.

        Built in bulk, because opening a big store is mostly this: no per-key
        method calls, and keys stay the plain strings the snapshot decoded.
        """
        index = cls()
        # SessionKey is a str subclass with str's hash and equality: plain strings work as keys.
        as_keys = cast("list[SessionKey]", keys)
        shared = index._sizes  # one int per distinct size (see __init__)
        count = len(keys)
        rows = zip(
            offsets,
            map(shared.setdefault, sizes, sizes),
            scopes,
            seqs,
            repeat(None, count),
            repeat(None, count),
            strict=True,
        )
        # tuple.__new__ through map: no Python-level call per entry.
        index.entries = dict(zip(as_keys, map(tuple.__new__, repeat(Entry), rows), strict=True))
        for number, scope_hash in (waits or {}).items():
            key = as_keys[number]
            entry = index.entries[key]
            if entry.scope.user is None:
                raise ValueError("a wait of a session with no user")
            entries = index.waits.setdefault(entry.scope, {})
            if entries.setdefault(scope_hash, key) != key:
                raise ValueError("two sessions hold one scope entry")
            index.entries[key] = entry._replace(wait=scope_hash)
        for number, deadline in (deadlines or {}).items():
            key = as_keys[number]
            index.entries[key] = index.entries[key]._replace(deadline=deadline)
        index.timed = len(deadlines or {})
        index.by_user = {
            scopes[number]: as_keys[number] for number in pointed if scopes[number].user is not None
        }
        index._scopes = {scope: scope for scope in scopes}
        index.live_bytes = sum(sizes)
        return index
