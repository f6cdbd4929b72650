"""One size limit for every backend (issue 16): ``max_record_size`` bounds a session's data
encoded as CBOR, with the same default on the memory, file and Redis stores, checked before
anything is written, the error naming the session; so a migration never stops part-way on a
session one backend took and another refuses, and ``import``/``migrate`` take the option.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from filestore import (
    FileSessionStore,
    InMemorySessionStore,
    InvalidInputError,
    RedisSessionStore,
    ReplyScope,
    SessionData,
    SessionKey,
    SessionNotFoundError,
    TenantMismatchError,
    migrate,
)
from filestore.backends import MovableStore
from filestore.cli import main
from filestore.contract import DEFAULT_MAX_RECORD_SIZE, StoredSession, session_scope

from .support import ctx, data
from .support.redis_server import redis_url

LIMIT = 1024
KINDS = ["memory", "file", "redis"]


def open_limited(kind: str, path: Path, limit: int = LIMIT) -> MovableStore:
    if kind == "memory":
        return InMemorySessionStore(max_record_size=limit)
    if kind == "file":
        return FileSessionStore(path, max_record_size=limit)
    return RedisSessionStore(
        redis_url(), namespace=f"test:limit:{abs(hash(str(path)))}", max_record_size=limit
    )


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MovableStore]:
    opened = open_limited(str(request.param), tmp_path / "s")
    try:
        yield opened
    finally:
        opened.close()


def sized(encoded: int, user: str = "u1") -> SessionData:
    """Session data of ``user`` whose CBOR is exactly ``encoded`` bytes."""
    base = data(ctx(user=user))
    padding = encoded - len(base.to_cbor())
    grown = attrs.evolve(base, context_json=base.context_json + " " * padding)
    # CBOR's length head grows by a byte or two at 24 and 256 bytes: settle on the exact size.
    while len(grown.to_cbor()) > encoded:
        grown = attrs.evolve(grown, context_json=grown.context_json[:-1])
    assert len(grown.to_cbor()) == encoded
    return grown


def contents(store: MovableStore) -> set[StoredSession]:
    return set(store.iter_sessions())


def test_every_backend_has_the_same_default() -> None:
    """16 MiB of encoded data on each backend by default."""
    memory = InMemorySessionStore()
    redis_store = RedisSessionStore(redis_url(), namespace="test:limit:default")
    assert memory.max_record_size == redis_store.max_record_size == DEFAULT_MAX_RECORD_SIZE == 16 << 20
    redis_store.close()


def test_the_limit_is_the_same_on_every_backend_to_the_byte(store: MovableStore) -> None:
    """Data of exactly the limit is stored; one byte more is refused by every write call, naming
    the session, with nothing stored."""
    tenant = ctx(user="u1")
    key = store.create_session(tenant, sized(LIMIT))
    assert store.get_session(key) == sized(LIMIT)
    before = contents(store)
    over = sized(LIMIT + 1)
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: store.create_session(tenant, over), "the new session"),
        (lambda: store.update_session(key, over), f"session {key}"),
        (lambda: store.register_wait(tenant, "u1", ReplyScope("c-1"), key, over), f"session {key}"),
        (
            lambda: store.import_session(
                StoredSession(SessionKey("imported"), session_scope(tenant, over), over, True)
            ),
            "session imported",
        ),
    ]
    for call, who in calls:
        with pytest.raises(InvalidInputError, match="max_record_size") as refused:
            call()
        assert str(refused.value).startswith(f"InvalidInput: {who}: its data is {LIMIT + 1} bytes")
        assert refused.value.field == "data"
        assert contents(store) == before


def test_an_oversized_update_is_refused_for_what_it_updates_first(store: MovableStore) -> None:
    """An update too big for the limit, of a key no session has, is ``SessionNotFoundError`` on
    every backend, and one naming another user is ``TenantMismatchError``: the size is checked
    last, as the memory and file stores do (Redis said "too big" for a session that is not there)."""
    tenant = ctx(user="u1")
    key = store.create_session(tenant, sized(LIMIT))
    before = contents(store)
    with pytest.raises(SessionNotFoundError):
        store.update_session(SessionKey("no-such-session"), sized(LIMIT + 1))
    with pytest.raises(TenantMismatchError):
        store.update_session(key, sized(LIMIT + 1, user="u2"))
    assert contents(store) == before


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "16"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_limit_is_refused_when_opening(tmp_path: Path, kind: str, bad: object) -> None:
    """max_record_size is an int of at least 1 on every backend: anything else is InvalidInputError."""
    with pytest.raises(InvalidInputError, match="max_record_size"):
        open_limited(kind, tmp_path / "s", bad)  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists()


def test_migrate_stops_at_the_session_the_target_refuses_naming_it(tmp_path: Path) -> None:
    """A source holding a session over the target's limit: migrate raises naming its key; the
    sessions before it arrived; with the target's limit raised, re-running completes it."""
    source = InMemorySessionStore(max_record_size=4 * LIMIT)
    keys = [
        source.create_session(ctx(user=f"u{n}"), sized(3 * LIMIT if n == 2 else 200, f"u{n}"))
        for n in range(4)
    ]
    refusal = f"session {keys[2]}: its data is {3 * LIMIT} bytes"
    with (
        FileSessionStore(tmp_path / "t", max_record_size=LIMIT) as target,
        pytest.raises(InvalidInputError, match=refusal),
    ):
        migrate(source, target)
    with FileSessionStore(tmp_path / "t", max_record_size=4 * LIMIT) as target:
        report = migrate(source, target)
        assert report.source_sessions == 4
        assert contents(target) == contents(source)


