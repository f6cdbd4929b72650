"""The columns of a version 5 index snapshot: compact on disk, and quick to load.

Version 4 stored every key as text (37 bytes each), offsets, sequence
numbers and sizes as raw little-endian integers, and a table of distinct
owner scopes, which holds every user again when each session has its own.
At 1 KiB sessions that made the snapshot 7% of the live data (issue 15,
part 5). Version 5 keeps the same facts in these body fields:

- ``count``: the number of keys. Keys that are lowercase canonical UUIDs
  (those the stores make) come first, as ``uuid_keys``: 16 raw bytes each;
  the rest follow as ``text_keys``, a list of texts.
- ``offsets`` and ``seqs``: each key's record offset and sequence number, as
  signed little-endian 64-bit differences from the previous key's (the first
  from 0), deflated (zlib): records written in key order differ by a record
  size and by 1, which deflate reduces to almost nothing.
- ``sizes`` and ``owner_ids``: u32 each, deflated. ``owner_ids`` number the
  distinct ``(env, tenant, team)`` triples of ``owner_count`` and
  ``owner_columns`` (three texts, each the triples' ids joined by newlines; an
  empty line for no team).
- ``users``: each key's user id, or an empty line for none, joined by
  newlines and deflated.
- ``lookup``: the positions of the keys the user lookup points at, ascending,
  as u32 differences from the previous (the first from 0), deflated.
- ``wait_ids``, ``wait_hashes``, ``deadline_ids`` and ``deadlines``: as in
  version 4 (few sessions have them).

Writing runs beside live writers: every step works ``CHUNK`` keys at a time
and lets other threads run between (``filestore.engine.chunkedcbor``).
"""

from __future__ import annotations

import array
import itertools
import operator
import re
import sys
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from filestore.engine.chunkedcbor import CHUNK, Joined, Pieces, let_others_run
from filestore.engine.columns import Columns, EntriesView, Entry, LookupView, Owner, scope_of
from filestore.engine.index import Index
from filestore.engine.records import MAX_DEADLINE
from filestore.ids import MAX_ID_LENGTH, EnvId, SessionKey, SessionScope, TeamId, TenantId, UserId

HASH_BYTES: Final = 32
_UUID_BYTES: Final = 16
_UUID_TEXT: Final = 36
_UUID_LINES: Final = re.compile(r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n)*")
# Where the 32 hex digits of a UUID go in its 36-character text.
_HEX_PLACES: Final = [*range(8), *range(9, 13), *range(14, 18), *range(19, 23), *range(24, 36)]


def columns_of(entries: Mapping[SessionKey, Entry], by_user: Mapping[SessionScope, SessionKey]) -> Columns:
    """The ``Columns`` behind an index's mappings: those of an ``Index`` as they are, any others
    copied (a hand-edited index in a test)."""
    if (
        isinstance(entries, EntriesView)
        and isinstance(by_user, LookupView)
        and entries.columns is by_user.columns
    ):
        return entries.columns
    columns = Columns()
    for key, entry in entries.items():
        columns.store(key, entry)
    columns.set_lookup(by_user)
    return columns


class _Deflated:
    """A column deflated a chunk at a time: ``Pieces`` for the body, never one big string."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(6)
        self._parts: list[bytes] = []

    def add(self, data: bytes) -> None:
        part = self._compressor.compress(data)
        if part:
            self._parts.append(part)

    def pieces(self) -> Pieces:
        return Pieces([*self._parts, self._compressor.flush()])


def _packed(typecode: str, values: Iterable[int]) -> bytes:
    packed = array.array(typecode, values)
    if sys.byteorder == "big":  # pragma: no cover - the format is little-endian
        packed.byteswap()
    return packed.tobytes()


def _chunks(items: Iterable[Any]) -> Iterable[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, CHUNK)):
        yield chunk


def _order(columns: Columns) -> tuple[list[int], list[str], Pieces, list[str]]:
    """The slots in snapshot order, the keys in that order, the UUID keys' bytes, the text keys."""
    uuid_slots: list[int] = []
    uuid_keys: list[str] = []
    uuid_bytes: list[bytes] = []
    text_slots: list[int] = []
    text_keys: list[str] = []
    for chunk in _chunks(columns.slots.items()):
        keys = [key for key, _ in chunk]
        lines = "\n".join(keys) + "\n"
        # The length too: a key may hold a newline, and two UUIDs on two lines are one text key.
        if len(lines) == len(keys) * (_UUID_TEXT + 1) and _UUID_LINES.fullmatch(lines):
            canonical: list[str] = keys
            uuid_slots.extend(slot for _, slot in chunk)
        else:
            canonical = []
            for key, slot in chunk:
                if len(key) == _UUID_TEXT and _UUID_LINES.fullmatch(key + "\n"):
                    canonical.append(key)
                    uuid_slots.append(slot)
                else:
                    text_keys.append(str(key))
                    text_slots.append(slot)
        if canonical:
            uuid_keys.extend(canonical)
            uuid_bytes.append(bytes.fromhex("".join(canonical).replace("-", "")))
        let_others_run()
    return uuid_slots + text_slots, uuid_keys + text_keys, Pieces(uuid_bytes), text_keys


