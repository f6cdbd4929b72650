"""The benchmark's plot: one PNG a reader can take in at a glance (issue 7).

Four panels: mixed-phase throughput per contender, p50 latency per call,
durable writers sharing one store, and reopen time. ``plot_data`` reads what
the panels show out of a run's JSON (pure, tested without matplotlib); the
``_draw_*`` functions only draw it. matplotlib is optional (the ``bench``
extra): without it ``plot`` returns ``False``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Final

import attrs

from tools.bench.orders import FLOOR, lookup
from tools.bench.report import concurrent_throughput, main_table

_COLOURS: Final = {"filestore": "#1f77b4", "alternative": "#ff7f0e", "floor": "#7f7f7f"}
LATENCY_KINDS: Final = ("get", "find_by_user", "write")
_LATENCY_COLOURS: Final = {"get": "#2ca02c", "find_by_user": "#9467bd", "write": "#d62728"}
THREAD_SERIES: Final = ("filestore-group", "filestore-fsync", "sqlite-full")
_SERIES_STYLE: Final = {
    "filestore-group": ("#1f77b4", "o"),
    "filestore-fsync": ("#17becf", "s"),
    "sqlite-full": ("#ff7f0e", "^"),
}


@attrs.frozen
class Bar:
    """One contender's bar: its name, value, and the colour of its family."""

    name: str
    value: float
    colour: str


@attrs.frozen
class Series:
    """One line of the concurrency panel: ``(workers, calls/s)`` points, fewest workers first."""

    name: str
    points: tuple[tuple[int, float], ...]


@attrs.frozen
class ScaleBar:
    """One store size of the reopen panel."""

    sessions: int
    snapshot_ms: float
    replay_ms: float
    heap_bytes_per_session: float


@attrs.frozen
class PlotData:
    """What the four panels show, read from a run's JSON; a figure missing from the run reads as 0."""

    title: str
    throughput: tuple[Bar, ...]
    """Mixed-phase calls/s per contender, slowest first."""
    floor_target: float | None
    """0.9 x the durable floor's throughput (filestore-fsync's target), if the floor ran."""
    latency_names: tuple[str, ...]
    """Contenders of the latency panel, by write p50, lowest first."""
    latency_p50: tuple[tuple[str, tuple[float, ...]], ...]
    """Per kind of ``LATENCY_KINDS``, the p50 (us) of each contender of ``latency_names``."""
    thread_series: tuple[Series, ...]
    """Of ``THREAD_SERIES``, those the run measured with threads."""
    process_points: tuple[tuple[int, float], ...]
    """filestore-fsync with several processes: ``(processes, calls/s)``."""
    group_target: float | None
    """3 x sqlite-full's 4-thread throughput (filestore-group's target), if measured."""
    worker_counts: tuple[int, ...]
    """Every thread and process count measured: the concurrency panel's ticks."""
    scale: tuple[ScaleBar, ...]


def plot_data(results: Any) -> PlotData:
    """What ``plot`` draws for ``results`` (a run's JSON document)."""
    table = main_table(results)
    contenders = list((lookup(table, "contenders") or {}).items())
    machine = lookup(results, "machine") or {}
    fs = machine.get("filesystem") or {}
    title = (
        f"filestore vs alternatives and floors: N={lookup(table, 'sessions') or 0:,}, 1 KiB context_json; "
        f"{machine.get('cpus')} cores, {fs.get('type')}, {machine.get('python')}"
    )

    by_speed = sorted(contenders, key=lambda item: lookup(item[1], "mixed", "ops_per_s") or 0)
    throughput = tuple(
        Bar(name, lookup(result, "mixed", "ops_per_s") or 0, _COLOURS.get(result["family"], "black"))
        for name, result in by_speed
    )
    floor = next((bar.value for bar in throughput if bar.name == FLOOR), None)

    by_write = sorted(
        contenders, key=lambda item: lookup(item[1], "mixed", "latency_us", "write", "p50") or 0
    )
    latency_p50 = tuple(
        (kind, tuple(lookup(result, "mixed", "latency_us", kind, "p50") or 0 for _, result in by_write))
        for kind in LATENCY_KINDS
    )

    # The panel plots the mixed workload; updates-only runs (issue 15) are in the text report.
    runs = [
        r for r in lookup(results, "concurrency", "threads") or [] if r.get("workload", "mixed") == "mixed"
    ]
    series = (
        Series(
            name,
            tuple(sorted((run["threads"], run["ops_per_s"]) for run in runs if run["contender"] == name)),
        )
        for name in THREAD_SERIES
    )
    processes = tuple(
        sorted(
            (run["processes"], run["ops_per_s"]) for run in lookup(results, "concurrency", "processes") or []
        )
    )
    sqlite_four = concurrent_throughput(results, "sqlite-full", "threads", 4)

    return PlotData(
        title=title,
        throughput=throughput,
        floor_target=0.9 * floor if floor else None,
        latency_names=tuple(name for name, _ in by_write),
        latency_p50=latency_p50,
        thread_series=tuple(line for line in series if line.points),
        process_points=processes,
        group_target=3 * sqlite_four if sqlite_four else None,
        worker_counts=tuple(sorted({run["threads"] for run in runs} | {count for count, _ in processes})),
        scale=tuple(
            ScaleBar(
                entry["sessions"],
                entry["reopen_snapshot_ms"],
                entry["reopen_replay_ms"],
                entry["heap_bytes_per_session"],
            )
            for entry in lookup(results, "scale") or []
        ),
    )


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
    data = plot_data(results)
    figure, axes = plt.subplots(2, 2, figsize=(15, 10.5))
    _draw_throughput(axes[0][0], data)
    _draw_latency(axes[0][1], data)
    _draw_concurrency(axes[1][0], data)
    _draw_reopen(axes[1][1], data)
    figure.suptitle(data.title, fontsize=12)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def _draw_throughput(axis: Any, data: PlotData) -> None:
    values = [bar.value for bar in data.throughput]
    bars = axis.barh(
        [bar.name for bar in data.throughput], values, color=[bar.colour for bar in data.throughput]
    )
    axis.set_xscale("log")
    axis.set_xlabel("mixed phase, calls/s (log scale; higher is better)")
    axis.set_title("Mixed phase throughput, 1 thread (blue filestore, orange alternatives, grey floors)")
    for bar, value in zip(bars, values, strict=True):
        axis.text(value * 1.05, bar.get_y() + bar.get_height() / 2, f"{value:,.0f}", va="center", fontsize=8)
    axis.set_xlim(right=max(values, default=1) * 4)
    if data.floor_target is not None:
        axis.axvline(data.floor_target, color="#1f77b4", linestyle=":", linewidth=1)
        axis.text(
            data.floor_target,
            -0.9,
            " target for filestore-fsync:\n 0.9 x durable floor",
            fontsize=7,
            va="bottom",
        )


