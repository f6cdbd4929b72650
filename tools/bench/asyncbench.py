"""The async section (issue 17): 64 coroutines on the mixed workload, and what the event loop feels.

Three contenders run the same plans, a fresh store each, taking turns round
after round (the machine is shared: compare within a round, keep medians):

- ``filestore-async``: ``AsyncFileSessionStore``, 64 coroutines on one loop;
- ``filestore-fsync-1``: the sync ``FileSessionStore`` (``durability="fsync"``),
  one thread running the same 64 plans one after another: its durable
  single-thread throughput;
- ``aiosqlite-full``: SQLite through ``aiosqlite`` (a thread per
  connection), WAL with ``synchronous=FULL``, the contract's owner check on
  update as the sync SQLite contender does, each write one ``BEGIN
  IMMEDIATE`` transaction (one commit a call), driven by the same 64 coroutines
  on one connection.

Each async run also measures the event loop's lag: a ticker sleeps 1 ms
again and again; its lag is how late each wake-up came (the p99 and the
worst, and the same ticker on an idle loop for comparison). The async file
store's run reports its writes per fdatasync (``syncs.sync_figures``).
"""

from __future__ import annotations

import abc
import asyncio
import gc
import importlib
import itertools
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from filestore import SessionData, TenantCtx
from filestore.aio import AsyncFileSessionStore
from filestore.contract import check_context_fence, check_same_owner, lookup_scope, session_scope
from tools.bench import syncs
from tools.bench import workload as wl
from tools.bench.alternatives import SCHEMA, columns
from tools.bench.contenders import FileStoreContender, SyncCounter, scope_from_parts

COROUTINES: Final = 64
TICK_S: Final = 0.001
CONTENDERS: Final = ("filestore-async", "filestore-fsync-1", "aiosqlite-full")


def aiosqlite_missing() -> str | None:
    """Why the aiosqlite contender cannot run here, or ``None``."""
    try:
        importlib.import_module("aiosqlite")  # an optional contender (the bench extra)
    except ImportError:
        return "aiosqlite is not installed (pip install -e '.[bench]')"
    return None


class AsyncContender(abc.ABC):
    """The five calls as coroutines, with plain-string keys."""

    @abc.abstractmethod
    async def create(self, ctx: TenantCtx, data: SessionData) -> str: ...

    @abc.abstractmethod
    async def get(self, key: str) -> SessionData | None: ...

    @abc.abstractmethod
    async def update(self, key: str, data: SessionData) -> None: ...

    @abc.abstractmethod
    async def remove(self, key: str) -> None: ...

    @abc.abstractmethod
    async def find_by_user(self, ctx: TenantCtx, user: str) -> tuple[str, SessionData] | None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class AsyncFilestore(AsyncContender):
    """``AsyncFileSessionStore`` (the default, fsync durability), counting its fdatasyncs."""

    def __init__(self, store: AsyncFileSessionStore, counter: SyncCounter) -> None:
        self.store = store
        self.counter = counter

    @classmethod
    async def open(cls, path: Path) -> AsyncFilestore:
        counter = SyncCounter()
        store = await asyncio.to_thread(AsyncFileSessionStore, path, io=counter)
        return cls(store, counter)

    async def create(self, ctx: TenantCtx, data: SessionData) -> str:
        return await self.store.create_session(ctx, data)

    async def get(self, key: str) -> SessionData | None:
        return await self.store.get_session(key)

    async def update(self, key: str, data: SessionData) -> None:
        await self.store.update_session(key, data)

    async def remove(self, key: str) -> None:
        await self.store.remove_session(key)

    async def find_by_user(self, ctx: TenantCtx, user: str) -> tuple[str, SessionData] | None:
        return await self.store.find_by_user(ctx, user)

    async def close(self) -> None:
        await self.store.close()


