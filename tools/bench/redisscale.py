"""The "redis" section (issue 18): the mixed workload on one Redis and on a 3-master cluster, by processes.

Each of 1, 4 and 8 client processes loads its own sessions (untimed), waits
at a barrier, then runs the mixed workload of issue 7 (50% get, 30%
update, 10% find_by_user, 5% create, 5% remove) on them, timing every
call. Throughput is all the calls over the slowest process's wall time;
p50/p99 are over every call of every process. The same runs on the file
store (one directory shared by the processes, ``durability="none"``: the
test servers run without AOF, so neither side syncs) stand beside them.

The servers are the tests' own throwaway ones (``tests/support``): one
redis-server, and 3 masters + 3 replicas, all on this machine's loopback.
"""

from __future__ import annotations

import multiprocessing
import random
import statistics
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Final

from filestore import SessionCursor, SessionData, TenantCtx
from filestore.backends import open_store
from tools.bench import workload as wl

PROCESS_COUNTS: Final = (1, 4, 8)
FORK = multiprocessing.get_context("fork")


def _session(worker: int, number: int, step: int) -> SessionData:
    ctx = _ctx(worker, number)
    return SessionData(
        ctx, "bench.flow", SessionCursor(f"node.{step}"), f'{{"step":{step},"pad":"{"x" * 900}"}}'
    )


def _ctx(worker: int, number: int) -> TenantCtx:
    return TenantCtx.new("prod", "acme").with_team("support").with_user(f"w{worker}-u{number}")


def _worker(
    spec: str, options: dict[str, Any], worker: int, shape: tuple[int, int], barrier: Barrier, out: Connection
) -> None:
    sessions, ops = shape
    rng = random.Random(worker)
    names = [name for name, _share in wl.MIX]
    weights = [share for _name, share in wl.MIX]
    with open_store(spec, **options) as store:
        live = {
            number: store.create_session(_ctx(worker, number), _session(worker, number, 0))
            for number in range(sessions)
        }
        next_number = sessions
        latencies: list[int] = []
        barrier.wait()
        started = time.perf_counter()
        for step in range(ops):
            operation = rng.choices(names, weights)[0]
            number = rng.choice(list(live)) if live else None
            begin = time.perf_counter_ns()
            if operation == wl.GET and number is not None:
                store.get_session(live[number])
            elif operation == wl.UPDATE and number is not None:
                store.update_session(live[number], _session(worker, number, step))
            elif operation == wl.FIND and number is not None:
                store.find_by_user(_ctx(worker, number), f"w{worker}-u{number}")
            elif operation == wl.REMOVE and number is not None:
                store.remove_session(live.pop(number))
            else:
                live[next_number] = store.create_session(
                    _ctx(worker, next_number), _session(worker, next_number, step)
                )
                next_number += 1
            latencies.append(time.perf_counter_ns() - begin)
        out.send((time.perf_counter() - started, latencies))


def measure(
    spec: str, options: dict[str, Any], processes: int, *, sessions: int, ops: int
) -> dict[str, object]:
    """One run: ``processes`` clients of ``spec`` (opened with ``options``); throughput and percentiles."""
    barrier = FORK.Barrier(processes)
    pipes = [FORK.Pipe(duplex=False) for _ in range(processes)]
    workers = [
        FORK.Process(target=_worker, args=(spec, options, worker, (sessions, ops), barrier, pipes[worker][1]))
        for worker in range(processes)
    ]
    for process in workers:
        process.start()
    results = [receiver.recv() for receiver, _sender in pipes]
    for process in workers:
        process.join(120)
    wall = max(seconds for seconds, _calls in results)
    calls = sorted(ns for _seconds, latencies in results for ns in latencies)
    quantiles = statistics.quantiles(calls, n=100)
    return {
        "processes": processes,
        "ops_per_s": round(len(calls) / wall),
        "p50_us": round(quantiles[49] / 1000, 1),
        "p99_us": round(quantiles[98] / 1000, 1),
    }


def run_redis(work: Path, *, quick: bool, seed: int) -> dict[str, object]:
    """The section: for the file store, one Redis and the cluster, each process count."""
    from tests.support.redis_cluster import cluster_url  # noqa: PLC0415 - starts the servers on demand
    from tests.support.redis_server import redis_url  # noqa: PLC0415

    sessions, ops = (50, 200) if quick else (500, 3000)
    counts = (1, 2) if quick else PROCESS_COUNTS
    namespace = f"bench{seed}:{random.randrange(1 << 30)}"
    specs = {
        "file (durability none)": str(work / "redis-section-file"),
        "redis (one server)": f"{redis_url()}?namespace={namespace}",
        "redis cluster (3 masters)": cluster_url(namespace),
    }
    rows: dict[str, list[dict[str, object]]] = {}
    for name, spec in specs.items():
        rows[name] = []
        for processes in counts:
            # A fresh store each run: a new directory, a new namespace.
            options = {"durability": "none"} if name.startswith("file") else {}
            fresh = (
                f"{spec}-{processes}"
                if name.startswith("file")
                else spec.replace(namespace, f"{namespace}:{processes}")
            )
            print(f"redis section: {name}, {processes} processes", flush=True)
            rows[name].append(measure(fresh, options, processes, sessions=sessions, ops=ops))
    return {"sessions_per_process": sessions, "ops_per_process": ops, "rows": rows}


def redis_text(results: Any) -> list[str]:
    """The section as text: one line per store and process count."""
    section = results.get("redis") if isinstance(results, dict) else None
    if not section:
        return []
    out = [
        "",
        f"redis scale-out (issue 18): mixed workload, {section['sessions_per_process']} sessions and "
        f"{section['ops_per_process']} calls per process",
        f"{'store':28} {'procs':>5} {'ops/s':>9} {'p50 us':>8} {'p99 us':>8}",
    ]
    for name, rows in section["rows"].items():
        for row in rows:
            out.append(
                f"{name:28} {row['processes']:>5} {row['ops_per_s']:>9} {row['p50_us']:>8} {row['p99_us']:>8}"
            )
    return out
