"""Every state a power loss can leave, for small workloads: nothing acknowledged is lost.

Each workload (1 to 3 store calls over 2 to 3 keys, plus opening, closing,
snapshots and compaction; some register and clear waits, with a TTL) runs
once through ``crashsim.RecordingIO``. Then,
for every crash point and every persistence variant (``crashsim``), the
checker rebuilds the directory and requires:

- the store opens (fsync and group modes never leave mid-file damage);
- its contents (sessions, user lookups and wait scopes) are those after the
  acknowledged calls, or after the call in flight too (fully present or fully absent, never partial);
- fsck then reports no errors; opening again changes nothing;
- the store accepts writes.

In ``durability="none"`` a power loss may lose the writes since the last
``close()`` or compaction (the only calls that sync the log there), in any
order, so the check is what that mode promises: each session holds a value
it had at some call from that durable point on (never a value not written
for it, never older than the durable point), each user lookup likewise; if
valid records follow lost ones, opening refuses with ``CorruptionError``
and ``fsck --repair`` must then give such a store.

The default run explores a few thousand states; ``pytest -m slow`` adds
torn writes at random points and undoes single directory operations.
"""

from __future__ import annotations

import datetime
import shutil
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from filestore import CorruptionError, FileSessionStore, InvalidInputError, ReplyScope, SessionData, TenantCtx
from filestore.offline.compact import compact
from filestore.offline.fsck import fsck

from .support import ctx, data
from .support.crashsim import CrashState, RecordingIO, count_crash_states, crash_states

USERS = ("u1", "u2")
SCOPES = {"s1": ReplyScope("chat-1"), "s2": ReplyScope("chat-2", thread="t")}
# find_by_user's answer when the user has no lookup and several waits (InvalidInputError).
SEVERAL = "several waits"
DAY = datetime.timedelta(days=1)
NOW = datetime.timedelta(0)
State = tuple[
    frozenset[tuple[str, str]],
    frozenset[tuple[str, str | None]],
    frozenset[tuple[tuple[str, str], str | None]],
]


@attrs.define
class Harness:
    """Runs a workload's calls against a store on a recording I/O layer."""

    directory: Path
    io: RecordingIO
    options: dict[str, object]
    store: FileSessionStore | None = None
    keys: list[str] = attrs.field(factory=list)
    calls: int = 0
    # The states (numbered as in ``record``) that were durable in every mode once reached.
    durable: set[int] = attrs.field(factory=lambda: {0, 1})

    def call(self, action: Callable[[Harness], None]) -> None:
        self.io.begin(self.calls)
        action(self)
        self.io.end(self.calls)
        self.calls += 1
        if action in SYNCING_STEPS:
            self.durable.add(self.calls)

    def open(self) -> None:
        self.store = FileSessionStore(self.directory, io=self.io, **self.options)  # type: ignore[arg-type]

    def live(self) -> FileSessionStore:
        assert self.store is not None
        return self.store


def observe(store: FileSessionStore) -> State:
    """Contents and user lookups of a store, comparable across runs."""
    keys = store.session_keys()
    sessions = frozenset(
        (str(key), found.to_json()) for key in keys if (found := store.get_session(key)) is not None
    )
    lookups = frozenset((user, _found_by_user(store, user)) for user in USERS)
    waits = frozenset(
        (
            (user, name),
            None
            if (waiting := store.find_wait_by_scope(ctx(user=user), user, scope)) is None
            else str(waiting),
        )
        for user in USERS
        for name, scope in SCOPES.items()
    )
    return sessions, lookups, waits


def _found_by_user(store: FileSessionStore, user: str) -> str | None:
    try:
        hit = store.find_by_user(ctx(), user)
    except InvalidInputError:
        return SEVERAL
    return None if hit is None else str(hit[0])


def session(user: str, step: int) -> tuple[TenantCtx, SessionData]:
    context = ctx(user=user)
    return context, data(context, step=step)


def create(user: str, step: int) -> Callable[[Harness], None]:
    def run(harness: Harness) -> None:
        context, stored = session(user, step)
        harness.keys.append(harness.live().create_session(context, stored))

    return run


def update(which: int, user: str, step: int) -> Callable[[Harness], None]:
    def run(harness: Harness) -> None:
        harness.live().update_session(harness.keys[which], session(user, step)[1])

    return run


