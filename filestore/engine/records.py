"""Record payloads: what a frame of kind PUT or REMOVE carries, in CBOR.

PUT (create or update)::

    [key: text, scope: [env, tenant_id, team or null, user or null], data: bytes]
    [key, scope, data, false]   (a PUT that leaves the user lookup alone: an update of
                                 user-less data, or an imported session it does not point at)
    [key, scope, data, points_lookup: bool, wait: text or null, deadline: int or null]
                                (only when the session has a wait or a deadline, issue 14)

``wait`` is the ``scope_hash`` (64 lower-case hex digits) of the reply scope
whose entry the PUT points at the key (the entry is ``(scope, wait)``: the
owner's user lookup scope and the hash); replaying it takes that entry from
any other key. ``deadline`` is the absolute unix-millisecond TTL deadline:
it means the same after a restart, and is compared with the store's clock
on every read. The two shorter forms stay the encoding of a PUT with
neither, so a store that never uses waits writes the bytes it always did.

``data`` is the session's CBOR (``SessionData.to_cbor``) kept as a byte
string, so replaying the log to rebuild the index never decodes sessions;
only ``get`` does. ``scope`` is the owner and user lookup key the session got
at creation (its user may come from the creating ``ctx``, not the data).

REMOVE::

    [key: text]

SEAL::

    [next_generation: int]

Payloads are decoded only after their frame's checksum passed, with a fresh
decoder that refuses indefinite lengths, duplicate keys and trailing bytes
(``filestore.strictcbor``).
"""

from __future__ import annotations

import functools
import re
import struct
from typing import Any, Final

import attrs
import cbor2

from filestore import strictcbor
from filestore.engine.framing import KIND_PUT, KIND_REMOVE, KIND_SEAL
from filestore.errors import InvalidInputError
from filestore.ids import MAX_KEY_LENGTH, SessionKey, SessionScope
from filestore.model import SessionData

_PUT_FIELDS: Final = 3
_WAIT_PUT_FIELDS: Final = 6
_SCOPE_FIELDS: Final = 4
# The first byte of a PUT: a CBOR array of 3, 4 or 6 items.
_PUT_HEADS: Final = (b"\x83", b"\x84", b"\x86")
_WAIT_PUT_HEAD: Final = b"\x86"
_SCOPE_HASH: Final = re.compile(r"[0-9a-f]{64}")
MAX_DEADLINE: Final = 2**63 - 1
# What the one-pass encoder writes itself (RFC 8949): a head is the major type's
# three bits and either the value itself (below 24) or 24-27 and the value in
# 1, 2, 4 or 8 big-endian bytes, always the shortest, as cbor2 writes it.
_UNSIGNED: Final = 0x00
_BYTE_STRING: Final = 0x40
_TEXT: Final = 0x60
_ARRAY_OF_3: Final = b"\x83"
_ARRAY_OF_4: Final = b"\x84"
_ARRAY_OF_6: Final = b"\x86"
_FALSE: Final = b"\xf4"
_TRUE: Final = b"\xf5"
_NULL: Final = b"\xf6"
_WIDTHS: Final = ((24, 1), (25, 2), (26, 4), (27, 8))
_HEAD_16: Final = struct.Struct(">BH")
# The head of each text length below 256, the ids' and keys' lengths, made once.
_TEXT_HEADS: Final = tuple(
    bytes((_TEXT | length,)) if length < 24 else bytes((_TEXT | 24, length)) for length in range(256)
)


def _head(major: int, value: int) -> bytes:
    """CBOR's shortest head of ``major`` type for ``value`` (a length, or an unsigned int)."""
    if value < 24:
        return bytes((major | value,))
    if 255 < value < 65536:  # a session's size, most often
        return _HEAD_16.pack(major | 25, value)
    for extra, width in _WIDTHS:
        if value < 1 << (8 * width):
            return bytes((major | extra,)) + value.to_bytes(width, "big")
    raise ValueError(f"{value} does not fit a CBOR head")


# A session's scope is written again with every update of it: encoded once, kept for the
# scopes written most recently (under 1 MiB).
@functools.lru_cache(maxsize=4096)
def _scope_cbor(scope: SessionScope) -> bytes:
    """``scope`` as the CBOR array ``[env, tenant_id, team or null, user or null]``."""
    env, tenant, team, user = scope
    return b"".join(
        (
            _ARRAY_OF_4,
            _text(env),
            _text(tenant),
            _NULL if team is None else _text(team),
            _NULL if user is None else _text(user),
        )
    )


