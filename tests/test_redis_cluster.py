"""RedisSessionStore on a real Redis Cluster (3 masters, 3 replicas on loopback), beyond the contract suite.

The contract and transcript suites run on the cluster through the
``redis-cluster`` backend; here: the key layout spread over the nodes, a
writer stopped between any two steps of a mutation, concurrent writers on
different nodes, ``min_replicas`` and the steps' own Lua runtime.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest
import redis
import redis.cluster
import redis.sentinel

from filestore import (
    BackendUnavailableError,
    CorruptionError,
    InvalidInputError,
    RedisSessionStore,
    ReplyScope,
    SessionData,
    SessionKey,
    SessionNotFoundError,
    TenantCtx,
)
from filestore.backends import open_store
from filestore.redis_steps import StepScript, run, steps

from .support import ctx, data
from .support.redis_cluster import cluster_nodes, cluster_url

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    return f"c:{request.node.name}:{random.randrange(1 << 30)}"


@pytest.fixture
def cluster() -> Iterator[RedisSessionStore]:
    """A raw cluster client's store is made per test; this is the store on a fresh namespace."""
    with open_store(cluster_url(f"c:{random.randrange(1 << 30)}")) as store:
        assert isinstance(store, RedisSessionStore)
        yield store


@pytest.fixture
def raw() -> Iterator[redis.cluster.RedisCluster]:
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster_nodes()[0], decode_responses=True)
    yield client
    client.close()


def test_keys_are_greentic_layout_spread_over_the_masters(
    cluster: RedisSessionStore, raw: redis.cluster.RedisCluster
) -> None:
    """No hash tag: sessions and lookups sit at greentic's keys, on all three masters."""
    ns = cluster.namespace
    keys = [cluster.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(30)]
    assert raw.get(f"{ns}:session:{keys[0]}") == data(ctx(user="u0"), step=0).to_json()
    assert raw.get(f"{ns}:user:dev:acme:support:u0") == keys[0]
    client: Any = raw
    nodes = {client.get_node_from_key(f"{ns}:session:{key}").name for key in keys}
    assert len(nodes) == 3
    assert len(list(cluster.iter_sessions())) == 30


class _Stop(redis.exceptions.ConnectionError):
    """The writer's connection dies here (a process killed mid-mutation sends nothing more)."""


