"""RedisSessionStore beyond the shared contract: the greentic key layout, Rust-written
sessions, failures, several processes, and moving stores between backends."""

from __future__ import annotations

import json
import multiprocessing
import random
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import attrs
import pytest
import redis

from filestore import (
    BackendUnavailableError,
    CorruptionError,
    ErrorCode,
    FileSessionStore,
    InMemorySessionStore,
    InvalidInputError,
    RedisSessionStore,
    SessionData,
    TenantMismatchError,
)
from filestore.backends import MovableStore, migrate, open_store

from .support import ctx, data
from .support.redis_server import redis_url

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    return f"t:{request.node.name}:{random.randrange(1 << 30)}"


@pytest.fixture
def raw() -> redis.Redis:
    return redis.Redis.from_url(redis_url(), decode_responses=True)


def test_layout_matches_greentic_session(namespace: str, raw: redis.Redis) -> None:
    """Sessions and lookups sit at greentic-session's keys, values in serde's JSON shape."""
    with RedisSessionStore(redis_url(), namespace=namespace) as store:
        key = store.create_session(ctx(), data(step=1))
        teamless = ctx(team=None, user="u9")
        other = store.create_session(teamless, data(teamless))
    stored = json.loads(str(raw.get(f"{namespace}:session:{key}")))
    assert stored == data(step=1).to_dict()
    assert stored["tenant_ctx"]["tenant_id"] == "acme"
    assert stored["cursor"] == {"node_pointer": "node.1", "wait_reason": "input"}
    assert "pack_id" not in stored
    assert raw.get(f"{namespace}:user:dev:acme:support:u1") == key
    assert raw.get(f"{namespace}:user:dev:acme:-:u9") == other


@pytest.mark.parametrize(
    "stored",
    [
        "{not json",
        '{"tenant_ctx":NaN}',
        data().to_json().replace('"attempt":0', '"attributes":null,"attempt":0'),
    ],
    ids=["not-json", "nan", "attributes-null"],
)
def test_damaged_stored_json_is_internal(namespace: str, raw: redis.Redis, stored: str) -> None:
    """A stored session that does not decode is CorruptionError (greentic's Internal), never InvalidInput."""
    raw.set(f"{namespace}:session:bad-1", stored)
    raw.set(f"{namespace}:user:dev:acme:support:u1", "bad-1")
    with RedisSessionStore(redis_url(), namespace=namespace) as store:
        for call in (lambda: store.get_session("bad-1"), lambda: store.find_by_user(ctx(), "u1")):
            with pytest.raises(CorruptionError) as info:
                call()
            assert info.value.code is ErrorCode.INTERNAL
            assert info.value.path == f"{namespace}:session:bad-1"


def test_damaged_stored_json_is_internal_to_update_and_remove(namespace: str, raw: redis.Redis) -> None:
    """update and remove of a Rust-written session (no owner entry) that does not decode are Internal too."""
    raw.set(f"{namespace}:session:bad-1", '{"tenant_ctx":')
    with RedisSessionStore(redis_url(), namespace=namespace) as store:
        calls: list[Callable[[], object]] = [
            lambda: store.update_session("bad-1", data()),
            lambda: store.remove_session("bad-1"),
        ]
        for call in calls:
            with pytest.raises(CorruptionError) as info:
                call()
            assert info.value.code is ErrorCode.INTERNAL
            assert info.value.path == f"{namespace}:session:bad-1"
    assert raw.get(f"{namespace}:session:bad-1") == '{"tenant_ctx":'


def test_damaged_owner_entry_is_internal(namespace: str, raw: redis.Redis) -> None:
    """An owner entry that is JSON but no owner scope is CorruptionError (Internal) when listed."""
    with RedisSessionStore(redis_url(), namespace=namespace) as store:
        key = store.create_session(ctx(), data())
        raw.set(f"{namespace}:owner:{key}", '["dev"]')
        with pytest.raises(CorruptionError) as info:
            list(store.iter_sessions())
        assert info.value.path == f"{namespace}:owner:{key}"


