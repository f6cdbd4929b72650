"""The index's storage: a slot per key, and the slots' fields in compact columns.

A million sessions held as a dict of ``Entry`` tuples cost about 540 bytes
of Python heap each (issue 15, part 4): the tuple, two ints, the owner
scope tuple and its place in two more dicts. Here a session costs its key
and its user (the strings), one slot number, its place in two dicts (key ->
slot, user -> key) and 24 bytes of ``array`` columns:

- ``slots``: key -> slot number; ``offsets``, ``seqs`` (u64), ``sizes`` and
  ``owner_ids`` (u32) by slot; ``users`` (the user id or ``None``) by slot;
- ``owners``: the distinct ``(env, tenant, team)`` triples, which
  ``owner_ids`` number (a store has few);
- ``lookups``: owner triple -> user -> key, the user lookup;
- ``extra``: key -> ``(wait, deadline)`` for the few sessions with either;
- ``hot``: the ``Entry`` of each key read lately (``get``), at most
  ``HOT_ENTRIES`` of them (emptied when full): building one costs about a
  microsecond, a quarter of a cached read, so the keys a process keeps reading
  read as fast as from a dict of entries. Empty after opening.

A removed key's slot goes to ``free`` for the next new key. ``Index`` keeps
the rules (``apply``); this module only stores, and offers the two read-only
mappings (``EntriesView``, ``LookupView``) the snapshot and the tools read.
"""

from __future__ import annotations

import array
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast

from filestore.engine.framing import Frame
from filestore.ids import SessionKey, SessionScope

if TYPE_CHECKING:
    from filestore.engine.records import Put

# Above the session cache's default size (10,000): the sessions it holds keep their entries built.
HOT_ENTRIES: Final = 16_384

Owner = tuple[Any, ...]
"""``(env, tenant_id, team)``: a ``SessionScope`` without its user."""


def plain(user: str | None) -> str | None:
    """``user`` as a plain ``str``: a ``UserId`` (a ``str`` subclass) holds 48 bytes more."""
    return user if user is None or type(user) is str else str(user)


def scope_of(owner: Owner, user: str | None) -> SessionScope:
    """The scope of ``owner`` and ``user`` (a user kept as a plain string: see ``Columns``)."""
    return tuple.__new__(SessionScope, (*owner, user))


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


