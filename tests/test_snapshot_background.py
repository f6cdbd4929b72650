"""The index snapshot is written off the writer's path (issue 13, #14).

A periodic snapshot is captured under the writer lock in O(1) (the index
frozen, copy-on-write) and encoded and written by a thread of its own,
without the writer lock; only its rename takes the lock again. These tests
pin the mechanism, never timings (``tools/snapshot_stall.py`` measures):
no snapshot byte is written inside a write call or under the writer lock,
writes and reads go on while one is being written, the snapshot covers
exactly the records its index holds, a stale one from another handle or
from before a compaction is never wrong, and the chunked encoding is byte
for byte what ``cbor2.dumps`` gives (the format is unchanged).
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filestore import FileSessionStore, SessionKey, StoreFullError
from filestore.engine.chunkedcbor import CHUNK, Joined, encode_parts, let_others_run, paced
from filestore.engine.fileio import OsFileIO
from filestore.engine.index import Index
from filestore.engine.layout import SNAPSHOT_NAME
from filestore.engine.records import Put, Remove
from filestore.engine.snapshot import decode_snapshot
from filestore.engine.snapshotcolumns import keys_of
from filestore.engine.snapshotwriter import SnapshotWriter
from filestore.ids import EnvId, SessionScope, TeamId, TenantId, UserId
from filestore.offline.fsck import fsck

from .support import ctx, data
from .support.fulldisk import SnapshotFailsIO, SnapshotWatchIO, writer_lock_is_free

EVERY = 5


def body_of(snapshot: bytes) -> dict[str, object]:
    """The decoded body of a snapshot's bytes."""
    body = decode_snapshot(snapshot)
    assert body is not None
    return body


def test_a_periodic_snapshot_is_written_after_the_write_call_without_the_writer_lock(tmp_path: Path) -> None:
    """The write that makes a snapshot due returns before any snapshot byte is written; the
    snapshot is written on another thread with the writer lock free, and while it is being
    written other writes and reads go on. It failed before the fix: the snapshot was written
    inside the write call, under the writer lock."""
    directory = tmp_path / "s"
    io = SnapshotWatchIO(str(directory))
    store = FileSessionStore(directory, snapshot_every_records=EVERY, io=io)
    io.forbidden_thread = threading.get_ident()
    hold = threading.Event()
    io.hold = hold
    keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(EVERY)]
    assert io.written.wait(timeout=60), "the snapshot made due was never started"
    thread, lock_was_free, _ = io.writes[0]
    assert thread != threading.get_ident()
    assert lock_was_free
    # The snapshot is stuck in the middle of its write: the store goes on.
    assert writer_lock_is_free(str(directory))
    late = store.create_session(ctx(user="late"), data(ctx(user="late"), step=99))
    store.update_session(keys[0], data(ctx(user="u0"), step=100))
    assert store.get_session(late) == data(ctx(user="late"), step=99)
    assert store.get_session(keys[0]) == data(ctx(user="u0"), step=100)
    hold.set()
    io.forbidden_thread = None
    store.close()
    assert io.installed == 2, "the background snapshot, then the one on close"
    assert body_of((directory / SNAPSHOT_NAME).read_bytes())["last_seq"] == EVERY + 2


