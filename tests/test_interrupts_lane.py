"""The interrupt lane: ``KeyboardInterrupt``, ``SystemExit``, ``MemoryError`` and
``asyncio.CancelledError`` raised by the file layer at every call of a workload, just before
the call or just after it, in every durability mode (issue 20).

The workload opens a store holding a few sessions, creates, updates, writes the
index snapshot, removes, compacts online, writes again after the compaction,
and closes. Each point (mode, interrupt, before or after, the Nth call of the
file layer, reads and closes included) runs it on a fresh copy; the interrupt
fires once. After it the handle must be usable or poisoned: every later write
succeeds or raises ``StorePoisonedError``, reads work, ``close()`` (called
twice) returns. The whole run is bounded by a timeout (a hang fails, it never
blocks the suite). Then: nobody holds the store (an offline tool's exclusive
registration is granted), fsck exits 0 before anyone reopens it, and a fresh
handle reads exactly the acknowledged state, give or take the interrupted call.

The default lane samples ``SAMPLED`` points per mode; the slow lane runs every point
(figures in docs/durability.md).
"""

from __future__ import annotations

import random
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import attrs
import pytest

from filestore import FileSessionStore, SessionData, StorePoisonedError
from filestore.engine.locking import Registration
from filestore.offline.fsck import fsck, iter_findings

from .support import ctx, data
from .support.interrupting import INTERRUPTS, InterruptAt

MODES: Final = ("fsync", "group", "none")
SAMPLED: Final = 48  # points per mode in the default lane
TIMEOUT: Final = 60.0  # seconds one point may take: a bound on a hang, never a pause
PENDING: Final = "<the interrupted create>"

State = dict[str, SessionData]


@attrs.define
class Run:
    """One run of the workload: what was acknowledged, and the call the interrupt hit."""

    keys: dict[str, str] = attrs.field(factory=dict)  # workload name -> session key
    acknowledged: State = attrs.field(factory=dict)  # without the interrupted call's effect
    with_pending: State | None = None  # with it (``None``: no interrupted call changes data)
    interrupted: str | None = None  # the step the interrupt fired in
    raised: bool = False  # the interrupt came out of it
    poisoned: bool = False

    def apply(self, change: Callable[[State], None]) -> None:
        change(self.acknowledged)
        if self.with_pending is not None:
            change(self.with_pending)


def _create(name: str, user: str, step: int) -> Callable[[FileSessionStore, Run], Callable[[State], None]]:
    def run(store: FileSessionStore, state: Run) -> Callable[[State], None]:
        context = ctx(user=user)
        session = data(context, step=step)
        if state.interrupted is None:
            state.with_pending = {**state.acknowledged, PENDING: session}  # if this call is the one
        key = str(store.create_session(context, session))
        state.keys[name] = key
        return lambda model: model.__setitem__(key, session)

    return run


def _update(name: str, user: str, step: int) -> Callable[[FileSessionStore, Run], Callable[[State], None]]:
    def run(store: FileSessionStore, state: Run) -> Callable[[State], None]:
        key = state.keys[name]
        session = data(ctx(user=user), step=step)
        if state.interrupted is None:
            state.with_pending = {**state.acknowledged, key: session}
        store.update_session(key, session)
        return lambda model: model.__setitem__(key, session)

    return run


def _remove(name: str) -> Callable[[FileSessionStore, Run], Callable[[State], None]]:
    def run(store: FileSessionStore, state: Run) -> Callable[[State], None]:
        key = state.keys[name]
        if state.interrupted is None:
            state.with_pending = {k: v for k, v in state.acknowledged.items() if k != key}
        store.remove_session(key)
        return lambda model: model.__delitem__(key)

    return run


def _maintenance(
    call: Callable[[FileSessionStore], object],
) -> Callable[[FileSessionStore, Run], Callable[[State], None]]:
    def run(store: FileSessionStore, state: Run) -> Callable[[State], None]:
        if state.interrupted is None:
            state.with_pending = None  # changes no session
        call(store)
        return lambda model: None

    return run


