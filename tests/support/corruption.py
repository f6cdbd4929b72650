"""Support for the corruption tests: a workload replayed on the file store and its in-memory twin.

``build_pristine`` runs a list of operations on a ``FileSessionStore`` opened
with ``preallocate_bytes=0`` (so the log file is exactly as long as its
records) and, in step, on an ``InMemorySessionStore``, the model. It keeps the
model's state after every prefix of the operations and the log's size after
each one, i.e. where every record frame ends. The tests then damage copies of
that store and check what reopening shows against those states.

The damage: bit flips, zeroed blocks, overwrites with other bytes, and
misdirected writes (``misdirected``: a valid frame of the same log over
another record; ``old_frame_over``: one of the generation before a
compaction, from ``build_second_generation``). Workloads may mix tenants
(``larger_workload(..., tenants=...)``): owners are labelled ``user`` in
``acme`` and ``tenant:user`` elsewhere (``owner_ctx``).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import attrs

from filestore import (
    Durability,
    FileSessionStore,
    InMemorySessionStore,
    SessionData,
    SessionKey,
    TenantCtx,
)
from filestore.engine.fileio import OsFileIO
from filestore.engine.framing import FILE_HEADER_SIZE
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME
from filestore.engine.logfile import LogFile
from filestore.engine.snapshot import Snapshot, load_snapshot
from filestore.offline.compact import compact

from . import ctx, data

OpKind = Literal["create", "update", "remove"]


@attrs.frozen
class Op:
    """One call: ``create`` for ``user`` of ``tenant``; ``update``/``remove`` of the ``target``-th
    session created."""

    kind: OpKind
    user: str = ""
    target: int = 0
    tenant: str = "acme"

    @property
    def owner(self) -> str:
        """The creating user's label for ``owner_ctx``: ``user`` in ``acme``, else ``tenant:user``."""
        return self.user if self.tenant == "acme" else f"{self.tenant}:{self.user}"


def owner_ctx(owner: str) -> TenantCtx:
    """The context of an owner label (``user``, of tenant ``acme``, or ``tenant:user``)."""
    tenant, _, user = owner.rpartition(":")
    return ctx(tenant=tenant or "acme", user=user)


@attrs.frozen
class State:
    """What a store shows: every session by key, and which key each owner's lookup finds."""

    sessions: dict[str, SessionData]
    lookup: dict[str, str]


@attrs.frozen
class Pristine:
    """A closed store built by ``build_pristine``, and what is known about it."""

    directory: Path
    log: bytes
    ends: tuple[int, ...]  # ends[i]: the log's size once i operations are done (ends[0]: header only)
    states: tuple[State, ...]  # states[i]: the model's state once i operations are done
    users: tuple[str, ...]  # owner labels (see ``owner_ctx``)
    snapshots: dict[int, bytes]  # operations done -> the snapshot file written at that moment

    def complete_records(self, size: int) -> int:
        """How many records lie wholly within the first ``size`` bytes of the log."""
        return sum(1 for end in self.ends[1:] if end <= size)


# The workloads the damage tests share: 4 records, and a mix of any length.
SMALL: Final = (
    Op("create", user="u0"),
    Op("create", user="u1"),
    Op("update", target=0),
    Op("remove", target=1),
)
BLOCK: Final = 512


def larger_workload(count: int, seed: int, tenants: Sequence[str] = ("acme",)) -> list[Op]:
    """A reproducible mix of creates, updates and removes over four users (of each of ``tenants``:
    the same user names in every tenant, so their sessions differ only in their owner)."""
    chooser = random.Random(seed)
    operations: list[Op] = []
    live: list[int] = []
    created = 0
    for _ in range(count):
        roll = chooser.random()
        if live and roll < 0.3:
            operations.append(Op("update", target=chooser.choice(live)))
        elif live and roll < 0.45:
            target = chooser.choice(live)
            live.remove(target)
            operations.append(Op("remove", target=target))
        else:
            user = f"u{chooser.randrange(4)}"
            tenant = chooser.choice(tenants) if len(tenants) > 1 else tenants[0]
            operations.append(Op("create", user=user, tenant=tenant))
            live.append(created)
            created += 1
    return operations


def session_data(owner: str, step: int) -> SessionData:
    """What a workload stores at ``step`` for ``owner`` (a user of ``acme``, or ``tenant:user``)."""
    return data(owner_ctx(owner), step=step, flow=f"flow.{step % 7}")