def remove(which: int) -> Callable[[Harness], None]:
    def run(harness: Harness) -> None:
        harness.live().remove_session(harness.keys[which])

    return run


def register(
    name: str, user: str, scope: str, step: int, ttl: datetime.timedelta = DAY
) -> Callable[[Harness], None]:
    """register_wait of the caller's key ``name`` (a new one joins ``keys``), by default with a
    TTL of a day, so its record carries a deadline that never passes in the test; a TTL of zero
    expires the session at once (on every clock), for the batches that remove expired ones."""

    def run(harness: Harness) -> None:
        context, stored = session(user, step)
        harness.live().register_wait(context, user, SCOPES[scope], name, stored, ttl)
        if name not in harness.keys:
            harness.keys.append(name)

    return run


def purge(harness: Harness) -> None:
    harness.live().purge_expired()


def clear(user: str, scope: str) -> Callable[[Harness], None]:
    def run(harness: Harness) -> None:
        harness.live().clear_wait(ctx(user=user), user, SCOPES[scope])

    return run


def snapshot(harness: Harness) -> None:
    harness.live().write_snapshot()


def close(harness: Harness) -> None:
    harness.live().close()
    harness.store = None


def open_store(harness: Harness) -> None:
    harness.open()


def run_compact(harness: Harness) -> None:
    compact(harness.directory, io=harness.io)


def compact_online(harness: Harness) -> None:
    harness.live().compact()


def compact_by_other(harness: Harness) -> None:
    """Another handle (on the same recorded I/O) compacts; the harness's handle follows it."""
    with FileSessionStore(harness.directory, io=harness.io, **harness.options) as other:  # type: ignore[arg-type]
        other.compact()


# Steps that make everything before them durable in every mode: in ``none`` the log is synced
# only by close() and by a compaction (which writes and syncs a new generation).
SYNCING_STEPS: frozenset[Callable[[Harness], None]] = frozenset(
    {close, run_compact, compact_online, compact_by_other}
)


@attrs.frozen
class Workload:
    name: str
    steps: tuple[Callable[[Harness], None], ...]
    before: tuple[Callable[[Harness], None], ...] = ()
    options: dict[str, object] = attrs.field(factory=dict)


WORKLOADS = [
    Workload("create", (create("u1", 1),)),
    Workload("create-update", (create("u1", 1), update(0, "u1", 2))),
    Workload("create-remove", (create("u1", 1), remove(0))),
    Workload("newest-wins-then-remove", (create("u1", 1), create("u1", 2), remove(0))),
    Workload("update-snapshot", (create("u1", 1), update(0, "u1", 2), snapshot)),
    Workload(
        "existing-store",
        (update(0, "u1", 5), remove(1), create("u2", 6)),
        before=(create("u1", 1), create("u2", 2)),
    ),
    Workload(
        "compact",
        (close, run_compact, open_store),
        before=(create("u1", 1), update(0, "u1", 2), create("u2", 3), remove(1), create("u2", 4)),
    ),
    Workload(
        "online-compact",
        (update(0, "u1", 7), compact_online, create("u2", 8)),
        before=(create("u1", 1), create("u2", 2), remove(1)),
    ),
    Workload("group-commit", (create("u1", 1), update(0, "u1", 2)), options={"durability": "group"}),
    Workload(
        "periodic-snapshots",
        (create("u1", 1), create("u2", 2), update(1, "u2", 3)),
        options={"snapshot_every_records": 2},
    ),
]

MODES = ("fsync", "group", "none")

