"""The benchmark's ``decode`` section: the model's codecs against the raw encoders (issue 15, part 1).

Each model call is timed against the raw call on the same input, in
alternating batches over the same items, so both share the machine's noise:

- ``SessionData.from_cbor(blob)`` against ``cbor2.loads(blob)``;
- ``SessionData.from_json(text)`` against ``json.loads(text)``;
- ``session.to_cbor()`` against ``cbor2.dumps(doc)``;
- ``session.to_json()`` against ``json.dumps(doc)``;

where ``doc`` is ``session.to_dict()``, built before the clock starts, and
``blob`` and ``text`` are what ``to_cbor`` and ``to_json`` wrote. The
sessions are the main table's (one per user, ``payload`` bytes of
``context_json``), so ids repeat as they do in a store: env, tenant and team
in every session, each user in one. Each round times one batch of each side
(which goes first alternates); the ratio reported is the median of the
rounds' ratios, with their spread. Nothing here asserts a timing.

``measure_get_without_cache`` adds issue 15's store target: filestore's
``get`` with ``cache_size=0`` against SQLite FULL's, gets only, per call.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import cbor2

from filestore import SessionData
from tools.bench import workload as wl
from tools.bench.contenders import Contender
from tools.bench.registry import SPEC_BY_NAME

# (name, model call, raw call, target ratio): the targets.
PAIRS: Final = (
    ("from_cbor", "cbor2.loads", 2.5),
    ("from_json", "json.loads", 2.5),
    ("to_cbor", "cbor2.dumps", 2.0),
    ("to_json", "json.dumps", 2.0),
)


def _batch_ns(call: Callable[[Any], object], items: Sequence[object]) -> int:
    # The thread's CPU time, not the wall clock: time the scheduler gives
    # other processes on a shared machine is not counted against either side.
    started = time.thread_time_ns()
    for item in items:
        call(item)
    return time.thread_time_ns() - started


def measure_decode(
    population: wl.Population, *, sessions: int = 1000, batch: int = 200, rounds: int = 50
) -> dict[str, object]:
    """Per pair: median µs per call of each side, and the median and spread of the rounds' ratios."""
    datas = [population.session(number, 0) for number in range(sessions)]
    blobs = [data.to_cbor() for data in datas]
    texts = [data.to_json() for data in datas]
    docs = [data.to_dict() for data in datas]
    calls: dict[str, tuple[Callable[[Any], object], Sequence[object]]] = {
        "from_cbor": (SessionData.from_cbor, blobs),
        "cbor2.loads": (cbor2.loads, blobs),
        "from_json": (SessionData.from_json, texts),
        "json.loads": (json.loads, texts),
        "to_cbor": (SessionData.to_cbor, datas),
        "cbor2.dumps": (cbor2.dumps, docs),
        "to_json": (SessionData.to_json, datas),
        "json.dumps": (json.dumps, docs),
    }
    for call, items in calls.values():  # warm up: ids validated, caches filled, code paths taken
        for item in items:
            call(item)
    pairs: dict[str, object] = {}
    for model, raw, target in PAIRS:
        model_call, model_items = calls[model]
        raw_call, raw_items = calls[raw]
        model_ns: list[float] = []
        raw_ns: list[float] = []
        for number in range(rounds):
            start = (number * batch) % max(len(model_items) - batch, 1)
            sides = [(model_call, model_items, model_ns), (raw_call, raw_items, raw_ns)]
            for call, items, samples in sides if number % 2 else sides[::-1]:
                samples.append(_batch_ns(call, items[start : start + batch]) / batch)
        ratios = [mine / theirs for mine, theirs in zip(model_ns, raw_ns, strict=True)]
        ratio = statistics.median(ratios)
        quartiles = statistics.quantiles(ratios, n=4)
        pairs[model] = {
            "against": raw,
            "model_us": round(statistics.median(model_ns) / 1000, 3),
            "raw_us": round(statistics.median(raw_ns) / 1000, 3),
            "ratio": round(ratio, 3),
            "ratio_quartiles": [round(quartiles[0], 3), round(quartiles[2], 3)],
            # Each side's fastest batch: what it costs when nothing else interferes.
            "ratio_of_best": round(min(model_ns) / min(raw_ns), 3),
            "target": f"<= {target}",
            "holds": ratio <= target,
        }
    return {
        "sessions": sessions,
        "batch": batch,
        "rounds": rounds,
        "session_cbor_bytes": round(statistics.mean(len(blob) for blob in blobs)),
        "session_json_bytes": round(statistics.mean(len(text) for text in texts)),
        "pairs": pairs,
    }


