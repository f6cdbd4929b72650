"""The Redis key layout and value helpers shared by every Redis client of the store (sync or async).

The names of a session's keys (greentic-session's layout, plus ours; the
full list is in ``filestore.redis_scripts``), how a deadline maps to a key's
expiry time, the scripts' view of a context, what a script's answer means,
and how a stored value decodes. No I/O: ``RedisSessionStore`` and an
asyncio store drive the same helpers.
"""

from __future__ import annotations

import json
import re
from typing import Final

from filestore.contract import MISMATCH_FIELDS, StoredSession, session_scope
from filestore.errors import (
    CorruptionError,
    InvalidInputError,
    SessionNotFoundError,
    TenantMismatchError,
    message_of,
)
from filestore.ids import SessionKey, SessionScope
from filestore.model import SessionData
from filestore.waits import WaitRegistration, ttl_ms

DEFAULT_NAMESPACE: Final = "greentic:session"
# A script's error reply for a stored value that does not decode: ``CORRUPT "<key>"``.
CORRUPT_PREFIX: Final = "CORRUPT "


def session_key(namespace: str, key: str) -> str:
    """The Redis key of session ``key``'s data (greentic's ``{ns}:session:{key}``)."""
    return f"{namespace}:session:{key}"


def glob_literal(text: str) -> str:
    """``text`` as a SCAN MATCH pattern matching itself (a namespace may hold ``*?[]\\``, and
    unescaped would reach other namespaces' keys)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def deadline(expire_at: int) -> int | None:
    """A key's ``PEXPIRETIME`` (-1: none) as a deadline: the first millisecond it is expired.

    Redis keeps a key while its clock is at or before the expiry time
    (``now > when`` expires it); a deadline is the first millisecond a session
    is invisible (``now >= deadline``), so the two are one apart.
    """
    return None if expire_at < 0 else expire_at + 1


def expire_at(deadline: int) -> int:
    """The ``PEXPIREAT`` time of a deadline (see ``deadline``)."""
    return deadline - 1


def ctx_args(data: SessionData) -> list[str]:
    """The scripts' view of new data's context: env, tenant_id, team and user ('' for none)."""
    owner = data.tenant_ctx
    return [owner.env, owner.tenant_id, owner.effective_team or "", owner.effective_user or ""]


def check_outcome(outcome: object, key: SessionKey) -> None:
    """Raise what a script's answer other than ``ok`` means (greentic's ensure_ctx_preserved parts)."""
    if outcome == "ok":
        return
    if outcome == "not_found":
        raise SessionNotFoundError(f"no session with key {key}", key=key)
    if outcome == "introduced":
        raise TenantMismatchError(
            f"user mismatch: session {key}'s data names no user, the new data names one",
            part="user",
            field=MISMATCH_FIELDS["user"],
            rule="an update cannot introduce a user",
        )
    part = str(outcome)
    raise TenantMismatchError(
        f"{part} mismatch: an update may not change"
        f"{' or drop' if part == 'user' else ''} session {key}'s {part}",
        part=part,
        field=MISMATCH_FIELDS.get(part, "tenant_ctx"),
        rule=f"an update keeps the {part}",
    )


def stored_data(name: str, value: str) -> SessionData:
    """The session stored at Redis key ``name``; ``CorruptionError`` (greentic's ``Internal``) if damaged.

    Not ``InvalidInputError``: the caller gave nothing wrong, the store holds it (greentic's Redis
    store also answers ``Internal`` for stored JSON it cannot read).
    """
    try:
        return SessionData.from_json(value)
    except InvalidInputError as error:
        raise corrupt(name, error) from None


def corrupt(name: str, error: BaseException | str) -> CorruptionError:
    detail = message_of(error) if isinstance(error, BaseException) else error
    return CorruptionError(f"Redis key {name} holds a damaged value: {detail}", path=name, offset=0)


def encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate), as every Redis key and URL must be."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- the scripts' arguments (ARGV in the order filestore.redis_scripts reads it) -----------


def store_args(namespace: str, session: StoredSession) -> list[str]:
    """STORE's: a new or copied session with its owner, lookup state, wait and expiry time."""
    return [
        namespace,
        session.key,
        session.data.to_json(),
        json.dumps(list(session.scope)),
        "1" if session.active else "0",
        session.wait or "",
        "" if session.deadline_ms is None else str(expire_at(session.deadline_ms)),
    ]


def update_args(namespace: str, key: SessionKey, data: SessionData) -> list[str]:
    """UPDATE's: the new data and its context."""
    return [namespace, key, data.to_json(), *ctx_args(data)]


def register_args(namespace: str, wait: WaitRegistration) -> list[str]:
    """REGISTER's: the wait's data, its user's scope, the reply scope's hash and the TTL."""
    owner, scope_hash = wait.address
    # A timedelta is under 10**17 ms: PEXPIRE never overflows (Redis checks int64).
    ttl = "" if wait.ttl is None else str(ttl_ms(wait.ttl))
    return [
        namespace,
        wait.key,
        wait.data.to_json(),
        json.dumps(list(owner)),
        scope_hash,
        ttl,
        *ctx_args(wait.data),
    ]


def find_args(namespace: str, scope: SessionScope, *, waits: bool) -> list[str]:
    """FIND's: the lookup scope, and whether a user's only wait answers when there is no lookup."""
    return [namespace, scope.env, scope.tenant_id, scope.team or "", scope.user or "", "1" if waits else "0"]


def owner_of(namespace: str, key: SessionKey, owner: str, data: SessionData) -> SessionScope:
    """A session's owner from its owner key's value, or (none kept) from its data's context."""
    if not owner:
        return session_scope(data.tenant_ctx, data)
    try:
        return SessionScope.parse(json.loads(owner), field="owner")
    except (ValueError, RecursionError) as error:
        raise corrupt(f"{namespace}:owner:{key}", error) from None
