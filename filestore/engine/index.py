"""The in-memory index: where each live session's latest record is, and who it belongs to.

Three maps, kept exact by ``apply``:

- key -> ``Entry(offset, size, scope, seq, wait, deadline)`` of the session's newest PUT (``get``);
- user lookup scope -> key, the user's active session (``lookup``);
- owner -> scope hash -> key, the scope entries of waits (``pointed_wait``).

The same ``apply`` serves replay on open, catching up with other processes
and the store's own writes, so the three can never disagree; ``apply_frame``
is the one way a verified frame read back from a log gets there.

Compact, for a store of a million sessions on a small machine (issue 15,
part 4): an ``Entry`` is built when asked for, not kept. Each key has a slot
(``key -> slot``, one dict); a slot's offset, size, sequence number and
owner sit in ``array`` columns (8 + 4 + 8 + 4 bytes, not a tuple and two
ints, 150 bytes); the owner is the slot's user plus the number of its
``(env, tenant, team)`` in a table of the distinct ones, few in any store;
the user lookup is ``(env, tenant, team) -> user -> slot``, sharing the user
and slot objects the columns hold. Waits and deadlines, which few sessions
have, sit in a dict by slot.

Copy-on-write for the snapshot: ``freeze`` hands the index's state, as it
is, to a snapshot writer on another thread (O(1), where a copy of a million
entries takes tens of milliseconds), and until ``thaw`` every change goes to
two small overlay dicts instead, read first; ``thaw`` folds them back in, a
chunk at a time, at a cost proportional to the changes made meanwhile, not
to the index.
"""

from __future__ import annotations

import array
from collections.abc import Iterator, Mapping

import attrs

from filestore.engine.columns import Columns, EntriesView, Entry, LookupView, Owner, scope_of
from filestore.engine.framing import Frame
from filestore.engine.records import Put, Record, RecordDecodeError, decode_record
from filestore.errors import CorruptionError
from filestore.ids import SessionKey, SessionScope

__all__ = ["Entry", "Index", "IndexView"]


@attrs.frozen
class IndexView:
    """The index as it was when frozen: ``entries`` and ``by_user`` are not changed until the
    index is thawed, so another thread may read them without a lock."""

    entries: Mapping[SessionKey, Entry]
    by_user: Mapping[SessionScope, SessionKey]
    live_bytes: int


