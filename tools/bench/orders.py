"""The main table read two ways: contenders run one after another, and interleaved call by call.

``run_main`` gives each contender the machine to itself in turn;
``run_main_interleaved`` sends every call of the plan to all contenders in
a shuffled turn, so a burst of noise from the rest of the machine lands on
all of them alike. ``order_ratios`` puts the ratios that matter side by side
for both, from one run; where the two disagree, the machine's noise (or the
shared caches of the interleaved run) moved the figure.
"""

from __future__ import annotations

from typing import Any, Final

from tools.bench.text import cell, table

FLOOR: Final = "floor-prezeroed-fdatasync"
"""The durable floor the targets are measured against."""


def lookup(document: Any, *path: str) -> Any:
    """``document[path[0]][path[1]]...``, or ``None`` where any step is missing."""
    for step in path:
        if not isinstance(document, dict) or step not in document:
            return None
        document = document[step]
    return document


ORDERS: Final = (("sequential", "main"), ("interleaved", "main_interleaved"))
"""Each order of the main table, and its key in the JSON."""

# (id, what, numerator contender, denominator contender, measure): measure is "mixed"
# (mixed throughput) or a latency kind (its p50).
PAIRS: Final[tuple[tuple[str, str, str, str, str], ...]] = (
    ("fsync-vs-floor", f"mixed: filestore-fsync / {FLOOR}", "filestore-fsync", FLOOR, "mixed"),
    (
        "fsync-vs-sqlite-full",
        "mixed: filestore-fsync / sqlite-full",
        "filestore-fsync",
        "sqlite-full",
        "mixed",
    ),
    (
        "fsync-vs-sqlite-lean-full",
        "mixed: filestore-fsync / sqlite-lean-full",
        "filestore-fsync",
        "sqlite-lean-full",
        "mixed",
    ),
    (
        "sqlite-lean-vs-full",
        "mixed: sqlite-lean-full / sqlite-full (what the checks cost SQLite)",
        "sqlite-lean-full",
        "sqlite-full",
        "mixed",
    ),
    (
        "none-vs-sqlite-normal",
        "mixed: filestore-none / sqlite-normal",
        "filestore-none",
        "sqlite-normal",
        "mixed",
    ),
    (
        "none-vs-nosync-floor",
        "mixed: filestore-none / floor-append-nosync",
        "filestore-none",
        "floor-append-nosync",
        "mixed",
    ),
    ("write-p50-fsync-vs-floor", f"write p50: filestore-fsync / {FLOOR}", "filestore-fsync", FLOOR, "write"),
    (
        "get-p50-nocache-vs-sqlite-full",
        "get p50: filestore-none-nocache / sqlite-full",
        "filestore-none-nocache",
        "sqlite-full",
        "get",
    ),
    (
        "get-p50-nocache-vs-sqlite-lean-full",
        "get p50: filestore-none-nocache / sqlite-lean-full",
        "filestore-none-nocache",
        "sqlite-lean-full",
        "get",
    ),
)


def figure(table: Any, name: str, measure: str) -> Any:
    """Mixed throughput (``measure`` "mixed") or the p50 of a latency kind, of ``name`` in ``table``."""
    mixed = lookup(table, "contenders", name, "mixed")
    if measure == "mixed":
        return lookup(mixed, "ops_per_s")
    return lookup(mixed, "latency_us", measure, "p50")


def _ratio(table: Any, numerator: str, denominator: str, measure: str) -> float | None:
    top, bottom = figure(table, numerator, measure), figure(table, denominator, measure)
    if isinstance(top, (int, float)) and isinstance(bottom, (int, float)) and bottom:
        return round(top / bottom, 3)
    return None


def round_ratios(table: Any, numerator: str, denominator: str, measure: str) -> list[float]:
    """For a throughput pair, the ratio in each round (rounds run the contenders together); else none.

    Both contenders' ``rounds_ops_per_s`` are in round order, so round ``r``
    of one is set against round ``r`` of the other: in the interleaved table
    the two shared every second of that round.
    """
    if measure != "mixed":
        return []
    tops = lookup(table, "contenders", numerator, "rounds_ops_per_s") or []
    bottoms = lookup(table, "contenders", denominator, "rounds_ops_per_s") or []
    if len(tops) != len(bottoms):
        return []
    return [round(top / bottom, 3) for top, bottom in zip(tops, bottoms, strict=True) if bottom]


def order_ratios(results: Any, payload: str = "1024") -> list[dict[str, object]]:
    """Each pair of ``PAIRS`` as measured sequentially and interleaved in this run (None: not run).

    ``sequential``/``interleaved`` set the contenders' median rounds against
    each other; ``*_rounds`` hold the ratio of each round (throughput pairs).
    """
    tables = {order: lookup(results, key, payload) for order, key in ORDERS}
    rows: list[dict[str, object]] = []
    for ident, what, numerator, denominator, measure in PAIRS:
        row: dict[str, object] = {"id": ident, "what": what}
        for order, table_ in tables.items():
            row[order] = _ratio(table_, numerator, denominator, measure)
            row[f"{order}_rounds"] = round_ratios(table_, numerator, denominator, measure)
        rows.append(row)
    return rows


def _with_rounds(entry: Any, order: str) -> str:
    """The median rounds' ratio, and the range of the rounds' own ratios where there are several."""
    rounds = sorted(entry.get(f"{order}_rounds") or [])
    text = cell(entry[order], 3)
    return text if len(rounds) < 2 else f"{text} ({rounds[0]:.2f}-{rounds[-1]:.2f})"


def order_text(results: Any) -> list[str]:
    """The ``ratios_by_order`` of a run as text (nothing where neither order measured a pair)."""
    rows = [
        [entry["what"], _with_rounds(entry, "sequential"), _with_rounds(entry, "interleaved")]
        for entry in lookup(results, "ratios_by_order") or []
        if entry["sequential"] is not None or entry["interleaved"] is not None
    ]
    if not rows:
        return []
    header = ["ratio (1 KiB); (range over rounds)", "sequential", "interleaved"]
    return ["", "the same ratios from both main tables", table(header, rows)]