def encode_columns(columns: Columns) -> dict[str, object]:
    """The version 5 body fields of ``columns`` (see the module docs)."""
    order, keys, uuid_bytes, text_keys = _order(columns)
    offsets, sizes, seqs, owner_ids, users, lookup = (_Deflated() for _ in range(6))
    previous_offset = previous_seq = previous_pointed = 0
    single = columns.lookups.get(columns.owners[0]) if len(columns.owners) == 1 else None
    for start in range(0, len(order), CHUNK):
        slots = order[start : start + CHUNK]
        chunk_offsets = list(map(columns.offsets.__getitem__, slots))
        offsets.add(_packed("q", map(operator.sub, chunk_offsets, [previous_offset, *chunk_offsets[:-1]])))
        previous_offset = chunk_offsets[-1]
        chunk_seqs = list(map(columns.seqs.__getitem__, slots))
        seqs.add(_packed("q", map(operator.sub, chunk_seqs, [previous_seq, *chunk_seqs[:-1]])))
        previous_seq = chunk_seqs[-1]
        sizes.add(_packed("I", map(columns.sizes.__getitem__, slots)))
        owner_ids.add(_packed("I", map(columns.owner_ids.__getitem__, slots)))
        chunk_users = list(map(columns.users.__getitem__, slots))
        text = "\n".join(user or "" for user in chunk_users)
        users.add((text if start == 0 else "\n" + text).encode("ascii"))
        chunk_keys = keys[start : start + CHUNK]
        hits: Iterable[bool]
        if single is not None:
            hits = map(operator.eq, map(single.get, chunk_users), chunk_keys)  # type: ignore[arg-type]
        else:
            hits = (
                user is not None
                and columns.lookup(scope_of(columns.owners[columns.owner_ids[slot]], user)) == key
                for slot, user, key in zip(slots, chunk_users, chunk_keys, strict=True)
            )
        pointed = list(itertools.compress(range(start, start + len(slots)), hits))
        lookup.add(_packed("I", map(operator.sub, pointed, [previous_pointed, *pointed[:-1]])))
        if pointed:
            previous_pointed = pointed[-1]
        let_others_run()
    wait_ids: list[int] = []
    wait_hashes: list[bytes] = []
    deadline_ids: list[int] = []
    deadlines: list[int] = []
    if columns.extra:
        position = {slot: number for number, slot in enumerate(order)}
        for key, (wait, deadline) in columns.extra.items():
            number = position[columns.slots[key]]
            if wait is not None:
                wait_ids.append(number)
                wait_hashes.append(bytes.fromhex(wait))
            if deadline is not None:
                deadline_ids.append(number)
                deadlines.append(deadline)
    return {
        "count": len(order),
        "uuid_keys": uuid_bytes,
        "text_keys": text_keys,
        "offsets": offsets.pieces(),
        "sizes": sizes.pieces(),
        "seqs": seqs.pieces(),
        "owner_ids": owner_ids.pieces(),
        "owner_count": len(columns.owners),
        "owner_columns": [
            Joined([str(owner[field] or "") for owner in columns.owners]) for field in range(3)
        ],
        "users": users.pieces(),
        "lookup": lookup.pieces(),
        "wait_ids": _packed("I", wait_ids),
        "wait_hashes": b"".join(wait_hashes),
        "deadline_ids": _packed("I", deadline_ids),
        "deadlines": _packed("Q", deadlines),
    }


# -- reading ----------------------------------------------------------------------------------


def _inflate(data: object, limit: int, field: str) -> bytes:
    """``data`` inflated, which must end within ``limit`` bytes (a forged column cannot
    make opening allocate more than the column could hold)."""
    if not isinstance(data, bytes):
        raise ValueError(f"{field} is not bytes")
    inflater = zlib.decompressobj()
    try:
        inflated = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        raise ValueError(f"{field} does not inflate: {error}") from None
    if len(inflated) > limit or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise ValueError(f"{field} is not one deflated column of at most {limit} bytes")
    return inflated


def unpack(typecode: str, data: bytes, count: int, field: str) -> array.array[int]:
    """``count`` packed little-endian integers."""
    unpacked = array.array(typecode)
    if len(data) != unpacked.itemsize * count:
        raise ValueError(f"{field} has the wrong length")
    unpacked.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover
        unpacked.byteswap()
    return unpacked


def _column(typecode: str, body: Mapping[str, Any], field: str, count: int) -> array.array[int]:
    size = array.array(typecode).itemsize * count
    return unpack(typecode, _inflate(body[field], size, field), count, field)


def _summed(typecode: str, body: Mapping[str, Any], field: str, count: int) -> array.array[int]:
    """A column of differences, added up (``ValueError`` if a sum leaves ``typecode``'s range)."""
    differences = _column("q" if typecode == "Q" else "I", body, field, count)
    try:
        return array.array(typecode, itertools.accumulate(differences))
    except OverflowError:
        raise ValueError(f"{field} adds up beyond its range") from None


