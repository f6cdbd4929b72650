"""A throwaway redis-server for the tests: started once on a free loopback port, stopped at exit.

Locally, without the binary, Redis tests skip with a message saying how to
install it; in CI (``CI`` set) they fail instead, so they can never be
skipped silently there.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import redis

_server: tuple[subprocess.Popen[bytes], str] | None = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes], directory: str) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    shutil.rmtree(directory, ignore_errors=True)


def redis_url() -> str:
    """The URL of the test server, starting it on first use."""
    global _server  # noqa: PLW0603 - one server per test session
    if _server is not None:
        return _server[1]
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the Redis tests")
        pytest.skip(message)
    directory = tempfile.mkdtemp(prefix="filestore-redis-")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            directory,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(_stop, process, directory)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.05)
    client.close()
    _server = (process, url)
    return url


def drop_namespace(namespace: str) -> None:
    """Delete every key of ``namespace`` from the test server.

    A test that leaves keys with a TTL must call it: the server counts an
    expired key until it reclaims it in the background, so a later test that
    compares the server's key count would see it change under it. SCAN itself
    reclaims the expired keys it meets.
    """
    client = redis.Redis.from_url(redis_url())
    try:
        names = list(client.scan_iter(match=f"{namespace}:*", count=500))
        if names:
            client.delete(*names)
    finally:
        client.close()