# Wait routing (issue 14): registrations taking a scope over, updates keeping the wait, clears,
# and compactions that must carry a taken-over wait with its new key.
WAIT_WORKLOADS = [
    Workload("register", (register("w0", "u1", "s1", 1),)),
    Workload(
        "register-take-over-clear",
        (register("w0", "u1", "s1", 1), register("w1", "u1", "s1", 2), clear("u1", "s1")),
    ),
    Workload("register-update-remove", (register("w0", "u1", "s1", 1), update(0, "u1", 2), remove(0))),
    Workload(
        "register-over-a-created-key",
        (register("w0", "u1", "s2", 5), clear("u1", "s2"), register("w1", "u2", "s1", 6)),
        before=(create("u1", 1),),
    ),
    Workload(
        "wait-online-compact",
        (register("w1", "u1", "s1", 3), compact_online, update(0, "u1", 4)),
        before=(register("w0", "u1", "s1", 1), register("w2", "u1", "s2", 2)),
    ),
    Workload(
        "wait-offline-compact",
        (close, run_compact, open_store),
        before=(register("w0", "u1", "s1", 1), register("w1", "u1", "s1", 2), update(0, "u1", 3)),
    ),
    Workload(
        "register-over-an-expired-key",
        (register("w0", "u1", "s2", 2), register("w1", "u1", "s2", 3)),
        before=(create("u1", 1), register("w0", "u1", "s1", 1, NOW)),
    ),
    Workload(
        "group:purge-expired",
        (register("w1", "u2", "s1", 2, NOW), purge),
        before=(register("w0", "u1", "s1", 1, NOW),),
        options={"durability": "group"},
    ),
    Workload(
        "purge-expired",
        (register("w1", "u2", "s1", 2, NOW), purge, create("u2", 3)),
        before=(register("w0", "u1", "s1", 1, NOW), register("w2", "u1", "s2", 1)),
    ),
    Workload(
        "none:register-clear",
        (register("w0", "u1", "s1", 1), register("w1", "u2", "s1", 2), clear("u1", "s1")),
        options={"durability": "none"},
    ),
    Workload(
        "group:register-take-over",
        (register("w0", "u1", "s1", 1), register("w1", "u1", "s1", 2)),
        options={"durability": "group"},
    ),
]


def compaction_workloads(mode: str) -> list[Workload]:
    """Online compactions interleaved with writes, by the writing handle and by another one it
    follows, in one durability mode."""
    options: dict[str, object] = {"durability": mode}
    return [
        Workload(
            f"{mode}:write-compact-write-compact",
            (update(0, "u1", 7), compact_online, remove(1), compact_online, create("u2", 8)),
            before=(create("u1", 1), create("u2", 2)),
            options=options,
        ),
        Workload(
            f"{mode}:other-handle-compacts",
            (create("u2", 3), compact_by_other, update(0, "u1", 4), remove(1)),
            before=(create("u1", 1),),
            options=options,
        ),
    ]


# Writes with no sync at all until close(), and snapshots written ahead of the log's sync:
# the weaker promise of ``none`` (see module docs).
UNSYNCED_WORKLOADS = [
    Workload(
        "none:create-update-create",
        (create("u1", 1), update(0, "u1", 2), create("u1", 3)),
        options={"durability": "none"},
    ),
    Workload(
        "none:existing-store",
        (update(0, "u1", 5), remove(1), create("u2", 6)),
        before=(create("u1", 1), create("u2", 2)),
        options={"durability": "none"},
    ),
    *(
        Workload(
            f"{mode}:periodic-snapshots",
            (create("u1", 1), create("u2", 2), update(1, "u2", 3)),
            options={"durability": mode, "snapshot_every_records": 2},
        )
        for mode in ("none", "group")
    ),
]
COMPACTION_WORKLOADS = [workload for mode in MODES for workload in compaction_workloads(mode)]
# The default lane runs a compaction by another handle in group and none mode (``online-compact``
# above is fsync's, by the writing handle) and the periodic snapshots of ``none``; the slow lane
# runs them all.
DEFAULT_COMPACTION_WORKLOADS = [
    COMPACTION_WORKLOADS[3],  # group:other-handle-compacts
    COMPACTION_WORKLOADS[5],  # none:other-handle-compacts
    UNSYNCED_WORKLOADS[2],  # none:periodic-snapshots
]


def generated_workloads(length: int) -> list[Workload]:
    """Every valid sequence of ``length`` calls over up to 3 keys and 2 users."""
    sequences: list[list[tuple[str, int]]] = [[]]
    for _ in range(length):
        grown: list[list[tuple[str, int]]] = []
        for sequence in sequences:
            created = sum(1 for verb, _ in sequence if verb.startswith("create"))
            removed = {which for verb, which in sequence if verb == "remove"}
            grown.append([*sequence, ("create-u1", created)])
            grown.append([*sequence, ("create-u2", created)])
            for which in range(created):
                if which not in removed:
                    grown.append([*sequence, ("update", which)])
                    grown.append([*sequence, ("remove", which)])
        sequences = grown
    workloads = []
    for sequence in sequences:
        steps: list[Callable[[Harness], None]] = []
        users: dict[int, str] = {}
        for number, (verb, which) in enumerate(sequence):
            if verb.startswith("create"):
                users[which] = verb[-2:]
                steps.append(create(users[which], number))
            elif verb == "update":
                steps.append(update(which, users[which], 100 + number))
            else:
                steps.append(remove(which))
        name = "+".join(f"{verb}{which}" for verb, which in sequence)
        workloads.append(Workload(name, tuple(steps)))
    return workloads


