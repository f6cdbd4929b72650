"""What ``tools/bench`` measures, checked in process: the lean SQLite contender, the interleaved plan, syncs.

These pin what each contender is asked to do and what it then holds, the
order the interleaved run sends calls in, and the arithmetic of the sync
figures. None of them looks at how fast anything was.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from filestore import SessionData, TenantCtx
from filestore.errors import TenantMismatchError
from tools.bench import run as bench_run
from tools.bench import workload as wl
from tools.bench.alternatives import SqliteContender, SqliteLeanContender
from tools.bench.contenders import Contender
from tools.bench.floors import DictFloor
from tools.bench.orders import order_ratios, round_ratios
from tools.bench.registry import SPEC_BY_NAME
from tools.bench.syncs import busy_fraction, sync_figures


class Recording(DictFloor):
    """The dict floor, writing down ``(its name, kind, session number)`` of every call it takes."""

    def __init__(self, path: Path, name: str, log: list[tuple[str, str, str]]) -> None:
        super().__init__(path)
        self.name = name
        self.log = log

    def create(self, ctx: TenantCtx, data: SessionData) -> str:
        key = super().create(ctx, data)
        self.log.append((self.name, wl.CREATE, ""))
        return key

    def get(self, key: str) -> SessionData | None:
        self.log.append((self.name, wl.GET, key))
        return super().get(key)

    def update(self, key: str, data: SessionData) -> None:
        self.log.append((self.name, wl.UPDATE, key))
        super().update(key, data)

    def remove(self, key: str) -> None:
        self.log.append((self.name, wl.REMOVE, key))
        super().remove(key)

    def find_by_user(self, ctx: TenantCtx, user: str) -> tuple[str, SessionData] | None:
        self.log.append((self.name, wl.FIND, user))
        return super().find_by_user(ctx, user)


def plans(population: wl.Population, sessions: int, ops: int) -> tuple[wl.Plan, wl.Plan]:
    load = wl.plan_load(population, range(sessions))
    mixed = wl.plan_mixed(
        population, load.expected, ops=ops, new_numbers=range(sessions, sessions + ops), seed=3
    )
    return load, mixed


def held(contender: Contender, keys: dict[int, str], plan: wl.Plan) -> bool:
    """Whether ``contender`` holds what ``plan`` leaves: every live session equal, removed ones gone."""
    live = all(contender.get(keys[n]) == data for n, data in plan.expected.items())
    return live and all(contender.get(keys[n]) is None for n in plan.removed)


# -- the lean SQLite contender ------------------------------------------------------------


def test_lean_sqlite_runs_the_plan_to_the_same_state_as_sqlite_full(tmp_path: Path) -> None:
    """Given the same load and mixed plans, the lean and full SQLite contenders hold the same sessions.

    Both return what was written (the lean one skips checks, not work the
    caller sees), also after a reopen, with no read missing a live session.
    """
    load, mixed = plans(wl.Population(256, 5), sessions=40, ops=200)
    for contender in (
        SqliteLeanContender(tmp_path / "lean", "FULL"),
        SqliteContender(tmp_path / "full", "FULL"),
    ):
        try:
            keys: dict[int, str] = {}
            assert wl.run_plan(contender, load.ops, keys).misses == 0
            assert wl.run_plan(contender, mixed.ops, keys).misses == 0
            assert held(contender, keys, mixed)
            contender.reopen()
            assert held(contender, keys, mixed)
        finally:
            contender.close()


def test_lean_sqlite_keeps_one_table_and_finds_users_through_it(tmp_path: Path) -> None:
    """The lean contender's schema is one key -> blob table; find_by_user goes through a user row in it.

    After a remove the user's row is left behind and finds nothing; the
    user's next create points it at the new session.
    """
    population = wl.Population(64, 1)
    lean = SqliteLeanContender(tmp_path, "FULL")
    try:
        ctx = population.ctx(0)
        first = lean.create(ctx, population.session(0, 0))
        tables = lean._connection().execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert tables == [("kv",)]
        assert lean.find_by_user(ctx, "user-0") == (first, population.session(0, 0))
        lean.remove(first)
        assert lean.get(first) is None
        assert lean.find_by_user(ctx, "user-0") is None
        second = lean.create(ctx, population.session(0, 1))
        assert lean.find_by_user(ctx, "user-0") == (second, population.session(0, 1))
        with pytest.raises(KeyError):
            lean.update(first, population.session(0, 2))
        with pytest.raises(KeyError):
            lean.remove(first)
    finally:
        lean.close()


def test_only_the_full_sqlite_contender_checks_the_owner_on_update(tmp_path: Path) -> None:
    """Moving a session to another user is refused by sqlite-full's owner check and written by the lean one.

    That check (a read of the stored owner in the write transaction) is the
    work the lean contender leaves out.
    """
    population = wl.Population(64, 1)
    stranger = population.session(1, 0)
    full = SqliteContender(tmp_path / "full", "FULL")
    lean = SqliteLeanContender(tmp_path / "lean", "FULL")
    try:
        for contender in (full, lean):
            key = contender.create(population.ctx(0), population.session(0, 0))
            if contender is full:
                with pytest.raises(TenantMismatchError):
                    contender.update(key, stranger)
                assert contender.get(key) == population.session(0, 0)
            else:
                contender.update(key, stranger)
                assert contender.get(key) == stranger
    finally:
        full.close()
        lean.close()


def test_lean_sqlite_is_durable_as_its_full_peer() -> None:
    """sqlite-lean-full is registered as a durable alternative with synchronous=FULL, as sqlite-full."""
    lean, full = SPEC_BY_NAME["sqlite-lean-full"], SPEC_BY_NAME["sqlite-full"]
    assert (lean.family, lean.durable) == (full.family, full.durable) == ("alternative", True)
    assert "synchronous=FULL" in lean.description


# -- the interleaved run ------------------------------------------------------------------


def test_turn_orders_are_seeded_permutations_that_vary_by_call() -> None:
    """Every call's turn is a permutation of the contenders; one seed gives one sequence, and turns vary."""
    orders = wl.turn_orders(5, 200, seed=11)
    assert len(orders) == 200
    assert all(sorted(order) == [0, 1, 2, 3, 4] for order in orders)
    assert orders == wl.turn_orders(5, 200, seed=11)
    assert orders != wl.turn_orders(5, 200, seed=12)
    assert len({tuple(order) for order in orders}) > 1
    assert {order[0] for order in orders} == {0, 1, 2, 3, 4}