@contextlib.contextmanager
def _stopped_after(store: RedisSessionStore, commands: int) -> Iterator[list[int]]:
    """Every script of ``store`` sends only ``commands`` commands, then its connection fails."""
    sent = [0]
    scripts = [value for value in vars(store).values() if isinstance(value, StepScript)]
    originals = {id(script): script._execute for script in scripts}

    def limited(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def execute(command: Any) -> Any:
            if sent[0] >= commands:
                raise _Stop("stopped between two steps")
            sent[0] += 1
            return original(command)

        return execute

    for script in scripts:
        script._execute = limited(script._execute)  # type: ignore[method-assign,assignment]
    try:
        yield sent
    finally:
        for script in scripts:
            script._execute = originals[id(script)]  # type: ignore[method-assign]


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def _check_readers(store: RedisSessionStore, scopes: list[TenantCtx]) -> None:
    """What every reader must see at any moment: lookups and waits only ever of their own scope."""
    for scope in scopes:
        found = store.find_by_user(scope.with_user(None), "alice")
        if found is not None:
            owner = found[1].tenant_ctx
            assert (owner.env, owner.tenant_id, owner.effective_team) == (
                scope.env,
                scope.tenant_id,
                scope.effective_team,
            )
        for key in store.list_waits_for_user(scope, "alice"):
            waiting = store.get_session(key)
            assert waiting is not None
            assert waiting.tenant_ctx.effective_team == scope.effective_team
    for stored in store.iter_sessions():
        assert store.get_session(stored.key) == stored.data


NOTEAM = ctx(team=None, user="alice")
DASH = ctx(team="-", user="alice")
REPLY = ReplyScope("chat", "c1", None)


def _mutations(store: RedisSessionStore, keys: dict[str, SessionKey]) -> dict[str, Callable[[], object]]:
    """Each mutation of the store, in the scope that shares greentic's keys with ``NOTEAM``."""
    return {
        "create": lambda: store.create_session(DASH, data(DASH, step=2)),
        "update": lambda: store.update_session(keys["dash"], data(DASH, step=3)),
        "remove": lambda: store.remove_session(keys["dash"]),
        "register": lambda: store.register_wait(DASH, "alice", REPLY, keys["dash"], data(DASH, step=4)),
        "clear": lambda: store.clear_wait(DASH, "alice", REPLY),
        "purge": store.purge_expired,
    }


@pytest.mark.parametrize("mutation", ["create", "update", "remove", "register", "clear", "purge"])
def test_a_writer_stopped_between_any_two_steps_leaves_readers_right(namespace: str, mutation: str) -> None:
    """Stopped after each step in turn: readers never see another scope's session, and a retry completes.

    The two scopes (no team, team ``-``) share greentic's lookup and wait keys,
    the hardest case for a lookup pointing at the wrong session.
    """
    step = 0
    while True:
        with open_store(cluster_url(f"{namespace}:{step}")) as store:
            assert isinstance(store, RedisSessionStore)
            kept = store.create_session(NOTEAM, data(NOTEAM, step=1))
            store.register_wait(NOTEAM, "alice", REPLY, kept, data(NOTEAM, step=1))
            keys = {"dash": store.create_session(DASH, data(DASH, step=0))}
            if mutation == "clear":
                store.register_wait(DASH, "alice", REPLY, keys["dash"], data(DASH, step=4))
            call = _mutations(store, keys)[mutation]
            with _stopped_after(store, step) as sent:
                try:
                    call()
                    finished = True
                except BackendUnavailableError as error:
                    cause = error.__cause__
                    finished = False
                if not finished:
                    assert isinstance(cause, _Stop)
            _check_readers(store, [NOTEAM, DASH])
            assert store.get_session(kept) == data(NOTEAM, step=1)
            assert store.find_wait_by_scope(NOTEAM, "alice", REPLY) == kept
            if mutation != "create":
                # The retry completes what was stopped (a remove stopped after the session went
                # answers not found: it was done; the entries left are cleaned by the readers).
                with contextlib.suppress(SessionNotFoundError) if mutation == "remove" else _nothing():
                    call()
                _check_readers(store, [NOTEAM, DASH])
            if mutation in {"update", "register"}:
                assert store.get_session(keys["dash"]) == data(DASH, step=3 if mutation == "update" else 4)
            if mutation == "remove":
                assert store.get_session(keys["dash"]) is None
                assert store.find_by_user(DASH, "alice") is None
            if mutation == "clear":
                # Stopped after its scope entries went, the session stays, no longer waiting.
                assert store.find_wait_by_scope(DASH, "alice", REPLY) is None
                assert store.list_waits_for_user(DASH, "alice") == []
                if finished:
                    assert store.get_session(keys["dash"]) is None
            assert store.find_by_user(NOTEAM, "alice") is not None
        if finished:
            assert sent[0] == step  # every step was tried once: none left
            return
        step += 1


def _cluster_worker(url: str, worker: int, rounds: int, shared: str, results: Connection) -> None:
    mine: dict[str, str] = {}
    with open_store(url) as store:
        own = ctx(user=f"w{worker}")
        key = store.create_session(own, data(own, step=0))
        for step in range(1, rounds):
            stored = data(own, step=worker * 10_000 + step)
            store.update_session(key, stored)
            mine[key] = stored.to_json()
            store.update_session(shared, data(ctx(user="shared"), step=worker * 10_000 + step))
    results.send(mine)


def test_concurrent_writers_on_different_nodes_lose_no_update(namespace: str) -> None:
    """Four processes write their own keys (on every master) and one shared key: nothing is lost.

    Each own key ends with its last acknowledged write; the shared key with
    the last write of one of the writers (last writer wins, as on one server).
    """
    url = cluster_url(namespace)
    with open_store(url) as store:
        shared = store.create_session(ctx(user="shared"), data(ctx(user="shared")))
    rounds = 60
    pipes = [FORK.Pipe(duplex=False) for _ in range(4)]
    workers = [
        FORK.Process(target=_cluster_worker, args=(url, worker, rounds, shared, pipes[worker][1]))
        for worker in range(4)
    ]
    for process in workers:
        process.start()
    finals: dict[str, str] = {}
    for receiver, _ in pipes:
        finals.update(receiver.recv())
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    with open_store(url) as store:
        for key, expected in finals.items():
            found = store.get_session(key)
            assert found is not None
            assert found.to_json() == expected
            assert store.find_by_user(found.tenant_ctx, str(found.tenant_ctx.user)) == (key, found)
        last = {data(ctx(user="shared"), step=w * 10_000 + rounds - 1) for w in range(4)}
        assert store.get_session(shared) in last


def test_min_replicas_waits_for_each_masters_replica(namespace: str) -> None:
    """min_replicas=1 is met (each master has a replica); 2 is not: unavailable, the write applied."""
    with open_store(cluster_url(namespace), min_replicas=1, replica_timeout=0.2) as store:
        key = store.create_session(ctx(), data(step=1))
        store.update_session(key, data(step=2))
        assert store.get_session(key) == data(step=2)
    with open_store(cluster_url(namespace), min_replicas=2, replica_timeout=0.05) as store:
        with pytest.raises(BackendUnavailableError, match="replicas acknowledged"):
            store.update_session(key, data(step=3))
        assert store.get_session(key) == data(step=3)


def test_damaged_value_on_the_cluster_is_internal(
    cluster: RedisSessionStore, raw: redis.cluster.RedisCluster
) -> None:
    """A stored value that is not JSON is CorruptionError on the cluster too (the steps' error reply)."""
    key = cluster.create_session(ctx(), data())
    raw.set(f"{cluster.namespace}:session:{key}", "{not json")
    with pytest.raises(CorruptionError, match=key):
        cluster.update_session(key, data(step=1))


def test_unreachable_cluster_is_unavailable() -> None:
    """No node answering: BackendUnavailableError at open, never a raw redis-py error."""
    port = cluster_nodes()[0] + 1
    while port in cluster_nodes():
        port += 1
    with pytest.raises(BackendUnavailableError):
        RedisSessionStore(f"redis+cluster://127.0.0.1:{port}", connect_timeout=0.5, command_timeout=0.5)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1",
        "redis+cluster://127.0.0.1:0",
        "redis+cluster://127.0.0.1:6379/0",
        "redis+cluster://127.0.0.1:6379?db=1",
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/a/b",
    ],
)
def test_bad_cluster_and_sentinel_urls_are_invalid_input(url: str) -> None:
    """Hosts without a port, a path on a cluster, options, a Sentinel URL without its master name."""
    with pytest.raises(InvalidInputError):
        RedisSessionStore(url)