class Columns:
    """Slots and columns; see the module docs. Not thread-safe: the store locks."""

    def __init__(self) -> None:
        self.slots: dict[SessionKey, int] = {}
        self.offsets = array.array("Q")
        self.sizes = array.array("I")
        self.seqs = array.array("Q")
        self.owner_ids = array.array("I")
        self.users: list[str | None] = []
        self.owners: list[Owner] = []
        self.owner_numbers: dict[Owner, int] = {}
        self.lookups: dict[Owner, dict[str, SessionKey]] = {}
        self.extra: dict[SessionKey, tuple[str | None, int | None]] = {}
        self.free: list[int] = []
        self.hot: dict[SessionKey, Entry] = {}

    @classmethod
    def build(
        cls,
        keys: list[str],
        offsets: array.array[int],
        sizes: array.array[int],
        owners: list[Owner],
        owner_ids: array.array[int],
        users: list[str | None],
        seqs: array.array[int],
        pointed: list[int],
    ) -> Columns:
        """Columns of slot ``n`` for ``keys[n]``, in bulk (opening a big store is mostly this).

        ``ValueError`` if a key appears twice or an owner number names no owner.
        """
        count = len(keys)
        if not len(offsets) == len(sizes) == len(owner_ids) == len(users) == len(seqs) == count:
            raise ValueError("columns of different lengths")
        if owner_ids and max(owner_ids) >= len(owners):
            raise ValueError("an owner number names no owner")
        columns = cls()
        # SessionKey is a str subclass with str's hash and equality: plain strings work as keys.
        columns.slots = dict(zip(cast("list[SessionKey]", keys), range(count), strict=True))
        if len(columns.slots) != count:
            raise ValueError("a key appears twice")
        columns.offsets, columns.sizes, columns.seqs = offsets, sizes, seqs
        columns.owner_ids, columns.users, columns.owners = owner_ids, users, owners
        columns.owner_numbers = {owner: number for number, owner in enumerate(owners)}
        if len(columns.owner_numbers) != len(owners):
            raise ValueError("an owner appears twice")
        if len(owners) == 1:
            # The usual store (one env, tenant and team): the lookup in one C-level pass.
            inner = dict(zip(map(users.__getitem__, pointed), map(keys.__getitem__, pointed), strict=True))
            inner.pop(None, None)
            if inner:
                columns.lookups[owners[0]] = inner  # type: ignore[assignment]
        else:
            for number in pointed:
                user = users[number]
                if user is not None:
                    columns.lookups.setdefault(owners[owner_ids[number]], {})[user] = keys[number]  # type: ignore[assignment]
        return columns

    # -- reading ---------------------------------------------------------------

    def entry(self, key: SessionKey, slot: int) -> Entry:
        """The ``Entry`` of ``key``, in ``slot``."""
        extra = self.extra.get(key) if self.extra else None
        return tuple.__new__(
            Entry,
            (
                self.offsets[slot],
                self.sizes[slot],
                scope_of(self.owners[self.owner_ids[slot]], self.users[slot]),
                self.seqs[slot],
                *(extra or (None, None)),
            ),
        )

    def get(self, key: SessionKey) -> Entry | None:
        """The ``Entry`` of ``key``, kept in ``hot`` for the next read; ``None`` if it has none."""
        hot = self.hot
        built = hot.get(key)
        if built is not None:
            return built
        slot = self.slots.get(key)
        if slot is None:
            return None
        built = self.entry(key, slot)
        if len(hot) >= HOT_ENTRIES:
            hot.clear()  # not one at a time: a dict emptied from the front slows every scan
        hot[key] = built
        return built

    def lookup(self, scope: SessionScope) -> SessionKey | None:
        """The key the user lookup ``scope`` points at, if any."""
        inner = self.lookups.get(scope[:3])
        return None if inner is None or scope.user is None else inner.get(scope.user)

    def extra_items(self) -> list[tuple[SessionKey, Entry]]:
        """The key and entry of every session with a wait or a deadline."""
        return [(key, self.entry(key, self.slots[key])) for key in self.extra]

    # -- changing --------------------------------------------------------------

    def _slot_for(self, key: SessionKey, scope: SessionScope) -> int:
        """``key``'s slot, a new one (owned by ``scope``) if it has none."""
        slot = self.slots.get(key)
        if slot is None:
            owner = scope[:3]
            number = self.owner_numbers.get(owner)
            if number is None:
                number = self.owner_numbers[owner] = len(self.owners)
                self.owners.append(owner)
            if self.free:
                slot = self.free.pop()
                self.owner_ids[slot] = number
                self.users[slot] = plain(scope.user)
            else:
                slot = len(self.offsets)
                self.offsets.append(0)
                self.sizes.append(0)
                self.seqs.append(0)
                self.owner_ids.append(number)
                self.users.append(plain(scope.user))
            self.slots[key] = slot
        return slot

    def put_plain(
        self, key: SessionKey, record: Put, offset: int, size: int, seq: int, *, remember: bool = False
    ) -> tuple[int, bool] | None:
        """Store a PUT with no wait over no entry or one with no wait: the previous entry's
        size (0 if none) and whether it had a deadline. ``None`` (nothing done) if the
        previous entry has a wait, for the general rules to handle.

        With ``remember`` (the store's own writes, not replay), the new entry goes to
        ``hot`` when its owner is at hand (a new key's, or a hot key's), so reading back a
        session just written does not build it."""
        extra = self.extra.get(key) if self.extra else None
        if extra is not None and extra[0] is not None:
            return None
        hot = self.hot
        was = hot.pop(key, None) if hot else None
        slot = self.slots.get(key)
        if slot is None:
            slot = self._slot_for(key, record.scope)
            previous = 0
            owner: SessionScope | None = record.scope
        else:
            previous = self.sizes[slot]
            owner = None if was is None else was.scope
        self.offsets[slot] = offset
        self.sizes[slot] = size
        self.seqs[slot] = seq
        if record.deadline is not None:
            self.extra[key] = (None, record.deadline)
        elif extra is not None:
            del self.extra[key]
        user = self.users[slot]
        if user is not None and record.points_lookup:
            inner = self.lookups.get(self.owners[self.owner_ids[slot]])
            if inner is None:
                inner = self.lookups[self.owners[self.owner_ids[slot]]] = {}
            # Keep the key object already there: an equal new one would be a second copy.
            if inner.get(user) != key:
                inner[user] = key
        if remember and owner is not None:
            if len(hot) >= HOT_ENTRIES:
                hot.clear()
            hot[key] = tuple.__new__(Entry, (offset, size, owner, seq, None, record.deadline))
        return previous, extra is not None

    def store(self, key: SessionKey, entry: Entry) -> None:
        """Set ``key``'s entry."""
        self.hot.pop(key, None)
        slot = self._slot_for(key, entry.scope)
        owner = entry.scope[:3]
        if self.owners[self.owner_ids[slot]] != owner:
            number = self.owner_numbers.get(owner)
            if number is None:
                number = self.owner_numbers[owner] = len(self.owners)
                self.owners.append(owner)
            self.owner_ids[slot] = number
        if self.users[slot] != entry.scope.user:
            self.users[slot] = plain(entry.scope.user)
        self.offsets[slot] = entry.offset
        self.sizes[slot] = entry.size
        self.seqs[slot] = entry.seq
        if entry.wait is None and entry.deadline is None:
            self.extra.pop(key, None)
        else:
            self.extra[key] = (entry.wait, entry.deadline)

    def remove(self, key: SessionKey) -> None:
        """Drop ``key``'s entry (``KeyError`` if it has none); its slot is free for another."""
        slot = self.slots.pop(key)
        self.hot.pop(key, None)
        self.users[slot] = None
        self.free.append(slot)
        self.extra.pop(key, None)

    def point(self, scope: SessionScope, key: SessionKey | None) -> None:
        """Point the user lookup ``scope`` at ``key`` (``None``: delete it, if there)."""
        owner = scope[:3]
        inner = self.lookups.get(owner)
        if key is None:
            if inner is not None and scope.user is not None:
                inner.pop(scope.user, None)
                if not inner:
                    del self.lookups[owner]
            return
        if scope.user is None:
            raise ValueError("a user lookup without a user")
        user: str = scope.user
        slot = self.slots.get(key)
        mine = None if slot is None else self.users[slot]
        if mine is not None and mine == user:
            user = mine  # the slot's own string: one object for both
        if inner is None:
            inner = self.lookups[owner] = {}
        if inner.get(user) != key:
            inner[user if type(user) is str else str(user)] = key

    def set_lookup(self, pointed: Mapping[SessionScope, SessionKey]) -> None:
        """Replace the whole user lookup with ``pointed``."""
        items = list(pointed.items())
        self.lookups = {}
        for scope, key in items:
            self.point(scope, key)


