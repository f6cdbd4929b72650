"""The ``SessionStore`` contract, and the rules every backend applies the same way.

The rules live here once, so the in-memory, file and (later) Redis backends
cannot drift apart:

- ``session_scope``: who owns a session, i.e. its user lookup key;
- ``check_context_fence``: ``create_session``'s agreement check between
  ``ctx`` and ``data.tenant_ctx`` (greentic-session 0.4);
- ``check_same_owner``: ``update_session`` may not move a session to another
  env, tenant, team or user.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import attrs

from filestore.errors import InvalidInputError, TenantMismatchError
from filestore.ids import SessionKey, SessionScope, TeamId, UserId
from filestore.model import SessionData, TenantCtx


@attrs.frozen
class StoredSession:
    """A session as a store holds it, for moving it to another store.

    ``active`` says whether the user lookup of ``scope`` points at it (the
    user's active session), so a migration reproduces the lookups exactly.
    """

    key: SessionKey
    scope: SessionScope
    data: SessionData
    active: bool


def session_scope(ctx: TenantCtx, data: SessionData) -> SessionScope:
    """The scope a new session gets: the data's context, and its user or else ``ctx``'s."""
    data_ctx = data.tenant_ctx
    user = data_ctx.effective_user
    if user is None:
        user = ctx.effective_user
    return SessionScope(data_ctx.env, data_ctx.tenant_id, data_ctx.effective_team, user)


def lookup_scope(ctx: TenantCtx, user: UserId | str) -> SessionScope:
    """The lookup key ``find_by_user(ctx, user)`` reads."""
    checked = UserId.parse(user, field="user")
    return SessionScope(ctx.env, ctx.tenant_id, ctx.effective_team, checked)


def check_context_fence(ctx: TenantCtx, data: SessionData) -> None:
    """Raise ``TenantMismatchError`` unless ``ctx`` and ``data.tenant_ctx`` agree.

    They must agree on env and tenant_id, on the team (``team_id`` or else
    ``team``), and when the data names a user, ``ctx`` must name the same one.
    """
    _check_types(ctx, data)
    data_ctx = data.tenant_ctx
    if (ctx.env, ctx.tenant_id) != (data_ctx.env, data_ctx.tenant_id):
        raise TenantMismatchError(
            f"env/tenant mismatch: ctx is {ctx.env}/{ctx.tenant_id}, "
            f"session data is {data_ctx.env}/{data_ctx.tenant_id}",
            part="env/tenant",
            field="tenant_ctx",
            rule="ctx and data agree on env and tenant",
        )
    if ctx.effective_team != data_ctx.effective_team:
        raise TenantMismatchError(
            f"team mismatch: ctx has {_team(ctx.effective_team)}, "
            f"session data has {_team(data_ctx.effective_team)}",
            part="team",
            field="tenant_ctx.team",
            rule="ctx and data agree on team",
        )
    data_user = data_ctx.effective_user
    if data_user is not None and ctx.effective_user != data_user:
        raise TenantMismatchError(
            f"user mismatch: session data names user {data_user}, ctx names {ctx.effective_user}",
            part="user",
            field="tenant_ctx.user",
            rule="ctx names the data's user",
        )


def _team(team: TeamId | None) -> str:
    return "no team" if team is None else f"team {team}"


def check_session_data(data: object) -> SessionData:
    """Return ``data`` if it is a ``SessionData``, else raise ``InvalidInputError``."""
    if not isinstance(data, SessionData):
        raise InvalidInputError(
            f"data: expected SessionData, not {type(data).__name__}", field="data", rule="a SessionData"
        )
    return data


def check_same_owner(stored: SessionScope, data: SessionData) -> None:
    """Raise ``TenantMismatchError`` if ``data`` would move a session to another owner."""
    check_session_data(data)
    data_ctx = data.tenant_ctx
    if (data_ctx.env, data_ctx.tenant_id) != (stored.env, stored.tenant_id):
        raise TenantMismatchError(
            f"env/tenant mismatch: the session belongs to {stored.env}/{stored.tenant_id}, "
            f"the update names {data_ctx.env}/{data_ctx.tenant_id}",
            part="env/tenant",
            field="tenant_ctx",
            rule="an update keeps env and tenant",
        )
    if data_ctx.effective_team != stored.team:
        raise TenantMismatchError(
            f"team mismatch: the session belongs to {_team(stored.team)}, "
            f"the update names {_team(data_ctx.effective_team)}",
            part="team",
            field="tenant_ctx.team",
            rule="an update keeps the team",
        )
    user = data_ctx.effective_user
    if user is not None and user != stored.user:
        raise TenantMismatchError(
            f"user mismatch: the session belongs to user {stored.user}, the update names user {user}",
            part="user",
            field="tenant_ctx.user",
            rule="an update keeps the user",
        )


def _check_types(ctx: object, data: object) -> None:
    if not isinstance(ctx, TenantCtx):
        raise InvalidInputError(
            f"ctx: expected TenantCtx, not {type(ctx).__name__}", field="ctx", rule="a TenantCtx"
        )
    check_session_data(data)


def check_tenant_ctx(ctx: object) -> TenantCtx:
    """Return ``ctx`` if it is a ``TenantCtx``, else raise ``InvalidInputError``."""
    if not isinstance(ctx, TenantCtx):
        raise InvalidInputError(
            f"ctx: expected TenantCtx, not {type(ctx).__name__}", field="ctx", rule="a TenantCtx"
        )
    return ctx


class ClosesOnExit:
    """Context-manager use for a store: leaving the ``with`` block calls ``close()``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@runtime_checkable
class SessionStore(Protocol):
    """The five-call session store contract of greentic-session, plus ``close``.

    Every backend (memory, file, Redis) passes the same contract test suite.
    A store is a context manager: leaving the ``with`` block closes it.
    """

    def create_session(self, ctx: TenantCtx, data: SessionData) -> SessionKey:
        """Store a new session and return its new random (uuid4) key.

        ``ctx`` and ``data.tenant_ctx`` must agree on env, tenant and team, and
        on the user when the data names one (``TenantMismatchError``
        otherwise, nothing stored). The user lookup of the session's user
        (the data's, or else ``ctx``'s) then points at the new key: a user's
        newest session wins. Durable backends return only once it is durable.
        """
        ...

    def get_session(self, key: SessionKey | str) -> SessionData | None:
        """The session's data, or ``None`` when the key is unknown.

        An empty or over-long key raises ``InvalidInputError``.
        """
        ...

    def update_session(self, key: SessionKey | str, data: SessionData) -> None:
        """Replace the data of an existing session; its user lookup points at it.

        Raises ``SessionNotFoundError`` for an unknown key and
        ``TenantMismatchError`` when the data changes the session's env,
        tenant, team or user (or names a user where none was stored). In
        both cases nothing changes.
        """
        ...

    def remove_session(self, key: SessionKey | str) -> None:
        """Delete a session, and its user lookup entry if that points at it.

        Raises ``SessionNotFoundError`` for an unknown key.
        """
        ...

    def find_by_user(self, ctx: TenantCtx, user: UserId | str) -> tuple[SessionKey, SessionData] | None:
        """The active session of ``user`` in ``ctx``'s env, tenant and team, or ``None``.

        Never returns another env's, tenant's or team's session. A lookup entry
        that points at a missing session is cleaned up.
        """
        ...

    def close(self) -> None:
        """Release the store's resources; further calls raise ``StoreClosedError``."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
