"""What a benchmark run was measured on, read from the machine rather than assumed."""

from __future__ import annotations

import os
import platform
import shutil
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
"""The repository: default output paths live under it, and its git state is recorded."""


def machine_facts(work: Path) -> dict[str, object]:
    """What the numbers were measured on (read from the machine, not assumed)."""
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "memory": _proc_field("/proc/meminfo", "MemTotal"),
        "filesystem": _filesystem(work),
        "sqlite": sqlite3.sqlite_version,
        "packages": {name: _version(name) for name in ("filestore", "cbor2", "diskcache", "matplotlib")},
        "git": _git_state(),
        "loadavg_start": [round(value, 2) for value in os.getloadavg()],
    }


def _proc_field(path: str, field: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip() == field:
                    return value.strip()
    except OSError:
        return None
    return None


def _filesystem(path: Path) -> dict[str, str] | None:
    """The mount holding ``path``: the longest mount point that is a prefix of it."""
    target = os.path.realpath(path)
    best: dict[str, str] | None = None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, point, kind, *_ = line.split()
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) > len(best["mount"])):
                    best = {"type": kind, "mount": point, "device": device}
    except OSError:
        return None
    return best


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_state() -> dict[str, object] | None:
    git = shutil.which("git")
    if git is None:
        return None
    head = subprocess.run(
        [git, "rev-parse", "--short", "HEAD"], check=False, cwd=ROOT, capture_output=True, text=True
    )
    status = subprocess.run(
        [git, "status", "--porcelain"], check=False, cwd=ROOT, capture_output=True, text=True
    )
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
