"""Every public call against bad input: a typed error, and nothing written.

A table of wrong types, ``None``, bools passed as ints, lone surrogates, NUL
characters, over-long strings and ids, over-long and ``bytes`` paths, and
links planted at the store's own file names, for every call of every
backend (``support.backends``) and for the top-level functions, the model's
constructors and parsers, and the command line. Each case expects
``InvalidInputError`` (or the typed error the docs name for it) and checks
that nothing was written: the store directory's bytes, the backend's Redis
keys, or the in-memory sessions are compared before and after.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filestore import (
    EnvId,
    FileSessionStore,
    FlowId,
    Impersonation,
    InMemorySessionStore,
    InvalidInputError,
    InvocationDeadline,
    PackId,
    RedisSessionStore,
    ReplyScope,
    SessionCursor,
    SessionData,
    SessionKey,
    SessionNotFoundError,
    SessionScope,
    SessionStore,
    StoredSession,
    TeamId,
    TenantCtx,
    TenantId,
    UntrustedDirectoryError,
    UserId,
    canonical_session_key,
    compact,
    export_sessions,
    fsck,
    import_sessions,
    main,
    migrate,
    open_store,
    stats,
    telegram_update_to_session_key,
    webhook_to_session_key,
)
from filestore.ids import check_key

from .support import ctx, data
from .support.backends import BACKENDS, Backend
from .support.redis_server import redis_url

# A path whose one name is longer than any file system allows (NAME_MAX is 255 bytes).
LONG_NAME: Final = "n" * 300
# A path that fits NAME_MAX name by name but passes PATH_MAX (4096 bytes) in all.
LONG_PATH: Final = "/".join(["p" * 200] * 21)
SURROGATE: Final = "\ud800"

BAD_KEYS: Final[list[object]] = [None, 5, True, 1.5, b"key", ["key"], "", "k" * 257, SURROGATE, "a\udfffb"]
BAD_CTXS: Final[list[object]] = [None, "dev/acme", 5, {}, b"ctx", data()]
BAD_DATAS: Final[list[object]] = [None, "data", 5, {}, b"{}", ctx()]
BAD_USERS: Final[list[object]] = [None, 5, True, b"u1", "", "u" * 257, "u\0", SURROGATE, "u 1", "u/1"]
BAD_PATHS: Final[list[object]] = [None, 5, 1.5, True, b"store", ["store"], "", "st\0ore", SURROGATE]

State = object


# -- what "nothing written" means for each backend ----------------------------------


def directory_state(path: Path) -> dict[str, tuple[str, object]]:
    """Every entry under ``path`` (recursively): a link's target, a file's mode and bytes."""
    found: dict[str, tuple[str, object]] = {}
    if not path.exists():
        return found
    for root, directories, files in os.walk(path):
        for name in directories + files:
            entry = Path(root, name)
            relative = str(entry.relative_to(path))
            if entry.is_symlink():
                found[relative] = ("link", os.readlink(entry))
            elif entry.is_dir():
                found[relative] = ("dir", entry.stat().st_mode)
            else:
                found[relative] = ("file", (entry.stat().st_mode, entry.read_bytes()))
    return found


def redis_state(namespace: str) -> tuple[int, dict[bytes, bytes | None]]:
    """The server's key count, and every key of ``namespace`` with its DUMP."""
    client = redis.Redis.from_url(redis_url())
    try:
        keys = sorted(client.scan_iter(match=f"{namespace}:*"))
        return int(client.dbsize()), {key: client.dump(key) for key in keys}
    finally:
        client.close()


def store_state(store: SessionStore, path: Path) -> State:
    """What ``store`` holds, at the level its backend writes: files, Redis keys, or sessions."""
    if isinstance(store, FileSessionStore):
        return directory_state(path)
    if isinstance(store, RedisSessionStore):
        return redis_state(store.namespace)
    assert isinstance(store, InMemorySessionStore)
    return sorted(repr(session) for session in store.iter_sessions())


@pytest.fixture
def seeded(backend: Backend, tmp_path: Path) -> Iterator[tuple[SessionStore, SessionKey, Path]]:
    """A store of each backend holding one session of ``ctx()``'s user, and its key."""
    path = tmp_path / "store"
    store = backend.open(path)
    try:
        key = store.create_session(ctx(), data())
        yield store, key, path
    finally:
        store.close()


# -- every call of every backend ------------------------------------------------------

StoreCall = Callable[[Any, SessionKey, Any], object]