WORKLOAD: Final = [
    ("create a", _create("a", "u1", 1)),
    ("create b", _create("b", "u2", 2)),
    ("update a", _update("a", "u1", 3)),
    ("snapshot", _maintenance(FileSessionStore.write_snapshot)),
    ("remove b", _remove("b")),
    ("compact", _maintenance(FileSessionStore.compact)),
    ("create c", _create("c", "u3", 4)),
    ("update seed", _update("seed", "u0", 5)),
    ("close", _maintenance(FileSessionStore.close)),
]


def build_pristine(directory: Path) -> tuple[str, State]:
    """A store with one live session (key named ``seed``), after a removed one; its state."""
    with FileSessionStore(directory) as store:
        store.remove_session(store.create_session(ctx(user="gone"), data(ctx(user="gone"))))
        key = str(store.create_session(ctx(user="u0"), data(ctx(user="u0"))))
        return key, {key: data(ctx(user="u0"))}


def run_workload(directory: Path, io: InterruptAt, durability: str, seed: tuple[str, State]) -> Run:
    """The workload through ``io``; raises only for a broken promise (never the injected interrupt)."""
    state = Run(keys={"seed": seed[0]}, acknowledged=dict(seed[1]))
    try:
        store = FileSessionStore(directory, durability=durability, io=io, snapshot_every_records=10**6)
    except io.fault:
        state.interrupted, state.raised = "open", True
        return state
    try:
        for name, step in WORKLOAD:
            verb, _, session = name.partition(" ")
            if verb in {"update", "remove"} and session not in state.keys:
                continue  # its session's create was the interrupted call
            try:
                change = step(store, state)
            except StorePoisonedError:
                assert state.interrupted is not None, f"{name}: poisoned with no interrupt"
                state.poisoned = True
                continue
            except io.fault:
                assert io.fired, f"{name}: {io.fault.__name__} not injected"
                assert state.interrupted is None, f"{name}: a second {io.fault.__name__}"
                state.interrupted, state.raised = name, True
                if name != "close":
                    len(store)  # reads go on, poisoned or not
                continue
            if state.interrupted is None:
                state.with_pending = None
                if io.fired:  # and returned: a step after compaction's switch, reported as a warning
                    state.interrupted = name
            state.apply(change)
    finally:
        store.close()
        store.close()
    return state


def check_point(directory: Path, state: Run, why: str) -> str:
    """Nobody holds the store, fsck is clean, and it holds the acknowledged state ± the
    interrupted call; which of the two."""
    Registration(str(directory), exclusive=True).close()
    report = fsck(directory)
    assert report.exit_code == 0, f"{why}: {list(iter_findings(report))}"
    with FileSessionStore(directory) as store:
        stored = {str(key): store.get_session(key) for key in store.session_keys()}
    if stored == state.acknowledged:
        return "acknowledged"
    pending = state.with_pending
    assert pending is not None, f"{why}: {stored} != {state.acknowledged}"
    if PENDING in pending:
        extra = [key for key in stored if key not in state.acknowledged]
        assert len(extra) == 1, f"{why}: {stored} != {state.acknowledged} (+ one create)"
        pending = {(extra[0] if key == PENDING else key): value for key, value in pending.items()}
    assert stored == pending, (
        f"{why}: {stored} is neither the acknowledged state nor it with the interrupted call"
    )
    return "with the interrupted call"


@attrs.frozen
class Point:
    durability: str
    fault: str
    after: bool
    nth: int

    def __str__(self) -> str:
        return f"{self.durability} {self.fault} {'after' if self.after else 'before'} call {self.nth}"


def calls_in_workload(tmp_path: Path, pristine: Path, seed: tuple[str, State], durability: str) -> int:
    """How many calls of the file layer the workload makes in ``durability`` mode."""
    directory = tmp_path / f"count-{durability}"
    shutil.copytree(pristine, directory)
    io = InterruptAt(0, KeyboardInterrupt)
    run_workload(directory, io, durability, seed)
    return io.seen