def test_sessions_written_by_rust_are_served(namespace: str, raw: redis.Redis) -> None:
    """A session written in the Rust layout (no owner entry) is read, updated and removed correctly."""
    raw.set(f"{namespace}:session:rust-1", data(step=1).to_json())
    raw.set(f"{namespace}:user:dev:acme:support:u1", "rust-1")
    with RedisSessionStore(redis_url(), namespace=namespace) as store:
        assert store.find_by_user(ctx(), "u1") == ("rust-1", data(step=1))
        with pytest.raises(TenantMismatchError):
            store.update_session("rust-1", data(ctx(user="u2")))
        store.update_session("rust-1", data(step=2))
        assert store.get_session("rust-1") == data(step=2)
        store.remove_session("rust-1")
        assert store.find_by_user(ctx(), "u1") is None
    assert raw.get(f"{namespace}:user:dev:acme:support:u1") is None


def test_dangling_lookup_is_cleaned(namespace: str, raw: redis.Redis) -> None:
    """A lookup entry pointing at a missing session reads as None and is deleted."""
    raw.set(f"{namespace}:user:dev:acme:support:u1", "gone")
    with RedisSessionStore(redis_url(), namespace=namespace) as store:
        assert store.find_by_user(ctx(), "u1") is None
    assert raw.get(f"{namespace}:user:dev:acme:support:u1") is None


def test_unreachable_server_is_unavailable() -> None:
    """A server that does not answer raises BackendUnavailableError naming its address."""
    from .support.redis_server import free_port  # noqa: PLC0415

    url = f"redis://127.0.0.1:{free_port()}/0"
    with RedisSessionStore(url, connect_timeout=0.5, command_timeout=0.5) as store:
        with pytest.raises(BackendUnavailableError) as info:
            store.get_session("k")
        assert info.value.code is ErrorCode.UNAVAILABLE
        assert info.value.address == url
        assert url in str(info.value)
        with pytest.raises(BackendUnavailableError):
            store.create_session(ctx(), data())


def test_bad_namespace_is_invalid_input() -> None:
    """An empty namespace, or one with spaces, is refused."""
    for bad in ("", "a b"):
        with pytest.raises(InvalidInputError):
            RedisSessionStore(redis_url(), namespace=bad)


def _redis_worker(url: str, namespace: str, worker: int, rounds: int, results: Connection) -> None:
    rng = random.Random(worker)
    mine: dict[str, str | None] = {}
    with RedisSessionStore(url, namespace=namespace) as store:
        for step in range(rounds):
            context = ctx(user=rng.choice(("u1", "u2", "u3")))
            live = [key for key, value in mine.items() if value is not None]
            roll = rng.random()
            if roll < 0.4 or not live:
                stored = data(context, step=worker * 10_000 + step)
                mine[store.create_session(context, stored)] = stored.to_json()
            elif roll < 0.8:
                key = rng.choice(live)
                previous = SessionData.from_json(mine[key] or "")
                stored = data(previous.tenant_ctx, step=worker * 10_000 + step)
                store.update_session(key, stored)
                mine[key] = stored.to_json()
            else:
                key = rng.choice(live)
                store.remove_session(key)
                mine[key] = None
    results.send(mine)


def test_two_processes_lose_no_update(namespace: str, raw: redis.Redis) -> None:
    """Two processes' mixed workloads: every acknowledged write is there, the lookup agrees."""
    pipes = [FORK.Pipe(duplex=False) for _ in range(2)]
    workers = [
        FORK.Process(target=_redis_worker, args=(redis_url(), namespace, worker, 300, pipes[worker][1]))
        for worker in range(2)
    ]
    for process in workers:
        process.start()
    finals: dict[str, str | None] = {}
    for receiver, _ in pipes:
        finals.update(receiver.recv())
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    with RedisSessionStore(redis_url(), namespace=namespace) as store:
        for key, expected in finals.items():
            got = store.get_session(key)
            assert (None if got is None else got.to_json()) == expected
        for name in raw.scan_iter(match=f"{namespace}:user:*"):
            key = str(raw.get(name))
            assert finals.get(key) is not None, f"lookup {name} points at a removed session"
            found = store.get_session(key)
            assert found is not None
            assert name.endswith(":" + str(found.tenant_ctx.effective_user))


