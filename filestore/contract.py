"""The ``SessionStore`` contract, and the rules every backend applies the same way.

The rules live here once, so the in-memory, file and (later) Redis backends
cannot drift apart:

- ``session_scope``: who owns a session, i.e. its user lookup key;
- ``check_context_fence``: ``create_session``'s agreement check between
  ``ctx`` and ``data.tenant_ctx`` (greentic-session 0.4);
- ``check_ctx_preserved``: ``update_session``'s comparison of the stored data
  with the new data (greentic's ``ensure_ctx_preserved``): env, tenant, team
  and the user, present or absent, stay as they were;
- ``check_same_owner``: data an owner scope may hold (``import_session``);
  the data may leave out the user the scope names;
- ``check_tenant_ctx``, ``check_session_data``: the type checks of a call's
  arguments.

Every ``check_*`` returns what it checked (the data, for the owner checks),
so a caller may check and use in one expression.
"""

from __future__ import annotations

import datetime
import re
from types import TracebackType
from typing import Final, Protocol, Self, runtime_checkable

import attrs

from filestore.errors import InvalidInputError, TenantMismatchError
from filestore.ids import SessionKey, SessionScope, TeamId, UserId, check_key
from filestore.model import ReplyScope, SessionData, TenantCtx

# A reply scope's scope_hash: lower-case hex SHA-256.
_SCOPE_HASH: Final = re.compile("[0-9a-f]{64}")
# Deadlines are stored as CBOR/JSON integers and handed to Redis' PEXPIRE: int64.
MAX_DEADLINE_MS: Final = 2**63 - 1

# One limit on a session's size for every backend (the file store's frames, the memory
# store, Redis), so a session one accepts, another takes: migrate never stops part-way.
DEFAULT_MAX_RECORD_SIZE: Final = 16 << 20
_LARGEST_LIMIT: Final = 1 << 62


@attrs.frozen
class StoredSession:
    """A session as a store holds it, for moving it to another store.

    ``active`` says whether the user lookup of ``scope`` points at it (the
    user's active session), so a migration reproduces the lookups exactly.
    ``wait`` is the ``scope_hash`` of the reply scope whose entry points at
    it (a wait of ``scope``'s user), and ``deadline_ms`` the unix-millisecond
    deadline a TTL gave it; ``None`` when it has none.
    """

    key: SessionKey
    scope: SessionScope
    data: SessionData
    active: bool
    wait: str | None = None
    deadline_ms: int | None = None


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


# The parts of a session's owner, in the order they are checked, and the
# field a TenantMismatchError about each names.
MISMATCH_FIELDS: Final = {"env/tenant": "tenant_ctx", "team": "tenant_ctx.team", "user": "tenant_ctx.user"}


def check_tenant_ctx(ctx: object) -> TenantCtx:
    """Return ``ctx`` if it is a ``TenantCtx``, else raise ``InvalidInputError``."""
    if not isinstance(ctx, TenantCtx):
        raise InvalidInputError(
            f"ctx: expected TenantCtx, not {type(ctx).__name__}", field="ctx", rule="a TenantCtx"
        )
    return ctx


def check_session_data(data: object) -> SessionData:
    """Return ``data`` if it is a ``SessionData``, else raise ``InvalidInputError``."""
    if not isinstance(data, SessionData):
        raise InvalidInputError(
            f"data: expected SessionData, not {type(data).__name__}", field="data", rule="a SessionData"
        )
    return data


def check_stored_session(session: object) -> StoredSession:
    """Return ``session`` if it is a well-formed ``StoredSession``, else raise ``InvalidInputError``.

    ``StoredSession`` does not validate its fields (it is built from what a
    store already holds), so ``import_session`` checks them here: a valid
    key, a scope of valid ids, a ``SessionData`` its scope owns
    (``TenantMismatchError`` otherwise) and a bool ``active``. Returns a
    copy holding the parsed key and scope.
    """
    if not isinstance(session, StoredSession):
        raise InvalidInputError(
            f"session: expected StoredSession, not {type(session).__name__}",
            field="session",
            rule="a StoredSession",
        )
    key = check_key(session.key)
    raw_scope = session.scope
    if not isinstance(raw_scope, tuple):
        raise InvalidInputError(
            f"session.scope: expected SessionScope, not {type(raw_scope).__name__}",
            field="session.scope",
            rule="a SessionScope",
        )
    scope = SessionScope.parse(list(raw_scope), field="session.scope")
    data = check_same_owner(scope, session.data)
    if not isinstance(session.active, bool):
        raise InvalidInputError(
            f"session.active must be True or False, not {session.active!r}",
            field="session.active",
            rule="a bool",
        )
    wait = session.wait
    if wait is not None:
        if not isinstance(wait, str) or _SCOPE_HASH.fullmatch(wait) is None:
            raise InvalidInputError(
                "session.wait must be a scope_hash (64 lower-case hex digits) or None",
                field="session.wait",
                rule="a scope hash",
            )
        if data.tenant_ctx.effective_user is None:
            raise InvalidInputError(
                "session.wait: a wait's session data must name its user",
                field="session.wait",
                rule="user required by wait",
            )
    deadline = session.deadline_ms
    if deadline is not None and (type(deadline) is not int or not 0 <= deadline <= MAX_DEADLINE_MS):
        raise InvalidInputError(
            "session.deadline_ms must be None or unix milliseconds within int64",
            field="session.deadline_ms",
            rule="unix milliseconds",
        )
    return StoredSession(key, scope, data, session.active, wait, deadline)