def build_pristine(
    directory: Path,
    operations: Sequence[Op],
    *,
    snapshot_after: Sequence[int] = (),
    durability: Durability | str = "fsync",
) -> Pristine:
    """Run ``operations`` on a new file store and on the model; close the store (which trims it).

    ``snapshot_after`` lists operation counts after which ``write_snapshot`` is
    called and the snapshot file's bytes kept (close writes a newer one). ``directory`` may hold
    a store already, if its log holds nothing but its header (an empty compacted generation).
    """
    model = InMemorySessionStore()
    file_keys: list[SessionKey] = []
    model_keys: list[SessionKey] = []
    owners: list[str] = []
    users = tuple(sorted({op.owner for op in operations if op.kind == "create"}))
    states = []
    ends = []
    snapshots: dict[int, bytes] = {}
    log_path = directory / LOG_NAME
    with FileSessionStore(directory, preallocate_bytes=0, durability=durability) as store:
        states.append(model_state(model, model_keys, file_keys, users))
        ends.append(os.path.getsize(log_path))
        for step, op in enumerate(operations, start=1):
            if op.kind == "create":
                stored = session_data(op.owner, step)
                file_keys.append(store.create_session(owner_ctx(op.owner), stored))
                model_keys.append(model.create_session(owner_ctx(op.owner), stored))
                owners.append(op.owner)
            elif op.kind == "update":
                stored = session_data(owners[op.target], step)
                store.update_session(file_keys[op.target], stored)
                model.update_session(model_keys[op.target], stored)
            else:
                store.remove_session(file_keys[op.target])
                model.remove_session(model_keys[op.target])
            states.append(model_state(model, model_keys, file_keys, users))
            ends.append(os.path.getsize(log_path))
            if step in snapshot_after:
                store.write_snapshot()
                snapshots[step] = (directory / SNAPSHOT_NAME).read_bytes()
    assert frame_ends(directory) == ends[1:], "the log's frames end where its size grew"
    return Pristine(directory, log_path.read_bytes(), tuple(ends), tuple(states), users, snapshots)


def record_targets(pristine: Pristine, operations: Sequence[Op]) -> list[tuple[str, str]]:
    """The session key and owner label each record (operation ``n``, from 1) wrote."""
    targets: list[tuple[str, str]] = []
    created: list[tuple[str, str]] = []  # (key, owner) of each create, in order
    for number, operation in enumerate(operations, start=1):
        if operation.kind == "create":
            before, after = pristine.states[number - 1], pristine.states[number]
            (key,) = after.sessions.keys() - before.sessions.keys()
            created.append((key, operation.owner))
            targets.append(created[-1])
        else:
            targets.append(created[operation.target])
    return targets


def state_of_intact_records(pristine: Pristine, operations: Sequence[Op], intact: list[bool]) -> State:
    """What replaying only the intact records shows. Record ``n`` wrote operation ``n``: a create
    or update sets its session (to what the model held after it) and points its owner's lookup at
    it; a remove deletes the session, and the lookup if it pointed there."""
    sessions: dict[str, SessionData] = {}
    lookup: dict[str, str] = {}
    targets = record_targets(pristine, operations)
    for number, (operation, keep) in enumerate(zip(operations, intact, strict=True), start=1):
        key, user = targets[number - 1]
        if not keep:
            continue
        if operation.kind == "remove":
            sessions.pop(key, None)
            if lookup.get(user) == key:
                del lookup[user]
        else:
            sessions[key] = pristine.states[number].sessions[key]
            lookup[user] = key
    return State(sessions, lookup)


def model_state(
    model: InMemorySessionStore,
    model_keys: list[SessionKey],
    file_keys: list[SessionKey],
    users: tuple[str, ...],
) -> State:
    """The model's state, under the file store's keys."""
    to_file = dict(zip(model_keys, file_keys, strict=True))
    sessions = {
        str(to_file[key]): found for key in model_keys if (found := model.get_session(key)) is not None
    }
    lookup = {
        user: str(to_file[hit[0]])
        for user in users
        if (hit := model.find_by_user(owner_ctx(user), user.rpartition(":")[2]))
    }
    return State(sessions, lookup)


def observe(store: FileSessionStore, users: Sequence[str]) -> State:
    """Everything ``store`` shows: every session, and every user's lookup."""
    sessions = {
        str(key): found for key in store.session_keys() if (found := store.get_session(key)) is not None
    }
    lookup = {
        user: str(hit[0])
        for user in users
        if (hit := store.find_by_user(owner_ctx(user), user.rpartition(":")[2]))
    }
    return State(sessions, lookup)


def reopen(directory: Path, users: Sequence[str]) -> State:
    """Open the store at ``directory``, read everything, close it."""
    with FileSessionStore(directory) as store:
        return observe(store, users)


def frame_ends(directory: Path) -> list[int]:
    """Where each verified frame of the log ends, walking it as the engine does."""
    log = LogFile.open(OsFileIO(), str(directory))
    try:
        return [frame.end for _, frame, _ in log.frames(FILE_HEADER_SIZE) if frame is not None]
    finally:
        log.close()


def damaged_copy(pristine: Pristine, where: Path, log: bytes, *, snapshot: bytes | None) -> Path:
    """A copy of the pristine store whose log is ``log`` and snapshot ``snapshot`` (``None``: no snapshot)."""
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(pristine.directory, where)
    (where / LOG_NAME).write_bytes(log)
    if snapshot is None:
        (where / SNAPSHOT_NAME).unlink(missing_ok=True)
    else:
        (where / SNAPSHOT_NAME).write_bytes(snapshot)
    return where


