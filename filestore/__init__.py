"""filestore: a crash-safe, embedded session store for paused conversational flows.

Everything a user imports comes from here; the submodules are implementation.
That includes the library functions behind the command line (``fsck``,
``compact``, ``stats``, ``export_sessions``, ``import_sessions``,
``migrate``, each returning a typed report) and ``main(argv)``, the command
line itself.
"""

from __future__ import annotations

from filestore.aio import (
    AsyncFileSessionStore,
    AsyncInMemorySessionStore,
    AsyncRedisSessionStore,
    AsyncSessionStore,
    open_async_store,
)
from filestore.backends import MigrateReport, MovableStore, migrate, open_store
from filestore.cli import main
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
    StoreFullError,
    StoreInUseError,
    StorePoisonedError,
    StoreReadOnlyError,
    TenantMismatchError,
    UnsupportedFilesystemError,
    UntrustedDirectoryError,
    WriteInDoubtError,
)
from filestore.ids import EnvId, FlowId, PackId, SessionKey, SessionScope, TeamId, TenantId, UserId
from filestore.mapping import canonical_session_key, telegram_update_to_session_key, webhook_to_session_key
from filestore.memory import InMemorySessionStore
from filestore.model import (
    Impersonation,
    InvocationDeadline,
    ReplyScope,
    SessionCursor,
    SessionData,
    TenantCtx,
    WaitScope,
)
from filestore.offline.compact import CompactReport, compact
from filestore.offline.fsck import FsckAction, FsckFinding, FsckReport, FsckSeverity, fsck
from filestore.offline.stats import StatsReport, stats
from filestore.progress import PhasedProgress
from filestore.redis_store import RedisSessionStore
from filestore.transfer import ImportReport, export_sessions, import_sessions

__all__ = [
    "AsyncFileSessionStore",
    "AsyncInMemorySessionStore",
    "AsyncRedisSessionStore",
    "AsyncSessionStore",
    "BackendUnavailableError",
    "CompactReport",
    "CorruptionError",
    "Durability",
    "EnvId",
    "ErrorCode",
    "FileSessionStore",
    "FilestoreError",
    "FlowId",
    "FsckAction",
    "FsckFinding",
    "FsckReport",
    "FsckSeverity",
    "Impersonation",
    "ImportReport",
    "InMemorySessionStore",
    "InvalidInputError",
    "InvocationDeadline",
    "LockTimeoutError",
    "MigrateReport",
    "MovableStore",
    "PackId",
    "PhasedProgress",
    "RedisSessionStore",
    "ReplyScope",
    "SessionCursor",
    "SessionData",
    "SessionKey",
    "SessionNotFoundError",
    "SessionScope",
    "SessionStore",
    "StatsReport",
    "StoreClosedError",
    "StoreFullError",
    "StoreInUseError",
    "StorePoisonedError",
    "StoreReadOnlyError",
    "StoredSession",
    "TeamId",
    "TenantCtx",
    "TenantId",
    "TenantMismatchError",
    "UnsupportedFilesystemError",
    "UntrustedDirectoryError",
    "UserId",
    "WaitScope",
    "WriteInDoubtError",
    "canonical_session_key",
    "compact",
    "export_sessions",
    "fsck",
    "import_sessions",
    "main",
    "migrate",
    "open_async_store",
    "open_store",
    "stats",
    "telegram_update_to_session_key",
    "webhook_to_session_key",
]
