"""Clocks the tests advance: TTLs expire when a test says so.

``ManualClock`` moves by fiat (the memory and file stores take it as their
clock); ``ServerClock`` is a Redis server's, whose TTLs run on its own time.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis


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


class AdvancingClock(Protocol):
    """A clock a test moves on: ``ManualClock`` by fiat, ``ServerClock`` by waiting."""

    def __call__(self) -> int: ...

    def advance(self, ms: int) -> None: ...


class ServerClock:
    """The Redis server's clock (``TIME``) in unix milliseconds: the clock its TTLs run on.

    ``advance(ms)`` returns once the server's own ``TIME`` has moved on by
    ``ms`` (checked, not assumed from a sleep of that length), so a key given
    a shorter TTL before the call has expired after it.
    """

    def __init__(self, url: str | None = None) -> None:
        from .redis_server import redis_url  # noqa: PLC0415 - starts the server on first use

        self._client = redis.Redis.from_url(url or redis_url())

    def __call__(self) -> int:
        seconds, micros = self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def advance(self, ms: int) -> None:
        target = self() + ms
        while (remaining := target - self()) > 0:
            time.sleep(remaining / 1000)

    def close(self) -> None:
        self._client.close()