def test_min_replicas_and_its_timeout_are_checked() -> None:
    """A negative count, a bool, or a WAIT longer than the socket's timeout are refused up front."""
    for bad in (-1, True, 1.5):
        with pytest.raises(InvalidInputError, match="min_replicas"):
            RedisSessionStore("redis://127.0.0.1:1/0", min_replicas=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="replica_timeout"):
        RedisSessionStore("redis://127.0.0.1:1/0", min_replicas=1, replica_timeout=5, command_timeout=5)


def test_steps_follow_redis_lua_semantics() -> None:
    """The steps' Lua sees nil replies as false, tables as arrays, and its error replies are ResponseError."""
    script = """
    local got = redis.call('GET', KEYS[1])
    if got ~= false then return 'unexpected' end
    local members = redis.call('SMEMBERS', KEYS[2])
    local decoded = cjson.decode(ARGV[1])
    if decoded[2] ~= cjson.null then return 'no null' end
    if ARGV[2] == 'fail' then error({err = 'CORRUPT ' .. cjson.encode('a"b\\n')}) end
    return {#members, members[1], decoded[1], true, false, 'after'}
    """
    replies = {"GET": None, "SMEMBERS": {"b", "a"}}
    answer = run(script, ["k", "s"], ['["x", null]', ""], lambda command: replies[command[0]])
    assert answer == [2, "a", "x", 1]
    with pytest.raises(redis.exceptions.ResponseError, match=r'^CORRUPT "a\\u0022b\\u000a"$'):
        run(script, ["k", "s"], ['["x", null]', "fail"], lambda command: replies[command[0]])
    walk = steps("return redis.call('SET', KEYS[1], 'v')", ["k"], [])
    assert next(walk) == ("SET", "k", "v")
    with pytest.raises(StopIteration) as done:
        walk.send(True)
    assert done.value.value == "OK"
    with pytest.raises(redis.exceptions.ResponseError, match="invalid JSON"):
        run("return cjson.decode('{')", [], [], lambda command: None)
    with pytest.raises(redis.exceptions.ResponseError, match="only strings"):
        run("return cjson.encode({})", [], [], lambda command: None)