def test_open_store_picks_the_backend(tmp_path: Path, namespace: str) -> None:
    """open_store: memory:, a directory, or a redis URL (with ?namespace=)."""
    memory = open_store("memory:")
    assert isinstance(memory, InMemorySessionStore)
    with open_store(tmp_path / "s") as directory:
        assert isinstance(directory, FileSessionStore)
    with open_store(f"{redis_url()}?namespace={namespace}") as remote:
        assert isinstance(remote, RedisSessionStore)
        assert remote.namespace == namespace
    with pytest.raises(InvalidInputError):
        open_store("ftp://example")


def _fill(store: FileSessionStore, count: int) -> None:
    for number in range(count):
        context = ctx(user=f"u{number % 50}", team=None if number % 3 else "support")
        owner = context if number % 4 else ctx(user=None, team=context.team)
        store.create_session(context, data(owner, step=number))


def _contents(store: MovableStore) -> dict[str, tuple[tuple[object, ...], str, bool]]:
    return {
        str(stored.key): (tuple(stored.scope), stored.data.to_json(), stored.active)
        for stored in store.iter_sessions()
    }


def test_migrate_directory_to_redis_and_back(tmp_path: Path, namespace: str) -> None:
    """File -> Redis -> file keeps every key, owner (even a ctx-only user) and session."""
    with FileSessionStore(tmp_path / "a", durability="none") as source:
        _fill(source, 300)
        # Remove some users' newest sessions: their older ones then have no lookup.
        for number in range(250, 260):
            found = source.find_by_user(
                ctx(user=f"u{number % 50}", team=None if number % 3 else "support"), f"u{number % 50}"
            )
            if found is not None:
                source.remove_session(found[0])
        expected = _contents(source)
        with RedisSessionStore(redis_url(), namespace=namespace) as remote:
            report = migrate(source, remote)
            assert (report.source_sessions, report.copied, report.already_there) == (290, 290, 0)
            again = migrate(source, remote)
            assert (again.copied, again.already_there) == (0, 290)
            with FileSessionStore(tmp_path / "b") as back:
                migrate(remote, back)
                assert _contents(remote) == expected
                assert _contents(back) == expected
                for user in range(50):
                    for team in (None, "support"):
                        where = ctx(team=team, user=None)
                        wanted = source.find_by_user(where, f"u{user}")
                        assert remote.find_by_user(where, f"u{user}") == wanted
                        assert back.find_by_user(where, f"u{user}") == wanted


def test_migrate_refuses_to_overwrite(tmp_path: Path) -> None:
    """A key holding different data in the target stops the migration; nothing is overwritten."""
    with FileSessionStore(tmp_path / "a") as source, FileSessionStore(tmp_path / "b") as target:
        key = source.create_session(ctx(), data(step=1))
        stored = next(source.iter_sessions())
        target.import_session(attrs.evolve(stored, data=data(step=2)))
        with pytest.raises(InvalidInputError):
            migrate(source, target)
        assert target.get_session(key) == data(step=2)


@pytest.mark.slow
def test_migrate_100k_sessions_to_redis_and_back(tmp_path: Path, namespace: str) -> None:
    """The slow lane: 100,000 sessions, directory -> Redis -> directory, contents equal."""
    with FileSessionStore(tmp_path / "a", durability="none") as source:
        _fill(source, 100_000)
        expected = _contents(source)
    with (
        FileSessionStore(tmp_path / "a") as source,
        RedisSessionStore(redis_url(), namespace=namespace) as remote,
        FileSessionStore(tmp_path / "b", durability="none") as back,
    ):
        assert migrate(source, remote).copied == 100_000
        assert migrate(remote, back).copied == 100_000
        assert _contents(back) == expected