def test_the_snapshot_covers_exactly_the_records_its_index_holds(tmp_path: Path) -> None:
    """Writes made while a snapshot is being written (an update, a remove, a create, a new
    lookup) are not in it: its index and its position are those of the moment it was captured.
    The live handle sees every write meanwhile, and a second handle that opens from that stale
    snapshot replays the rest into the same state."""
    directory = tmp_path / "s"
    io = SnapshotWatchIO(str(directory))
    store = FileSessionStore(directory, snapshot_every_records=EVERY, io=io)
    hold = threading.Event()
    io.hold = hold
    keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(EVERY)]
    assert io.written.wait(timeout=60)
    store.update_session(keys[0], data(ctx(user="u0"), step=10))
    store.remove_session(keys[1])
    newer = store.create_session(ctx(user="u2"), data(ctx(user="u2"), step=12))
    assert store.get_session(keys[1]) is None
    assert store.find_by_user(ctx(user="u2"), "u2") == (newer, data(ctx(user="u2"), step=12))
    assert len(store) == EVERY
    assert sorted(store.session_keys()) == sorted([*keys[:1], *keys[2:], newer])
    hold.set()
    assert io.on_install.wait(timeout=60)
    snapshot = body_of(io.installed_bytes[0])
    assert snapshot["last_seq"] == EVERY
    snapshot_keys = keys_of(snapshot)
    assert sorted(snapshot_keys) == sorted(str(key) for key in keys)
    with FileSessionStore(directory) as other:
        assert other.get_session(keys[0]) == data(ctx(user="u0"), step=10)
        assert other.get_session(keys[1]) is None
        assert other.find_by_user(ctx(user="u2"), "u2") == (newer, data(ctx(user="u2"), step=12))
        assert len(other) == EVERY
    store.close()
    assert not fsck(directory).errors


class ReplacedSnapshotWatchIO(OsFileIO):
    """Notes, at each rename onto ``sessions.idx``, whether a descriptor on the file it replaces
    is open, and at each close of a descriptor on an unlinked ``sessions.idx``, whether the
    writer lock is free (the kernel frees the file's blocks at that close)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.snapshot_fds: set[int] = set()
        self.renamed_while_held: list[bool] = []
        self.freed_lock_free: list[bool] = []

    def open_readonly(self, path: str) -> int:
        fd = super().open_readonly(path)
        if os.path.basename(path) == SNAPSHOT_NAME:
            self.snapshot_fds.add(fd)
        return fd

    def rename(self, source: str, target: str) -> None:
        if os.path.basename(target) == SNAPSHOT_NAME:
            self.renamed_while_held.append(bool(self.snapshot_fds))
        super().rename(source, target)

    def close(self, fd: int) -> None:
        if fd in self.snapshot_fds:
            self.snapshot_fds.discard(fd)
            if os.fstat(fd).st_nlink == 0:
                self.freed_lock_free.append(writer_lock_is_free(self.directory))
        super().close(fd)


def test_the_replaced_snapshot_is_freed_after_the_writer_lock_is_let_go(tmp_path: Path) -> None:
    """Installing a snapshot holds the one it replaces open across the rename, and closes it
    (which frees its blocks) only once the writer lock is free, and every time: freeing a big
    file inside the rename, under the lock, made a write wait milliseconds per ten megabytes
    of snapshot. Before the fix the rename dropped the old file's last reference (nothing
    held it open), so no close of an unlinked snapshot was ever seen."""
    directory = tmp_path / "s"
    io = ReplacedSnapshotWatchIO(str(directory))
    store = FileSessionStore(directory, io=io)
    keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(3)]
    store.write_snapshot()  # the first: nothing to replace
    store.update_session(keys[0], data(ctx(user="u0"), step=10))
    store.write_snapshot()
    store.update_session(keys[1], data(ctx(user="u1"), step=11))
    store.close()  # its snapshot replaces the second
    assert io.renamed_while_held == [False, True, True]
    assert io.freed_lock_free == [True, True]
    assert not io.snapshot_fds, "a descriptor on a snapshot was left open"
    with FileSessionStore(directory) as again:
        assert again.get_session(keys[1]) == data(ctx(user="u1"), step=11)
    assert not fsck(directory).errors


def test_the_encoder_lets_a_call_in_progress_finish_between_chunks_but_is_never_starved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between two chunks the background encoder waits for the store's mutex (a call in
    progress) before going on, on its own thread, once per chunk of entries at least; and the
    wait is bounded: with another thread holding the mutex throughout, the encoding still ends
    (its first byte written). Before the fix it never waited, so each system call a write
    made handed the GIL to the encoder for a chunk."""
    waits: list[int] = []
    original = SnapshotWriter._writes_first

    def counted(self: SnapshotWriter) -> None:
        waits.append(threading.get_ident())
        original(self)

    monkeypatch.setattr(SnapshotWriter, "_writes_first", counted)
    sessions = 3 * CHUNK
    directory = tmp_path / "s"
    io = SnapshotWatchIO(str(directory))
    store = FileSessionStore(directory, durability="none", snapshot_every_records=sessions, io=io)
    hold = threading.Event()
    io.hold = hold
    with store._mutex:  # held throughout, as by a call that never ends
        for n in range(sessions):
            store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n))
        assert io.written.wait(timeout=60), "the encoder starved while the mutex was held"
        assert threading.get_ident() not in waits
        assert len(waits) >= sessions // CHUNK
        assert len(set(waits)) == 1, "every wait on the snapshot thread"
    hold.set()
    store.close()
    with FileSessionStore(directory) as reopened:
        assert len(reopened) == sessions
    assert not fsck(directory).errors