LONG_WORKLOADS = generated_workloads(3)
# The default lane: every sequence of 1 or 2 calls, and a third of those of 3.
SHORT_WORKLOADS = generated_workloads(1) + generated_workloads(2) + LONG_WORKLOADS[::3]
LONG_WORKLOADS = [workload for workload in LONG_WORKLOADS if workload not in SHORT_WORKLOADS]
# The slow lane also runs every generated sequence with group commit.
GROUP_WORKLOADS = [
    attrs.evolve(workload, name=f"group:{workload.name}", options={"durability": "group"})
    for workload in generated_workloads(1) + generated_workloads(2) + generated_workloads(3)
]
# ... and every 2-call sequence with an online compaction between the calls, in every mode.
COMPACTING_WORKLOADS = [
    Workload(
        f"{mode}:compact-after-the-first:{workload.name}",
        (workload.steps[0], compact_online, *workload.steps[1:]),
        options={"durability": mode},
    )
    for mode in MODES
    for workload in generated_workloads(2)
]
DEFAULT_WORKLOADS = WORKLOADS + SHORT_WORKLOADS + DEFAULT_COMPACTION_WORKLOADS + WAIT_WORKLOADS
SLOW_WORKLOADS = [
    *DEFAULT_WORKLOADS,
    *LONG_WORKLOADS,
    *GROUP_WORKLOADS,
    *(workload for workload in COMPACTION_WORKLOADS if workload not in DEFAULT_COMPACTION_WORKLOADS),
    *(workload for workload in UNSYNCED_WORKLOADS if workload not in DEFAULT_COMPACTION_WORKLOADS),
    *COMPACTING_WORKLOADS,
]


@attrs.frozen
class Recorded:
    """A workload's run: its I/O log, the state after each call, and which of those were durable."""

    io: RecordingIO
    states: list[State]
    durable: frozenset[int]
    mode: str


def record(workload: Workload, root: Path) -> Recorded:
    """Run the workload once; return the I/O log and the state after each call."""
    directory = root / "recorded"
    directory.mkdir(mode=0o700)
    keys: list[str] = []
    if workload.before:
        with FileSessionStore(directory, **workload.options) as setup:  # type: ignore[arg-type]
            prepared = Harness(directory, RecordingIO(directory), {}, setup, keys)
            for step in workload.before:
                step(prepared)
    io = RecordingIO(directory)
    harness = Harness(directory, io, workload.options, keys=keys)
    states: list[State] = []
    harness.call(open_store)
    states.append(observe(harness.live()))
    for step in (*workload.steps, close):
        harness.call(step)
        if harness.store is not None:
            states.append(observe(harness.store))
        else:
            with FileSessionStore(directory) as peek:
                states.append(observe(peek))
    # states[i + 1] is the state once call i (0 = open) returned; states[0], that of `before`.
    mode = str(workload.options.get("durability", "fsync"))
    return Recorded(io, [states[0], *states], frozenset(harness.durable), mode)


def side_files(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir() if ".tr" in path.name}


def _values(
    state: State,
) -> tuple[dict[str, str], dict[str, str | None], dict[tuple[str, str], str | None]]:
    sessions, lookups, waits = state
    return dict(sessions), dict(lookups), dict(waits)


def check_unsynced(seen: State, window: list[State], label: str) -> None:
    """``durability="none"``: each session, and each user lookup, is as at some call of ``window``
    (from the last durable state to the newest that may have landed): nothing older than what
    was made durable, nothing that was never written for it."""
    sessions, lookups, waits = _values(seen)
    allowed = [_values(state) for state in window]
    for key in {key for found, _, _ in allowed for key in found} | set(sessions):
        choices = {found.get(key) for found, _, _ in allowed}
        assert sessions.get(key) in choices, f"{label}: session {key} is not as at any call since the sync"
    for user in USERS:
        assert lookups[user] in {found[user] for _, found, _ in allowed}, f"{label}: lookup of {user}"
    for address, holder in waits.items():
        assert holder in {found[address] for _, _, found in allowed}, f"{label}: wait {address}"


