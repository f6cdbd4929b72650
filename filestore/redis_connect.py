"""The Redis clients a ``RedisSessionStore`` runs on, from its URL: one server, a cluster, or Sentinel.

- ``redis://host:port/db``, ``rediss://...``, ``unix://path``: one server (redis-py's URLs);
- ``redis+cluster://host:port[,host:port...]``: a Redis Cluster, found from any of those nodes;
- ``redis+sentinel://host:port[,host:port...]/MASTER_NAME``: the master the Sentinels name,
  followed through failovers (the client asks the Sentinels again when its master goes).

``user:password@`` before the hosts is passed on (to the nodes; for Sentinel,
to the master). A ``?namespace=`` is the store's, split off by
``filestore.backends.open_store``; any other query is refused here.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from typing import Any, Final

import redis
import redis.cluster
import redis.sentinel

from filestore.errors import BackendUnavailableError, InvalidInputError
from filestore.redis_layout import CORRUPT_PREFIX, corrupt

CLUSTER_SCHEME: Final = "redis+cluster://"
SENTINEL_SCHEME: Final = "redis+sentinel://"
SCHEMES: Final = ("redis://", "rediss://", "unix://", CLUSTER_SCHEME, SENTINEL_SCHEME)

Client = redis.Redis | redis.cluster.RedisCluster


def connect(url: str, *, connect_timeout: float, command_timeout: float) -> Client:
    """The client ``url`` names (see module docs); it connects lazily, on the first command."""
    timeouts: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": command_timeout,
        "decode_responses": True,
    }
    if not url.startswith((CLUSTER_SCHEME, SENTINEL_SCHEME)):
        return redis.Redis.from_url(url, **timeouts)
    parsed = urllib.parse.urlsplit(url)
    if parsed.query or parsed.fragment:
        raise InvalidInputError(
            f"{parsed.scheme}:// URLs take no options but namespace: {url!r}", field="url", rule="a URL"
        )
    credentials, hosts = _hosts(parsed.netloc, url)
    if url.startswith(CLUSTER_SCHEME):
        if parsed.path not in {"", "/"}:
            raise InvalidInputError(
                f"a cluster has no databases: no path in {url!r}", field="url", rule="a URL"
            )
        node: Any = redis.cluster.ClusterNode  # redis-py leaves it untyped
        cluster: Any = redis.cluster.RedisCluster
        client: redis.cluster.RedisCluster = cluster(
            startup_nodes=[node(host, port) for host, port in hosts], **credentials, **timeouts
        )
        return client
    name = urllib.parse.unquote(parsed.path.strip("/"))
    if not name or "/" in name:
        raise InvalidInputError(
            f"a Sentinel URL names its master: redis+sentinel://HOST:PORT/MASTER_NAME, not {url!r}",
            field="url",
            rule="a URL",
        )
    sentinels: Any = redis.sentinel.Sentinel  # redis-py leaves it untyped
    sentinel = sentinels(
        hosts,
        socket_connect_timeout=connect_timeout,
        socket_timeout=command_timeout,
    )
    master: redis.Redis = sentinel.master_for(name, **credentials, **timeouts)
    return master


def _hosts(netloc: str, url: str) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The credentials and ``(host, port)`` list of a ``user:password@host:port,host:port`` netloc."""
    credentials: dict[str, Any] = {}
    userinfo, _at, hostlist = netloc.rpartition("@")
    if userinfo:
        user, _colon, password = userinfo.partition(":")
        if user:
            credentials["username"] = urllib.parse.unquote(user)
        if password:
            credentials["password"] = urllib.parse.unquote(password)
    hosts: list[tuple[str, int]] = []
    for part in hostlist.split(","):
        host, _colon, port = part.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInputError(
                f"expected HOST:PORT[,HOST:PORT...] in {url!r}, not {part!r}", field="url", rule="a URL"
            )
        hosts.append((host.strip("[]"), int(port)))
    return credentials, hosts


def failure(error: Exception, address: str) -> Exception:
    """What a store raises for redis-py's ``error``: never redis-py's own exception.

    A script's ``CORRUPT "<key>"`` reply is ``CorruptionError`` (the stored
    value is damaged); anything else, refused commands included, is
    ``BackendUnavailableError``: a server down or timing out, a cluster
    between owners of a slot, a Sentinel naming no master yet, a master
    demoted to replica (READONLY), fewer replicas than ``min_replicas``.
    """
    text = str(error)
    if isinstance(error, redis.exceptions.ResponseError) and text.startswith(CORRUPT_PREFIX):
        name, _end = json.JSONDecoder().raw_decode(text, len(CORRUPT_PREFIX))
        return corrupt(name, "it does not decode as JSON")
    if isinstance(error, redis.exceptions.ResponseError):
        return BackendUnavailableError(f"Redis at {address} refused a command: {text}", address=address)
    if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return BackendUnavailableError(f"Redis at {address} is unavailable: {text}", address=address)
    return BackendUnavailableError(
        f"Redis at {address} is unavailable: {type(error).__name__}: {text}", address=address
    )


def timeout(name: str, value: float) -> float:
    """``value`` as a positive, finite number of seconds (``0`` would make the socket non-blocking)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise InvalidInputError(
            f"{name} must be a positive, finite number of seconds, not {value!r}", field=name, rule="> 0"
        )
    return float(value)


def describe(client: Client) -> str:
    """An address for messages, of a client given ready-made."""
    if isinstance(client, redis.cluster.RedisCluster):
        cluster: Any = client
        nodes = ",".join(node.name for node in cluster.get_primaries())
        return f"{CLUSTER_SCHEME}{nodes}"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    if isinstance(client.connection_pool, redis.sentinel.SentinelConnectionPool):
        return f"{SENTINEL_SCHEME}.../{client.connection_pool.service_name}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
