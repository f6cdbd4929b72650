"""The compact index and the version 5 snapshot (issue 15, parts 4 and 5).

A snapshot round-trips every kind of entry (UUID and other keys, sessions
with and without a team or a user, waits, deadlines, lookups moved away from
a key); a version 4 snapshot written by the previous release (a fixed
fixture, ``tests/data/snapshot-v4``) is still read, into the very index a
replay builds; and the bulk UUID decoding gives the canonical texts.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from filestore import FileSessionStore, ReplyScope
from filestore.contract import StoredSession
from filestore.engine.chunkedcbor import encode_parts
from filestore.engine.fileio import OS_IO
from filestore.engine.index import Index
from filestore.engine.layout import SNAPSHOT_NAME
from filestore.engine.logfile import LogFile
from filestore.engine.records import Put, Remove
from filestore.engine.snapshot import SNAPSHOT_HEADER_SIZE, Snapshot, decode_snapshot, load_snapshot
from filestore.engine.snapshotcolumns import decode_columns, encode_columns, uuid_texts
from filestore.ids import SessionKey, SessionScope
from filestore.offline.exclusive import replay

from .support import ctx, data

FIXTURE = Path(__file__).parent / "data" / "snapshot-v4"
SCOPES = [
    SessionScope.parse(["dev", "acme", "support", "u1"]),
    SessionScope.parse(["dev", "acme", "support", "u2"]),
    SessionScope.parse(["dev", "acme", None, "u1"]),
    SessionScope.parse(["prod", "other", "t", None]),
]
KEYS = [SessionKey(str(uuid.UUID(int=n * 7919 + 1))) for n in range(4)] + [
    SessionKey(f"k{n}") for n in range(3)
]


def _loaded(directory: Path) -> tuple[Snapshot | None, str, Index]:
    """The snapshot in ``directory`` as ``load_snapshot`` judges it, and the index a replay builds."""
    log = LogFile.open(OS_IO, str(directory), readonly=True)
    try:
        snapshot, why = load_snapshot(
            OS_IO, str(directory / SNAPSHOT_NAME), log.fd, log.header, OS_IO.size(log.fd)
        )
        replayed, _ = replay(log)
    finally:
        log.close()
    return snapshot, why, replayed


def _version(directory: Path) -> int:
    return int.from_bytes((directory / SNAPSHOT_NAME).read_bytes()[8:12], "little")


operations = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from(KEYS),
        st.sampled_from(SCOPES),
        st.booleans(),
        st.sampled_from([None, "a" * 64, "b" * 64]),
        st.sampled_from([None, 1_700_000_000_000]),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_columns_round_trip_every_kind_of_entry(
    steps: list[tuple[bool, SessionKey, SessionScope, bool, str | None, int | None]],
) -> None:
    """Whatever the records, the index decoded from a version 5 body has the same entries, user
    lookup, waits, deadline count and live bytes as the index encoded."""
    index = Index()
    owners: dict[SessionKey, SessionScope] = {}
    for at, (put, key, scope, points, asked_wait, deadline) in enumerate(steps, start=1):
        # A key's owner is fixed at creation, and only a session with a user can wait.
        owner = owners.setdefault(key, scope) if put else owners.pop(key, scope)
        wait = None if owner.user is None else asked_wait
        record = Put(key, scope, b"\xa0", points, wait, deadline) if put else Remove(key)
        index.apply(record, 100 * at, 10 + at % 5, at)
    body = cbor2.loads(b"".join(encode_parts(encode_columns(index.columns))))
    decoded, keys = decode_columns(body)
    assert sorted(keys) == sorted(index.entries)
    assert decoded.entries == index.entries
    assert decoded.by_user == index.by_user
    assert decoded.waits == index.waits
    assert decoded.timed == index.timed
    assert decoded.live_bytes == index.live_bytes


def test_uuid_texts_are_the_canonical_texts() -> None:
    """16 raw bytes a key come back as ``str(uuid.UUID(bytes=...))``, in order."""
    ids = [uuid.uuid4() for _ in range(300)] + [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]
    assert uuid_texts(b"".join(value.bytes for value in ids)) == [str(value) for value in ids]
    assert uuid_texts(b"") == []


def test_a_version_4_snapshot_of_the_previous_release_is_read(tmp_path: Path) -> None:
    """The fixture's version 4 snapshot is accepted (no replay) and holds exactly the index a
    replay of its log builds; the store opens from it, answers, and its next snapshot is
    version 5, which is read back into the same index."""
    directory = tmp_path / "store"
    shutil.copytree(FIXTURE, directory)
    assert _version(directory) == 4
    snapshot, why, replayed = _loaded(directory)
    assert snapshot is not None, why
    assert snapshot.index.entries == replayed.entries
    assert snapshot.index.by_user == replayed.by_user
    assert snapshot.index.waits == replayed.waits
    assert snapshot.index.live_bytes == replayed.live_bytes
    assert len(replayed) == 10
    assert replayed.waits  # the fixture holds waits and a deadline
    with FileSessionStore(directory, durability="none") as store:
        found = store.find_by_user(ctx(user="u2"), "u2")
        assert found is not None
        assert found[1] == data(ctx(user="u2"), 20)
        assert store.find_wait_by_scope(ctx(user="u1"), "u1", ReplyScope("chat-2")) is not None
        store.write_snapshot()
    assert _version(directory) == 5
    again, why, replayed = _loaded(directory)
    assert again is not None, why
    assert again.index.entries == replayed.entries
    assert again.index.by_user == replayed.by_user
    assert again.index.waits == replayed.waits


def test_a_snapshot_of_uuid_keys_stores_16_bytes_a_key(tmp_path: Path) -> None:
    """The keys the store makes go into ``uuid_keys`` as raw bytes, none as text."""
    with FileSessionStore(tmp_path / "s", durability="none") as store:
        keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), n)) for n in range(50)]
        store.write_snapshot()
    body = decode_snapshot((tmp_path / "s" / SNAPSHOT_NAME).read_bytes())
    assert body is not None
    assert body["text_keys"] == []
    assert sorted(uuid_texts(body["uuid_keys"])) == sorted(keys)
    assert len((tmp_path / "s" / SNAPSHOT_NAME).read_bytes()) > SNAPSHOT_HEADER_SIZE


def test_a_key_of_uuid_lines_is_kept_as_text(tmp_path: Path) -> None:
    """A key that is two UUIDs on two lines (a key may hold a newline) is no UUID key: the
    snapshot keeps it as text, so it is read back, not refused (it took 32 bytes of
    ``uuid_keys``, one key too many, and every open replayed the whole log, fsck calling it an
    error), whether its batch of keys is all UUIDs otherwise or not."""
    joined = SessionKey(f"{KEYS[0]}\n{KEYS[1]}")
    for others in ([KEYS[2]], [KEYS[2], SessionKey("k0")]):
        index = Index()
        for at, key in enumerate([joined, *others], start=1):
            index.apply(Put(key, SCOPES[0], b"\xa0", True, None, None), 100 * at, 10, at)
        body = cbor2.loads(b"".join(encode_parts(encode_columns(index.columns))))
        decoded, keys = decode_columns(body)
        assert sorted(keys) == sorted(index.entries)
        assert decoded.entries == index.entries
        assert joined in body["text_keys"]
    with FileSessionStore(tmp_path / "s", durability="none") as store:
        store.import_session(StoredSession(joined, SCOPES[0], data(ctx(user="u1")), True))
        store.write_snapshot()
    snapshot, why, _ = _loaded(tmp_path / "s")
    assert snapshot is not None, why