def _stored(bad: str) -> Callable[[SessionKey], object]:
    """A ``StoredSession`` with one bad part (``StoredSession`` itself does not validate)."""
    scope = SessionScope(EnvId("dev"), TenantId("acme"), TeamId("support"), UserId("u1"))
    good = {"key": SessionKey("imported-1"), "scope": scope, "data": data(step=7), "active": True}

    def build(existing: SessionKey) -> object:
        parts: dict[str, Any] = dict(good)
        if bad == "existing key, other data":
            parts["key"] = existing
        elif bad == "other owner":
            parts["scope"] = scope._replace(tenant_id=TenantId("evil"))
        elif bad == "raw scope":
            parts["scope"] = ("dev", "ac me", None, "u1")
        elif bad == "scope not a tuple":
            parts["scope"] = "dev/acme"
        elif bad == "active int":
            parts["active"] = 1
        elif bad == "data None":
            parts["data"] = None
        else:
            parts["key"] = {"surrogate key": SURROGATE, "empty key": "", "int key": 5}[bad]
        return StoredSession(**parts)

    return build


STORED_CASES: Final = [
    "existing key, other data",
    "other owner",
    "raw scope",
    "scope not a tuple",
    "active int",
    "data None",
    "surrogate key",
    "empty key",
    "int key",
]


def _store_cases() -> Iterator[Any]:
    calls: list[tuple[str, StoreCall, list[object]]] = [
        ("create(bad ctx)", lambda store, _key, bad: store.create_session(bad, data()), BAD_CTXS),
        ("create(bad data)", lambda store, _key, bad: store.create_session(ctx(), bad), BAD_DATAS),
        ("get(bad key)", lambda store, _key, bad: store.get_session(bad), BAD_KEYS),
        ("update(bad key)", lambda store, _key, bad: store.update_session(bad, data(step=1)), BAD_KEYS),
        ("update(bad data)", lambda store, key, bad: store.update_session(key, bad), BAD_DATAS),
        ("remove(bad key)", lambda store, _key, bad: store.remove_session(bad), BAD_KEYS),
        ("find(bad ctx)", lambda store, _key, bad: store.find_by_user(bad, "u1"), BAD_CTXS),
        ("find(bad user)", lambda store, _key, bad: store.find_by_user(ctx(), bad), BAD_USERS),
        ("import(not a StoredSession)", lambda store, _key, bad: store.import_session(bad), [None, "x", 5]),
        (
            "import(tuple)",
            lambda store, key, _bad: store.import_session((key, None, data(), True)),
            [None],
        ),
        ("import(bad part)", lambda store, key, bad: store.import_session(bad(key)), []),
    ]
    for name, call, values in calls:
        if name == "import(bad part)":
            for case in STORED_CASES:
                yield pytest.param(call, _stored(case), id=f"{name}-{case}")
            continue
        for value in values:
            yield pytest.param(call, value, id=f"{name}-{value!r}"[:60])


@pytest.mark.parametrize(("call", "bad"), list(_store_cases()))
def test_every_store_call_refuses_bad_input_and_writes_nothing(
    seeded: tuple[SessionStore, SessionKey, Path], call: StoreCall, bad: object
) -> None:
    """Each store call of each backend raises InvalidInputError for a bad argument, storing nothing."""
    store, key, path = seeded
    before = store_state(store, path)
    with pytest.raises(InvalidInputError):
        call(store, key, bad)
    assert store_state(store, path) == before
    assert store.get_session(key) == data()


@pytest.mark.parametrize("key", ["a\0b", "\0", "line\nbreak", "é", "k" * 256])
def test_any_other_text_is_an_opaque_key(seeded: tuple[SessionStore, SessionKey, Path], key: str) -> None:
    """Keys are opaque text (NUL included): an unknown one is not found, typed, and nothing is written."""
    store, existing, path = seeded
    before = store_state(store, path)
    assert store.get_session(key) is None
    with pytest.raises(SessionNotFoundError):
        store.update_session(key, data(step=1))
    with pytest.raises(SessionNotFoundError):
        store.remove_session(key)
    assert store_state(store, path) == before
    assert store.get_session(existing) == data()


NON_TEXT: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.binary(max_size=8),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=NON_TEXT)
def test_no_non_text_key_or_user_escapes(seeded: tuple[SessionStore, SessionKey, Path], bad: object) -> None:
    """Arbitrary non-str keys and users are InvalidInputError from every call; the store is unchanged."""
    store, _key, path = seeded
    before = store_state(store, path)
    for call in (
        lambda: store.get_session(bad),  # type: ignore[arg-type]
        lambda: store.update_session(bad, data(step=2)),  # type: ignore[arg-type]
        lambda: store.remove_session(bad),  # type: ignore[arg-type]
        lambda: store.find_by_user(ctx(), bad),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInputError):
            call()
    assert store_state(store, path) == before


def test_online_compact_refuses_a_non_bool_keep_old(tmp_path: Path) -> None:
    """``FileSessionStore.compact(keep_old=1)`` is InvalidInputError, and no compaction happens."""
    path = tmp_path / "store"
    with FileSessionStore(path) as store:
        store.create_session(ctx(), data())
        before = directory_state(path)
        for bad in (1, "yes", None):
            with pytest.raises(InvalidInputError, match="keep_old"):
                store.compact(keep_old=bad)  # type: ignore[arg-type]
        assert directory_state(path) == before


