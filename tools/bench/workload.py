"""The benchmark's workload: the sessions, the operation plans, and how a plan is timed.

Every contender runs the same plan. A plan is built before the clock starts
(sessions constructed, keys chosen), so the timed loop does nothing but call
the contender: its throughput is operations over the loop's wall time, and
each call is also timed on its own for the latency percentiles.

Session ``number`` ``i`` belongs to user ``user-i`` (one session per user, so
``find_by_user`` always finds it). The live set evolves the same way for
every contender, because it is simulated while the plan is built; the
contender's own keys are mapped from session numbers at run time.
"""

from __future__ import annotations

import gc
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, NamedTuple

import attrs

from filestore import SessionCursor, SessionData, TenantCtx
from tools.bench.contenders import Contender

GET: Final = "get"
UPDATE: Final = "update"
FIND: Final = "find_by_user"
CREATE: Final = "create"
REMOVE: Final = "remove"
WRITE: Final = "write"
"""Not an operation: the pooled latencies of create, update and remove."""

# The mixed phase of issue 7: 50% get, 30% update, 10% find_by_user, 5% create, 5% remove.
MIX: Final[tuple[tuple[str, float], ...]] = (
    (GET, 0.50),
    (UPDATE, 0.30),
    (FIND, 0.10),
    (CREATE, 0.05),
    (REMOVE, 0.05),
)
UPDATES_ONLY: Final[tuple[tuple[str, float], ...]] = ((UPDATE, 1.0),)
"""A mix of updates alone: every call a durable write (issue 15's group-commit workload)."""
WRITES: Final = frozenset({CREATE, UPDATE, REMOVE})
_CONTEXT_POOL: Final = 16
_NODES: Final = ("ask.name", "ask.email", "ask.phone", "confirm", "done")


class Population:
    """The sessions of a run: user ``i``'s context, and version ``v`` of their session.

    ``context_json`` strings come from a small pool of random texts of the
    requested size (shared, so a 16 KiB run does not hold N distinct copies).
    """

    def __init__(self, payload: int, seed: int) -> None:
        self.payload = payload
        rng = random.Random(seed)
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
        prefix = '{"answers":{"name":"Ada","email":"ada@example.com"},"history":"'
        filler = max(payload - len(prefix) - 2, 0)
        self._contexts = [
            prefix + "".join(rng.choices(alphabet, k=filler)) + '"}' for _ in range(_CONTEXT_POOL)
        ]
        self._ctx: dict[int, TenantCtx] = {}

    def user(self, number: int) -> str:
        return f"user-{number}"

    def ctx(self, number: int, *, remember: bool = True) -> TenantCtx:
        """The tenant context of session ``number``'s user (remembered: plans reuse it)."""
        ctx = self._ctx.get(number)
        if ctx is None:
            ctx = TenantCtx.new("prod", "acme").with_team("support").with_user(self.user(number))
            if remember:
                self._ctx[number] = ctx
        return ctx

    def session(self, number: int, version: int, *, ctx: TenantCtx | None = None) -> SessionData:
        """Version ``version`` of session ``number``: same owner, different cursor and context."""
        return SessionData(
            tenant_ctx=self.ctx(number) if ctx is None else ctx,
            flow_id="onboarding.flow",
            cursor=SessionCursor(node_pointer=_NODES[version % len(_NODES)], wait_reason="user-input"),
            context_json=self._contexts[(number + version) % _CONTEXT_POOL],
        )


class Op(NamedTuple):
    """One planned call: its kind, the session number it targets, and the data it writes."""

    kind: str
    number: int
    data: SessionData | None
    ctx: TenantCtx | None


@attrs.define
class Plan:
    """A list of calls, and the state they leave: session number -> the data it then holds."""

    ops: list[Op]
    expected: dict[int, SessionData]
    removed: list[int]


def plan_load(population: Population, numbers: Iterable[int]) -> Plan:
    """Create every session in ``numbers`` (version 0)."""
    ops: list[Op] = []
    expected: dict[int, SessionData] = {}
    for number in numbers:
        data = population.session(number, 0)
        ops.append(Op(CREATE, number, data, population.ctx(number)))
        expected[number] = data
    return Plan(ops, expected, [])