def test_paced_adds_a_wait_to_let_others_run_in_its_thread_only() -> None:
    """``let_others_run`` calls the ``paced`` wait in the thread that set it, within the block
    only; other threads and later calls do not."""
    calls: list[int] = []
    other_done = threading.Event()

    def other() -> None:
        let_others_run()
        other_done.set()

    with paced(lambda: calls.append(threading.get_ident())):
        let_others_run()
        thread = threading.Thread(target=other)
        thread.start()
        assert other_done.wait(timeout=60)
        thread.join()
        encode_parts(["x"] * (2 * CHUNK + 1))
    let_others_run()
    assert calls == [threading.get_ident()] * 4


def test_a_stale_snapshot_from_another_handle_is_never_wrong(tmp_path: Path) -> None:
    """Two handles (as two processes) write snapshots; the older one, captured first but
    installed last, replaces the newer: a reopen replays from it and has every write."""
    directory = tmp_path / "s"
    io = SnapshotWatchIO(str(directory))
    first = FileSessionStore(directory, snapshot_every_records=EVERY, io=io)
    hold = threading.Event()
    io.hold = hold
    expected = {}
    for n in range(EVERY):
        expected[first.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n))] = n
    assert io.written.wait(timeout=60)
    with FileSessionStore(directory) as second:
        for n in range(EVERY, EVERY + 3):
            expected[second.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n))] = n
        second.write_snapshot()
    hold.set()
    assert io.on_install.wait(timeout=60)
    assert body_of((directory / SNAPSHOT_NAME).read_bytes())["last_seq"] == EVERY
    with FileSessionStore(directory) as reopened:
        assert len(reopened) == len(expected)
        for key, n in expected.items():
            assert reopened.get_session(key) == data(ctx(user=f"u{n}"), step=n)
    first.close()


def test_a_snapshot_captured_before_a_compaction_is_dropped(tmp_path: Path) -> None:
    """A snapshot being written while the handle compacts covers the old generation: it never
    replaces the new generation's, and the store stays fsck-clean."""
    directory = tmp_path / "s"
    io = SnapshotWatchIO(str(directory))
    store = FileSessionStore(directory, snapshot_every_records=EVERY, io=io)
    hold = threading.Event()
    io.hold = hold
    keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(EVERY)]
    assert io.written.wait(timeout=60)
    store.remove_session(keys[0])
    store.compact()
    installed = io.installed
    hold.set()
    store.write_snapshot()  # waits for the held one to end
    assert io.installed == installed + 1, "the held snapshot was dropped, the explicit one installed"
    assert body_of((directory / SNAPSHOT_NAME).read_bytes())["generation"] == 2
    store.close()
    report = fsck(directory)
    assert not report.errors
    assert not report.findings


def test_a_failed_background_snapshot_is_retried_and_an_explicit_one_raises(tmp_path: Path) -> None:
    """A background snapshot that fails (ENOSPC) leaves the index thawed and writable and is
    tried again an interval later; an explicit ``write_snapshot`` on a full disk raises
    ``StoreFullError`` and the handle goes on."""
    directory = tmp_path / "s"
    io = SnapshotFailsIO()
    store = FileSessionStore(directory, snapshot_every_records=EVERY, io=io)
    io.armed = True
    for n in range(3 * EVERY):
        store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n))
    try:
        store.write_snapshot()
    except StoreFullError:
        pass
    else:
        raise AssertionError("write_snapshot on a full disk returned")
    assert io.failures >= 2
    io.armed = False
    store.write_snapshot()
    assert body_of((directory / SNAPSHOT_NAME).read_bytes())["last_seq"] == 3 * EVERY
    store.close()