def test_an_over_long_session_is_refused_by_every_file_store_write(tmp_path: Path) -> None:
    """Text fields have no length rule of their own: a record over ``max_record_size`` is the limit.

    create, update and import of an over-long session each raise InvalidInputError, nothing written.
    """
    path = tmp_path / "store"
    with FileSessionStore(path, max_record_size=1024) as store:
        key = store.create_session(ctx(), data())
        huge = SessionData(ctx(), "f", SessionCursor("n"), "x" * 2000)
        scope = SessionScope(EnvId("dev"), TenantId("acme"), TeamId("support"), UserId("u1"))
        before = directory_state(path)
        for call in (
            lambda: store.create_session(ctx(), huge),
            lambda: store.update_session(key, huge),
            lambda: store.import_session(StoredSession(SessionKey("imported"), scope, huge, True)),
        ):
            with pytest.raises(InvalidInputError, match="max_record_size"):
                call()
        assert directory_state(path) == before
        assert store.get_session(key) == data()


# -- the wait calls (issue 14) ----------------------------------------------------------
# One block for the four wait calls: a backend joins WAIT_BACKENDS once its wait calls land.

WAIT_BACKENDS: Final = ["memory", "file", "file-group", "file-none-snapshots", "redis"]
REPLY_SCOPE: Final = ReplyScope("chat-1", thread="t-1")
BAD_SCOPES: Final[list[object]] = [None, "chat-1", 5, b"chat-1", {"conversation": "chat-1"}, ctx()]
BAD_TTLS: Final[list[object]] = [
    0,
    60,
    1.5,
    True,
    "PT1M",
    datetime.timedelta(microseconds=-1),
    datetime.timedelta(days=-1),
    datetime.timedelta.min,
]


@pytest.fixture(params=WAIT_BACKENDS)
def waiting(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SessionStore, Path]]:
    """A store holding a created session of ``ctx()``'s user and one wait (with a TTL) at ``REPLY_SCOPE``."""
    path = tmp_path / "store"
    store = BACKENDS[request.param].open(path)
    try:
        store.create_session(ctx(), data())
        store.register_wait(ctx(), "u1", REPLY_SCOPE, "wait-1", data(step=1), datetime.timedelta(hours=1))
        yield store, path
    finally:
        store.close()


WaitCall = Callable[[Any, Any], object]


def _wait_cases() -> Iterator[Any]:
    def register(name: str) -> WaitCall:
        """``register_wait`` with good arguments but the bad value as ``name``."""
        good: dict[str, object] = {
            "ctx": ctx(),
            "user_id": "u1",
            "scope": REPLY_SCOPE,
            "key": "wait-2",
            "data": data(step=2),
            "ttl": datetime.timedelta(minutes=1),
        }
        return lambda store, value: store.register_wait(**{**good, name: value})

    calls: list[tuple[str, WaitCall, list[object]]] = [
        ("register(bad ctx)", register("ctx"), BAD_CTXS),
        ("register(bad user_id)", register("user_id"), BAD_USERS),
        # A valid id, but not the user of ctx and data.
        ("register(other user_id)", register("user_id"), ["u2"]),
        ("register(bad scope)", register("scope"), BAD_SCOPES),
        ("register(bad key)", register("key"), BAD_KEYS),
        # Not a SessionData, or one naming another user or none (a wait's data names user_id).
        ("register(bad data)", register("data"), [*BAD_DATAS, data(ctx(user="u2")), data(ctx(user=None))]),
        ("register(bad ttl)", register("ttl"), BAD_TTLS),
        ("find_wait(bad ctx)", lambda store, bad: store.find_wait_by_scope(bad, "u1", REPLY_SCOPE), BAD_CTXS),
        (
            "find_wait(bad user_id)",
            lambda store, bad: store.find_wait_by_scope(ctx(), bad, REPLY_SCOPE),
            BAD_USERS,
        ),
        ("find_wait(bad scope)", lambda store, bad: store.find_wait_by_scope(ctx(), "u1", bad), BAD_SCOPES),
        ("list_waits(bad ctx)", lambda store, bad: store.list_waits_for_user(bad, "u1"), BAD_CTXS),
        ("list_waits(bad user_id)", lambda store, bad: store.list_waits_for_user(ctx(), bad), BAD_USERS),
        ("clear_wait(bad ctx)", lambda store, bad: store.clear_wait(bad, "u1", REPLY_SCOPE), BAD_CTXS),
        ("clear_wait(bad user_id)", lambda store, bad: store.clear_wait(ctx(), bad, REPLY_SCOPE), BAD_USERS),
        ("clear_wait(bad scope)", lambda store, bad: store.clear_wait(ctx(), "u1", bad), BAD_SCOPES),
    ]
    for name, call, values in calls:
        for value in values:
            yield pytest.param(call, value, id=f"{name}-{value!r}"[:60])