def test_interleaved_run_sends_each_call_to_every_contender_in_its_turn(tmp_path: Path) -> None:
    """Call i reaches every contender once, in turn_orders' order for i, before any contender sees call i + 1.

    Each contender ends holding what the plan leaves; its timings count every
    call of the plan by kind, with no miss.
    """
    load, mixed = plans(wl.Population(64, 2), sessions=20, ops=120)
    log: list[tuple[str, str, str]] = []
    names = ["a", "b", "c"]
    contenders = [Recording(tmp_path / name, name, log) for name in names]
    keys: list[dict[int, str]] = [{} for _ in names]
    wl.run_interleaved(contenders, load.ops, keys, seed=4)
    log.clear()
    timings = wl.run_interleaved(contenders, mixed.ops, keys, seed=5)

    expected_turns = wl.turn_orders(len(names), len(mixed.ops), seed=5)
    turns = [log[i : i + len(names)] for i in range(0, len(log), len(names))]
    assert len(turns) == len(mixed.ops)
    for op, turn, order in zip(mixed.ops, turns, expected_turns, strict=True):
        assert [name for name, _, _ in turn] == [names[i] for i in order]
        assert {kind for _, kind, _ in turn} == {op.kind}
    kinds = Counter(op.kind for op in mixed.ops)
    for contender, mine, timing in zip(contenders, keys, timings, strict=True):
        assert held(contender, mine, mixed)
        assert timing.ops == len(mixed.ops)
        assert timing.misses == 0
        assert {kind: len(values) for kind, values in timing.latencies.items()} == dict(kinds)
        assert timing.wall_ns == sum(sum(values) for values in timing.latencies.values())