def test_chunked_encoding_is_byte_for_byte_cbor2s() -> None:
    """The snapshot body is encoded in parts (so other threads run between chunks, and nothing
    big is copied whole), whose concatenation is exactly what ``cbor2.dumps`` gives for the
    whole: the format is unchanged."""
    rng = random.Random(14)
    for count in (0, 1, 23, 24, 255, 256, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7, 70_000):
        texts = [f"k{rng.getrandbits(64):x}" if rng.random() < 0.9 else "" for _ in range(count)]
        texts[: min(count, 3)] = ["\u00e9t\u00e9", "\u2603", "\U0001f600"][: min(count, 3)]
        lines = [texts, texts[: count // 2], texts[:1], []]
        fields: dict[str, object] = {"a": 1, "keys": texts, "b": b"\x00" * count, "c": ["x", "y"]}
        whole = {**fields, "columns": ["\n".join(column) for column in lines], "n": count}
        chunked = {**fields, "columns": [Joined(column) for column in lines], "n": count}
        assert b"".join(encode_parts(chunked)) == cbor2.dumps(whole), count


SCOPES = [SessionScope(EnvId("dev"), TenantId("acme"), TeamId("t"), UserId(f"u{n}")) for n in range(4)] + [
    SessionScope(EnvId("dev"), TenantId("acme"), None, None)
]
KEYS = [SessionKey(f"k{n}") for n in range(6)]
operations = st.lists(
    st.tuples(st.booleans(), st.sampled_from(KEYS), st.sampled_from(SCOPES), st.booleans()), max_size=30
)


@settings(max_examples=200, deadline=None)
@given(before=operations, during=operations)
def test_a_frozen_index_reads_like_one_that_never_froze(
    before: list[tuple[bool, SessionKey, SessionScope, bool]],
    during: list[tuple[bool, SessionKey, SessionScope, bool]],
) -> None:
    """Copy-on-write: while frozen, the index reads (get, lookup, len, items, keys) exactly as
    an index given the same records directly; the frozen view keeps the state at freezing;
    thawing a few changes at a time keeps the reads right; and after thawing, the index is that
    direct one."""
    frozen, direct, at_freeze = Index(), Index(), Index()
    offset = 0

    def apply(index: Index, operation: tuple[bool, SessionKey, SessionScope, bool], at: int) -> None:
        put, key, scope, points = operation
        record = Put(key, scope, b"\xa0", points_lookup=points) if put else Remove(key)
        index.apply(record, at, 10 + at % 7, at)

    for operation in before:
        offset += 1
        for index in (frozen, direct, at_freeze):
            apply(index, operation, offset)
    view = frozen.freeze()
    for operation in during:
        offset += 1
        apply(frozen, operation, offset)
        apply(direct, operation, offset)
        assert len(frozen) == len(direct)
        assert dict(frozen.items()) == direct.entries
        assert sorted(frozen.live_keys()) == sorted(direct.entries)
        for key in KEYS:
            assert frozen.get(key) == direct.entries.get(key)
        for scope in SCOPES:
            assert frozen.lookup(scope) == direct.by_user.get(scope)
        assert frozen.live_bytes == direct.live_bytes
    assert view.entries == at_freeze.entries
    assert view.by_user == at_freeze.by_user
    assert view.live_bytes == at_freeze.live_bytes
    while not frozen.thaw(limit=2):  # a little at a time, reads right throughout
        assert dict(frozen.items()) == direct.entries
        assert len(frozen) == len(direct)
        for scope in SCOPES:
            assert frozen.lookup(scope) == direct.by_user.get(scope)
    assert frozen.entries == direct.entries
    assert frozen.by_user == direct.by_user
    assert not frozen.frozen