@pytest.mark.parametrize(("call", "bad"), list(_wait_cases()))
def test_every_wait_call_refuses_bad_input_and_writes_nothing(
    waiting: tuple[SessionStore, Path], call: WaitCall, bad: object
) -> None:
    """Each wait call raises InvalidInputError for a bad ctx, user_id, scope, key, data or ttl; no change."""
    store, path = waiting
    before = store_state(store, path)
    with pytest.raises(InvalidInputError):
        call(store, bad)
    assert store_state(store, path) == before
    assert store.find_wait_by_scope(ctx(), "u1", REPLY_SCOPE) == "wait-1"
    assert store.get_session("wait-2") is None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=NON_TEXT)
def test_no_non_text_wait_user_or_key_escapes(waiting: tuple[SessionStore, Path], bad: object) -> None:
    """Arbitrary non-str user_ids (and keys) are InvalidInputError from every wait call; nothing changes."""
    store, path = waiting
    before = store_state(store, path)
    for call in (
        lambda: store.register_wait(ctx(), bad, REPLY_SCOPE, "wait-2", data()),  # type: ignore[arg-type]
        lambda: store.register_wait(ctx(), "u1", REPLY_SCOPE, bad, data()),  # type: ignore[arg-type]
        lambda: store.find_wait_by_scope(ctx(), bad, REPLY_SCOPE),  # type: ignore[arg-type]
        lambda: store.list_waits_for_user(ctx(), bad),  # type: ignore[arg-type]
        lambda: store.clear_wait(ctx(), bad, REPLY_SCOPE),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInputError):
            call()
    assert store_state(store, path) == before


# -- the end of the wait calls' block ---------------------------------------------------


# -- opening a file store -------------------------------------------------------------

BAD_OPTIONS: Final[list[dict[str, object]]] = [
    {"file_mode": 0},
    {"file_mode": True},
    {"file_mode": "600"},
    {"file_mode": 0o400},
    {"file_mode": 0o200},
    {"file_mode": -1},
    {"file_mode": 0o10600},
    {"file_mode": 1.5},
    {"dir_mode": 0},
    {"dir_mode": True},
    {"dir_mode": 0o600},
    {"dir_mode": 0o500},
    {"dir_mode": None},
    {"durability": 5},
    {"durability": None},
    {"durability": "FSYNC"},
    {"durability": True},
    {"snapshot_every_records": 0},
    {"snapshot_every_records": True},
    {"snapshot_every_records": 1.5},
    {"snapshot_every_records": "10"},
    {"snapshot_every_bytes": -1},
    {"snapshot_every_bytes": None},
    {"max_record_size": 0},
    {"max_record_size": False},
    {"lock_timeout": -1},
    {"lock_timeout": math.nan},
    {"lock_timeout": math.inf},
    {"lock_timeout": 1e300},
    {"lock_timeout": True},
    {"lock_timeout": "1"},
    {"preallocate_bytes": -1},
    {"preallocate_bytes": True},
    {"preallocate_bytes": 2**70},
    {"cache_size": -1},
    {"cache_size": True},
    {"allow_network_filesystem": 1},
    {"allow_network_filesystem": "yes"},
    {"trust_directory": 1},
    {"trust_directory": None},
]


def _option_id(options: dict[str, object]) -> str:
    return ",".join(f"{name}={value!r}" for name, value in options.items())


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=_option_id)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_bad_options_are_refused_before_anything_is_written(
    tmp_path: Path, options: dict[str, object], existing: bool
) -> None:
    """A bad option (bools as ints, modes the owner cannot use, NaN, overflowing sizes) is InvalidInputError.

    Checked before the directory or any file in it is made: a new store's
    directory is not created, an existing store is not touched.
    """
    path = tmp_path / "store"
    if existing:
        FileSessionStore(path).close()
    before = directory_state(tmp_path)
    with pytest.raises(InvalidInputError):
        FileSessionStore(path, **options).close()  # type: ignore[arg-type]
    assert directory_state(tmp_path) == before


def _bad_paths(tmp_path: Path) -> list[object]:
    return [
        *BAD_PATHS,
        os.fsencode(tmp_path / "store"),
        str(tmp_path / SURROGATE / "store"),
        str(tmp_path / LONG_NAME),
        str(tmp_path / LONG_PATH),
        tmp_path / LONG_NAME / "store",
    ]


def test_bad_paths_are_refused_by_every_call_that_takes_one(tmp_path: Path) -> None:
    """A path not text, with NUL or a lone surrogate, or too long: InvalidInputError, nothing made.

    ``bytes`` paths are refused (docs/api.md): ``os.fsdecode`` makes the ``str``.
    """
    calls: list[Callable[[object], object]] = [
        lambda path: FileSessionStore(path).close(),  # type: ignore[arg-type]
        lambda path: open_store(path).close(),  # type: ignore[arg-type]
        fsck,  # type: ignore[list-item]
        compact,  # type: ignore[list-item]
        stats,  # type: ignore[list-item]
    ]
    before = directory_state(tmp_path)
    for path in _bad_paths(tmp_path):
        for call in calls:
            with pytest.raises(InvalidInputError) as raised:
                call(path)
            assert raised.value.field in {"path", "spec"}, (path, raised.value)
            assert directory_state(tmp_path) == before, path