class Aiosqlite(AsyncContender):
    """SQLite through aiosqlite: one connection (its thread), WAL, ``synchronous=FULL``.

    The schema and checks of ``alternatives.SqliteContender``; a write is one
    ``BEGIN IMMEDIATE`` transaction, coroutines taking turns on the
    connection's transaction (an ``asyncio.Lock``), reads between them.
    """

    def __init__(self, connection: Any) -> None:
        self._db = connection
        self._writing = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Aiosqlite:
        # An optional contender (the bench extra), typed only where it is installed.
        aiosqlite: Any = importlib.import_module("aiosqlite")
        path.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(str(path / "sessions.db"), isolation_level=None, timeout=60)
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA synchronous=FULL")
        for statement in SCHEMA:
            await connection.execute(statement)
        return cls(connection)

    async def _transaction(self, work: Callable[[], Awaitable[None]]) -> None:
        async with self._writing:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await work()
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _scope_of(self, key: str) -> Any:
        cursor = await self._db.execute("SELECT env, tenant, team, user FROM sessions WHERE key = ?", (key,))
        row = await cursor.fetchone()
        if row is None:
            raise KeyError(key)
        return scope_from_parts(*row)

    async def create(self, ctx: TenantCtx, data: SessionData) -> str:
        check_context_fence(ctx, data)
        scope = columns(session_scope(ctx, data))
        key = str(uuid.uuid4())
        blob = data.to_cbor()

        async def work() -> None:
            await self._db.execute(
                "INSERT INTO sessions (key, env, tenant, team, user, data) VALUES (?, ?, ?, ?, ?, ?)",
                (key, *scope, blob),
            )
            if scope[3]:
                await self._db.execute(
                    "INSERT OR REPLACE INTO users (env, tenant, team, user, key) VALUES (?, ?, ?, ?, ?)",
                    (*scope, key),
                )

        await self._transaction(work)
        return key

    async def get(self, key: str) -> SessionData | None:
        cursor = await self._db.execute("SELECT data FROM sessions WHERE key = ?", (key,))
        row = await cursor.fetchone()
        return None if row is None else SessionData.from_cbor(row[0])

    async def update(self, key: str, data: SessionData) -> None:
        blob = data.to_cbor()

        async def work() -> None:
            stored = await self._scope_of(key)
            check_same_owner(stored, data)
            await self._db.execute("UPDATE sessions SET data = ? WHERE key = ?", (blob, key))
            if stored.user is not None:
                await self._db.execute(
                    "INSERT OR REPLACE INTO users (env, tenant, team, user, key) VALUES (?, ?, ?, ?, ?)",
                    (*columns(stored), key),
                )

        await self._transaction(work)

    async def remove(self, key: str) -> None:
        async def work() -> None:
            stored = await self._scope_of(key)
            await self._db.execute("DELETE FROM sessions WHERE key = ?", (key,))
            await self._db.execute(
                "DELETE FROM users WHERE env = ? AND tenant = ? AND team = ? AND user = ? AND key = ?",
                (*columns(stored), key),
            )

        await self._transaction(work)

    async def find_by_user(self, ctx: TenantCtx, user: str) -> tuple[str, SessionData] | None:
        cursor = await self._db.execute(
            "SELECT s.key, s.data FROM users u JOIN sessions s ON s.key = u.key "
            "WHERE u.env = ? AND u.tenant = ? AND u.team = ? AND u.user = ?",
            columns(lookup_scope(ctx, user)),
        )
        row = await cursor.fetchone()
        return None if row is None else (row[0], SessionData.from_cbor(row[1]))

    async def close(self) -> None:
        await self._db.close()


async def run_plan(contender: AsyncContender, plan: list[wl.Op], keys: dict[int, str]) -> int:
    """Run ``plan`` (as ``workload.run_plan`` does, awaiting each call); the reads that missed."""
    misses = 0
    for kind, number, data, ctx in plan:
        if kind == wl.GET:
            misses += await contender.get(keys[number]) is None
        elif kind == wl.UPDATE:
            assert data is not None
            await contender.update(keys[number], data)
        elif kind == wl.FIND:
            assert ctx is not None
            misses += await contender.find_by_user(ctx, f"user-{number}") is None
        elif kind == wl.CREATE:
            assert data is not None
            assert ctx is not None
            keys[number] = await contender.create(ctx, data)
        else:
            await contender.remove(keys[number])
    return misses


async def _tick(lags: list[int], stop: asyncio.Event) -> None:
    """Sleep ``TICK_S`` until ``stop``; note how late each wake-up came (ns)."""
    clock = time.perf_counter_ns
    while not stop.is_set():
        before = clock()
        await asyncio.sleep(TICK_S)
        lags.append(clock() - before - int(TICK_S * 1e9))


async def idle_lag(ticks: int) -> list[int]:
    """The ticker's lags on a loop with nothing else to do (what the timer alone costs)."""
    lags: list[int] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_tick(lags, stop))
    while len(lags) < ticks:
        await asyncio.sleep(TICK_S)
    stop.set()
    await ticker
    return lags