def plan_mixed(
    population: Population,
    start: Mapping[int, SessionData],
    *,
    ops: int,
    new_numbers: Iterable[int],
    seed: int,
    mix: Sequence[tuple[str, float]] = MIX,
) -> Plan:
    """``ops`` calls in the proportions of ``mix`` (``MIX`` by default) over the live sessions ``start``.

    Creates take their numbers from ``new_numbers``; a call that needs a
    session when none is live becomes a create.
    """
    rng = random.Random(seed)
    expected = dict(start)
    live = list(expected)
    position = {number: index for index, number in enumerate(live)}
    version = dict.fromkeys(live, 0)
    fresh = iter(new_numbers)
    removed: list[int] = []
    planned: list[Op] = []
    thresholds = list(_cumulative(weight for _, weight in mix))
    kinds = [kind for kind, _ in mix]
    for _ in range(ops):
        draw = rng.random()
        kind = next((k for k, limit in zip(kinds, thresholds, strict=True) if draw < limit), kinds[-1])
        if kind != CREATE and not live:
            kind = CREATE
        if kind == CREATE:
            number = next(fresh)
            data = population.session(number, 0)
            expected[number] = data
            position[number] = len(live)
            live.append(number)
            version[number] = 0
            planned.append(Op(CREATE, number, data, population.ctx(number)))
            continue
        number = live[rng.randrange(len(live))]
        if kind == GET:
            planned.append(Op(GET, number, None, None))
        elif kind == FIND:
            planned.append(Op(FIND, number, None, population.ctx(number)))
        elif kind == UPDATE:
            version[number] += 1
            data = population.session(number, version[number])
            expected[number] = data
            planned.append(Op(UPDATE, number, data, None))
        else:
            _swap_remove(live, position, number)
            del expected[number]
            removed.append(number)
            planned.append(Op(REMOVE, number, None, None))
    return Plan(planned, expected, removed)