def test_a_path_under_a_file_is_invalid_input(tmp_path: Path) -> None:
    """A store path whose parent is a file (ENOTDIR) is InvalidInputError, and nothing is made."""
    (tmp_path / "file").write_text("x")
    before = directory_state(tmp_path)
    with pytest.raises(InvalidInputError, match="not a directory"):
        FileSessionStore(tmp_path / "file" / "deeper" / "store")
    assert directory_state(tmp_path) == before


def test_a_path_through_a_symlink_loop_is_invalid_input(tmp_path: Path) -> None:
    """A store path below a symlink loop (ELOOP from mkdir) is InvalidInputError, and nothing is made."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    before = directory_state(tmp_path)
    with pytest.raises(InvalidInputError, match="cannot be made"):
        FileSessionStore(tmp_path / "loop" / "store")
    assert directory_state(tmp_path) == before


LINKED_NAMES: Final = ["LOCK", "OPEN", "sessions.log"]


@pytest.mark.parametrize("name", LINKED_NAMES)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
@pytest.mark.parametrize("trust", [False, True], ids=["strict", "trusted"])
def test_a_link_planted_at_a_store_file_is_refused_and_never_written_through(
    tmp_path: Path, name: str, existing: bool, trust: bool
) -> None:
    """A symlink at LOCK, OPEN or sessions.log: UntrustedDirectoryError (not a bare ELOOP), nothing written.

    Neither the link's target nor the directory changes, even with
    ``trust_directory=True`` (that trusts the owner, never a redirection).
    """
    store = tmp_path / "store"
    victim = tmp_path / "victim"
    if existing:
        with FileSessionStore(store) as opened:
            opened.create_session(ctx(), data())
        victim.write_bytes((store / name).read_bytes())
        (store / name).unlink()
    else:
        store.mkdir(mode=0o700)
    (store / name).symlink_to(victim)
    before = directory_state(tmp_path)
    with pytest.raises(UntrustedDirectoryError, match="symbolic link"):
        FileSessionStore(store, trust_directory=trust)
    assert directory_state(tmp_path) == before


@pytest.mark.parametrize("name", LINKED_NAMES)
@pytest.mark.parametrize("tool", ["fsck", "fsck --repair", "compact", "stats"])
def test_offline_tools_refuse_a_planted_link(tmp_path: Path, name: str, tool: str) -> None:
    """fsck (--repair), compact and stats refuse a store whose LOCK, OPEN or log is a link; no change."""
    store = tmp_path / "store"
    victim = tmp_path / "victim"
    with FileSessionStore(store) as opened:
        opened.create_session(ctx(), data())
    victim.write_bytes((store / name).read_bytes())
    (store / name).unlink()
    (store / name).symlink_to(victim)
    before = directory_state(tmp_path)
    run: dict[str, Callable[[], object]] = {
        "fsck": lambda: fsck(store),
        "fsck --repair": lambda: fsck(store, repair=True),
        "compact": lambda: compact(store),
        "stats": lambda: stats(store),
    }
    with pytest.raises(UntrustedDirectoryError, match="symbolic link"):
        run[tool]()
    assert directory_state(tmp_path) == before


# -- the top-level functions ------------------------------------------------------------


@pytest.fixture
def file_store(tmp_path: Path) -> Iterator[tuple[FileSessionStore, Path]]:
    """A file store holding one session."""
    path = tmp_path / "store"
    with FileSessionStore(path) as store:
        store.create_session(ctx(), data())
        yield store, path


def test_open_store_refuses_bad_specs_and_options(tmp_path: Path) -> None:
    """open_store: a non-str spec, bytes, NUL, an unknown scheme or an unknown option is InvalidInputError."""
    before = directory_state(tmp_path)
    for spec in [None, 5, b"memory:", "", "a\0b", "ftp://host/x"]:
        with pytest.raises(InvalidInputError):
            open_store(spec)  # type: ignore[arg-type]
    unknown: list[tuple[str, dict[str, object]]] = [
        ("memory:", {"durability": "none"}),
        (str(tmp_path / "store"), {"no_such_option": 1}),
        ("redis://localhost:1/0", {"file_mode": 0o600}),
        ("redis://localhost:1/0", {"namespace": "given by ?namespace="}),
    ]
    for spec, options in unknown:
        with pytest.raises(InvalidInputError, match="takes no option"):
            open_store(spec, **options)
    assert directory_state(tmp_path) == before


def test_migrate_refuses_what_is_not_a_store(file_store: tuple[FileSessionStore, Path]) -> None:
    """migrate: a source or target that is not a store, or a progress that is not callable, copies nothing."""
    store, path = file_store
    target = InMemorySessionStore()
    before = directory_state(path)
    for source, into, progress in [(None, target, None), (store, None, None), (store, target, 5)]:
        with pytest.raises(InvalidInputError):
            migrate(source, into, progress=progress)  # type: ignore[arg-type]
    assert list(target.iter_sessions()) == []
    assert directory_state(path) == before


def test_export_refuses_bad_arguments_before_writing(file_store: tuple[FileSessionStore, Path]) -> None:
    """export_sessions: no store, no writable ``out``, or a bad progress: InvalidInputError, no output."""
    store, _path = file_store
    out = io.StringIO()
    closed = io.StringIO()
    closed.close()
    for source, stream, progress in [
        (None, out, None),
        (store, None, None),
        (store, b"", None),
        (store, closed, None),
        (store, out, "x"),
    ]:
        with pytest.raises(InvalidInputError):
            export_sessions(source, stream, progress=progress)  # type: ignore[arg-type]
    assert out.getvalue() == ""


def test_import_refuses_bad_arguments_and_lines(file_store: tuple[FileSessionStore, Path]) -> None:
    """import_sessions: bad lines, batch size or progress are InvalidInputError, and nothing is stored."""
    store, path = file_store
    line = '{"key":"k1","scope":{"env":"dev","tenant_id":"acme","team":null,"user":null},"session":5}'
    before = directory_state(path)
    cases: list[tuple[object, dict[str, object]]] = [
        (None, {}),
        (5, {}),
        ("a whole text, not lines", {}),
        (b"bytes, not lines", {}),
        ([5], {}),
        ([None], {}),
        ([line], {}),
        ([f'{{"key":"{SURROGATE}"}}'], {}),
        ([], {"batch_size": 0}),
        ([], {"batch_size": True}),
        ([], {"batch_size": "10"}),
        ([], {"batch_size": 1.5}),
        ([], {"progress": 5}),
        (None, {"store": None}),
    ]
    for lines, options in cases:
        target = options.pop("store", store)
        with pytest.raises(InvalidInputError):
            import_sessions(target, lines, **options)  # type: ignore[arg-type]
    assert directory_state(path) == before


@pytest.mark.parametrize(
    ("tool", "options"),
    [
        ("fsck", {"repair": 1}),
        ("fsck", {"repair": "yes"}),
        ("fsck", {"wait": -1}),
        ("fsck", {"wait": math.nan}),
        ("fsck", {"wait": math.inf}),
        ("fsck", {"wait": True}),
        ("compact", {"keep_old": 1}),
        ("compact", {"wait": "1"}),
        ("compact", {"progress": 5}),
    ],
    ids=str,
)
def test_offline_tools_refuse_bad_options(
    file_store: tuple[FileSessionStore, Path], tool: str, options: dict[str, object]
) -> None:
    """fsck and compact refuse non-bool flags, bad waits and a non-callable progress; nothing changes."""
    store, path = file_store
    store.close()
    before = directory_state(path)
    run: Callable[..., object] = fsck if tool == "fsck" else compact
    with pytest.raises(InvalidInputError):
        run(path, **options)
    assert directory_state(path) == before


# -- the model, the ids and the key mappings ------------------------------------------

ID_TYPES: Final = [EnvId, TenantId, TeamId, UserId, FlowId, PackId]
BAD_IDS: Final[list[object]] = [None, 5, True, b"id", "", "i" * 257, "i\0", SURROGATE, "a b", "a/b", "é"]


@pytest.mark.parametrize("kind", ID_TYPES, ids=lambda kind: kind.__name__)
@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_id_parsers_refuse_bad_ids(kind: type[EnvId], bad: object) -> None:
    """Every id type, built or parsed, refuses non-str, empty, over-long, NUL, surrogate, non-ASCII ids."""
    with pytest.raises(InvalidInputError):
        kind(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        kind.parse(bad, field="id")


@pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
def test_check_key_refuses_bad_keys(bad: object) -> None:
    """The session key parser refuses non-strings, empty and over-long keys, and lone surrogates."""
    with pytest.raises(InvalidInputError, match="key"):
        check_key(bad)


@pytest.mark.parametrize(
    "bad", [None, [], ["dev", "acme", None], ["dev", "acme", 5, None], ("dev", "acme", None, None), "dev"]
)
def test_scope_parser_refuses_bad_scopes(bad: object) -> None:
    """SessionScope.parse refuses anything but a list of four valid ids (team and user may be None)."""
    with pytest.raises(InvalidInputError):
        SessionScope.parse(bad)


MODEL_CALLS: Final[list[tuple[str, Callable[[], object]]]] = [
    ("from_cbor(str)", lambda: SessionData.from_cbor("a str")),  # type: ignore[arg-type]
    ("from_cbor(None)", lambda: SessionData.from_cbor(None)),  # type: ignore[arg-type]
    ("from_cbor(int)", lambda: SessionData.from_cbor(5)),  # type: ignore[arg-type]
    ("from_cbor(list)", lambda: SessionData.from_cbor([1])),  # type: ignore[arg-type]
    ("from_cbor(garbage)", lambda: SessionData.from_cbor(b"\xff\x00")),
    ("from_cbor(not a map)", lambda: TenantCtx.from_cbor(b"\x01")),
    ("from_json(int)", lambda: SessionData.from_json(5)),  # type: ignore[arg-type]
    ("from_json(None)", lambda: SessionData.from_json(None)),  # type: ignore[arg-type]
    ("from_json(list)", lambda: SessionCursor.from_json("[]")),
    ("from_json(not UTF-8)", lambda: SessionData.from_json(b"\xff")),
    ("from_json(surrogate)", lambda: SessionCursor.from_json('{"node_pointer":"\\ud800"}')),
    ("from_json(duplicate)", lambda: SessionCursor.from_json('{"node_pointer":"a","node_pointer":"b"}')),
    ("TenantCtx(env=None)", lambda: TenantCtx(env=None, tenant="t", tenant_id="t")),  # type: ignore[arg-type]
    ("TenantCtx.new(int)", lambda: TenantCtx.new(5, "t")),  # type: ignore[arg-type]
    ("with_attempt(True)", lambda: ctx().with_attempt(True)),
    ("with_attempt(-1)", lambda: ctx().with_attempt(-1)),
    ("with_attempt(2**32)", lambda: ctx().with_attempt(2**32)),
    ("with_session(int)", lambda: ctx().with_session(5)),  # type: ignore[arg-type]
    ("with_session(surrogate)", lambda: ctx().with_session(SURROGATE)),
    ("with_team(bad)", lambda: ctx().with_team("a b")),
    ("with_user(bytes)", lambda: ctx().with_user(b"u")),  # type: ignore[arg-type]
    ("attributes(int)", lambda: TenantCtx(env="e", tenant="t", tenant_id="t", attributes=5)),  # type: ignore[arg-type]
    (
        "attributes(surrogate)",
        lambda: TenantCtx(env="e", tenant="t", tenant_id="t", attributes={"a": SURROGATE}),
    ),
    ("deadline(dict)", lambda: ctx().with_deadline({"unix_millis": 1})),  # type: ignore[arg-type]
    ("InvocationDeadline(True)", lambda: InvocationDeadline(True)),
    ("InvocationDeadline(2**127)", lambda: InvocationDeadline(2**127)),
    ("InvocationDeadline(str)", lambda: InvocationDeadline("5")),  # type: ignore[arg-type]
    ("Impersonation(None)", lambda: Impersonation(None)),  # type: ignore[arg-type]
    ("Impersonation(reason=int)", lambda: Impersonation("u1", reason=5)),  # type: ignore[arg-type]
    ("SessionCursor(None)", lambda: SessionCursor(node_pointer=None)),  # type: ignore[arg-type]
    ("SessionCursor(surrogate)", lambda: SessionCursor(node_pointer=SURROGATE)),
    ("SessionData(ctx=None)", lambda: data(None).__class__(None, "f", SessionCursor("n"), "{}")),  # type: ignore[arg-type]
    ("SessionData(context_json=bytes)", lambda: SessionData(ctx(), "f", SessionCursor("n"), b"{}")),  # type: ignore[arg-type]
    ("SessionData(flow_id=bad)", lambda: SessionData(ctx(), "f f", SessionCursor("n"), "{}")),
    ("SessionData(cursor=dict)", lambda: SessionData(ctx(), "f", {"node_pointer": "n"}, "{}")),  # type: ignore[arg-type]
    ("SessionData(pack_id=int)", lambda: SessionData(ctx(), "f", SessionCursor("n"), "{}", pack_id=5)),  # type: ignore[arg-type]
    ("telegram(None)", lambda: telegram_update_to_session_key(None, 1, 2)),  # type: ignore[arg-type]
    ("telegram(bytes)", lambda: telegram_update_to_session_key(b"bot", 1, 2)),  # type: ignore[arg-type]
    ("telegram(bool chat)", lambda: telegram_update_to_session_key("bot", True, 2)),
    ("telegram(float user)", lambda: telegram_update_to_session_key("bot", 1, 2.0)),  # type: ignore[arg-type]
    ("telegram(surrogate)", lambda: telegram_update_to_session_key(SURROGATE, 1, 2)),
    ("webhook(None)", lambda: webhook_to_session_key(None, "s", "i")),  # type: ignore[arg-type]
    ("webhook(int)", lambda: webhook_to_session_key("s", 5, "i")),  # type: ignore[arg-type]
    ("webhook(surrogate)", lambda: webhook_to_session_key("s", "s", SURROGATE)),
    ("ReplyScope(None)", lambda: ReplyScope(None)),  # type: ignore[arg-type]
    ("ReplyScope(thread=int)", lambda: ReplyScope("c", thread=5)),  # type: ignore[arg-type]
    ("ReplyScope(surrogate)", lambda: ReplyScope("c", correlation=SURROGATE)),
    ("ReplyScope.from_json(no conversation)", lambda: ReplyScope.from_json('{"thread":"t"}')),
    ("ReplyScope.from_cbor(str)", lambda: ReplyScope.from_cbor("a str")),  # type: ignore[arg-type]
    ("canonical(None)", lambda: canonical_session_key(None, "p")),  # type: ignore[arg-type]
    ("canonical(int user)", lambda: canonical_session_key("t", "p", None, 5)),  # type: ignore[arg-type]
    ("canonical(surrogate)", lambda: canonical_session_key("t", SURROGATE)),
    ("canonical(too long)", lambda: canonical_session_key("t" * 300, "p")),
]


@pytest.mark.parametrize("call", [call for _name, call in MODEL_CALLS], ids=[name for name, _ in MODEL_CALLS])
def test_model_constructors_and_decoders_refuse_bad_input(call: Callable[[], object]) -> None:
    """The model's constructors, ``with_*`` helpers, decoders and the key mappings raise InvalidInputError."""
    with pytest.raises(InvalidInputError):
        call()