def lag_figures(lags: list[int]) -> dict[str, float]:
    ordered = sorted(lags)
    return {
        "ticks": len(ordered),
        "lag_p50_ms": round(wl.percentile(ordered, 0.50) / 1e6, 3),
        "lag_p99_ms": round(wl.percentile(ordered, 0.99) / 1e6, 3),
        "lag_max_ms": round(ordered[-1] / 1e6, 3),
    }


async def _drive(
    contender: AsyncContender, plans: list[wl.Plan], keys: list[dict[int, str]]
) -> tuple[int, int, int, list[int]]:
    """Run each plan in its own coroutine, the ticker beside them: start, end, misses, lags."""
    lags: list[int] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_tick(lags, stop))
    gc.collect()
    started = time.perf_counter_ns()
    misses = await asyncio.gather(*(run_plan(contender, p.ops, k) for p, k in zip(plans, keys, strict=True)))
    ended = time.perf_counter_ns()
    stop.set()
    await ticker
    return started, ended, sum(misses), lags


def _plans(population: wl.Population, preload: int, ops: int, seed: int) -> tuple[wl.Plan, list[wl.Plan]]:
    load = wl.plan_load(population, range(preload))
    plans = [
        wl.plan_mixed(
            population,
            {n: d for n, d in load.expected.items() if n % COROUTINES == c},
            ops=ops // COROUTINES,
            new_numbers=itertools.count(preload + c, COROUTINES),
            seed=seed + c,
        )
        for c in range(COROUTINES)
    ]
    return load, plans


def _own(keys: dict[int, str]) -> list[dict[int, str]]:
    return [{n: k for n, k in keys.items() if n % COROUTINES == c} for c in range(COROUTINES)]


async def _run_async(name: str, path: Path, load: wl.Plan, plans: list[wl.Plan]) -> dict[str, object]:
    contender: AsyncContender
    if name == "filestore-async":
        contender = await AsyncFilestore.open(path)
    else:
        contender = await Aiosqlite.open(path)
    try:
        keys: dict[int, str] = {}
        # Loaded by the 64 coroutines too (untimed): one at a time would take minutes on SQLite.
        chunks = [wl.Plan(load.ops[c::COROUTINES], {}, []) for c in range(COROUTINES)]
        loaded = [dict[int, str]() for _ in chunks]
        await asyncio.gather(*(run_plan(contender, c.ops, k) for c, k in zip(chunks, loaded, strict=True)))
        for part in loaded:
            keys.update(part)
        counter = contender.counter if isinstance(contender, AsyncFilestore) else None
        before = len(counter.intervals) if counter is not None else 0
        started, ended, misses, lags = await _drive(contender, plans, _own(keys))
        intervals = [] if counter is None else counter.intervals[before:]
    finally:
        await contender.close()
    calls = sum(len(plan.ops) for plan in plans)
    result: dict[str, object] = {
        "contender": name,
        "coroutines": COROUTINES,
        "ops": calls,
        "seconds": round((ended - started) / 1e9, 4),
        "ops_per_s": round(calls / ((ended - started) / 1e9), 1),
        "misses": misses,
        **lag_figures(lags),
    }
    if intervals:
        writes = sum(op.kind in wl.WRITES for plan in plans for op in plan.ops)
        result.update(syncs.sync_figures(intervals, writes, started, ended))
    return result


def _run_sync(path: Path, load: wl.Plan, plans: list[wl.Plan]) -> dict[str, object]:
    contender = FileStoreContender(path, durability="fsync")
    try:
        keys: dict[int, str] = {}
        wl.run_plan(contender, load.ops, keys)
        own = _own(keys)
        gc.collect()
        started = time.perf_counter_ns()
        misses = sum(
            wl.run_plan(contender, plan.ops, k, collect=False).misses
            for plan, k in zip(plans, own, strict=True)
        )
        ended = time.perf_counter_ns()
    finally:
        contender.close()
    calls = sum(len(plan.ops) for plan in plans)
    return {
        "contender": "filestore-fsync-1",
        "threads": 1,
        "ops": calls,
        "seconds": round((ended - started) / 1e9, 4),
        "ops_per_s": round(calls / ((ended - started) / 1e9), 1),
        "misses": misses,
    }


