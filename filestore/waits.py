"""Wait routing (greentic-session 0.4.5+): the rules every backend applies the same way.

A runner parks a paused flow as a *wait*: ``register_wait`` stores the
session under the caller's key, adds the key to its user's waits and points
the reply scope at it; the user's next message is routed by that scope
(``find_wait_by_scope``). A session holds at most one wait, named here by
the scope's ``scope_hash()`` (greentic stores no more): its user lookup is
the session's owner scope, so the wait's full address is ``WaitAddress``.

Time is unix milliseconds from a ``Clock`` the store is given (the tests
pass one they advance). A TTL becomes an absolute deadline, so it means the
same after a restart or on another host; a session is expired from its
deadline on (greentic: ``now >= deadline``).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple

from filestore.contract import MAX_DEADLINE_MS, check_context_fence, check_session_data, check_tenant_ctx
from filestore.errors import InvalidInputError
from filestore.ids import SessionKey, SessionScope, UserId, check_key
from filestore.model import ReplyScope, SessionData, TenantCtx

Clock = Callable[[], int]
"""Unix time in milliseconds."""

_ONE_MS: Final = datetime.timedelta(milliseconds=1)


def system_clock() -> int:
    """The wall clock in unix milliseconds (a deadline must survive a restart: not monotonic)."""
    return time.time_ns() // 1_000_000


def check_clock(clock: Clock) -> Clock:
    """Return ``clock`` if it is callable, else raise ``InvalidInputError``."""
    if not callable(clock):
        raise InvalidInputError(
            f"clock: expected a callable returning unix milliseconds, not {type(clock).__name__}",
            field="clock",
            rule="a callable",
        )
    return clock


class WaitAddress(NamedTuple):
    """Where a scope entry lives: the user's lookup scope and the reply scope's hash."""

    owner: SessionScope
    scope_hash: str


def check_reply_scope(scope: object) -> ReplyScope:
    """Return ``scope`` if it is a ``ReplyScope``, else raise ``InvalidInputError``."""
    if not isinstance(scope, ReplyScope):
        raise InvalidInputError(
            f"scope: expected ReplyScope, not {type(scope).__name__}", field="scope", rule="a ReplyScope"
        )
    return scope


def check_ttl(ttl: object) -> datetime.timedelta | None:
    """Return ``ttl`` if it is ``None`` or a non-negative ``timedelta``, else raise ``InvalidInputError``."""
    if ttl is None:
        return None
    if not isinstance(ttl, datetime.timedelta):
        raise InvalidInputError(
            f"ttl: expected datetime.timedelta or None, not {type(ttl).__name__}",
            field="ttl",
            rule="a timedelta or None",
        )
    if ttl < datetime.timedelta(0):
        raise InvalidInputError(f"ttl: {ttl} is negative", field="ttl", rule="not negative")
    return ttl


def ttl_ms(ttl: datetime.timedelta) -> int:
    """A TTL in whole milliseconds, rounded up (a sub-millisecond TTL still expires, as in Rust)."""
    # Not -(-ttl // _ONE_MS): negating timedelta.max overflows (OverflowError, not InvalidInputError).
    whole, rest = divmod(ttl, _ONE_MS)
    return whole + bool(rest)


def deadline_ms(now_ms: int, ttl: datetime.timedelta | None) -> int | None:
    """The absolute deadline of a TTL starting now; ``InvalidInputError`` past int64 milliseconds."""
    if ttl is None:
        return None
    deadline = now_ms + ttl_ms(ttl)
    if deadline > MAX_DEADLINE_MS:
        raise InvalidInputError(f"ttl: {ttl} is too long", field="ttl", rule="a deadline within int64 ms")
    return deadline


def is_expired(deadline: int | None, now_ms: int) -> bool:
    """Whether a session with this deadline is expired at ``now_ms`` (never, without one)."""
    return deadline is not None and now_ms >= deadline


def wait_lookup(ctx: object, user_id: object) -> SessionScope:
    """The user lookup scope a wait call addresses: ``ctx``'s env, tenant and team, and ``user_id``."""
    checked = check_tenant_ctx(ctx)
    user = UserId.parse(user_id, field="user_id")
    return SessionScope(checked.env, checked.tenant_id, checked.effective_team, user)


def wait_address(ctx: object, user_id: object, scope: object) -> WaitAddress:
    """The scope entry a wait call addresses (arguments checked)."""
    return WaitAddress(wait_lookup(ctx, user_id), check_reply_scope(scope).scope_hash())


class WaitRegistration(NamedTuple):
    """A checked ``register_wait`` call: where it goes, what it stores, and its TTL."""

    key: SessionKey
    address: WaitAddress
    data: SessionData
    ttl: datetime.timedelta | None


def check_registration(
    ctx: TenantCtx,
    user_id: UserId | str,
    scope: ReplyScope,
    key: SessionKey | str,
    data: SessionData,
    ttl: datetime.timedelta | None,
) -> WaitRegistration:
    """Check a ``register_wait`` call as greentic-session 0.4.7 does; nothing is stored on error.

    The context fence of ``create_session`` (``TenantMismatchError``); then
    ``ctx``'s user, if any, and the data's user, which is required, must both
    be ``user_id`` (``InvalidInputError``). The session's owner is then the
    wait's user lookup scope.
    """
    address = wait_address(ctx, user_id, scope)
    checked_key = check_key(key)
    checked_ttl = check_ttl(ttl)
    check_context_fence(ctx, check_session_data(data))
    user = address.owner.user
    ctx_user = ctx.effective_user
    if ctx_user is not None and ctx_user != user:
        raise InvalidInputError(
            f"user must match tenant context when registering a wait: ctx names {ctx_user}, "
            f"user_id is {user}",
            field="user_id",
            rule="ctx's user is user_id",
        )
    data_user = data.tenant_ctx.effective_user
    if data_user is None:
        raise InvalidInputError(
            "user required by wait but missing in session data", field="data.tenant_ctx.user", rule="a user"
        )
    if data_user != user:
        raise InvalidInputError(
            f"user must match session data when registering a wait: data names {data_user}, "
            f"user_id is {user}",
            field="user_id",
            rule="the data's user is user_id",
        )
    return WaitRegistration(checked_key, address, data, checked_ttl)


def only_wait(keys: Iterable[SessionKey]) -> SessionKey | None:
    """``find_by_user``'s answer from a user's live waits: none, the one, or ``InvalidInputError``."""
    found = list(keys)
    if len(found) > 1:
        raise InvalidInputError(
            "multiple waits exist for user; use scope-based routing instead",
            field="user",
            rule="at most one wait when routing by user",
        )
    return found[0] if found else None