@given(value=st.one_of(NON_TEXT, st.text(max_size=300)))
def test_id_and_key_parsers_only_ever_raise_invalid_input(value: object) -> None:
    """Whatever the value, an id or key parser returns it validated or raises InvalidInputError."""
    for kind in ID_TYPES:
        with contextlib.suppress(InvalidInputError):
            assert kind.parse(value, field="id") == value
    with contextlib.suppress(InvalidInputError):
        assert check_key(value) == value


@given(text=st.one_of(st.text(max_size=80), st.binary(max_size=80)))
def test_decoders_only_ever_raise_invalid_input(text: str | bytes) -> None:
    """from_json of any text and from_cbor of any bytes give a document or InvalidInputError, nothing else."""
    decode = SessionData.from_cbor if isinstance(text, bytes) else SessionData.from_json
    with contextlib.suppress(InvalidInputError):
        decode(text)  # type: ignore[arg-type]


# -- the Redis store's own options ----------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"namespace": 5},
        {"namespace": None},
        {"namespace": ""},
        {"namespace": "a b"},
        {"namespace": "a\0b"},
        {"namespace": SURROGATE},
        {"namespace": b"ns"},
        {"url": None},
        {"url": 5},
        {"url": b"redis://localhost"},
        {"url": ""},
        {"url": "redis://" + SURROGATE},
        {"connect_timeout": 0},
        {"connect_timeout": -1},
        {"connect_timeout": math.nan},
        {"command_timeout": math.inf},
        {"command_timeout": True},
        {"command_timeout": "1"},
        {"client": "redis://localhost"},
    ],
    ids=_option_id,
)
def test_redis_store_refuses_bad_options_and_writes_nothing(options: dict[str, object]) -> None:
    """RedisSessionStore: a bad namespace, URL, timeout or client is InvalidInputError; Redis is unchanged."""
    url = options.pop("url", redis_url())
    before = redis_state("greentic:session")
    with pytest.raises(InvalidInputError):
        RedisSessionStore(url, **options).close()  # type: ignore[arg-type]
    assert redis_state("greentic:session") == before