def test_interleaved_round_checks_every_contender_like_a_sequential_run(tmp_path: Path) -> None:
    """run_interleaved_round reports, per contender, the same fields and checks as run_contender."""
    load, mixed = plans(wl.Population(256, 6), sessions=30, ops=90)
    specs = [SPEC_BY_NAME[name] for name in ("dict", "sqlite-lean-full", "filestore-none")]
    interleaved = bench_run.run_interleaved_round(specs, tmp_path / "i", load, mixed, seed=8)
    sequential = bench_run.run_contender(specs[1], tmp_path / "s", load, mixed)
    assert list(interleaved) == [spec.name for spec in specs]
    for result in interleaved.values():
        assert set(result) == set(sequential)
        assert result["verified"] is True
        assert result["mixed"]["ops"] == sequential["mixed"]["ops"] == len(mixed.ops)  # type: ignore[index]
        assert result["load"]["ops"] == len(load.ops)  # type: ignore[index]
    assert interleaved["sqlite-lean-full"]["live_bytes"] == sequential["live_bytes"]
    assert not any((tmp_path / "i").iterdir())


# -- plans and syncs --------------------------------------------------------------------------


def test_updates_only_plan_writes_a_new_version_on_every_call() -> None:
    """The updates workload is nothing but updates of live sessions, each leaving its new data expected."""
    population = wl.Population(64, 3)
    load = wl.plan_load(population, range(10))
    plan = wl.plan_mixed(
        population, load.expected, ops=50, new_numbers=range(10, 60), seed=2, mix=wl.UPDATES_ONLY
    )
    assert {op.kind for op in plan.ops} == {wl.UPDATE}
    assert plan.removed == []
    assert set(plan.expected) == set(range(10))
    last = {op.number: op.data for op in plan.ops}
    assert all(plan.expected[n] == data for n, data in last.items())


def test_busy_fraction_counts_overlapping_syncs_once_and_clips_to_the_run() -> None:
    """The union of the intervals within the run, over the run: overlaps once, outside parts dropped."""
    assert busy_fraction([], 0, 100) == 0.0
    assert busy_fraction([(10, 30), (20, 40), (60, 70)], 0, 100) == pytest.approx(0.4)
    assert busy_fraction([(-50, 10), (90, 200)], 0, 100) == pytest.approx(0.2)
    assert busy_fraction([(0, 100), (10, 20)], 0, 100) == pytest.approx(1.0)
    assert busy_fraction([(5, 6)], 10, 10) == 0.0


def test_sync_figures_from_known_intervals() -> None:
    """Writes per sync, mean sync, mean cycle, busy fraction and the median gap between one sync's
    end and the next one's start, from intervals in nanoseconds (given out of order)."""
    intervals = [(250_000, 350_000), (0, 100_000), (750_000, 850_000), (400_000, 600_000)]
    figures = sync_figures(intervals, writes=10, start=0, end=1_000_000)
    assert figures == {
        "sync_gap_p50_us": 150.0,
        "fdatasyncs": 4,
        "writes_per_fdatasync": 2.5,
        "sync_mean_us": 125.0,
        "sync_cycle_us": 250.0,
        "sync_busy_fraction": 0.5,
    }
    assert sync_figures([], writes=3, start=0, end=10) == {}


def test_round_ratios_set_each_round_against_the_same_round() -> None:
    """Per-round ratios pair round r with round r (never sorted), and only throughput pairs have them."""
    table = {
        "contenders": {
            "a": {"rounds_ops_per_s": [100.0, 300.0, 200.0], "mixed": {"ops_per_s": 200.0}},
            "b": {"rounds_ops_per_s": [50.0, 100.0, 400.0], "mixed": {"ops_per_s": 100.0}},
        }
    }
    assert round_ratios(table, "a", "b", "mixed") == [2.0, 3.0, 0.5]
    assert round_ratios(table, "a", "b", "get") == []
    assert round_ratios(table, "a", "missing", "mixed") == []
    rows = order_ratios({"main_interleaved": {"1024": table}})
    assert all(row["sequential"] is None and row["sequential_rounds"] == [] for row in rows)