def _text(value: str) -> bytes:
    """``value`` as a CBOR text string."""
    raw = value.encode()
    size = len(raw)
    return (_TEXT_HEADS[size] if size < 256 else _head(_TEXT, size)) + raw


class RecordDecodeError(Exception):
    """A verified frame whose payload is not a well-formed record (a bug or an attack)."""


@attrs.frozen
class Put:
    """A session's new content under ``key``, owned by ``scope``."""

    key: SessionKey
    scope: SessionScope
    data_cbor: bytes
    points_lookup: bool = True
    wait: str | None = None
    deadline: int | None = None

    kind = KIND_PUT

    def encode(self) -> bytes:
        return b"".join(self.encode_parts()[0])

    def encode_parts(self) -> tuple[tuple[bytes, ...], int]:
        """The payload in parts, and its length: the parts joined are ``encode()``'s bytes.

        One pass, and the session bytes are never copied: the write path
        checksums the parts where they lie and joins them straight into the
        frame (``framing.encode_frame_parts``). The bytes are exactly those of
        ``cbor2.dumps`` of the record's fields (``[key, scope, data]``, plus
        ``false``, or plus ``points_lookup, wait, deadline``): CBOR's shortest
        heads, UTF-8 text, as cbor2 writes them (``tests/test_records.py``
        compares the two on generated records).
        """
        data = self.data_cbor
        head = b"".join(
            (
                _ARRAY_OF_6
                if self.wait is not None or self.deadline is not None
                else _ARRAY_OF_3
                if self.points_lookup
                else _ARRAY_OF_4,
                _text(self.key),
                _scope_cbor(self.scope),
                _head(_BYTE_STRING, len(data)),
            )
        )
        if self.wait is not None or self.deadline is not None:
            tail = b"".join(
                (
                    _TRUE if self.points_lookup else _FALSE,
                    _NULL if self.wait is None else _text(self.wait),
                    _NULL if self.deadline is None else _head(_UNSIGNED, self.deadline),
                )
            )
            return (head, data, tail), len(head) + len(data) + len(tail)
        if self.points_lookup:
            return (head, data), len(head) + len(data)
        return (head, data, _FALSE), len(head) + len(data) + 1

    def session(self) -> SessionData:
        """Decode the stored session, validating it as construction does."""
        return SessionData.from_cbor(self.data_cbor)


@attrs.frozen
class Remove:
    """The deletion of ``key`` (a tombstone)."""

    key: SessionKey

    kind = KIND_REMOVE

    def encode(self) -> bytes:
        return strictcbor.dumps([self.key])

    def encode_parts(self) -> tuple[tuple[bytes, ...], int]:
        """The payload as one part, and its length (as ``Put.encode_parts``)."""
        payload = strictcbor.dumps([self.key])
        return (payload,), len(payload)


Record = Put | Remove


def _loads(payload: bytes) -> Any:
    try:
        return strictcbor.loads(payload)
    except (cbor2.CBORDecodeError, RecursionError) as error:
        raise RecordDecodeError(f"payload is not valid CBOR: {error}") from None


def _key(value: object) -> SessionKey:
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_LENGTH:
        raise RecordDecodeError("record key is not a valid session key")
    return SessionKey(value)


def decode_scope(value: object) -> SessionScope:
    """A stored ``[env, tenant_id, team, user]`` list, validated."""
    try:
        return SessionScope.parse(value)
    except InvalidInputError as error:
        raise RecordDecodeError(error.message) from None


def _is_put(value: object) -> bool:
    if not isinstance(value, list) or len(value) not in {_PUT_FIELDS, _PUT_FIELDS + 1, _WAIT_PUT_FIELDS}:
        return False
    if not isinstance(value[2], bytes):
        return False
    if len(value) == _PUT_FIELDS:
        return True
    if len(value) == _PUT_FIELDS + 1:
        return value[3] is False
    points, wait, deadline = value[3:]
    # type(), not isinstance(): a CBOR true is a bool, which isinstance counts as an int.
    return (
        isinstance(points, bool)
        and (wait is None or (isinstance(wait, str) and _SCOPE_HASH.fullmatch(wait) is not None))
        and (deadline is None or (type(deadline) is int and 0 <= deadline <= MAX_DEADLINE))
        # The long form only for a PUT that needs it: one encoding per record.
        and (wait is not None or deadline is not None)
    )


