"""Record payloads: what a verified frame may carry, and every way a payload can be malformed.

A frame whose checksum passes but whose payload is not a well-formed record
(a bug, or bytes crafted to pass the CRC) is ``RecordDecodeError`` in the
decoder, ``CorruptionError`` naming the record's offset when a store opens,
and a ``bad-payload`` finding in fsck. A PUT whose session bytes do not
validate passes replay (which never decodes sessions) and is refused when read.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from filestore import CorruptionError, FileSessionStore
from filestore.engine.fileio import OS_IO
from filestore.engine.framing import (
    FILE_HEADER_SIZE,
    FLAG_SYNCED,
    KIND_PUT,
    KIND_REMOVE,
    KIND_SEAL,
    Frame,
    encode_frame,
    encode_frame_parts,
)
from filestore.engine.layout import LOG_NAME
from filestore.engine.logfile import LogFile
from filestore.engine.records import (
    Put,
    RecordDecodeError,
    Remove,
    decode_record,
    decode_seal,
    decode_session,
    encode_seal,
    is_put_of,
    put_has_wait_or_deadline,
    put_points_lookup,
)
from filestore.ids import MAX_KEY_LENGTH, SessionKey, SessionScope
from filestore.offline.fsck import fsck

from .support import ctx, data
from .support.strategies import ids

KEY = "0b7d3c52-6a36-4a3c-9d0e-6c1bd6e1a0f1"
SCOPE = ["dev", "acme", "support", "u1"]
SESSION = data().to_cbor()
WAIT = "5251e2c9eb975466809eecbe51be7aa8dc7785ad05cb393a8f47a3a2f42cc544"


@attrs.frozen
class Malformed:
    """A payload of ``kind`` that no decoder may accept, and what its error must say."""

    kind: int
    payload: bytes
    message: str


MALFORMED: dict[str, Malformed] = {
    "not CBOR": Malformed(KIND_PUT, b"\xff", "not valid CBOR"),
    "empty": Malformed(KIND_PUT, b"", "not valid CBOR"),
    "bytes after the item": Malformed(
        KIND_PUT, cbor2.dumps([KEY, SCOPE, SESSION]) + b"\x00", "not valid CBOR"
    ),
    "indefinite length": Malformed(KIND_PUT, b"\x9f\xff", "not valid CBOR"),
    "duplicate map key": Malformed(KIND_PUT, b"\xa2\x01\x01\x01\x01", "not valid CBOR"),
    "nested too deeply": Malformed(KIND_PUT, b"\x81" * 1000 + b"\x00", "not valid CBOR"),
    "put: a map": Malformed(KIND_PUT, cbor2.dumps({"key": KEY}), "PUT payload is not"),
    "put: two fields": Malformed(KIND_PUT, cbor2.dumps([KEY, SCOPE]), "PUT payload is not"),
    "put: five fields": Malformed(
        KIND_PUT, cbor2.dumps([KEY, SCOPE, SESSION, False, 1]), "PUT payload is not"
    ),
    "put: data as text": Malformed(KIND_PUT, cbor2.dumps([KEY, SCOPE, "session"]), "PUT payload is not"),
    "put: fourth field true": Malformed(
        KIND_PUT, cbor2.dumps([KEY, SCOPE, SESSION, True]), "PUT payload is not"
    ),
    "put: empty key": Malformed(KIND_PUT, cbor2.dumps(["", SCOPE, SESSION]), "not a valid session key"),
    "put: key a number": Malformed(KIND_PUT, cbor2.dumps([7, SCOPE, SESSION]), "not a valid session key"),
    "put: key too long": Malformed(
        KIND_PUT, cbor2.dumps(["k" * (MAX_KEY_LENGTH + 1), SCOPE, SESSION]), "not a valid session key"
    ),
    "put: scope a string": Malformed(KIND_PUT, cbor2.dumps([KEY, "dev", SESSION]), "scope"),
    "put: scope of three": Malformed(KIND_PUT, cbor2.dumps([KEY, SCOPE[:3], SESSION]), "scope"),
    "put: bad user id": Malformed(KIND_PUT, cbor2.dumps([KEY, [*SCOPE[:3], "u 1"], SESSION]), "scope.user"),
    "put: no env": Malformed(KIND_PUT, cbor2.dumps([KEY, [None, *SCOPE[1:]], SESSION]), "scope.env"),
    "put: six fields, neither wait nor deadline": Malformed(
        KIND_PUT, cbor2.dumps([KEY, SCOPE, SESSION, True, None, None]), "PUT payload is not"
    ),
    "put: wait not a scope hash": Malformed(
        KIND_PUT, cbor2.dumps([KEY, SCOPE, SESSION, False, "ab" * 31, None]), "PUT payload is not"
    ),
    "put: wait in capitals": Malformed(
        KIND_PUT, cbor2.dumps([KEY, SCOPE, SESSION, False, "AB" * 32, None]), "PUT payload is not"
    ),
    "put: deadline negative": Malformed(
        KIND_PUT, cbor2.dumps([KEY, SCOPE, SESSION, False, None, -1]), "PUT payload is not"
    ),
    "put: deadline past int64": Malformed(
        KIND_PUT, cbor2.dumps([KEY, SCOPE, SESSION, False, None, 2**63]), "PUT payload is not"
    ),
    "put: deadline a bool": Malformed(
        KIND_PUT, cbor2.dumps([KEY, SCOPE, SESSION, False, None, True]), "PUT payload is not"
    ),
    "put: flag a number": Malformed(
        KIND_PUT, cbor2.dumps([KEY, SCOPE, SESSION, 0, WAIT, None]), "PUT payload is not"
    ),
    "remove: a bare key": Malformed(KIND_REMOVE, cbor2.dumps(KEY), "REMOVE payload is not [key]"),
    "remove: two fields": Malformed(KIND_REMOVE, cbor2.dumps([KEY, KEY]), "REMOVE payload is not [key]"),
    "remove: empty key": Malformed(KIND_REMOVE, cbor2.dumps([""]), "not a valid session key"),
    "remove: not CBOR": Malformed(KIND_REMOVE, b"\x5f", "not valid CBOR"),
    "a seal": Malformed(KIND_SEAL, encode_seal(2), "a SEAL record ends a generation"),
    "an unknown kind": Malformed(9, cbor2.dumps([KEY]), "unknown record kind 9"),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=MALFORMED)
def test_decode_record_refuses_every_malformed_payload(case: Malformed) -> None:
    """decode_record raises RecordDecodeError, and only that, saying what is wrong."""
    with pytest.raises(RecordDecodeError, match=re.escape(case.message)):
        decode_record(case.kind, case.payload)


def test_well_formed_records_decode() -> None:
    """The table's neighbours that are well formed decode to the records they encode."""
    scope = SessionScope.parse(SCOPE)
    put = Put(SessionKey(KEY), scope, SESSION)
    hidden = Put(SessionKey(KEY), scope, SESSION, points_lookup=False)
    assert decode_record(KIND_PUT, put.encode()) == put
    assert decode_record(KIND_PUT, hidden.encode()) == hidden
    assert decode_record(KIND_REMOVE, Remove(SessionKey(KEY)).encode()) == Remove(SessionKey(KEY))
    assert decode_session(put.encode(), KEY, scope) == data()
    assert decode_seal(encode_seal(7)) == 7


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (cbor2.dumps([KEY, SCOPE]), "PUT payload is not"),
        (b"\xff", "not valid CBOR"),
        (cbor2.dumps([KEY, SCOPE, b"\x00\x00"]), "stored session does not validate"),
        (cbor2.dumps([KEY, SCOPE, cbor2.dumps({"flow_id": "f"})]), "stored session does not validate"),
        (cbor2.dumps([KEY, SCOPE, b"\xff"]), "stored session does not validate"),
        (cbor2.dumps([KEY.replace("0", "1"), SCOPE, SESSION]), "another session's record"),
        (cbor2.dumps([KEY, [*SCOPE[:3], "u2"], SESSION]), "under another owner"),
        (cbor2.dumps([KEY, [*SCOPE[:2], None, "u1"], SESSION]), "under another owner"),
    ],
)
def test_decode_session_refuses_a_malformed_put_or_session(payload: bytes, message: str) -> None:
    """The read path's decoder raises RecordDecodeError for a bad PUT, a session that does not validate,
    or a record of another key or owner than the index expects (a misdirected write)."""
    with pytest.raises(RecordDecodeError, match=message):
        decode_session(payload, KEY, SessionScope.parse(SCOPE))


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff",
        cbor2.dumps(["2"]),
        cbor2.dumps([2, 3]),
        cbor2.dumps(2),
        # A CBOR true passed isinstance(value, int) and read as generation True.
        cbor2.dumps([True]),
    ],
)
def test_decode_seal_refuses_anything_but_one_generation(payload: bytes) -> None:
    """A SEAL payload is [next_generation]; anything else is RecordDecodeError."""
    with pytest.raises(RecordDecodeError):
        decode_seal(payload)


