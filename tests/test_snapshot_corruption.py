"""A damaged index snapshot (ZODB's ``Corruption.py`` cases) costs no data: refused, rebuilt, rewritten.

The store: about 50 live sessions over 12 users, a snapshot forced with
``write_snapshot`` 8 records before the end (kept aside: the *stale* one),
closed (close writes the *final* one). Each case puts a damaged snapshot
next to the intact log and reopens: every session and every user lookup
must be as the model says, the log untouched, and afterwards the snapshot
file valid and current (``load_snapshot`` accepts it, covering the whole
log). Edited snapshots get a recomputed CRC (layout in ``filestore.engine.snapshot``),
so only the edited field can make opening refuse them; each such case first
checks that ``load_snapshot`` does refuse it.
"""

from __future__ import annotations

import array
import itertools
import random
import shutil
import struct
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest

from filestore import FileSessionStore
from filestore.engine.framing import Frame
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME
from filestore.engine.logfile import LogFile, ScanResult
from filestore.engine.snapshot import SNAPSHOT_HEADER_SIZE

from .support.corruption import Op, Pristine, build_pristine, reopen, side_files, verified_snapshot

_HEADER: Final = struct.Struct("<8sIIQ")  # magic, version, CRC-32 of the body, body length
TAIL: Final = 8  # records written after the stale snapshot


def workload() -> list[Op]:
    """55 creates over 12 users with updates and removes mixed in (50 live sessions), then 8 more calls."""
    operations: list[Op] = []
    for number in range(55):
        operations.append(Op("create", user=f"u{number % 12}"))
        if number % 6 == 5:
            operations.append(Op("update", target=number - 3))
        if number % 11 == 10:
            operations.append(Op("remove", target=number - 5))
    # The records after the stale snapshot: all three kinds, moving lookups.
    operations += [
        Op("create", user="u3"),
        Op("update", target=4),
        Op("remove", target=7),
        Op("update", target=55),
        Op("create", user="u12"),
        Op("remove", target=30),
        Op("update", target=12),
        Op("create", user="u5"),
    ]
    return operations


OPERATIONS: Final = workload()
N: Final = len(OPERATIONS)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """The closed store; ``snapshots[N - TAIL]`` is the stale snapshot, ``sessions.idx`` the final one."""
    return build_pristine(
        tmp_path_factory.mktemp("snapshots") / "store", OPERATIONS, snapshot_after=(N - TAIL,)
    )


def final_snapshot(pristine: Pristine) -> bytes:
    return (pristine.directory / SNAPSHOT_NAME).read_bytes()


def body_of(snapshot: bytes) -> dict[str, Any]:
    decoded = cbor2.loads(snapshot[SNAPSHOT_HEADER_SIZE:])
    assert isinstance(decoded, dict)
    return decoded


def with_body(snapshot: bytes, body: object) -> bytes:
    """``snapshot`` with ``body`` CBOR-encoded in place of its own, length and CRC recomputed."""
    magic, version, _crc, _length = _HEADER.unpack_from(snapshot)
    encoded = cbor2.dumps(body)
    return _HEADER.pack(magic, version, zlib.crc32(encoded), len(encoded)) + encoded


def edited(snapshot: bytes, **changes: object) -> bytes:
    """``snapshot`` with some body fields changed (a consistent CRC: only the fields are wrong)."""
    return with_body(snapshot, {**body_of(snapshot), **changes})


def with_scope_column(snapshot: bytes, column: int, first: str) -> bytes:
    """``snapshot`` whose first owner's field ``column`` (env, tenant_id, team), or (3) whose
    first key's user, is ``first``."""
    body = body_of(snapshot)
    if column == 3:
        users = zlib.decompress(body["users"]).decode("ascii").split("\n")
        return edited(snapshot, users=zlib.compress("\n".join([first, *users[1:]]).encode("ascii")))
    columns = list(body["owner_columns"])
    columns[column] = "\n".join([first, *columns[column].split("\n")[1:]])
    return edited(snapshot, owner_columns=columns)


def zero_random_bytes(snapshot: bytes, count: int, seed: int) -> bytes:
    chooser = random.Random(seed)
    damaged = bytearray(snapshot)
    for offset in chooser.sample(range(SNAPSHOT_HEADER_SIZE, len(damaged)), count):
        damaged[offset] = 0
    assert bytes(damaged) != snapshot
    return bytes(damaged)


def rotated_entries(snapshot: bytes) -> bytes:
    """Every key paired with the next key's record (offsets and sizes moved by one entry; the
    offsets are stored as deflated differences from the previous, the sizes deflated)."""
    body = body_of(snapshot)
    differences = array.array("q", zlib.decompress(body["offsets"]))
    offsets = list(itertools.accumulate(differences))
    offsets = offsets[1:] + offsets[:1]
    rotated = array.array("q", [offsets[0], *(b - a for a, b in itertools.pairwise(offsets))])
    sizes = zlib.decompress(body["sizes"])
    return edited(
        snapshot, offsets=zlib.compress(rotated.tobytes()), sizes=zlib.compress(sizes[4:] + sizes[:4])
    )