def side_files(directory: Path) -> dict[str, bytes]:
    """The torn-tail side files (``sessions.log.trN``) in ``directory``, by name."""
    return {path.name: path.read_bytes() for path in sorted(directory.glob(f"{LOG_NAME}.tr*"))}


def verified_snapshot(directory: Path) -> Snapshot | None:
    """The snapshot file as opening would judge it against the current log (``None``: refused)."""
    io = OsFileIO()
    log = LogFile.open(io, str(directory))
    try:
        snapshot, _why = load_snapshot(
            io, str(directory / SNAPSHOT_NAME), log.fd, log.header, io.size(log.fd)
        )
    finally:
        log.close()
    return snapshot


# -- damage ------------------------------------------------------------------


def flip(log: bytes, bits: list[int]) -> bytes:
    """``log`` with each of ``bits`` (numbered from the first byte's lowest bit) inverted."""
    damaged = bytearray(log)
    for bit in bits:
        damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


def zero_block(log: bytes, start: int, length: int = BLOCK) -> bytes:
    """``log`` with ``length`` bytes from ``start`` zeroed (fewer at its end), as a lost disk block reads."""
    damaged = bytearray(log)
    end = min(start + length, len(damaged))
    damaged[start:end] = bytes(end - start)
    return bytes(damaged)


def overwrite(log: bytes, at: int, replacement: bytes) -> bytes:
    """``log`` with ``replacement`` written at ``at`` (the file grows if it runs past the end)."""
    damaged = bytearray(log)
    damaged[at : at + len(replacement)] = replacement
    return bytes(damaged)


def records_in_place(pristine: Pristine, log: bytes) -> list[bool]:
    """For each record (from 1), whether its bytes are still where they were in ``log``."""
    ends = pristine.ends
    return [log[ends[n - 1] : ends[n]] == pristine.log[ends[n - 1] : ends[n]] for n in range(1, len(ends))]


@attrs.frozen
class Damage:
    """A damaged copy of a pristine log: which ``kind`` of damage, the ``log`` it left, and the
    records of which it wrote a whole, valid copy somewhere (a misdirected write's source)."""

    kind: str
    log: bytes
    copies: frozenset[int] = frozenset()


def misdirected(pristine: Pristine, source: int, target: int) -> Damage:
    """Record ``source``'s frame written over record ``target``'s offset (a misdirected write).

    The kind says whether the frames are of the same length (the log still walks frame by frame)
    or not (the copy straddles the records after ``target``, or leaves the rest of it as garbage).
    """
    ends = pristine.ends
    frame = pristine.log[ends[source - 1] : ends[source]]
    same = len(frame) == ends[target] - ends[target - 1]
    kind = "copy-same-length" if same else "copy-other-length"
    return Damage(kind, overwrite(pristine.log, ends[target - 1], frame), frozenset({source}))


def old_frame_over(pristine: Pristine, frame: bytes, target: int) -> Damage:
    """A frame of the previous generation's log (valid there, not here) over record ``target``."""
    return Damage("old-generation", overwrite(pristine.log, pristine.ends[target - 1], frame))


@attrs.frozen
class Generations:
    """A store in its second generation (``pristine``), and the frames of its first: the same
    owners' sessions, all removed before an offline compaction (``compact --keep-old``)."""

    pristine: Pristine
    old_frames: tuple[bytes, ...]


def build_second_generation(
    directory: Path, old: Sequence[Op], operations: Sequence[Op], *, durability: Durability | str
) -> Generations:
    """Run ``old`` (then remove every session it left) and compact, keeping the old log; then
    ``build_pristine`` with ``operations`` on the empty second generation."""
    log_path = directory / LOG_NAME
    ends: list[int] = []
    with FileSessionStore(directory, preallocate_bytes=0, durability=durability) as store:
        ends.append(os.path.getsize(log_path))
        keys: list[SessionKey] = []
        owners: list[str] = []
        for step, op in enumerate(old, start=1):
            if op.kind == "create":
                keys.append(store.create_session(owner_ctx(op.owner), session_data(op.owner, step)))
                owners.append(op.owner)
            elif op.kind == "update":
                store.update_session(keys[op.target], session_data(owners[op.target], step))
            else:
                store.remove_session(keys[op.target])
            ends.append(os.path.getsize(log_path))
        for key in store.session_keys():
            store.remove_session(key)
    compact(directory, keep_old=True)
    kept = directory / f"{LOG_NAME}.old"
    old_log = kept.read_bytes()
    kept.unlink()
    frames = tuple(old_log[ends[n - 1] : ends[n]] for n in range(1, len(ends)))
    return Generations(build_pristine(directory, operations, durability=durability), frames)
