"""The benchmark's plot: one PNG a reader can take in at a glance (issue 7).

Four panels: mixed-phase throughput per contender, p50 latency per call,
durable writers sharing one store, and reopen time. matplotlib is optional
(the ``bench`` extra): without it ``plot`` returns ``False``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Final

from tools.bench.report import FLOOR, concurrent_throughput, lookup, main_table

_COLOURS: Final = {"filestore": "#1f77b4", "alternative": "#ff7f0e", "floor": "#7f7f7f"}


def _pyplot() -> Any:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot(results: Any, path: Path) -> bool:
    """A 2x2 PNG: mixed throughput, p50 latencies, concurrency, reopen. ``False`` without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    figure, axes = plt.subplots(2, 2, figsize=(15, 10.5))
    table = main_table(results)
    contenders = list((lookup(table, "contenders") or {}).items())
    _plot_throughput(axes[0][0], contenders)
    _plot_latency(axes[0][1], contenders)
    _plot_concurrency(axes[1][0], results)
    _plot_reopen(axes[1][1], results)
    machine = lookup(results, "machine") or {}
    fs = machine.get("filesystem") or {}
    figure.suptitle(
        f"filestore vs alternatives and floors: N={lookup(table, 'sessions') or 0:,}, 1 KiB context_json; "
        f"{machine.get('cpus')} cores, {fs.get('type')}, {machine.get('python')}",
        fontsize=12,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def _plot_throughput(axis: Any, contenders: list[tuple[str, Any]]) -> None:
    ordered = sorted(contenders, key=lambda item: lookup(item[1], "mixed", "ops_per_s") or 0)
    names = [name for name, _ in ordered]
    values = [lookup(result, "mixed", "ops_per_s") or 0 for _, result in ordered]
    colours = [_COLOURS.get(result["family"], "black") for _, result in ordered]
    bars = axis.barh(names, values, color=colours)
    axis.set_xscale("log")
    axis.set_xlabel("mixed phase, calls/s (log scale; higher is better)")
    axis.set_title("Mixed phase throughput, 1 thread (blue filestore, orange alternatives, grey floors)")
    for bar, value in zip(bars, values, strict=True):
        axis.text(value * 1.05, bar.get_y() + bar.get_height() / 2, f"{value:,.0f}", va="center", fontsize=8)
    axis.set_xlim(right=max(values, default=1) * 4)
    floor = next((value for name, value in zip(names, values, strict=True) if name == FLOOR), None)
    if floor:
        axis.axvline(0.9 * floor, color="#1f77b4", linestyle=":", linewidth=1)
        axis.text(
            0.9 * floor, -0.9, " target for filestore-fsync:\n 0.9 x durable floor", fontsize=7, va="bottom"
        )


def _plot_latency(axis: Any, contenders: list[tuple[str, Any]]) -> None:
    ordered = sorted(contenders, key=lambda item: lookup(item[1], "mixed", "latency_us", "write", "p50") or 0)
    kinds = (("get", "#2ca02c"), ("find_by_user", "#9467bd"), ("write", "#d62728"))
    height = 0.27
    for offset, (kind, colour) in enumerate(kinds):
        values = [lookup(result, "mixed", "latency_us", kind, "p50") or 0 for _, result in ordered]
        positions = [index + (offset - 1) * height for index in range(len(ordered))]
        axis.barh(positions, values, height=height, color=colour, label=f"{kind} p50")
    axis.set_yticks(range(len(ordered)), [name for name, _ in ordered])
    axis.set_xscale("log")
    axis.set_xlabel("microseconds (log scale; lower is better)")
    axis.set_title("p50 latency per call, mixed phase")
    axis.legend(loc="lower right", fontsize=8)


def _plot_concurrency(axis: Any, results: Any) -> None:
    runs = lookup(results, "concurrency", "threads") or []
    for name, colour, marker in (
        ("filestore-group", "#1f77b4", "o"),
        ("filestore-fsync", "#17becf", "s"),
        ("sqlite-full", "#ff7f0e", "^"),
    ):
        points = sorted((run["threads"], run["ops_per_s"]) for run in runs if run["contender"] == name)
        if points:
            axis.plot(*zip(*points, strict=True), marker=marker, color=colour, label=f"{name}, threads")
    processes = sorted(
        (run["processes"], run["ops_per_s"]) for run in lookup(results, "concurrency", "processes") or []
    )
    if processes:
        axis.plot(
            *zip(*processes, strict=True),
            marker="D",
            linestyle="--",
            color="#8c564b",
            label="filestore-fsync, processes",
        )
    sqlite_four = concurrent_throughput(results, "sqlite-full", "threads", 4)
    if sqlite_four:
        axis.axhline(3 * sqlite_four, color="#1f77b4", linestyle=":", linewidth=1)
        axis.text(
            1,
            3 * sqlite_four,
            "target for filestore-group, 4 threads: 3 x sqlite-full",
            fontsize=7,
            va="bottom",
        )
    axis.set_xlabel("threads or processes")
    axis.set_ylabel("mixed phase, calls/s (all workers)")
    axis.set_title("Durable writers sharing one store (group commit shares fdatasyncs)")
    counts = sorted({run["threads"] for run in runs} | {count for count, _ in processes})
    axis.set_xscale("log", base=2)
    axis.set_xticks(counts, [str(count) for count in counts])
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)


def _plot_reopen(axis: Any, results: Any) -> None:
    entries = lookup(results, "scale") or []
    labels = [f"{entry['sessions']:,}" for entry in entries]
    width = 0.38
    for offset, (field, colour, label) in enumerate(
        (
            ("reopen_snapshot_ms", "#1f77b4", "with a fresh snapshot"),
            ("reopen_replay_ms", "#aec7e8", "full replay (sessions.idx deleted)"),
        )
    ):
        values = [entry[field] for entry in entries]
        positions = [index + (offset - 0.5) * width for index in range(len(entries))]
        bars = axis.bar(positions, values, width=width, color=colour, label=label)
        for bar, value in zip(bars, values, strict=True):
            axis.text(
                bar.get_x() + bar.get_width() / 2, value * 1.08, f"{value:,.0f} ms", ha="center", fontsize=8
            )
    axis.set_xticks(range(len(entries)), [f"{label} sessions" for label in labels])
    axis.set_yscale("log")
    axis.set_ylabel("ms to open and read one session (log scale)")
    axis.set_title("Reopen time")
    axis.legend(fontsize=8)
    heaps = ", ".join(f"{entry['sessions']:,}: {entry['heap_bytes_per_session']:.0f} B" for entry in entries)
    if heaps:
        axis.text(
            0.02, 0.95, f"Python heap per session: {heaps}", transform=axis.transAxes, fontsize=8, va="top"
        )
    if entries:
        values = [e[field] for e in entries for field in ("reopen_snapshot_ms", "reopen_replay_ms")]
        axis.set_ylim(bottom=min(values) / 3, top=max(values) * 6)
