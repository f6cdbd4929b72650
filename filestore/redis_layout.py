"""The Redis key layout and value helpers shared by every Redis client of the store (sync or async).

The names of a session's keys (greentic-session's layout, plus ours; the
full list is in ``filestore.redis_scripts``), how a deadline maps to a key's
expiry time, the scripts' view of a context, what a script's answer means,
and how a stored value decodes. No I/O: ``RedisSessionStore`` and an
asyncio store drive the same helpers.
"""

from __future__ import annotations

import re
from typing import Final

from filestore.contract import MISMATCH_FIELDS
from filestore.errors import (
    CorruptionError,
    InvalidInputError,
    SessionNotFoundError,
    TenantMismatchError,
    message_of,
)
from filestore.ids import SessionKey
from filestore.model import SessionData

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
