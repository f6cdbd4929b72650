"""The floors: the least work a session store could do on this disk, as benchmark contenders.

Raw append + fdatasync; pwrite into pre-zeroed, pre-synced space +
fdatasync; raw append without sync (each reading back by pread +
``SessionData.from_cbor``); and a plain dict. No framing, checksums or
contract checks: they bound what is possible.
"""

from __future__ import annotations

import os
import struct
import uuid
from pathlib import Path
from typing import Final

from filestore import SessionData, TenantCtx
from filestore.contract import lookup_scope, session_scope
from filestore.ids import SessionScope
from tools.bench.contenders import Contender, parse_scope, scope_text

# A floor record: total length, kind, key length, owner length; then key, owner, CBOR.
_RECORD: Final = struct.Struct("<IBHH")
_PUT: Final = 1
_REMOVE: Final = 2
PREZERO_CHUNK: Final = 64 << 20


class LogFloor(Contender):
    """The least a log store can do: one write per call, reads by pread + ``from_cbor``.

    ``mode``: ``append-sync`` (``write`` on ``O_APPEND``, the file grows, then
    ``fdatasync``), ``prezeroed-sync`` (``pwrite`` into space zero-filled and
    synced ahead of time in ``PREZERO_CHUNK`` steps, then ``fdatasync``) or
    ``append-nosync``. No framing checksum, no contract checks.
    """

    def __init__(self, path: Path, mode: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path / "floor.log"
        self._mode = mode
        self._sync = mode != "append-nosync"
        self._fd = -1
        self.open()

    def open(self) -> None:
        """Read the log back: each live key's body offset, length and owner, and each user's key."""
        self._entries: dict[str, tuple[int, int, SessionScope]] = {}
        self._users: dict[SessionScope, str] = {}
        flags = os.O_RDWR | os.O_CREAT | (os.O_APPEND if self._mode != "prezeroed-sync" else 0)
        self._fd = os.open(self._file, flags, 0o600)
        data = self._file.read_bytes()
        offset = 0
        while offset + _RECORD.size <= len(data):
            total, kind, key_length, owner_length = _RECORD.unpack_from(data, offset)
            if total == 0:
                break
            start = offset + _RECORD.size
            key = data[start : start + key_length].decode()
            if kind == _PUT:
                owner = parse_scope(data[start + key_length : start + key_length + owner_length].decode())
                body = start + key_length + owner_length
                self._entries[key] = (body, offset + total - body, owner)
                if owner.user is not None:
                    self._users[owner] = key
            else:
                _, _, owner = self._entries.pop(key)
                if self._users.get(owner) == key:
                    del self._users[owner]
            offset += total
        self._end = offset
        self._allocated = len(data)
        if self._mode == "prezeroed-sync":
            self._prezero(self._end + 1)

    def _prezero(self, needed: int) -> None:
        while self._allocated < needed:
            os.pwrite(self._fd, bytes(PREZERO_CHUNK), self._allocated)
            self._allocated += PREZERO_CHUNK
            os.fdatasync(self._fd)

    def _append(self, kind: int, key: str, owner: bytes, body: bytes) -> int:
        encoded_key = key.encode()
        total = _RECORD.size + len(encoded_key) + len(owner) + len(body)
        record = _RECORD.pack(total, kind, len(encoded_key), len(owner)) + encoded_key + owner + body
        offset = self._end
        if self._mode == "prezeroed-sync":
            self._prezero(offset + total + _RECORD.size)
            os.pwrite(self._fd, record, offset)
        else:
            os.write(self._fd, record)
        if self._sync:
            os.fdatasync(self._fd)
        self._end = offset + total
        return offset + total - len(body)

    def _put(self, key: str, scope: SessionScope, data: SessionData) -> None:
        body = data.to_cbor()
        self._entries[key] = (self._append(_PUT, key, scope_text(scope).encode(), body), len(body), scope)
        if scope.user is not None:
            self._users[scope] = key

    def create(self, ctx: TenantCtx, data: SessionData) -> str:
        key = str(uuid.uuid4())
        self._put(key, session_scope(ctx, data), data)
        return key

    def get(self, key: str) -> SessionData | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        return SessionData.from_cbor(os.pread(self._fd, entry[1], entry[0]))

    def update(self, key: str, data: SessionData) -> None:
        self._put(key, self._entries[key][2], data)

    def remove(self, key: str) -> None:
        _, _, owner = self._entries.pop(key)
        self._append(_REMOVE, key, b"", b"")
        if self._users.get(owner) == key:
            del self._users[owner]

    def user_key(self, scope: SessionScope) -> str | None:
        return self._users.get(scope)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class DictFloor(Contender):
    """A plain dict of ``SessionData`` objects: no I/O, no encoding (reopen keeps it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sessions: dict[str, tuple[SessionScope, SessionData]] = {}
        self._users: dict[SessionScope, str] = {}

    def open(self) -> None:
        """Nothing to open: the dict is the store, and it outlives a reopen."""

    def close(self) -> None:
        """Nothing to release."""

    def create(self, ctx: TenantCtx, data: SessionData) -> str:
        key = str(uuid.uuid4())
        scope = session_scope(ctx, data)
        self._sessions[key] = (scope, data)
        if scope.user is not None:
            self._users[scope] = key
        return key

    def get(self, key: str) -> SessionData | None:
        found = self._sessions.get(key)
        return None if found is None else found[1]

    def update(self, key: str, data: SessionData) -> None:
        scope = self._sessions[key][0]
        self._sessions[key] = (scope, data)
        if scope.user is not None:
            self._users[scope] = key

    def remove(self, key: str) -> None:
        scope, _ = self._sessions.pop(key)
        if self._users.get(scope) == key:
            del self._users[scope]

    def find_by_user(self, ctx: TenantCtx, user: str) -> tuple[str, SessionData] | None:
        # Not the shared lookup-then-get: a floor does the least work, one dict read per index.
        key = self._users.get(lookup_scope(ctx, user))
        if key is None:
            return None
        return key, self._sessions[key][1]

    def disk_bytes(self) -> tuple[int, int]:
        return 0, 0