def measure_async(
    work: Path, population: wl.Population, *, preload: int, ops: int, rounds: int, seed: int
) -> dict[str, object]:
    """The async section: every contender ``rounds`` times, turns rotated; medians and ratios."""
    load, plans = _plans(population, preload, ops, seed)
    names = [name for name in CONTENDERS if name != "aiosqlite-full" or aiosqlite_missing() is None]
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in names}
    idle = asyncio.run(idle_lag(500))
    for number in range(rounds):
        turn = names[number % len(names) :] + names[: number % len(names)]
        for name in turn:
            path = work / f"async-{number}-{name}"
            if name == "filestore-fsync-1":
                runs[name].append(_run_sync(path, load, plans))
            else:
                runs[name].append(asyncio.run(_run_async(name, path, load, plans)))
    medians = {name: _median(results) for name, results in runs.items()}
    return {
        "coroutines": COROUTINES,
        "preload": preload,
        "ops": sum(len(plan.ops) for plan in plans),
        "rounds": rounds,
        "idle_loop": lag_figures(idle),
        "contenders": medians,
        "skipped": {} if "aiosqlite-full" in names else {"aiosqlite-full": aiosqlite_missing()},
        "ratios": async_ratios(runs),
    }


def _median(results: list[dict[str, object]]) -> dict[str, object]:
    ordered = sorted(results, key=lambda result: float(str(result["ops_per_s"])))
    chosen = dict(ordered[len(ordered) // 2])
    chosen["rounds_ops_per_s"] = [result["ops_per_s"] for result in results]
    if "lag_p99_ms" in chosen:
        chosen["rounds_lag_p99_ms"] = [result["lag_p99_ms"] for result in results]
    return chosen


def async_ratios(runs: dict[str, list[dict[str, object]]]) -> list[dict[str, object]]:
    """Issue 17's targets, each the median over rounds of the round's own ratio (same noise)."""
    rows: list[dict[str, object]] = []
    mine = runs.get("filestore-async", [])
    for against, target, what in (
        ("filestore-fsync-1", 4.0, "64 coroutines on AsyncFileSessionStore / sync store, fsync, 1 thread"),
        ("aiosqlite-full", 3.0, "64 coroutines on AsyncFileSessionStore / on aiosqlite, WAL, FULL"),
    ):
        other = runs.get(against, [])
        ratios = [
            float(str(a["ops_per_s"])) / float(str(b["ops_per_s"])) for a, b in zip(mine, other, strict=False)
        ]
        if ratios:
            measured = round(statistics.median(ratios), 2)
            rows.append(
                {
                    "id": f"async/{against}",
                    "what": what,
                    "target": target,
                    "measured": measured,
                    "rounds": [round(r, 2) for r in ratios],
                    "holds": measured >= target,
                }
            )
    lags = [float(str(result["lag_p99_ms"])) for result in mine]
    if lags:
        worst = max(lags)
        rows.append(
            {
                "id": "async/loop-lag",
                "what": "event-loop lag p99 (ms) of a 1 ms ticker while 64 coroutines work, worst round",
                "target": 2.0,
                "measured": worst,
                "holds": worst < 2.0,
            }
        )
    return rows


def async_text(results: dict[str, Any]) -> list[str]:
    """The section as report lines (none when it did not run)."""
    section = results.get("async") or {}
    if not section:
        return []
    lines = [
        "",
        f"async (issue 17): {section['coroutines']} coroutines, {section['ops']} calls of the mixed workload "
        f"over {section['preload']} sessions, median of {section['rounds']} rounds",
        f"  idle loop: 1 ms ticker lag p99 {section['idle_loop']['lag_p99_ms']} ms",
    ]
    for name, run in section["contenders"].items():
        extra = ""
        if "lag_p99_ms" in run:
            extra += f", loop lag p99 {run['lag_p99_ms']} ms, max {run['lag_max_ms']} ms"
        if "writes_per_fdatasync" in run:
            extra += f", {run['writes_per_fdatasync']} writes/fdatasync"
        lines.append(f"  {name:<18} {run['ops_per_s']:>10,.0f} calls/s{extra}")
    for name, reason in section.get("skipped", {}).items():
        lines.append(f"  {name:<18} skipped: {reason}")
    for row in section["ratios"]:
        verdict = "holds" if row["holds"] else "MISSES"
        lines.append(f"  {row['what']}: {row['measured']} (target {row['target']}, {verdict})")
    return lines