def decode_record(kind: int, payload: bytes) -> Record:
    """The record a verified frame carries; ``RecordDecodeError`` if malformed."""
    value = _loads(payload)
    if kind == KIND_PUT:
        if not _is_put(value):
            raise RecordDecodeError(
                "PUT payload is not [key, scope, data], [key, scope, data, false] "
                "or [key, scope, data, points_lookup, wait, deadline]"
            )
        if len(value) == _WAIT_PUT_FIELDS:
            return Put(_key(value[0]), decode_scope(value[1]), value[2], value[3], value[4], value[5])
        return Put(_key(value[0]), decode_scope(value[1]), value[2], len(value) == _PUT_FIELDS)
    if kind == KIND_REMOVE:
        if not isinstance(value, list) or len(value) != 1:
            raise RecordDecodeError("REMOVE payload is not [key]")
        return Remove(_key(value[0]))
    if kind == KIND_SEAL:
        raise RecordDecodeError("a SEAL record ends a generation; it holds no session")
    raise RecordDecodeError(f"unknown record kind {kind}")


class RecordMismatchError(RecordDecodeError):
    """A verified PUT that is not the record the index expects at its offset: another key's,
    or its key under another owner (a misdirected write)."""


def decode_session(payload: bytes, key: str, scope: SessionScope) -> SessionData:
    """The SessionData of a verified PUT payload that must be ``key``'s record, owned by ``scope``.

    The read path: the index says whose record is there, and a checksum
    cannot tell a valid record written at the wrong place from the right
    one, so the record's own key and owner are compared with the index's
    (``RecordMismatchError``) before its session is decoded.
    """
    value = _loads(payload)
    if not _is_put(value):
        raise RecordDecodeError("PUT payload is not [key, scope, data]")
    if value[0] != key:
        # Not the other key in the message: it may belong to another tenant.
        raise RecordMismatchError(f"it holds another session's record, not {key}'s")
    if value[1] != list(scope):
        raise RecordMismatchError(f"it holds a record of {key} under another owner than the index's")
    try:
        return SessionData.from_cbor(value[2])
    except InvalidInputError as error:
        raise RecordDecodeError(f"stored session does not validate: {error.message}") from None


def is_put_of(payload: bytes, key: str, scope: SessionScope) -> bool:
    """Whether a verified PUT payload is ``key``'s record under ``scope``, without decoding it.

    For paths that copy records without reading them (compaction): a PUT is
    ``Put.encode``'s CBOR, deterministic for these types, so its array head
    is followed by exactly the encoding of ``key`` and then of ``scope``.
    """
    if payload[:1] not in _PUT_HEADS:
        return False
    return payload.startswith(strictcbor.dumps([key, list(scope)])[1:], 1)


def put_points_lookup(payload: bytes) -> bool:
    """Whether a verified PUT payload points its user's lookup, without decoding its session.

    ``Put.encode`` writes the flag only when false, as a fourth item, so the
    array head alone tells; but for the long form (a wait or a deadline),
    whose fourth item is the flag either way, read from the decoded record.
    """
    if payload[:1] == _WAIT_PUT_HEAD:
        record = decode_record(KIND_PUT, payload)
        assert isinstance(record, Put), "a PUT payload decodes as a Put"
        return record.points_lookup
    return payload[:1] == _PUT_HEADS[0]


def put_has_wait_or_deadline(payload: bytes) -> bool:
    """Whether a verified PUT payload is of the long form (it carries a wait or a deadline)."""
    return payload[:1] == _WAIT_PUT_HEAD


def encode_seal(next_generation: int) -> bytes:
    """The payload of a SEAL record."""
    return strictcbor.dumps([next_generation])


def decode_seal(payload: bytes) -> int:
    """The next generation a verified SEAL payload names."""
    value = _loads(payload)
    # type(), not isinstance(): a CBOR true is a bool, which isinstance counts as an int.
    if not isinstance(value, list) or len(value) != 1 or type(value[0]) is not int:
        raise RecordDecodeError("SEAL payload is not [next_generation]")
    return value[0]