def another_store(tmp_path: Path) -> bytes:
    """The final snapshot of another store built by the very same operations."""
    return final_snapshot(build_pristine(tmp_path / "another", OPERATIONS))


Damage = Callable[[Pristine, Path], bytes | None]

CASES: Final[dict[str, Damage]] = {
    "truncated-to-half": lambda p, _: final_snapshot(p)[: len(final_snapshot(p)) // 2],
    "truncated-inside-the-header": lambda p, _: final_snapshot(p)[: SNAPSHOT_HEADER_SIZE - 3],
    "one-byte-short": lambda p, _: final_snapshot(p)[:-1],
    "zeroed-random-bytes": lambda p, _: zero_random_bytes(final_snapshot(p), 16, seed=1),
    "zeroed-one-byte": lambda p, _: zero_random_bytes(final_snapshot(p), 1, seed=2),
    "zeroed-header": lambda p, _: bytes(SNAPSHOT_HEADER_SIZE) + final_snapshot(p)[SNAPSHOT_HEADER_SIZE:],
    "deleted": lambda p, _: None,
    "empty": lambda p, _: b"",
    "stale": lambda p, _: p.snapshots[N - TAIL],
    "covers-beyond-the-log": lambda p, _: edited(final_snapshot(p), position=p.ends[N] + 1000),
    "covers-one-byte-beyond-the-log": lambda p, _: edited(final_snapshot(p), position=p.ends[N] + 1),
    "stale-covering-beyond-the-log": lambda p, _: edited(p.snapshots[N - TAIL], position=p.ends[N] + 1),
    "position-inside-a-record": lambda p, _: edited(final_snapshot(p), position=p.ends[N] - 5),
    "position-of-an-older-record": lambda p, _: edited(final_snapshot(p), position=p.ends[N - 1]),
    "wrong-last-seq": lambda p, _: edited(final_snapshot(p), last_seq=N + 1),
    "wrong-generation": lambda p, _: edited(final_snapshot(p), generation=2),
    "generation-zero": lambda p, _: edited(final_snapshot(p), generation=0),
    "wrong-store-uuid": lambda p, _: edited(final_snapshot(p), store_uuid=uuid.uuid4().bytes),
    "from-another-store": lambda _, tmp: another_store(tmp),
    "entries-point-at-other-records": lambda p, _: rotated_entries(final_snapshot(p)),
    "live-bytes-disagree": lambda p, _: edited(
        final_snapshot(p), live_bytes=body_of(final_snapshot(p))["live_bytes"] + 1
    ),
    "keys-not-text": lambda p, _: edited(final_snapshot(p), text_keys=[1, 2, 3]),
    "uuid-keys-not-16-bytes-each": lambda p, _: edited(
        final_snapshot(p), uuid_keys=body_of(final_snapshot(p))["uuid_keys"][:-1]
    ),
    "a-key-too-many": lambda p, _: edited(final_snapshot(p), count=body_of(final_snapshot(p))["count"] + 1),
    "a-column-that-does-not-inflate": lambda p, _: edited(final_snapshot(p), seqs=b"not deflated"),
    "a-column-inflating-past-its-size": lambda p, _: edited(
        final_snapshot(p), owner_ids=zlib.compress(bytes(4 * (body_of(final_snapshot(p))["count"] + 1)))
    ),
    "field-missing": lambda p, _: with_body(
        final_snapshot(p), {k: v for k, v in body_of(final_snapshot(p)).items() if k != "lookup"}
    ),
    "body-not-a-map": lambda p, _: with_body(final_snapshot(p), [1, 2, 3]),
    "a-scope-id-breaks-the-id-rule": lambda p, _: with_scope_column(final_snapshot(p), 3, "bad user!"),
    "an-empty-env": lambda p, _: with_scope_column(final_snapshot(p), 0, ""),
    "a-scope-too-few": lambda p, _: edited(
        final_snapshot(p), owner_count=body_of(final_snapshot(p))["owner_count"] + 1
    ),
    "scope-columns-not-text": lambda p, _: edited(final_snapshot(p), owner_columns=[1, 2, 3]),
    "garbage": lambda _, __: bytes(random.Random(3).randrange(256) for _ in range(4096)),
    "garbage-after-a-valid-header": lambda p, _: (
        final_snapshot(p)[:SNAPSHOT_HEADER_SIZE]
        + bytes(random.Random(4).randrange(256) for _ in range(len(final_snapshot(p)) - SNAPSHOT_HEADER_SIZE))
    ),
}
ACCEPTED: Final = {"stale"}  # valid snapshots: used and extended rather than refused


def test_edited_snapshots_are_refused_only_for_the_edit(pristine: Pristine, tmp_path: Path) -> None:
    """Re-encoding a snapshot's body unchanged (CRC recomputed) keeps it valid: the edits are sound."""
    copy = tmp_path / "same"
    shutil.copytree(pristine.directory, copy)
    (copy / SNAPSHOT_NAME).write_bytes(edited(final_snapshot(pristine)))
    checked = verified_snapshot(copy)
    assert checked is not None
    assert checked.position == pristine.ends[N]
    assert checked.last_seq == N


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_snapshot_costs_no_data(pristine: Pristine, tmp_path: Path, case: str) -> None:
    """The store reopens with every session and lookup, the log untouched, the snapshot rewritten."""
    copy = tmp_path / "copy"
    shutil.copytree(pristine.directory, copy)
    damaged = CASES[case](pristine, tmp_path)
    if damaged is None:
        (copy / SNAPSHOT_NAME).unlink()
    else:
        (copy / SNAPSHOT_NAME).write_bytes(damaged)
        judged = verified_snapshot(copy)
        assert (judged is not None) == (case in ACCEPTED), f"load_snapshot judged the {case} snapshot wrongly"

    expected = pristine.states[N]
    assert reopen(copy, pristine.users) == expected
    assert (copy / LOG_NAME).read_bytes() == pristine.log
    assert side_files(copy) == {}

    rewritten = verified_snapshot(copy)
    assert rewritten is not None, "the snapshot was not rewritten"
    assert rewritten.position == pristine.ends[N]
    assert rewritten.last_seq == N
    assert set(rewritten.index.entries) == set(expected.sessions)
    assert reopen(copy, pristine.users) == expected


def counting_scans(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record every ``LogFile.scan`` as ``(start offset, frames applied)``."""
    scans: list[tuple[int, int]] = []
    original = LogFile.scan

    def scan(self: LogFile, start: int, expected_seq: int, apply: Callable[[Frame], None]) -> ScanResult:
        applied = 0

        def counted(frame: Frame) -> None:
            nonlocal applied
            applied += 1
            apply(frame)

        result = original(self, start, expected_seq, counted)
        scans.append((start, applied))
        return result

    monkeypatch.setattr(LogFile, "scan", scan)
    return scans


def test_stale_snapshot_is_extended_replaying_only_the_tail(
    pristine: Pristine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid snapshot 8 records old is used: opening replays exactly those 8 records, correctly."""
    copy = tmp_path / "stale"
    shutil.copytree(pristine.directory, copy)
    (copy / SNAPSHOT_NAME).write_bytes(pristine.snapshots[N - TAIL])
    scans = counting_scans(monkeypatch)
    with FileSessionStore(copy) as store:
        assert scans == [(pristine.ends[N - TAIL], TAIL)]
        assert len(store.session_keys()) == len(pristine.states[N].sessions)
    assert reopen(copy, pristine.users) == pristine.states[N]
    rewritten = verified_snapshot(copy)
    assert rewritten is not None
    assert rewritten.position == pristine.ends[N]


def test_current_snapshot_replays_nothing(
    pristine: Pristine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot close wrote covers the whole log: opening applies no record (the baseline)."""
    copy = tmp_path / "current"
    shutil.copytree(pristine.directory, copy)
    scans = counting_scans(monkeypatch)
    assert reopen(copy, pristine.users) == pristine.states[N]
    assert scans == [(pristine.ends[N], 0)]


def test_refused_snapshot_replays_the_whole_log(
    pristine: Pristine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot covering beyond the log is ignored: opening replays every record from the header."""
    copy = tmp_path / "beyond"
    shutil.copytree(pristine.directory, copy)
    (copy / SNAPSHOT_NAME).write_bytes(edited(final_snapshot(pristine), position=pristine.ends[N] + 1))
    scans = counting_scans(monkeypatch)
    assert reopen(copy, pristine.users) == pristine.states[N]
    assert scans == [(pristine.ends[0], N)]


def test_snapshot_of_a_diverged_copy_is_refused(pristine: Pristine, tmp_path: Path) -> None:
    """A snapshot from a copy of this store that took other writes since is refused, costing no data."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    shutil.copytree(pristine.directory, ours)
    shutil.copytree(pristine.directory, theirs)
    first, second = sorted(pristine.states[N].sessions)[:2]
    with FileSessionStore(ours) as store:
        store.remove_session(first)
    with FileSessionStore(theirs) as store:
        store.remove_session(second)
    users = pristine.users
    expected = reopen(ours, users)
    assert expected != reopen(theirs, users)
    assert (ours / LOG_NAME).stat().st_size == (theirs / LOG_NAME).stat().st_size

    (ours / SNAPSHOT_NAME).write_bytes((theirs / SNAPSHOT_NAME).read_bytes())
    shown = reopen(ours, users)
    assert first not in shown.sessions, "a session this log removed came back"
    assert second in shown.sessions, "a session this log holds disappeared"
    assert shown == expected
