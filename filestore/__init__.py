"""filestore: a crash-safe, embedded session store for paused conversational flows.

Everything a user imports comes from here; the submodules are implementation.
"""

from __future__ import annotations

from filestore.contract import SessionStore, StoredSession
from filestore.engine.options import Durability
from filestore.engine.store import FileSessionStore
from filestore.errors import (
    BackendUnavailableError,
    CorruptionError,
    ErrorCode,
    FilestoreError,
    InvalidInputError,
    LockTimeoutError,
    SessionNotFoundError,
    StoreClosedError,
    StoreInUseError,
    StorePoisonedError,
    TenantMismatchError,
    UnsupportedFilesystemError,
)
from filestore.ids import EnvId, FlowId, PackId, SessionKey, SessionScope, TeamId, TenantId, UserId
from filestore.mapping import telegram_update_to_session_key, webhook_to_session_key
from filestore.memory import InMemorySessionStore
from filestore.model import Impersonation, InvocationDeadline, SessionCursor, SessionData, TenantCtx
from filestore.redis_store import RedisSessionStore

__all__ = [
    "BackendUnavailableError",
    "CorruptionError",
    "Durability",
    "EnvId",
    "ErrorCode",
    "FileSessionStore",
    "FilestoreError",
    "FlowId",
    "Impersonation",
    "InMemorySessionStore",
    "InvalidInputError",
    "InvocationDeadline",
    "LockTimeoutError",
    "PackId",
    "RedisSessionStore",
    "SessionCursor",
    "SessionData",
    "SessionKey",
    "SessionNotFoundError",
    "SessionScope",
    "SessionStore",
    "StoreClosedError",
    "StoreInUseError",
    "StorePoisonedError",
    "StoredSession",
    "TeamId",
    "TenantCtx",
    "TenantId",
    "TenantMismatchError",
    "UnsupportedFilesystemError",
    "UserId",
    "telegram_update_to_session_key",
    "webhook_to_session_key",
]