def check_state(state: CrashState, recorded: Recorded, where: Path) -> None:
    """The checker: opens, durable, atomic, fsck-clean, idempotent, writable."""
    if where.exists():
        shutil.rmtree(where)
    state.write_to(where)
    states = recorded.states
    newest = state.acknowledged_calls if state.in_flight_call is None else state.in_flight_call + 1
    label = f"crash point {state.point} ({state.variant})"
    if recorded.mode == "none":
        synced = max(number for number in recorded.durable if number <= state.acknowledged_calls)
        try:
            with FileSessionStore(where) as store:
                seen = observe(store)
        except CorruptionError:
            # Lost writes with valid records after them: refused, never cut; the repair keeps
            # every intact record.
            assert fsck(where, repair=True).exit_code in {1, 4}, f"{label}: repair failed"
            with FileSessionStore(where) as store:
                seen = observe(store)
        check_unsynced(seen, states[synced : newest + 1], label)
    else:
        allowed = {states[state.acknowledged_calls], states[newest]}
        with FileSessionStore(where) as store:
            seen = observe(store)
        assert seen in allowed, f"{label}: state not among the acknowledged ones"
    report = fsck(where)
    assert not report.errors, f"{label}: fsck found {[finding.detail for finding in report.errors]}"
    evidence = side_files(where)
    with FileSessionStore(where) as store:
        assert observe(store) == seen, f"{label}: a second recovery changed the store"
        assert side_files(where) == evidence
        context, stored = session("u2", 99)
        key = store.create_session(context, stored)
        assert store.get_session(key) == stored


def explore(workload: Workload, tmp_path: Path, *, thorough: bool) -> int:
    recorded = record(workload, tmp_path)
    io = recorded.io
    explored = 0
    for state in crash_states(io.initial, io.ops, thorough=thorough, seed=len(workload.name)):
        check_state(state, recorded, tmp_path / "crashed")
        explored += 1
    return explored


def count_states(workloads: list[Workload], tmp_path: Path, *, thorough: bool) -> int:
    """How many crash states ``explore`` checks for ``workloads`` (recorded here, not checked)."""
    total = 0
    for number, workload in enumerate(workloads):
        root = tmp_path / str(number)
        root.mkdir()
        io = record(workload, root).io
        total += count_crash_states(io.initial, io.ops, thorough=thorough, seed=len(workload.name))
    return total


@pytest.mark.parametrize("workload", DEFAULT_WORKLOADS, ids=lambda workload: workload.name)
def test_every_crash_state_recovers(workload: Workload, tmp_path: Path) -> None:
    """Every crash state of the workload opens with exactly the acknowledged data."""
    explored = explore(workload, tmp_path, thorough=False)
    print(f"{workload.name}: explored {explored} crash states")
    assert explored > 20


@pytest.mark.slow
@pytest.mark.parametrize("workload", SLOW_WORKLOADS, ids=lambda workload: workload.name)
def test_every_crash_state_recovers_thoroughly(workload: Workload, tmp_path: Path) -> None:
    """The slow lane: more torn points per write, and single undone directory operations."""
    explored = explore(workload, tmp_path, thorough=True)
    print(f"{workload.name}: explored {explored} crash states (thorough)")
    assert explored > 20


def test_explored_enough_states(tmp_path: Path) -> None:
    """The default lane's workloads explore at least 2,000 crash states in all."""
    total = count_states(DEFAULT_WORKLOADS, tmp_path, thorough=False)
    print(f"crash states explored in all: {total}")
    assert total >= 2000


@pytest.mark.slow
def test_explored_enough_states_thoroughly(tmp_path: Path) -> None:
    """The slow lane's workloads explore at least 10,000 crash states in all."""
    total = count_states(SLOW_WORKLOADS, tmp_path, thorough=True)
    print(f"crash states explored in all (thorough): {total}")
    assert total >= 10_000
