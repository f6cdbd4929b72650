"""RedisSessionStore through Sentinel on real servers (a master, a replica, three Sentinels), with failover.

A killed master: calls raise ``BackendUnavailableError`` until the Sentinels
promote the replica, then the same store carries on there. What an
acknowledged write survives: with ``min_replicas=1`` every one; without, the
last ones before the failover may be lost (replication is asynchronous).
And ``migrate`` between a directory, one Redis, a cluster and Sentinel.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from filestore import BackendUnavailableError, FileSessionStore, RedisSessionStore, main
from filestore.backends import MovableStore, migrate, open_store

from .support import ctx, data
from .support.redis_cluster import SentinelGroup, cluster_url, sentinel_group, wait_until
from .support.redis_server import redis_url

# Short timeouts: a call to the dead master fails fast, so the stream of writes goes on.
QUICK = {"connect_timeout": 0.5, "command_timeout": 1.0}
# min_replicas stores: a replica on a loaded machine may take a second to acknowledge, so the
# writes that must succeed get room; the ones that must be refused wait this long to be.
WAITING = {"connect_timeout": 0.5, "command_timeout": 5.0, "min_replicas": 1, "replica_timeout": 3.0}


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    """The Sentinel group, healthy; restored (the killed master back as a replica) after the test."""
    healthy = sentinel_group()
    yield healthy
    healthy.restore()


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    return f"s:{request.node.name}:{random.randrange(1 << 30)}"


def test_failover_is_unavailable_then_the_same_store_resumes(group: SentinelGroup, namespace: str) -> None:
    """The master killed mid-stream: only BackendUnavailableError, then writes go to the promoted replica.

    Any other exception (a raw redis-py one) would end the stream and fail the test.
    """
    with open_store(group.url(namespace), **QUICK) as store:
        key = store.create_session(ctx(), data(step=0))
        acknowledged = [0]
        for step in range(1, 6):
            store.update_session(key, data(step=step))
            acknowledged.append(step)
        old = group.kill_master()
        failures = 0
        deadline = time.monotonic() + 60
        step = 6
        while failures == 0 or acknowledged[-1] < step - 5:
            assert time.monotonic() < deadline, "the store did not resume on the promoted replica"
            try:
                store.update_session(key, data(step=step))
                acknowledged.append(step)
            except BackendUnavailableError:
                failures += 1
            step += 1
        wait_until(lambda: group.failed_over_from(old), "every Sentinel naming the promoted replica")
        assert store.get_session(key) == data(step=acknowledged[-1])
        assert store.find_by_user(ctx(), "u1") == (key, data(step=acknowledged[-1]))


def test_with_min_replicas_every_acknowledged_write_survives_failover(
    group: SentinelGroup, namespace: str
) -> None:
    """min_replicas=1: the sessions acknowledged before the kill are all on the promoted replica.

    After the failover the new master has no replica yet: writes raise
    (fewer replicas than asked), until the old master rejoins as one.
    """
    with open_store(group.url(namespace), **WAITING) as store:
        users = [ctx(user=f"u{number}") for number in range(20)]
        keys = [store.create_session(user, data(user, step=number)) for number, user in enumerate(users)]
        old = group.kill_master()
        wait_until(lambda: group.failed_over_from(old), "a failover")
        wait_until(lambda: _answers(store), "the store reading from the promoted replica")
        for number, (user, key) in enumerate(zip(users, keys, strict=True)):
            assert store.get_session(key) == data(user, step=number)
            assert store.find_by_user(user, f"u{number}") == (key, data(user, step=number))
        with pytest.raises(BackendUnavailableError, match="0 of 1 replicas acknowledged"):
            store.update_session(keys[0], data(users[0], step=100))
        group.restore()
        store.update_session(keys[0], data(users[0], step=101))
        assert store.get_session(keys[0]) == data(users[0], step=101)


def _answers(store: MovableStore) -> bool:
    try:
        store.get_session("00000000-0000-4000-8000-000000000000")
    except BackendUnavailableError:
        return False
    return True


def test_without_min_replicas_the_last_writes_before_failover_may_be_lost(
    group: SentinelGroup, namespace: str
) -> None:
    """A write the master acknowledged but never sent to its replica is gone after failover.

    The replica is paused and cut off, so it cannot have the write; with
    ``min_replicas=1`` the same write is refused (raises) instead of acknowledged.
    """
    with (
        open_store(group.url(namespace), **QUICK) as plain,
        open_store(group.url(namespace), **WAITING) as safe,
    ):
        key = plain.create_session(ctx(), data(step=1))
        other = safe.create_session(ctx(user="u2"), data(ctx(user="u2"), step=1))
        master = group.master()
        with group.replica_paused():
            cut = redis.Redis(host="127.0.0.1", port=master, decode_responses=True)
            cut.client_kill_filter(_type="replica")
            cut.close()
            plain.update_session(key, data(step=2))  # acknowledged by the master alone
            with pytest.raises(BackendUnavailableError, match="replicas acknowledged"):
                safe.update_session(other, data(ctx(user="u2"), step=2))
            assert plain.get_session(key) == data(step=2)
            group.kill_master()
        wait_until(lambda: group.failed_over_from(master), "a failover")
        wait_until(lambda: _answers(plain), "the store reading from the promoted replica")
        assert plain.get_session(key) == data(step=1)  # the acknowledged step 2 was lost


def _contents(store: MovableStore) -> dict[str, tuple[tuple[object, ...], str, bool, str | None]]:
    return {
        str(stored.key): (tuple(stored.scope), stored.data.to_json(), stored.active, stored.wait)
        for stored in store.iter_sessions()
    }


def test_migrate_between_directory_redis_cluster_and_sentinel(
    group: SentinelGroup, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Directory -> one Redis -> cluster -> Sentinel -> directory: every session, owner and lookup kept."""
    with FileSessionStore(tmp_path / "a", durability="none") as source:
        for number in range(120):
            context = ctx(user=f"u{number % 30}", team=None if number % 3 else "support")
            owner = context if number % 4 else ctx(user=None, team=context.team)
            source.create_session(context, data(owner, step=number))
        expected = _contents(source)
        chain: list[MovableStore] = [
            source,
            open_store(f"{redis_url()}?namespace={namespace}"),
            open_store(cluster_url(namespace)),
            open_store(group.url(namespace)),
            FileSessionStore(tmp_path / "b"),
        ]
        try:
            for before, after in itertools.pairwise(chain):
                report = migrate(before, after)
                assert (report.copied, report.already_there) == (120, 0)
                assert _contents(after) == expected
            # The command line takes the same URLs: the cluster into Sentinel again, all there.
            argv = ["migrate", cluster_url(namespace), group.url(namespace)]
            assert main(argv) == 0
            assert "120 sessions: 0 copied, 120 already there; all verified" in capsys.readouterr().out
            for user in range(30):
                for team in (None, "support"):
                    where = ctx(team=team, user=None)
                    wanted = source.find_by_user(where, f"u{user}")
                    assert all(store.find_by_user(where, f"u{user}") == wanted for store in chain[1:])
        finally:
            for store in chain[1:]:
                store.close()


def test_sentinel_store_names_its_address(group: SentinelGroup, namespace: str) -> None:
    """A store on a Sentinel-managed master says so in its address, and in errors."""
    with open_store(group.url(namespace)) as store:
        assert isinstance(store, RedisSessionStore)
        assert store.address.startswith("redis+sentinel://127.0.0.1:")
        assert store.address.endswith("/fsmaster")