def test_the_command_line_takes_max_record_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """import and migrate --max-record-size: a line over it stops the import naming the line and the
    session; the same input imports with a larger limit; migrate passes it to its target."""
    tenant = ctx(user="u1")
    with FileSessionStore(tmp_path / "source") as source:
        key = source.create_session(tenant, sized(3 * LIMIT))
    assert main(["export", str(tmp_path / "source"), "-o", str(tmp_path / "dump.jsonl")]) == 0
    capsys.readouterr()
    dump = str(tmp_path / "dump.jsonl")
    assert main(["import", str(tmp_path / "small"), dump, "--max-record-size", str(LIMIT)]) == 8
    err = capsys.readouterr().err
    assert f"line 1: session {key}: its data is {3 * LIMIT} bytes" in err
    assert main(["import", str(tmp_path / "big"), dump, "--max-record-size", str(4 * LIMIT), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["imported"] == 1
    assert (
        main(["migrate", str(tmp_path / "source"), str(tmp_path / "m"), "--max-record-size", str(LIMIT)]) == 8
    )
    assert f"session {key}" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "x"), dump, "--max-record-size", "0"]) == 16


@pytest.mark.parametrize("kind", KINDS)
def test_a_stored_session_over_a_lowered_limit_is_already_there_on_every_backend(
    tmp_path: Path, kind: str
) -> None:
    """A session stored under a larger limit and imported again through a handle with a smaller
    one is "already there" (nothing would be written), as the file store answers, on every backend."""
    tenant = ctx(user="u1")
    big = sized(3 * LIMIT)
    stored = StoredSession(SessionKey("kept"), session_scope(tenant, big), big, True)
    roomy = open_limited(kind, tmp_path / "s", 4 * LIMIT)
    try:
        assert roomy.import_session(stored)
        if kind == "memory":
            roomy.max_record_size = LIMIT  # type: ignore[attr-defined] # one handle: the memory store
            tight = roomy
        else:
            tight = open_limited(kind, tmp_path / "s", LIMIT)
        assert tight.import_session(stored) is False
        if tight is not roomy:
            tight.close()
    finally:
        roomy.close()