def check_context_fence(ctx: TenantCtx, data: SessionData) -> SessionData:
    """Return ``data`` if ``ctx`` and ``data.tenant_ctx`` agree, else raise ``TenantMismatchError``.

    They must agree on env and tenant_id, on the team (``team_id`` or else
    ``team``), and when the data names a user, ``ctx`` must name the same one.
    A ``ctx`` or ``data`` of the wrong type is ``InvalidInputError``.
    """
    ctx = check_tenant_ctx(ctx)
    data_ctx = check_session_data(data).tenant_ctx
    part = _changed_part(SessionScope(ctx.env, ctx.tenant_id, ctx.effective_team, ctx.effective_user), data)
    if part == "env/tenant":
        raise _mismatch(
            part,
            f"ctx is {ctx.env}/{ctx.tenant_id}, session data is {data_ctx.env}/{data_ctx.tenant_id}",
            "ctx and data agree on env and tenant",
        )
    if part == "team":
        raise _mismatch(
            part,
            f"ctx has {_team(ctx.effective_team)}, session data has {_team(data_ctx.effective_team)}",
            "ctx and data agree on team",
        )
    if part == "user":
        raise _mismatch(
            part,
            f"session data names user {data_ctx.effective_user}, ctx names {ctx.effective_user}",
            "ctx names the data's user",
        )
    return data


def check_same_owner(stored: SessionScope, data: SessionData) -> SessionData:
    """Return ``data`` unless it would move a session owned by ``stored`` to another owner.

    Raises ``TenantMismatchError`` if it names another env, tenant, team or
    user (it may leave the user out), ``InvalidInputError`` if it is not a
    ``SessionData``.
    """
    data_ctx = check_session_data(data).tenant_ctx
    part = _changed_part(stored, data)
    if part == "env/tenant":
        raise _mismatch(
            part,
            f"the session belongs to {stored.env}/{stored.tenant_id}, "
            f"the update names {data_ctx.env}/{data_ctx.tenant_id}",
            "an update keeps env and tenant",
        )
    if part == "team":
        raise _mismatch(
            part,
            f"the session belongs to {_team(stored.team)}, the update names {_team(data_ctx.effective_team)}",
            "an update keeps the team",
        )
    if part == "user":
        raise _mismatch(
            part,
            f"the session belongs to user {stored.user}, the update names user {data_ctx.effective_user}",
            "an update keeps the user",
        )
    return data


def check_ctx_preserved(stored: SessionData, data: SessionData) -> SessionData:
    """Return ``data`` if it may replace ``stored`` (greentic's ``ensure_ctx_preserved``).

    The new data must keep the stored data's env, tenant and team; a user the
    stored data names may not change nor be dropped, and none may be
    introduced when the stored data named none (even if the creating ``ctx``
    did): greentic-session 0.4.3 and 0.4.7 refuse all of these. Raises
    ``TenantMismatchError`` (part ``env/tenant``, ``team`` or ``user``),
    ``InvalidInputError`` if ``data`` is not a ``SessionData``.
    """
    data_ctx = check_session_data(data).tenant_ctx
    stored_ctx = stored.tenant_ctx
    env, tenant, team = stored_ctx.env, stored_ctx.tenant_id, stored_ctx.effective_team
    part = _changed_part(SessionScope(env, tenant, team, data_ctx.effective_user), data)
    if part == "env/tenant":
        raise _mismatch(
            part,
            f"the session belongs to {env}/{tenant}, the update names {data_ctx.env}/{data_ctx.tenant_id}",
            "an update keeps env and tenant",
        )
    if part == "team":
        raise _mismatch(
            part,
            f"the session belongs to {_team(team)}, the update names {_team(data_ctx.effective_team)}",
            "an update keeps the team",
        )
    stored_user, user = stored_ctx.effective_user, data_ctx.effective_user
    if stored_user is None and user is not None:
        raise _mismatch(
            "user",
            f"the session's data names no user, the update names user {user}",
            "an update cannot introduce a user",
        )
    if stored_user != user:
        raise _mismatch(
            "user",
            f"the session belongs to user {stored_user}, the update names {_user(user)}",
            "an update keeps the user",
        )
    return data


def points_lookup(data: SessionData) -> bool:
    """Whether an accepted update with ``data`` points its user's lookup at the session.

    Only when the data names the user (as greentic-session 0.4.3 does): an
    update of user-less data leaves the lookup where it is, even when the
    session was created for the creating ``ctx``'s user.
    """
    return data.tenant_ctx.effective_user is not None


