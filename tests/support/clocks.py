"""A clock the tests advance: TTLs expire when a test says so, never by waiting."""

from __future__ import annotations

import threading


class ManualClock:
    """Unix milliseconds that move only by ``advance`` (a ``filestore.waits.Clock``)."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self._now = start_ms
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return self._now

    def advance(self, ms: int) -> None:
        with self._lock:
            self._now += ms