def _cumulative(weights: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for weight in weights:
        total += weight
        yield total


def _swap_remove(live: list[int], position: dict[int, int], number: int) -> None:
    index = position.pop(number)
    last = live.pop()
    if last != number:
        live[index] = last
        position[last] = index


@attrs.define
class Timings:
    """What running a plan measured: per-kind latencies (ns), wall time, and surprises."""

    latencies: dict[str, list[int]] = attrs.field(factory=dict)
    wall_ns: int = 0
    ops: int = 0
    misses: int = 0
    """Gets and finds that returned nothing although the session is live (should be 0)."""

    def merge(self, other: Timings) -> None:
        for kind, values in other.latencies.items():
            self.latencies.setdefault(kind, []).extend(values)
        self.ops += other.ops
        self.misses += other.misses


def run_plan(
    contender: Contender, plan: Sequence[Op], keys: dict[int, str], *, collect: bool = True
) -> Timings:
    """Run ``plan`` against ``contender``; ``keys`` maps session numbers to its keys.

    Creates add their keys to ``keys``; removed sessions keep theirs (to check
    afterwards that they are gone). ``collect`` runs the garbage collector first.
    """
    latencies: dict[str, list[int]] = {kind: [] for kind, _ in MIX}
    clock = time.perf_counter_ns
    misses = 0
    if collect:
        gc.collect()
    started = clock()
    for kind, number, data, ctx in plan:
        if kind == GET:
            key = keys[number]
            before = clock()
            found = contender.get(key)
            latencies[GET].append(clock() - before)
            misses += found is None
        elif kind == UPDATE:
            key = keys[number]
            assert data is not None
            before = clock()
            contender.update(key, data)
            latencies[UPDATE].append(clock() - before)
        elif kind == FIND:
            assert ctx is not None
            user = f"user-{number}"
            before = clock()
            pair = contender.find_by_user(ctx, user)
            latencies[FIND].append(clock() - before)
            misses += pair is None
        elif kind == CREATE:
            assert data is not None
            assert ctx is not None
            before = clock()
            keys[number] = contender.create(ctx, data)
            latencies[CREATE].append(clock() - before)
        else:
            key = keys[number]
            before = clock()
            contender.remove(key)
            latencies[REMOVE].append(clock() - before)
    wall = clock() - started
    return Timings({k: v for k, v in latencies.items() if v}, wall, len(plan), misses)


def perform(contender: Contender, op: Op, keys: dict[int, str]) -> tuple[int, bool]:
    """Make one planned call on ``contender``: nanoseconds it took, and whether a read missed.

    The clock brackets the contender's call alone, as in ``run_plan``; creates
    add their key to ``keys``.
    """
    clock = time.perf_counter_ns
    kind, number, data, ctx = op
    if kind == GET:
        key = keys[number]
        before = clock()
        found = contender.get(key)
        return clock() - before, found is None
    if kind == UPDATE:
        key = keys[number]
        assert data is not None
        before = clock()
        contender.update(key, data)
        return clock() - before, False
    if kind == FIND:
        assert ctx is not None
        user = f"user-{number}"
        before = clock()
        pair = contender.find_by_user(ctx, user)
        return clock() - before, pair is None
    if kind == CREATE:
        assert data is not None
        assert ctx is not None
        before = clock()
        keys[number] = contender.create(ctx, data)
        return clock() - before, False
    key = keys[number]
    before = clock()
    contender.remove(key)
    return clock() - before, False


def turn_orders(contenders: int, calls: int, seed: int) -> list[list[int]]:
    """For each call of a plan, the order the contenders take it in: a seeded shuffle per call."""
    rng = random.Random(seed)
    orders = []
    for _ in range(calls):
        order = list(range(contenders))
        rng.shuffle(order)
        orders.append(order)
    return orders


def run_interleaved(
    contenders: Sequence[Contender], plan: Sequence[Op], keys: Sequence[dict[int, str]], *, seed: int
) -> list[Timings]:
    """Run ``plan`` against every contender at once: each call goes to all of them in turn.

    The order of the turn is shuffled for every call (``turn_orders``), so no
    contender always runs right after another. ``keys[i]`` maps session
    numbers to contender ``i``'s keys. A contender's ``wall_ns`` is the sum of
    its own calls' times (its busy time): the loop's wall time is shared.
    """
    timings = [Timings({kind: [] for kind, _ in MIX}) for _ in contenders]
    orders = turn_orders(len(contenders), len(plan), seed)
    gc.collect()
    for op, order in zip(plan, orders, strict=True):
        for index in order:
            elapsed, missed = perform(contenders[index], op, keys[index])
            mine = timings[index]
            mine.latencies[op.kind].append(elapsed)
            mine.wall_ns += elapsed
            mine.misses += missed
    for mine in timings:
        mine.latencies = {kind: values for kind, values in mine.latencies.items() if values}
        mine.ops = len(plan)
    return timings


# -- statistics ------------------------------------------------------------------


def percentile(ordered: Sequence[int], fraction: float) -> int:
    """The nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[min(rank, len(ordered)) - 1]


def summarise(values: Sequence[int]) -> dict[str, float | int]:
    """p50, p99, mean and max in microseconds, and the count, of latencies given in ns."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(percentile(ordered, 0.50) / 1000, 2),
        "p99": round(percentile(ordered, 0.99) / 1000, 2),
        "mean": round(sum(ordered) / len(ordered) / 1000, 2),
        "max": round(ordered[-1] / 1000, 2),
    }


def phase_result(timings: Timings, wall_ns: int | None = None) -> dict[str, object]:
    """A phase's JSON: throughput over wall time, and latency percentiles per kind and for writes."""
    wall = timings.wall_ns if wall_ns is None else wall_ns
    latency = {kind: summarise(values) for kind, values in timings.latencies.items()}
    writes = [value for kind in WRITES for value in timings.latencies.get(kind, [])]
    if writes:
        latency[WRITE] = summarise(writes)
    return {
        "ops": timings.ops,
        "seconds": round(wall / 1e9, 4),
        "ops_per_s": round(timings.ops / (wall / 1e9), 1) if wall else None,
        "misses": timings.misses,
        "latency_us": latency,
    }


def time_call(call: Callable[[], object]) -> int:
    """Nanoseconds one call takes."""
    started = time.perf_counter_ns()
    call()
    return time.perf_counter_ns() - started