# -- through a store and fsck ---------------------------------------------------------


def store_with_sessions(directory: Path) -> dict[str, object]:
    """A closed store of three sessions (no preallocated tail); its sessions by key."""
    with FileSessionStore(directory, preallocate_bytes=0) as store:
        keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(3)]
        return {str(key): store.get_session(key) for key in keys}


def append_verified_frame(directory: Path, kind: int, payload: bytes) -> Frame:
    """Append a frame whose checksum passes (the next sequence number, synced) carrying ``payload``."""
    log = LogFile.open(OS_IO, str(directory))
    try:
        frames = [frame for _, frame, _ in log.frames(FILE_HEADER_SIZE) if frame is not None]
        last, salt = frames[-1], log.salt
    finally:
        log.close()
    raw = encode_frame(salt, kind, FLAG_SYNCED, last.seq + 1, last.seq, payload)
    with (directory / LOG_NAME).open("ab") as file:
        file.write(raw)
    return Frame(last.end, kind, FLAG_SYNCED, last.seq + 1, last.seq, payload)


FRAMED = {name: case for name, case in MALFORMED.items() if case.kind in {KIND_PUT, KIND_REMOVE}}


@pytest.mark.parametrize("case", FRAMED.values(), ids=FRAMED)
def test_a_verified_frame_with_a_malformed_payload_refuses_open_and_is_found_by_fsck(
    tmp_path: Path, case: Malformed
) -> None:
    """Opening raises CorruptionError at the frame's offset, pointing to fsck (the store is not
    changed); fsck reports bad-payload there, and --repair leaves the three sessions."""
    directory = tmp_path / "s"
    sessions = store_with_sessions(directory)
    frame = append_verified_frame(directory, case.kind, case.payload)
    before = (directory / LOG_NAME).read_bytes()
    with pytest.raises(CorruptionError, match="fsck") as info:
        FileSessionStore(directory)
    assert info.value.offset == frame.offset
    assert (directory / LOG_NAME).read_bytes() == before
    report = fsck(directory)
    assert [(finding.kind, finding.offset) for finding in report.errors] == [("bad-payload", frame.offset)]
    assert fsck(directory, repair=True).exit_code == 1
    with FileSessionStore(directory) as store:
        assert {str(key): store.get_session(key) for key in store.session_keys()} == sessions