def _draw_latency(axis: Any, data: PlotData) -> None:
    height = 0.27
    for offset, (kind, values) in enumerate(data.latency_p50):
        positions = [index + (offset - 1) * height for index in range(len(values))]
        axis.barh(positions, values, height=height, color=_LATENCY_COLOURS[kind], label=f"{kind} p50")
    axis.set_yticks(range(len(data.latency_names)), data.latency_names)
    axis.set_xscale("log")
    axis.set_xlabel("microseconds (log scale; lower is better)")
    axis.set_title("p50 latency per call, mixed phase")
    axis.legend(loc="lower right", fontsize=8)


def _draw_concurrency(axis: Any, data: PlotData) -> None:
    for series in data.thread_series:
        colour, marker = _SERIES_STYLE[series.name]
        axis.plot(
            *zip(*series.points, strict=True), marker=marker, color=colour, label=f"{series.name}, threads"
        )
    if data.process_points:
        axis.plot(
            *zip(*data.process_points, strict=True),
            marker="D",
            linestyle="--",
            color="#8c564b",
            label="filestore-fsync, processes",
        )
    if data.group_target is not None:
        axis.axhline(data.group_target, color="#1f77b4", linestyle=":", linewidth=1)
        axis.text(
            1,
            data.group_target,
            "target for filestore-group, 4 threads: 3 x sqlite-full",
            fontsize=7,
            va="bottom",
        )
    axis.set_xlabel("threads or processes")
    axis.set_ylabel("mixed phase, calls/s (all workers)")
    axis.set_title("Durable writers sharing one store (group commit shares fdatasyncs)")
    axis.set_xscale("log", base=2)
    axis.set_xticks(data.worker_counts, [str(count) for count in data.worker_counts])
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)


def _draw_reopen(axis: Any, data: PlotData) -> None:
    width = 0.38
    for offset, (values, colour, label) in enumerate(
        (
            ([entry.snapshot_ms for entry in data.scale], "#1f77b4", "with a fresh snapshot"),
            ([entry.replay_ms for entry in data.scale], "#aec7e8", "full replay (sessions.idx deleted)"),
        )
    ):
        positions = [index + (offset - 0.5) * width for index in range(len(values))]
        bars = axis.bar(positions, values, width=width, color=colour, label=label)
        for bar, value in zip(bars, values, strict=True):
            axis.text(
                bar.get_x() + bar.get_width() / 2, value * 1.08, f"{value:,.0f} ms", ha="center", fontsize=8
            )
    axis.set_xticks(range(len(data.scale)), [f"{entry.sessions:,} sessions" for entry in data.scale])
    axis.set_yscale("log")
    axis.set_ylabel("ms to open and read one session (log scale)")
    axis.set_title("Reopen time")
    axis.legend(fontsize=8)
    heaps = ", ".join(f"{entry.sessions:,}: {entry.heap_bytes_per_session:.0f} B" for entry in data.scale)
    if heaps:
        axis.text(
            0.02, 0.95, f"Python heap per session: {heaps}", transform=axis.transAxes, fontsize=8, va="top"
        )
    if data.scale:
        values = [ms for entry in data.scale for ms in (entry.snapshot_ms, entry.replay_ms)]
        axis.set_ylim(bottom=min(values) / 3, top=max(values) * 6)