def test_session_data_round_trips_through_the_steps(cluster: RedisSessionStore) -> None:
    """Non-ASCII, escapes and nested JSON survive the steps' JSON decoding unchanged."""
    odd = ctx(user="alice")
    stored = SessionData(odd, "flow", data(odd).cursor, '{"deep":[{"x":null,"y":[1,2.5,"é\\t\\"q\\""]}]}')
    key = cluster.create_session(odd, stored)
    assert cluster.find_by_user(odd, "alice") == (key, stored)
    assert next(cluster.iter_sessions()).data == stored


def test_a_ready_made_client_is_taken_and_named(namespace: str) -> None:
    """client=: a RedisCluster (run as steps), a Sentinel master or a plain Redis; the address says which."""
    nodes = cluster_nodes()
    cluster_client = redis.cluster.RedisCluster(host="127.0.0.1", port=nodes[0], decode_responses=True)
    with RedisSessionStore(client=cluster_client, namespace=namespace) as store:
        assert store.address.startswith("redis+cluster://127.0.0.1:")
        key = store.create_session(ctx(), data())
        assert store.find_by_user(ctx(), "u1") == (key, data())
    sentinels: Any = redis.sentinel.Sentinel
    sentinel = sentinels([("127.0.0.1", 1)])
    with RedisSessionStore(client=sentinel.master_for("somemaster"), namespace=namespace) as store:
        assert store.address == "redis+sentinel://.../somemaster"
    with pytest.raises(InvalidInputError, match="client must be"):
        RedisSessionStore(client=object())  # type: ignore[arg-type]


def test_credentials_in_a_url_reach_the_servers() -> None:
    """user:password@ before the hosts is passed to the master a Sentinel names (connects lazily)."""
    with RedisSessionStore("redis+sentinel://al%40ice:s%3Acret@127.0.0.1:1,[::1]:2/m") as store:
        client: Any = store._client
        assert client.connection_pool.connection_kwargs["username"] == "al@ice"
        assert client.connection_pool.connection_kwargs["password"] == "s:cret"  # noqa: S105 - a test value
        with pytest.raises(BackendUnavailableError, match="redis\\+sentinel://"):
            store.get_session("00000000-0000-4000-8000-000000000000")


def test_concurrent_writers_of_two_scopes_never_answer_each_other(namespace: str) -> None:
    """No team and the team ``-`` (sharing greentic's keys) written at once: each answer is its own scope's.

    Two writer threads create, update and remove in their own scope while
    two readers look both scopes up; every answer must be a session of the
    scope asked (or none).
    """
    url = cluster_url(namespace)
    stop = threading.Event()
    answers: list[tuple[TenantCtx, object]] = []
    failures: list[BaseException] = []

    def write(scope: TenantCtx) -> None:
        try:
            with open_store(url) as store:
                for step in range(60):
                    key = store.create_session(scope, data(scope, step=step))
                    store.update_session(key, data(scope, step=step + 1))
                    if step % 2:
                        store.remove_session(key)
        except BaseException as error:
            failures.append(error)

    def read() -> None:
        try:
            with open_store(url) as store:
                while not stop.is_set():
                    for scope in (NOTEAM, DASH):
                        found = store.find_by_user(scope, "alice")
                        answers.append((scope, None if found is None else found[1].tenant_ctx))
        except BaseException as error:
            failures.append(error)

    writers = [threading.Thread(target=write, args=(scope,)) for scope in (NOTEAM, DASH)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join(120)
    stop.set()
    for thread in readers:
        thread.join(30)
    assert failures == []
    found = [(asked, owner) for asked, owner in answers if isinstance(owner, TenantCtx)]
    assert found, "the readers saw no session at all"
    assert all(owner.effective_team == asked.effective_team for asked, owner in found)