class EntriesView(MutableMapping[SessionKey, Entry]):
    """Key -> ``Entry`` over ``Columns`` (each ``Entry`` built when read)."""

    def __init__(self, columns: Columns) -> None:
        self.columns = columns

    def __getitem__(self, key: SessionKey) -> Entry:
        return self.columns.entry(key, self.columns.slots[key])

    def __setitem__(self, key: SessionKey, entry: Entry) -> None:
        self.columns.store(key, entry)

    def __delitem__(self, key: SessionKey) -> None:
        self.columns.remove(key)

    def __iter__(self) -> Iterator[SessionKey]:
        return iter(self.columns.slots)

    def __len__(self) -> int:
        return len(self.columns.slots)

    def __contains__(self, key: object) -> bool:
        return key in self.columns.slots

    def items(self) -> Iterator[tuple[SessionKey, Entry]]:  # type: ignore[override]
        """Every key and its entry, in slot-table order."""
        entry = self.columns.entry
        for key, slot in self.columns.slots.items():
            yield key, entry(key, slot)


class LookupView(MutableMapping[SessionScope, SessionKey]):
    """User lookup scope -> key over ``Columns``."""

    def __init__(self, columns: Columns) -> None:
        self.columns = columns

    def __getitem__(self, scope: SessionScope) -> SessionKey:
        key = self.columns.lookup(scope)
        if key is None:
            raise KeyError(scope)
        return key

    def __setitem__(self, scope: SessionScope, key: SessionKey) -> None:
        self.columns.point(scope, key)

    def __delitem__(self, scope: SessionScope) -> None:
        if self.columns.lookup(scope) is None:
            raise KeyError(scope)
        self.columns.point(scope, None)

    def __iter__(self) -> Iterator[SessionScope]:
        for owner, inner in list(self.columns.lookups.items()):
            for user in list(inner):
                yield scope_of(owner, user)

    def __len__(self) -> int:
        return sum(map(len, self.columns.lookups.values()))