def measure_get_without_cache(
    work: Path, population: wl.Population, *, sessions: int = 2000, batch: int = 100, rounds: int = 60
) -> dict[str, object]:
    """``get`` of filestore with ``cache_size=0`` against SQLite FULL's, per call, gets only.

    Both stores are loaded with the same sessions first; then each round
    reads one batch of random sessions from each (the same sessions, CPU
    time), and ``SessionData.from_cbor`` of their bytes, which both gets
    include. The main table's get p50 mixes in the stores' writes.
    """
    names = ("filestore-none-nocache", "sqlite-full")
    stores: dict[str, Contender] = {}
    keys: dict[str, list[str]] = {}
    try:
        for name in names:
            store = SPEC_BY_NAME[name].open(work / f"get-{name}")
            stores[name] = store
            made: dict[int, str] = {}
            wl.run_plan(store, wl.plan_load(population, range(sessions)).ops, made)
            keys[name] = [made[number] for number in range(sessions)]
        blobs = [population.session(number, 0).to_cbor() for number in range(sessions)]
        samples: dict[str, list[float]] = {name: [] for name in (*names, "from_cbor")}
        rng = random.Random(7)
        for _ in range(rounds):
            chosen = rng.sample(range(sessions), batch)
            for name in names:
                samples[name].append(_batch_ns(stores[name].get, [keys[name][i] for i in chosen]) / batch)
            samples["from_cbor"].append(_batch_ns(SessionData.from_cbor, [blobs[i] for i in chosen]) / batch)
    finally:
        for store in stores.values():
            store.close()
    ratios = [mine / theirs for mine, theirs in zip(samples[names[0]], samples[names[1]], strict=True)]
    ratio = statistics.median(ratios)
    return {
        "sessions": sessions,
        "rounds": rounds,
        **{f"{name}_us": round(statistics.median(values) / 1000, 3) for name, values in samples.items()},
        "ratio": round(ratio, 3),
        "target": "<= 0.6",
        "holds": ratio <= 0.6,
    }


def decode_text(results: Any) -> list[str]:
    """The decode section as report lines (none if it did not run)."""
    section = results.get("decode") if isinstance(results, dict) else None
    if not section:
        return []
    rows = []
    for name, pair in section["pairs"].items():
        low, high = pair["ratio_quartiles"]
        rows.append(
            f"  {name:<10} {pair['model_us']:>8.2f} us  {pair['against']:<12} {pair['raw_us']:>8.2f} us  "
            f"{pair['ratio']:>6.2f}x  (quartiles {low:.2f}-{high:.2f}, best batches "
            f"{pair['ratio_of_best']:.2f}x)  target {pair['target']}: {'yes' if pair['holds'] else 'NO'}"
        )
    get = section.get("get_without_cache")
    if get:
        rows.append(
            f"  get, cache_size=0: filestore {get['filestore-none-nocache_us']:.2f} us, sqlite-full "
            f"{get['sqlite-full_us']:.2f} us (from_cbor in both: {get['from_cbor_us']:.2f} us)  "
            f"{get['ratio']:.2f}x  target {get['target']}: {'yes' if get['holds'] else 'NO'}"
        )
    return [
        "",
        f"decode: the model's codecs against the raw encoders, {section['session_cbor_bytes']:,}-byte "
        f"session CBOR, median of {section['rounds']} rounds' ratios (CPU time)",
        *rows,
    ]