def _changed_part(owner: SessionScope, data: SessionData) -> str | None:
    """The first part of ``owner`` (a key of ``MISMATCH_FIELDS``) ``data`` disagrees with, or ``None``.

    The data must keep env, tenant and team; it may name no user, but a
    user it names must be the owner's.
    """
    data_ctx = data.tenant_ctx
    if (data_ctx.env, data_ctx.tenant_id) != (owner.env, owner.tenant_id):
        return "env/tenant"
    if data_ctx.effective_team != owner.team:
        return "team"
    user = data_ctx.effective_user
    if user is not None and user != owner.user:
        return "user"
    return None


def _mismatch(part: str, detail: str, rule: str) -> TenantMismatchError:
    return TenantMismatchError(
        f"{part} mismatch: {detail}", part=part, field=MISMATCH_FIELDS[part], rule=rule
    )


def _team(team: TeamId | None) -> str:
    return "no team" if team is None else f"team {team}"


def _user(user: UserId | None) -> str:
    return "no user" if user is None else f"user {user}"


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
    """greentic-session's store contract (five calls, four wait calls), ``purge_expired`` and ``close``.

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
        """Replace the data of an existing session.

        Raises ``SessionNotFoundError`` for an unknown key and
        ``TenantMismatchError`` when the new data changes the stored data's
        env, tenant, team or user, drops its user, or names a user where the
        stored data named none. In both cases nothing changes. When the new
        data names its user, that user's lookup then points at this session;
        user-less data leaves the lookup alone.
        """
        ...

    def remove_session(self, key: SessionKey | str) -> None:
        """Delete a session, its user lookup entry if that points at it, and its wait.

        Raises ``SessionNotFoundError`` for an unknown (or expired) key. A
        scope entry is deleted only if it points at this key (greentic 0.4.7
        also deletes one another key took over: not copied).
        """
        ...

    def find_by_user(self, ctx: TenantCtx, user: UserId | str) -> tuple[SessionKey, SessionData] | None:
        """The active session of ``user`` in ``ctx``'s env, tenant and team, or ``None``.

        The session the user lookup of ``create_session`` / ``update_session``
        points at; when there is none (or it expired), the user's waits
        answer as greentic-session 0.4.7 does: none gives ``None``, one live
        wait gives it, several raise ``InvalidInputError`` (route by scope).
        Never returns another env's, tenant's or team's session.
        """
        ...

    def register_wait(
        self,
        ctx: TenantCtx,
        user_id: UserId | str,
        scope: ReplyScope,
        key: SessionKey | str,
        data: SessionData,
        ttl: datetime.timedelta | None = None,
    ) -> None:
        """Park ``data`` under the caller's ``key`` as a wait of ``user_id`` at ``scope``.

        The context fence of ``create_session``; ``ctx``'s user, if any, and
        the data's user, which is required, must be ``user_id``
        (``InvalidInputError``). Over an existing key the update rules apply
        (``TenantMismatchError``) and its previous wait is replaced. The key
        joins the user's waits and the scope points at it; a different key
        the scope pointed at leaves the user's waits (its session stays).
        With a ``ttl`` the session and its wait expire then; without, they
        never do. The five-call user lookup is left as it is.
        """
        ...

    def find_wait_by_scope(
        self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope
    ) -> SessionKey | None:
        """The key of the live wait of ``user_id`` (in ``ctx``'s env, tenant, team) at ``scope``."""
        ...

    def list_waits_for_user(self, ctx: TenantCtx, user_id: UserId | str) -> list[SessionKey]:
        """The keys of every live wait of ``user_id`` in ``ctx``'s env, tenant and team, sorted."""
        ...

    def clear_wait(self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope) -> None:
        """Remove the wait at ``scope`` and its session; nothing there is not an error."""
        ...

    def purge_expired(self) -> int:
        """Remove every expired session now (reads already ignore them); the number removed."""
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


def check_max_record_size(value: object) -> int:
    """``value`` if it is a size limit (an ``int`` from 1 to 2^62), else ``InvalidInputError``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _LARGEST_LIMIT:
        raise InvalidInputError(
            f"max_record_size must be an integer from 1 to {_LARGEST_LIMIT}, not {value!r}",
            field="max_record_size",
            rule=f"1..{_LARGEST_LIMIT}",
        )
    return value


def check_record_size(encoded: int, limit: int, key: str | None) -> None:
    """Refuse a session whose data is ``encoded`` bytes as CBOR, more than ``limit``: the
    ``InvalidInputError`` names the session (its key, or "the new session")."""
    if encoded > limit:
        who = "the new session" if key is None else f"session {key}"
        raise InvalidInputError(
            f"{who}: its data is {encoded} bytes encoded (CBOR), more than max_record_size "
            f"({limit}); nothing was stored",
            field="data",
            rule=f"at most {limit} bytes encoded",
        )