def points(tmp_path: Path, pristine: Path, seed: tuple[str, State], durability: str) -> Iterator[Point]:
    total = calls_in_workload(tmp_path, pristine, seed, durability)
    for nth in range(1, total + 1):
        for fault in INTERRUPTS:
            for after in (False, True):
                yield Point(durability, fault, after, nth)


@attrs.frozen
class Outcome:
    """What one point did: the step it interrupted, whether the interrupt came out of it
    (``raised``; else it returned, the interrupt reported as a warning), whether the handle
    ended poisoned, and whether the store kept the interrupted call's change."""

    fault: str
    step: str
    raised: bool
    poisoned: bool
    kept: str


def run_point(tmp_path: Path, pristine: Path, seed: tuple[str, State], point: Point) -> Outcome:
    """Run ``point`` on a fresh copy, within ``TIMEOUT``, and check it; what it did."""
    directory = tmp_path / f"{point.durability}-{point.fault}-{point.after}-{point.nth}"
    shutil.copytree(pristine, directory)
    io = InterruptAt(point.nth, INTERRUPTS[point.fault], after=point.after)
    outcome: list[Run | BaseException] = []

    def work() -> None:
        try:
            outcome.append(run_workload(directory, io, point.durability, seed))
        except BaseException as error:  # reported below, in the test's thread
            outcome.append(error)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive(), f"{point}: hangs"
    result = outcome[0]
    if isinstance(result, BaseException):
        raise AssertionError(f"{point}: {type(result).__name__}: {result}") from result
    assert io.fired, f"{point}: the workload has fewer calls"
    assert result.interrupted is not None, f"{point}: the interrupt fired outside every step"
    kept = check_point(directory, result, str(point))
    shutil.rmtree(directory)
    return Outcome(point.fault, result.interrupted, result.raised, result.poisoned, kept)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[str, State]]:
    directory = tmp_path_factory.mktemp("interrupts") / "pristine"
    return directory, build_pristine(directory)


def summary(durability: str, outcomes: list[Outcome]) -> str:
    """The figures docs/durability.md quotes."""
    raised = sum(outcome.raised for outcome in outcomes)
    poisoned = sum(outcome.poisoned for outcome in outcomes)
    kept = sum(outcome.kept != "acknowledged" for outcome in outcomes)
    steps = Counter(outcome.step for outcome in outcomes)
    returned = Counter(f"{outcome.fault} in {outcome.step}" for outcome in outcomes if not outcome.raised)
    return (
        f"{durability}: {len(outcomes)} points; the interrupt raised by {raised}, and not by "
        f"{len(outcomes) - raised} ({dict(sorted(returned.items()))}); handle poisoned after "
        f"{poisoned}; the interrupted call's change kept by {kept}; by step: {dict(sorted(steps.items()))}"
    )


@pytest.mark.parametrize("durability", MODES)
def test_interrupts_at_sampled_calls_lose_nothing(
    tmp_path: Path, pristine: tuple[Path, tuple[str, State]], durability: str
) -> None:
    """A seeded sample of the lane's points in each mode (every interrupt kind, before and
    after a call, over the whole workload): each passes every check of the module docs."""
    every = list(points(tmp_path, *pristine, durability))
    sample = random.Random(f"issue20-{durability}").sample(every, SAMPLED)
    outcomes = [run_point(tmp_path, *pristine, point) for point in sample]
    assert len({outcome.step for outcome in outcomes}) > 3, summary(durability, outcomes)


@pytest.mark.slow
@pytest.mark.parametrize("durability", MODES)
def test_interrupts_at_every_call_lose_nothing(
    tmp_path: Path, pristine: tuple[Path, tuple[str, State]], durability: str
) -> None:
    """Every point of the lane in one mode: each interrupt kind, before and after every call
    (``-s`` prints the figures)."""
    outcomes = [run_point(tmp_path, *pristine, point) for point in points(tmp_path, *pristine, durability)]
    print(summary(durability, outcomes))
    assert {name for name, _ in WORKLOAD} | {"open"} <= {outcome.step for outcome in outcomes}