def uuid_texts(data: object) -> list[str]:
    """The canonical text of each 16-byte UUID in ``data``, in bulk: the hex digits are
    copied into their places in every 37-byte line at once, then split."""
    if not isinstance(data, bytes) or len(data) % _UUID_BYTES:
        raise ValueError("uuid_keys is not 16 bytes a key")
    count = len(data) // _UUID_BYTES
    if not count:
        return []
    digits = data.hex().encode("ascii")
    line = _UUID_TEXT + 1
    lines = bytearray(b"-") * (line * count)
    for digit, place in enumerate(_HEX_PLACES):
        lines[place::line] = digits[digit :: 2 * _UUID_BYTES]
    lines[_UUID_TEXT::line] = b"\n" * count
    return lines[:-1].decode("ascii").split("\n")


def _owners(columns: object, count: object) -> list[Owner]:
    if not isinstance(columns, list) or len(columns) != 3 or not isinstance(count, int):
        raise ValueError("owner_columns is not three texts")
    if not all(isinstance(column, str) for column in columns):
        raise ValueError("owner_columns is not three texts")
    envs, tenants, teams = columns
    return list(
        zip(
            EnvId.parse_joined(envs, count, optional=False, field="owner.env"),
            TenantId.parse_joined(tenants, count, optional=False, field="owner.tenant_id"),
            TeamId.parse_joined(teams, count, optional=True, field="owner.team"),
            strict=True,
        )
    )


def positions(packed: object, count: int) -> list[int]:
    """Packed u32 positions of keys, each below ``count`` and none twice."""
    if not isinstance(packed, bytes) or len(packed) % 4:
        raise ValueError("positions are not packed u32")
    found = unpack("I", packed, len(packed) // 4, "positions").tolist()
    if len(set(found)) != len(found) or any(number >= count for number in found):
        raise ValueError("positions repeat or name no key")
    return found


def waits_by_position(ids: object, hashes: object, count: int) -> dict[int, str]:
    """The scope hash of each key that holds a wait, by the key's position."""
    found = positions(ids, count)
    if not isinstance(hashes, bytes) or len(hashes) != HASH_BYTES * len(found):
        raise ValueError("wait_hashes does not hold one hash per wait")
    return {number: hashes[at * HASH_BYTES : (at + 1) * HASH_BYTES].hex() for at, number in enumerate(found)}


def deadlines_by_position(ids: object, deadlines: object, count: int) -> dict[int, int]:
    """The deadline of each key that has one, by the key's position."""
    found = positions(ids, count)
    if not isinstance(deadlines, bytes):
        raise ValueError("deadlines is not packed")
    values = unpack("Q", deadlines, len(found), "deadlines").tolist()
    if any(value > MAX_DEADLINE for value in values):
        raise ValueError("a deadline beyond int64 milliseconds")
    return dict(zip(found, values, strict=True))


def keys_of(body: Mapping[str, Any]) -> list[str]:
    """The keys of a version 5 body, in its order; ``ValueError`` if malformed."""
    text_keys = body["text_keys"]
    if not isinstance(text_keys, list) or not set(map(type, text_keys)) <= {str}:
        raise ValueError("text_keys is not a list of text")
    return uuid_texts(body["uuid_keys"]) + text_keys


def decode_columns(body: Mapping[str, Any]) -> tuple[Index, list[str]]:
    """The index a version 5 body holds, and its keys; ``ValueError`` (or ``KeyError``,
    ``TypeError``) if any column is malformed."""
    count = body["count"]
    if not isinstance(count, int) or count < 0:
        raise ValueError("count is not a count")
    keys = keys_of(body)
    if len(keys) != count:
        raise ValueError("the keys are not count keys")
    users_text = _inflate(body["users"], count * (MAX_ID_LENGTH + 1), "users")
    try:
        joined = users_text.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("users is not ASCII") from None
    raw = _inflate(body["lookup"], 4 * count, "lookup")
    differences = unpack("I", raw, len(raw) // 4, "lookup")
    try:
        pointed = list(itertools.accumulate(differences))
    except OverflowError:  # pragma: no cover - Python ints do not overflow
        raise ValueError("lookup adds up beyond its range") from None
    if 0 in differences[1:] or any(number >= count for number in pointed[-1:]):
        raise ValueError("lookup positions repeat or name no key")
    index = Index.from_columns(
        keys,
        _summed("Q", body, "offsets", count),
        _column("I", body, "sizes", count),
        _owners(body["owner_columns"], body["owner_count"]),
        _column("I", body, "owner_ids", count),
        UserId.parse_joined(joined, count, optional=True, field="users", typed=False),  # type: ignore[arg-type]
        _summed("Q", body, "seqs", count),
        pointed,
        waits_by_position(body["wait_ids"], body["wait_hashes"], count),
        deadlines_by_position(body["deadline_ids"], body["deadlines"], count),
    )
    return index, keys
