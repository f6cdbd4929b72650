"""The alternatives a user would pick instead of filestore, as benchmark contenders.

SQLite in WAL mode (``synchronous=FULL`` and ``NORMAL``), diskcache, and one
file per session. Each applies the contract's rules through
``filestore.contract`` (the context fence on create, the owner check on
update) and returns validated ``SessionData`` (``SessionData.from_cbor``),
so it does the same work as filestore.

One exception, on purpose: ``SqliteLeanContender`` is the least SQLite a
user could write (one key -> blob table, no contract checks), so readers
see what those checks cost SQLite next to the contender that does them.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import struct
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from filestore import SessionData, TenantCtx
from filestore.contract import check_context_fence, check_same_owner, lookup_scope, session_scope
from filestore.ids import SessionScope
from tools.bench.contenders import Contender, parse_scope, scope_from_parts, scope_text

# -- SQLite --------------------------------------------------------------------------

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS sessions (key TEXT PRIMARY KEY, env TEXT NOT NULL, "
    "tenant TEXT NOT NULL, team TEXT NOT NULL, user TEXT NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS users (env TEXT NOT NULL, tenant TEXT NOT NULL, team TEXT NOT NULL, "
    "user TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (env, tenant, team, user)) WITHOUT ROWID",
)
_SYNCHRONOUS: Final = {"FULL": "PRAGMA synchronous=FULL", "NORMAL": "PRAGMA synchronous=NORMAL"}


def columns(scope: SessionScope) -> tuple[str, str, str, str]:
    env, tenant, team, user = scope
    return str(env), str(tenant), "" if team is None else str(team), "" if user is None else str(user)


class _SqliteConnections(Contender):
    """A SQLite database in WAL mode under ``path``, a connection per thread, and its write transaction.

    Each thread gets its own connection (SQLite's rule); ``_transaction`` is
    one ``BEGIN IMMEDIATE`` transaction, so concurrent writers queue on the
    lock (``busy_timeout``) rather than fail.
    """

    def __init__(self, path: Path, synchronous: str, schema: tuple[str, ...]) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = str(path / "sessions.db")
        self._pragma = _SYNCHRONOUS[synchronous]
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self.open()
        with self._transaction() as connection:
            for statement in schema:
                connection.execute(statement)

    def open(self) -> None:
        self._connection()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self._db, isolation_level=None, check_same_thread=False, timeout=60)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(self._pragma)
            self._local.connection = connection
            with self._guard:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def close(self) -> None:
        with self._guard:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()

    def compact(self) -> bool:
        connection = self._connection()
        connection.execute("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return True


class SqliteContender(_SqliteConnections):
    """SQLite, WAL mode: a key -> CBOR table and a unique user -> key table, with the contract's checks.

    Writes are one ``BEGIN IMMEDIATE`` transaction each; update reads the
    stored owner and checks it (``check_same_owner``) inside that transaction.
    """

    def __init__(self, path: Path, synchronous: str) -> None:
        super().__init__(path, synchronous, SCHEMA)

    def _scope_of(self, connection: sqlite3.Connection, key: str) -> SessionScope:
        row = connection.execute(
            "SELECT env, tenant, team, user FROM sessions WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            raise KeyError(key)
        return scope_from_parts(*row)

    def create(self, ctx: TenantCtx, data: SessionData) -> str:
        check_context_fence(ctx, data)
        scope = columns(session_scope(ctx, data))
        key = str(uuid.uuid4())
        blob = data.to_cbor()
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO sessions (key, env, tenant, team, user, data) VALUES (?, ?, ?, ?, ?, ?)",
                (key, *scope, blob),
            )
            if scope[3]:
                connection.execute(
                    "INSERT OR REPLACE INTO users (env, tenant, team, user, key) VALUES (?, ?, ?, ?, ?)",
                    (*scope, key),
                )
        return key

    def get(self, key: str) -> SessionData | None:
        row = self._connection().execute("SELECT data FROM sessions WHERE key = ?", (key,)).fetchone()
        return None if row is None else SessionData.from_cbor(row[0])

    def update(self, key: str, data: SessionData) -> None:
        blob = data.to_cbor()
        with self._transaction() as connection:
            stored = self._scope_of(connection, key)
            check_same_owner(stored, data)
            connection.execute("UPDATE sessions SET data = ? WHERE key = ?", (blob, key))
            if stored.user is not None:
                connection.execute(
                    "INSERT OR REPLACE INTO users (env, tenant, team, user, key) VALUES (?, ?, ?, ?, ?)",
                    (*columns(stored), key),
                )

    def remove(self, key: str) -> None:
        with self._transaction() as connection:
            stored = self._scope_of(connection, key)
            connection.execute("DELETE FROM sessions WHERE key = ?", (key,))
            connection.execute(
                "DELETE FROM users WHERE env = ? AND tenant = ? AND team = ? AND user = ? AND key = ?",
                (*columns(stored), key),
            )

    def find_by_user(self, ctx: TenantCtx, user: str) -> tuple[str, SessionData] | None:
        scope = columns(lookup_scope(ctx, user))
        row = (
            self._connection()
            .execute(
                "SELECT s.key, s.data FROM users u JOIN sessions s ON s.key = u.key "
                "WHERE u.env = ? AND u.tenant = ? AND u.team = ? AND u.user = ?",
                scope,
            )
            .fetchone()
        )
        return None if row is None else (row[0], SessionData.from_cbor(row[1]))


_LEAN_SCHEMA: Final = ("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)",)
_USER_ROW: Final = "user\x1f"
"""The prefix of the rows that point a user at their session; no session key (a UUID) has it."""


class SqliteLeanContender(_SqliteConnections):
    """The least SQLite a user could write: one key -> blob table, no contract checks.

    A session is one row (key -> CBOR); a user's lookup is another row of the
    same table (``_USER_ROW`` + owner -> session key), written with the
    session on create, in one ``BEGIN IMMEDIATE`` transaction. Update and
    remove are one autocommit statement each (a transaction of their own,
    synced as the peer's are), with no owner read or check: update writes the
    blob, remove deletes it and leaves the user row dangling, which a
    ``find_by_user`` joins to nothing (None, as for a removed session) and the
    user's next create replaces. No context fence on create either.
    """

    def __init__(self, path: Path, synchronous: str) -> None:
        super().__init__(path, synchronous, _LEAN_SCHEMA)

    def create(self, ctx: TenantCtx, data: SessionData) -> str:
        scope = session_scope(ctx, data)
        key = str(uuid.uuid4())
        blob = data.to_cbor()
        with self._transaction() as connection:
            connection.execute("INSERT INTO kv (key, value) VALUES (?, ?)", (key, blob))
            if scope.user is not None:
                connection.execute(
                    "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                    (_USER_ROW + scope_text(scope), key),
                )
        return key

    def get(self, key: str) -> SessionData | None:
        if key.startswith(_USER_ROW):
            return None
        row = self._connection().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else SessionData.from_cbor(row[0])

    def update(self, key: str, data: SessionData) -> None:
        cursor = self._connection().execute("UPDATE kv SET value = ? WHERE key = ?", (data.to_cbor(), key))
        if cursor.rowcount == 0:
            raise KeyError(key)

    def remove(self, key: str) -> None:
        cursor = self._connection().execute("DELETE FROM kv WHERE key = ?", (key,))
        if cursor.rowcount == 0:
            raise KeyError(key)

    def find_by_user(self, ctx: TenantCtx, user: str) -> tuple[str, SessionData] | None:
        row = (
            self._connection()
            .execute(
                "SELECT s.key, s.value FROM kv u JOIN kv s ON s.key = u.value WHERE u.key = ?",
                (_USER_ROW + scope_text(lookup_scope(ctx, user)),),
            )
            .fetchone()
        )
        return None if row is None else (row[0], SessionData.from_cbor(row[1]))


# -- diskcache -----------------------------------------------------------------------


def diskcache_missing() -> str | None:
    try:
        importlib.import_module("diskcache")
    except ImportError:
        return "diskcache is not installed (pip install -e '.[bench]')"
    return None


class DiskcacheContender(Contender):
    """diskcache's ``Cache`` (SQLite WAL, synchronous=NORMAL: not durable per write).

    Three keys per session, written in one ``transact()``: ``s:<key>`` -> the
    CBOR, ``o:<key>`` -> its owner, ``u:<owner>`` -> the user's active key.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._module: Any = importlib.import_module("diskcache")
        self.open()

    def open(self) -> None:
        self._cache: Any = self._module.Cache(str(self.path), size_limit=2**40, eviction_policy="none")

    def close(self) -> None:
        self._cache.close()

    def create(self, ctx: TenantCtx, data: SessionData) -> str:
        check_context_fence(ctx, data)
        scope = session_scope(ctx, data)
        owner = scope_text(scope)
        key = str(uuid.uuid4())
        blob = data.to_cbor()
        cache = self._cache
        with cache.transact():
            cache.set("s:" + key, blob)
            cache.set("o:" + key, owner)
            if scope.user is not None:
                cache.set("u:" + owner, key)
        return key

    def get(self, key: str) -> SessionData | None:
        blob = self._cache.get("s:" + key)
        return None if blob is None else SessionData.from_cbor(blob)

    def update(self, key: str, data: SessionData) -> None:
        blob = data.to_cbor()
        cache = self._cache
        with cache.transact():
            owner = cache.get("o:" + key)
            if owner is None:
                raise KeyError(key)
            stored = parse_scope(owner)
            check_same_owner(stored, data)
            cache.set("s:" + key, blob)
            if stored.user is not None:
                cache.set("u:" + owner, key)

    def remove(self, key: str) -> None:
        cache = self._cache
        with cache.transact():
            owner = cache.get("o:" + key)
            if owner is None:
                raise KeyError(key)
            cache.delete("s:" + key)
            cache.delete("o:" + key)
            if cache.get("u:" + owner) == key:
                cache.delete("u:" + owner)

    def user_key(self, scope: SessionScope) -> str | None:
        key: str | None = self._cache.get("u:" + scope_text(scope))
        return key


# -- one file per session ---------------------------------------------------------------

_FILE_HEADER: Final = struct.Struct("<QH")  # sequence number, owner length; then owner, then CBOR


class FilePerSessionContender(Contender):
    """One file per session: write a temp file, fsync, rename, fsync the directory.

    The user lookup lives in memory and is rebuilt on open by reading every
    file (each carries a sequence number: the newest write of a user wins).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._dir_fd = -1
        self.open()

    def open(self) -> None:
        """Read every file: the owners, and each user's newest session (by sequence number)."""
        self._owners: dict[str, SessionScope] = {}
        self._seq = 0
        self._dir_fd = os.open(self.path, os.O_RDONLY)
        newest: dict[SessionScope, tuple[int, str]] = {}
        for entry in os.scandir(self.path):
            if entry.name.startswith("."):
                continue
            blob = Path(entry.path).read_bytes()
            seq, owner_length = _FILE_HEADER.unpack_from(blob)
            start = _FILE_HEADER.size
            scope = parse_scope(blob[start : start + owner_length].decode())
            self._owners[entry.name] = scope
            self._seq = max(self._seq, seq)
            if scope.user is not None and seq > newest.get(scope, (-1, ""))[0]:
                newest[scope] = (seq, entry.name)
        self._users: dict[SessionScope, str] = {scope: key for scope, (_, key) in newest.items()}

    def _write(self, key: str, scope: SessionScope, data: SessionData) -> None:
        self._seq += 1
        owner = scope_text(scope).encode()
        blob = _FILE_HEADER.pack(self._seq, len(owner)) + owner + data.to_cbor()
        temp = self.path / f".{key}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.path / key)
        os.fsync(self._dir_fd)

    def create(self, ctx: TenantCtx, data: SessionData) -> str:
        check_context_fence(ctx, data)
        scope = session_scope(ctx, data)
        key = str(uuid.uuid4())
        self._write(key, scope, data)
        self._owners[key] = scope
        if scope.user is not None:
            self._users[scope] = key
        return key

    def get(self, key: str) -> SessionData | None:
        if "/" in key or key.startswith("."):
            return None
        try:
            blob = (self.path / key).read_bytes()
        except FileNotFoundError:
            return None
        _, owner_length = _FILE_HEADER.unpack_from(blob)
        return SessionData.from_cbor(blob[_FILE_HEADER.size + owner_length :])

    def update(self, key: str, data: SessionData) -> None:
        stored = self._owners[key]
        check_same_owner(stored, data)
        self._write(key, stored, data)
        if stored.user is not None:
            self._users[stored] = key

    def remove(self, key: str) -> None:
        stored = self._owners.pop(key)
        os.unlink(self.path / key)
        os.fsync(self._dir_fd)
        if self._users.get(stored) == key:
            del self._users[stored]

    def user_key(self, scope: SessionScope) -> str | None:
        return self._users.get(scope)

    def close(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