# -- the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (["fsck", LONG_NAME], 8),
        (["fsck", "a\0b"], 16),
        (["stats", LONG_PATH], 8),
        (["compact", SURROGATE], 16),
        (["compact", "store", "--wait", "inf"], 16),
        (["fsck", "store", "--wait", "nan"], 16),
        (["fsck", "store", "--wait", "soon"], 16),
        (["export", "a\0b"], 16),
        (["import", "ftp://x", "-"], 8),
        (["migrate", "memory:", LONG_NAME], 8),
        (["nosuch"], 16),
        (["fsck"], 16),
    ],
    ids=lambda value: " ".join(value)[:40] if isinstance(value, list) else str(value),
)
def test_cli_bad_arguments_exit_8_or_16_with_a_message_not_a_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    code: int,
) -> None:
    """Bad arguments: a usage error (what no command line may say: an unknown command, a missing
    argument, a bad value, an argument no command line carries) exits 16, a store path the system
    refuses 8 (docs/cli.md); either with a message on stderr, no traceback, nothing written."""
    monkeypatch.chdir(tmp_path)
    FileSessionStore(tmp_path / "store").close()
    before = directory_state(tmp_path)
    assert main(arguments) == code
    captured = capsys.readouterr()
    assert captured.err.strip()
    assert "Traceback" not in captured.err + captured.out
    assert directory_state(tmp_path) == before
