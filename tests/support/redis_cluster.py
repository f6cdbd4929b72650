"""Throwaway Redis Cluster and Sentinel groups on loopback, started once per test session, stopped by pid.

``cluster_nodes()``: 3 masters and 3 replicas (``redis-server
--cluster-enabled yes`` and ``redis-cli --cluster create``), up when every
slot is served and every master has its replica. ``sentinel_group()``: a
master, a replica and three Sentinels with a short ``down-after-milliseconds``,
so a failover takes a few seconds; it can kill its master, and bring the old
master back as the new one's replica for the next test. Every wait polls the
servers (``CLUSTER INFO``, ``INFO replication``, Sentinel's view) until a
deadline. Without the binaries, tests skip locally and fail in CI, as
``redis_server`` does.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import pytest
import redis

MASTER_NAME: Final = "fsmaster"
_DEADLINE_S: Final = 60.0


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the Redis tests")
        pytest.skip(message)
    return found


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """``count`` free ports whose cluster bus port (+10000) is free too, below the ephemeral range."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 30000)
        if port not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = _DEADLINE_S) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` naming ``what`` after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if condition():
                return
        except redis.exceptions.RedisError:
            pass  # not up yet, or between roles
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis test servers: {what} within {deadline_s} s")
        time.sleep(0.05)


def _ask(port: int, *command: str) -> object:
    client: Any = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


def _info(port: int, section: str) -> dict[str, object]:
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2)
    try:
        info: dict[str, object] = client.info(section)
        return info
    finally:
        client.close()


def _replica_online(master: int) -> bool:
    """Whether ``master`` has one replica, done syncing (only then does it acknowledge WAIT)."""
    info = _info(master, "replication")
    replica = info.get("slave0")
    online = isinstance(replica, dict) and replica["state"] == "online"
    return int(str(info["connected_slaves"])) == 1 and online


@attrs.define
class _Servers:
    """Processes this module started, by port; all stopped at exit."""

    directory: Path
    processes: dict[int, subprocess.Popen[bytes]] = attrs.field(factory=dict)

    def start(self, port: int, *args: str) -> None:
        here = self.directory / str(port)
        here.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [_binary("redis-server"), *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(here)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self._alive(port) and _ask(port, "PING") is True, f"port {port} answering PING")

    def _alive(self, port: int) -> bool:
        if self.processes[port].poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited")
        return True

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def _servers(prefix: str) -> _Servers:
    servers = _Servers(Path(tempfile.mkdtemp(prefix=prefix)))
    atexit.register(servers.stop_all)
    return servers


_NO_DISK: Final = ("--save", "", "--appendonly", "no")
_REPLICAS: Final = ("--cluster-replicas", "1", "--cluster-yes")
_cluster: list[int] | None = None


def cluster_nodes() -> list[int]:
    """The ports of the test cluster's nodes (masters first as created), starting it on first use."""
    global _cluster  # noqa: PLW0603 - one cluster per test session
    if _cluster is not None:
        return _cluster
    cli = _binary("redis-cli")
    servers = _servers("filestore-cluster-")
    ports = cluster_ports(6)
    for port in ports:
        servers.start(
            port,
            *_NO_DISK,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            "2000",
        )
    subprocess.run(
        [cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in ports), *_REPLICAS],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )

    def ready() -> bool:
        for port in ports:
            info = str(_ask(port, "CLUSTER", "INFO"))
            if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                return False
        masters = [port for port in ports if _info(port, "replication")["role"] == "master"]
        return len(masters) == 3 and all(_replica_online(port) for port in masters)

    wait_until(ready, "the cluster serving every slot, each master with its replica in sync")
    _cluster = ports
    return ports


def cluster_url(namespace: str) -> str:
    """An ``open_store`` spec of the test cluster (two of its nodes; the client finds the rest)."""
    ports = cluster_nodes()
    return f"redis+cluster://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}?namespace={namespace}"


@attrs.define
class SentinelGroup:
    """A master, its replica and three Sentinels watching it as ``MASTER_NAME``."""

    servers: _Servers
    data_ports: list[int]
    sentinel_ports: list[int]

    def url(self, namespace: str) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}?namespace={namespace}"

    def master(self) -> int:
        """The port the Sentinels name as master (all three agreeing)."""
        named = set()
        for port in self.sentinel_ports:
            with _sentinel(port) as client:
                address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            named.add(int(address[1]))
        if len(named) != 1:
            raise redis.exceptions.ConnectionError(f"the Sentinels disagree: {sorted(named)}")
        return named.pop()

    def replica(self) -> int:
        return next(port for port in self.data_ports if port != self.master())

    def healthy(self) -> bool:
        """The named master serves writes with its one replica linked and caught up."""
        master = self.master()
        if _info(master, "replication")["role"] != "master" or not _replica_online(master):
            return False
        replica = _info(self.replica(), "replication")
        return replica["role"] == "slave" and replica["master_link_status"] == "up"

    def kill_master(self) -> int:
        """SIGKILL the master; its port."""
        master = self.master()
        self.servers.kill(master)
        return master

    def failed_over_from(self, old: int) -> bool:
        """Whether the Sentinels name another master than ``old``, and it serves writes."""
        new = self.master()
        return new != old and _info(new, "replication")["role"] == "master"

    def restore(self) -> None:
        """Start any killed server again as the master's replica; wait until all is healthy."""
        wait_until(lambda: _info(self.master(), "replication")["role"] == "master", "a master named")
        for port in self.data_ports:
            if port not in self.servers.processes:
                self.servers.start(port, *_NO_DISK, "--replicaof", "127.0.0.1", str(self.master()))
        wait_until(self.healthy, "the Sentinel group healthy again (master, linked replica)")

    @contextlib.contextmanager
    def replica_paused(self) -> Iterator[int]:
        """The replica stopped (SIGSTOP) inside the block, so it receives nothing; resumed after."""
        replica = self.replica()
        process = self.servers.processes[replica]
        process.send_signal(signal.SIGSTOP)
        try:
            yield replica
        finally:
            process.send_signal(signal.SIGCONT)


_sentinels: SentinelGroup | None = None


def sentinel_group() -> SentinelGroup:
    """The test Sentinel group, started on first use, healthy when returned."""
    global _sentinels  # noqa: PLW0603 - one group per test session
    if _sentinels is None:
        servers = _servers("filestore-sentinel-")
        master, replica, *watchers = cluster_ports(5)
        servers.start(master, *_NO_DISK)
        servers.start(replica, *_NO_DISK, "--replicaof", "127.0.0.1", str(master))
        for port in watchers:
            config = servers.directory / f"sentinel-{port}.conf"
            config.write_text(
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 4000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            servers.start(port, str(config), "--sentinel")
        _sentinels = SentinelGroup(servers, [master, replica], watchers)

        wait_until(
            lambda: all(_sentinel_sees(port) for port in watchers),
            "every Sentinel seeing the replica and the other Sentinels",
        )
    _sentinels.restore()
    return _sentinels


def _sentinel(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2)


def _sentinel_sees(port: int) -> bool:
    with _sentinel(port) as client:
        state = client.sentinel_master(MASTER_NAME)
    return int(state["num-slaves"]) == 1 and int(state["num-other-sentinels"]) == 2