def test_a_put_whose_session_does_not_validate_is_refused_when_read(tmp_path: Path) -> None:
    """fsck reports bad-payload; replay never decodes sessions, so the store opens, and reading
    that session is CorruptionError (never wrong data) while the others read as written."""
    directory = tmp_path / "s"
    sessions = store_with_sessions(directory)
    payload = cbor2.dumps([KEY, SCOPE, cbor2.dumps({"flow_id": "f"})])
    frame = append_verified_frame(directory, KIND_PUT, payload)
    assert [(finding.kind, finding.offset) for finding in fsck(directory).errors] == [
        ("bad-payload", frame.offset)
    ]
    with FileSessionStore(directory) as store:
        with pytest.raises(CorruptionError) as info:
            store.get_session(KEY)
        assert info.value.offset == frame.offset
        with pytest.raises(CorruptionError):
            store.find_by_user(ctx(), "u1")
        for key, session in sessions.items():
            assert store.get_session(key) == session


def test_is_put_of_recognises_a_record_by_its_key_and_owner() -> None:
    """is_put_of (compaction's undecoded check) holds for a PUT of that key and owner, pointing the
    lookup or not, and for nothing else: another key, another owner, a REMOVE, garbage."""
    scope = SessionScope.parse(SCOPE)
    other = SessionScope.parse([*SCOPE[:3], "u2"])
    key = SessionKey(KEY)
    assert is_put_of(Put(key, scope, SESSION).encode(), KEY, scope)
    assert is_put_of(Put(key, scope, SESSION, points_lookup=False).encode(), key, scope)
    assert not is_put_of(Put(SessionKey(KEY.replace("0", "1")), scope, SESSION).encode(), KEY, scope)
    assert not is_put_of(Put(key, other, SESSION).encode(), KEY, scope)
    assert not is_put_of(Remove(key).encode(), KEY, scope)
    assert not is_put_of(b"", KEY, scope)