class Index:
    """Key -> record location, user -> key, and scope entry -> key. Not thread-safe: the store locks.

    ``entries`` and ``by_user`` (mappings over the columns) are the whole
    index only while it is not frozen (always, for the offline tools); the
    live store reads through ``get``, ``lookup``, ``items`` and ``len``, which
    see the overlay too. ``waits`` (owner -> scope hash -> key) is never
    frozen: it is derived from the entries' ``wait`` (an entry exists iff that
    session's wait is that hash), so a snapshot stores only the entries and
    ``from_columns`` rebuilds it.
    """

    def __init__(self, columns: Columns | None = None) -> None:
        self.columns = Columns() if columns is None else columns
        self.waits: dict[SessionScope, dict[str, SessionKey]] = {}
        self.live_bytes = 0
        # Live entries with a deadline: while there are none, nothing can be expired.
        self.timed = 0
        # While frozen: the changes since (None: removed), read before the columns.
        self._changed: dict[SessionKey, Entry | None] | None = None
        self._pointed: dict[SessionScope, SessionKey | None] = {}
        self._length = 0

    def __len__(self) -> int:
        return len(self.columns.slots) if self._changed is None else self._length

    @property
    def entries(self) -> EntriesView:
        """Key -> ``Entry``, as the columns hold them (the overlay of a frozen index aside)."""
        return EntriesView(self.columns)

    @property
    def by_user(self) -> LookupView:
        """User lookup scope -> key, as the columns hold it (the overlay of a frozen index aside)."""
        return LookupView(self.columns)

    @by_user.setter
    def by_user(self, pointed: Mapping[SessionScope, SessionKey]) -> None:
        self.columns.set_lookup(pointed)

    # -- reading --------------------------------------------------------------

    def get(self, key: SessionKey) -> Entry | None:
        """Where the live session ``key`` is, and its owner; ``None`` if there is none."""
        changed = self._changed
        if changed is not None and key in changed:
            return changed[key]
        return self.columns.get(key)

    def lookup(self, scope: SessionScope) -> SessionKey | None:
        """The key the user lookup ``scope`` points at, if any."""
        if self._changed is not None and scope in self._pointed:
            return self._pointed[scope]
        # Columns.lookup, inlined: find_by_user's one index call.
        inner = self.columns.lookups.get(scope[:3])
        user = scope[3]
        return None if inner is None or user is None else inner.get(user)

    def pointed_wait(self, owner: SessionScope, scope_hash: str) -> SessionKey | None:
        """The key the scope entry ``(owner, scope_hash)`` points at, if any (expired or not)."""
        return self.waits.get(owner, {}).get(scope_hash)

    def waits_of(self, owner: SessionScope) -> list[SessionKey]:
        """The keys ``owner``'s scope entries point at (expired or not), in no particular order."""
        return list(self.waits.get(owner, {}).values())

    def items(self) -> Iterator[tuple[SessionKey, Entry]]:
        """Every live session's key and entry, in no particular order."""
        changed = self._changed
        entries = self.entries.items()
        if changed is None:
            yield from entries
            return
        for key, entry in entries:
            if key not in changed:
                yield key, entry
        for key, maybe in changed.items():
            if maybe is not None:
                yield key, maybe

    def timed_items(self) -> list[tuple[SessionKey, Entry]]:
        """Every live session with a deadline, and its entry (cheap: only those are visited)."""
        if not self.timed:
            return []
        changed = self._changed or {}
        found = [(key, entry) for key, entry in self.columns.extra_items() if key not in changed]
        found += [(key, entry) for key, entry in changed.items() if entry is not None]
        return [(key, entry) for key, entry in found if entry.deadline is not None]

    def live_keys(self) -> list[SessionKey]:
        """The key of every live session, in no particular order."""
        if self._changed is None:
            return list(self.columns.slots)
        return [key for key, _ in self.items()]

    # -- changing ---------------------------------------------------------------

    def apply(self, record: Record, offset: int, size: int, seq: int) -> None:
        """Apply one record this process wrote, at ``offset`` (frame of ``size`` bytes, number
        ``seq``): as ``apply_frame`` does, and its entry is kept built for the reads that follow
        (``Columns.hot``); replay keeps none, or would churn through them."""
        self._apply(record, offset, size, seq, remember=True)

    def _apply(self, record: Record, offset: int, size: int, seq: int, *, remember: bool) -> None:
        """Apply one record found at ``offset`` (frame of ``size`` bytes, number ``seq``).

        The scope entries follow the memory store's rules: a PUT with a wait
        takes that scope entry from any other key (whose entry loses its
        wait; its session stays), and a PUT or REMOVE of a key deletes the
        key's old scope entry only if it still points at the key.
        """
        key = record.key
        if self._changed is None and isinstance(record, Put) and record.wait is None:
            # Replay of a big log is mostly this: no Entry built, straight into the columns.
            plain = self.columns.put_plain(key, record, offset, size, seq, remember=remember)
            if plain is not None:
                self.live_bytes += size - plain[0]
                self.timed += (record.deadline is not None) - plain[1]
                return
        previous = self.get(key)
        frozen = self._changed is not None
        if isinstance(record, Put):
            # A key's owner is fixed at creation; later PUTs keep it.
            scope = previous.scope if previous is not None else record.scope
            if previous is not None and previous.wait is not None:
                self._unpoint_wait(key, previous)
            wait = record.wait
            if wait is not None:
                self._take_wait(key, scope, wait)
            self._set(key, Entry(offset, size, scope, seq, wait, record.deadline))
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

    def _set(self, key: SessionKey, entry: Entry | None) -> None:
        changed = self._changed
        if changed is not None:
            changed[key] = entry
        elif entry is None:
            self.columns.remove(key)
        else:
            self.columns.store(key, entry)

    def _point(self, scope: SessionScope, key: SessionKey | None) -> None:
        if self._changed is not None:
            self._pointed[scope] = key
        else:
            self.columns.point(scope, key)

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
        self._apply(record, frame.offset, frame.size, frame.seq, remember=False)

    # -- copy-on-write ------------------------------------------------------------

    @property
    def frozen(self) -> bool:
        """Whether a view handed out by ``freeze`` is still being read."""
        return self._changed is not None

    def freeze(self) -> IndexView:
        """The index as it is now, for another thread to read until ``thaw``; O(1)."""
        if self._changed is not None:
            raise RuntimeError("the index is already frozen")  # one snapshot at a time
        self._length = len(self.columns.slots)
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
        columns = self.columns
        room = len(changed) + len(pointed) if limit is None else limit
        for _ in range(min(room, len(changed))):
            key, entry = changed.popitem()
            if entry is None:
                if key in columns.slots:  # not if it was made and removed while frozen
                    columns.remove(key)
            else:
                columns.store(key, entry)
            room -= 1
        for _ in range(min(room, len(pointed))):
            columns.point(*pointed.popitem())
        if changed or pointed:
            return False
        self._changed = None
        return True

    @classmethod
    def from_columns(
        cls,
        keys: list[str],
        offsets: array.array[int],
        sizes: array.array[int],
        owners: list[Owner],
        owner_ids: array.array[int],
        users: list[str | None],
        seqs: array.array[int],
        pointed: list[int],
        waits: Mapping[int, str] | None = None,
        deadlines: Mapping[int, int] | None = None,
    ) -> Index:
        """Build an index from a snapshot's columns (one item per key, slot ``n`` for key ``n``;
        ``owners``: the distinct ``(env, tenant, team)``, ``owner_ids`` indexing them;
        ``pointed``: the positions of the keys the user lookup points at; ``waits`` and
        ``deadlines``: by position, those of the keys that have one). ``ValueError`` if two
        keys hold one scope entry, or a key appears twice.
        """
        columns = Columns.build(keys, offsets, sizes, owners, owner_ids, users, seqs, pointed)
        index = cls(columns)
        for number, deadline in (deadlines or {}).items():
            columns.extra[keys[number]] = (None, deadline)  # type: ignore[index]
        index.timed = len(deadlines or {})
        for number, scope_hash in (waits or {}).items():
            key = SessionKey(keys[number])
            user = users[number]
            if user is None:
                raise ValueError("a wait of a session with no user")
            scope = scope_of(owners[owner_ids[number]], user)
            entries = index.waits.setdefault(scope, {})
            if entries.setdefault(scope_hash, key) != key:
                raise ValueError("two sessions hold one scope entry")
            columns.extra[key] = (scope_hash, columns.extra.get(key, (None, None))[1])
        index.live_bytes = sum(sizes)
        return index
