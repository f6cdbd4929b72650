"""The benchmark's ``writepath`` section: the Python filestore spends per write (issue 15, part 2).

filestore's ``update`` with ``durability="none"`` against the no-sync floor's
(``floor-append-nosync``, one ``write`` per call), on the same sessions, in
alternating batches so both share the machine's noise, CPU time of the
measuring thread. In the same rounds it times, alone, the system calls each
makes per write and ``SessionData.to_cbor`` (the session's own encoding,
which both pay), so the Python around them is what is left:

- filestore: ``flock`` and unlock of the writer lock, a 28-byte ``pread`` at
  the log's end (the look for other processes' records), ``lseek`` (the
  file's size) and a ``pwrite`` of the frame into preallocated space;
- the floor: one ``write`` of its record on an ``O_APPEND`` file.

Issue 15's target: filestore's Python per write (its CPU time per update,
less its system calls and ``to_cbor``) at most ``TARGET_US``; and, in the
main table, ``none``'s mixed throughput at least 0.8x the floor's
(``ratios_info``: ``none-vs-nosync-floor``). Nothing here asserts a timing.
"""

from __future__ import annotations

import fcntl
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from filestore import SessionData
from tools.bench import workload as wl
from tools.bench.contenders import Contender
from tools.bench.registry import SPEC_BY_NAME

TARGET_US: Final = 10.0
_FRAME_OVERHEAD: Final = 28 + 110  # frame header, and the record's key, scope and CBOR heads (about)
_SCRATCH: Final = 1 << 20


def _batch_ns(calls: int, call: Callable[[int], object]) -> float:
    """CPU ns per call of ``call(number)`` for ``number`` in ``range(calls)``."""
    started = time.thread_time_ns()
    for number in range(calls):
        call(number)
    return (time.thread_time_ns() - started) / calls


def _updates(store: Contender, keys: list[str], datas: list[SessionData]) -> Callable[[int], object]:
    update = store.update
    return lambda number: update(keys[number], datas[number])


def _encodes(datas: list[SessionData]) -> Callable[[int], object]:
    return lambda number: datas[number].to_cbor()


class _Syscalls:
    """The system calls of one write of each side, on scratch files, without the stores around them."""

    def __init__(self, work: Path, frame_size: int, floor_size: int) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(work / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        self._log = os.open(work / "log", os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self._log, bytes(_SCRATCH), 0)  # preallocated, as the store's log
        self._append = os.open(work / "append", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._frame = b"\x01" * frame_size
        self._record = b"\x01" * floor_size
        self._at = 0

    def store_write(self, _number: int) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pread(self._log, 28, self._at + len(self._frame))
        os.lseek(self._log, 0, os.SEEK_END)
        os.pwrite(self._log, self._frame, self._at)
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._at = (self._at + len(self._frame)) % (_SCRATCH - 2 * len(self._frame))

    def floor_write(self, _number: int) -> None:
        os.write(self._append, self._record)

    def close(self) -> None:
        for fd in (self._lock, self._log, self._append):
            os.close(fd)


def measure_write_path(
    work: Path, population: wl.Population, *, sessions: int = 2000, batch: int = 200, rounds: int = 40
) -> dict[str, Any]:
    """Per-write CPU µs of each side, their system calls and ``to_cbor``, the Python left, the ratio."""
    names = ("filestore-none", "floor-append-nosync")
    stores: dict[str, Contender] = {}
    keys: dict[str, list[str]] = {}
    versions = [[population.session(number, version) for number in range(sessions)] for version in (1, 2)]
    blob_size = round(statistics.mean(len(data.to_cbor()) for data in versions[0]))
    syscalls = _Syscalls(work / "syscalls", blob_size + _FRAME_OVERHEAD, blob_size + 60)
    samples: dict[str, list[float]] = {
        name: [] for name in (*names, "filestore_syscalls", "floor_syscalls", "to_cbor")
    }
    try:
        for name in names:
            store = SPEC_BY_NAME[name].open(work / f"write-{name}")
            stores[name] = store
            made: dict[int, str] = {}
            wl.run_plan(store, wl.plan_load(population, range(sessions)).ops, made)
            keys[name] = [made[number] for number in range(sessions)]
        for round_number in range(rounds):
            start = (round_number * batch) % max(sessions - batch, 1)
            datas = versions[round_number % 2][start : start + batch]
            sides = [
                (name, _updates(stores[name], keys[name][start : start + batch], datas)) for name in names
            ]
            if round_number % 2:
                sides.reverse()
            sides += [
                ("filestore_syscalls", syscalls.store_write),
                ("floor_syscalls", syscalls.floor_write),
                ("to_cbor", _encodes(datas)),
            ]
            for name, call in sides:
                samples[name].append(_batch_ns(len(datas), call))
    finally:
        for store in stores.values():
            store.close()
        syscalls.close()
    us = {name: statistics.median(values) / 1000 for name, values in samples.items()}
    python_us = us["filestore-none"] - us["filestore_syscalls"] - us["to_cbor"]
    ratios = [
        floor / mine
        for floor, mine in zip(samples["floor-append-nosync"], samples["filestore-none"], strict=True)
    ]
    return {
        "sessions": sessions,
        "batch": batch,
        "rounds": rounds,
        "session_cbor_bytes": blob_size,
        "us_per_write": {name: round(value, 2) for name, value in us.items()},
        "python_us": round(python_us, 2),
        "floor_python_us": round(us["floor-append-nosync"] - us["floor_syscalls"] - us["to_cbor"], 2),
        # Writes alone, as throughput: the floor's CPU time per write over filestore's.
        "ratio": round(statistics.median(ratios), 3),
        "target": f"python_us <= {TARGET_US:g}",
        "holds": python_us <= TARGET_US,
    }


def write_path_text(results: Any) -> list[str]:
    """The writepath section as report lines (none if it did not run)."""
    section = results.get("write_path") if isinstance(results, dict) else None
    if not section:
        return []
    us = section["us_per_write"]
    return [
        "",
        f"write path: CPU us per update, durability none, {section['session_cbor_bytes']:,}-byte sessions, "
        f"median of {section['rounds']} rounds",
        f"  filestore-none {us['filestore-none']:.2f} us (system calls {us['filestore_syscalls']:.2f}, "
        f"to_cbor {us['to_cbor']:.2f}): Python {section['python_us']:.2f} us",
        f"  floor-append-nosync {us['floor-append-nosync']:.2f} us (system call {us['floor_syscalls']:.2f}, "
        f"to_cbor {us['to_cbor']:.2f}): Python {section['floor_python_us']:.2f} us",
        f"  floor / filestore per write {section['ratio']:.2f}x; target {section['target']}: "
        f"{'yes' if section['holds'] else 'NO'}",
    ]