@pytest.mark.parametrize(
    ("points", "wait", "deadline"),
    [(False, WAIT, None), (True, WAIT, 1_800_000_000_000), (False, None, 5), (True, None, 2**63 - 1)],
)
def test_a_put_with_a_wait_or_deadline_takes_the_long_form(
    points: bool, wait: str | None, deadline: int | None
) -> None:
    """A PUT with a wait or a deadline encodes as the six-item array and decodes back equal;
    the read path, is_put_of and put_points_lookup read it as they read the short forms."""
    scope = SessionScope.parse(SCOPE)
    put = Put(SessionKey(KEY), scope, SESSION, points, wait, deadline)
    payload = put.encode()
    assert cbor2.loads(payload) == [KEY, SCOPE, SESSION, points, wait, deadline]
    assert decode_record(KIND_PUT, payload) == put
    assert decode_session(payload, KEY, scope) == data()
    assert is_put_of(payload, KEY, scope)
    assert put_points_lookup(payload) is points
    assert put_has_wait_or_deadline(payload)


def test_a_put_without_wait_or_deadline_keeps_its_old_bytes() -> None:
    """A store that never uses waits writes the 3- and 4-item PUTs it always did."""
    scope = SessionScope.parse(SCOPE)
    assert Put(SessionKey(KEY), scope, SESSION).encode() == cbor2.dumps([KEY, SCOPE, SESSION])
    hidden = Put(SessionKey(KEY), scope, SESSION, points_lookup=False).encode()
    assert hidden == cbor2.dumps([KEY, SCOPE, SESSION, False])
    assert put_points_lookup(Put(SessionKey(KEY), scope, SESSION).encode())
    assert not put_points_lookup(hidden)
    assert not put_has_wait_or_deadline(hidden)


def _two_pass_payload(record: Put | Remove) -> bytes:
    """The payload as the store encoded it before issue 15: ``cbor2.dumps`` of the fields."""
    if isinstance(record, Remove):
        return cbor2.dumps([record.key])
    fields: list[object] = [record.key, list(record.scope), record.data_cbor]
    if record.wait is not None or record.deadline is not None:
        fields += [record.points_lookup, record.wait, record.deadline]
    elif not record.points_lookup:
        fields.append(False)
    return cbor2.dumps(fields)


_KEYS = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=MAX_KEY_LENGTH)
# Session bytes around every length where CBOR's byte-string head grows (24, 256, 65,536).
_DATA = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([23, 24, 255, 256, 65_535, 65_536, 70_000]).map(lambda size: b"\x01" * size),
)
_SCOPES = st.builds(
    lambda env, tenant, team, user: SessionScope.parse([env, tenant, team, user]),
    ids(),
    ids(),
    st.none() | ids(),
    st.none() | ids(),
)
_PUTS = st.builds(
    lambda key, scope, data_cbor, points, wait, deadline: Put(
        SessionKey(key), scope, data_cbor, points, wait, deadline
    ),
    _KEYS,
    _SCOPES,
    _DATA,
    st.booleans(),
    st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
    st.none() | st.integers(0, 2**63 - 1),
)
_RECORDS = st.one_of(_PUTS, _KEYS.map(lambda key: Remove(SessionKey(key))))


@given(
    record=_RECORDS,
    salt=st.integers(0, 2**32 - 1),
    synced=st.booleans(),
    seq=st.integers(1, 2**64 - 1),
    synced_through=st.integers(0, 2**64 - 1),
)
def test_the_one_pass_encoder_writes_the_bytes_of_the_two_pass_one(
    record: Put | Remove, salt: int, synced: bool, seq: int, synced_through: int
) -> None:
    """The write path's frame (payload parts checksummed and joined once) is byte for byte the
    frame of ``cbor2.dumps`` of the record's fields, for every PUT form (3, 4 and 6 items,
    byte strings of every head width) and REMOVE: the format did not change."""
    parts, length = record.encode_parts()
    expected = _two_pass_payload(record)
    assert length == len(expected)
    assert record.encode() == expected
    flags = FLAG_SYNCED if synced else 0
    frame = encode_frame_parts(salt, record.kind, flags, seq, synced_through, parts, length)
    assert frame == encode_frame(salt, record.kind, flags, seq, synced_through, expected)
    assert decode_record(record.kind, expected) == record
