"""``RedisSessionStore``: the SessionStore contract on Redis, in greentic-session's key layout.

Layout (shared with the Rust crate, so Python and Rust runners can share one Redis)::

    {ns}:session:{key}                              the SessionData JSON (serde's shape)
    {ns}:user:{env}:{tenant_id}:{team or "-"}:{user} the key of the user's active session
    {ns}:owner:{key}                                ours: the session's owner scope, as JSON
    {ns}:scoped-user:{env}:{tenant_id}:{team}:{user} ours: the same lookup, for team "" (none) or "-" only

The owner entry records the user a session was created for when only the
creating ``ctx`` named one (the data does not); Rust-written sessions have
none, and their owner is read from their data. Every mutation is one Lua
script, so the session, its owner and the user lookups change together, and
many writers on many hosts never leave the lookup disagreeing with the
sessions.

greentic's lookup key writes a missing team as ``-``, which is also a valid
team id, so "no team" and the team ``-`` share it. It keeps greentic's
meaning (the newest session either scope, or a Rust runner, pointed it at),
and ``find_by_user`` answers from it only when the session's stored owner is
the scope asked for; otherwise from that scope's own ``scoped-user`` entry,
where the empty team field stands for none (an id is never empty). So the two
scopes never see, take over or remove each other's lookups, exactly as
``InMemorySessionStore`` behaves. The user part needs none of this: a session
without a user has no lookup, so ``-`` there is only ever the user ``-``.

Failures: an unreachable or failing server raises ``BackendUnavailableError``
(greentic code ``Unavailable``) naming the address. A write that raised may or
may not have been applied (the script ran or not, never half); its durability
is the server's: with ``appendonly yes`` and ``appendfsync always`` an
acknowledged write survives a server crash, with ``everysec`` up to a second
of writes may be lost.
"""

from __future__ import annotations

import datetime
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any, Final

import redis
import redis.exceptions

from filestore.contract import (
    MISMATCH_FIELDS,
    ClosesOnExit,
    StoredSession,
    check_context_fence,
    check_session_data,
    check_stored_session,
    check_tenant_ctx,
    lookup_scope,
    session_scope,
)
from filestore.errors import (
    BackendUnavailableError,
    CorruptionError,
    InvalidInputError,
    SessionNotFoundError,
    StoreClosedError,
    TenantMismatchError,
    message_of,
)
from filestore.ids import SessionKey, SessionScope, UserId, check_key
from filestore.model import ReplyScope, SessionData, TenantCtx

DEFAULT_NAMESPACE: Final = "greentic:session"
_CORRUPT: Final = "CORRUPT "

# The stored owner of a session (ours if recorded, else read from its Rust-written data),
# the keys that point a user at a session, and whether an owner is a given scope.
# A stored value that does not decode is an error reply 'CORRUPT "<key>"' (greentic's Internal);
# the key is JSON-quoted, as Redis appends its own text to the reply.
_OWNER: Final = """
local function stored_table(name, text)
  local ok, value = pcall(cjson.decode, text)
  if ok and type(value) == 'table' then return value end
  error({err = 'CORRUPT ' .. cjson.encode(name)})
end
local function owner_of(session_key, owner_key)
  local owner = redis.call('GET', owner_key)
  if owner then return stored_table(owner_key, owner) end
  local data = redis.call('GET', session_key)
  if not data then return nil end
  local ctx = stored_table(session_key, data)['tenant_ctx']
  if type(ctx) ~= 'table' then error({err = 'CORRUPT ' .. cjson.encode(session_key)}) end
  local function pick(a, b)
    if a ~= nil and a ~= cjson.null then return a end
    if b ~= nil and b ~= cjson.null then return b end
    return cjson.null
  end
  return {ctx['env'], ctx['tenant_id'], pick(ctx['team_id'], ctx['team']), pick(ctx['user_id'], ctx['user'])}
end
local function lookup_key(ns, owner)
  if owner[4] == cjson.null then return nil end
  local team = owner[3]
  if team == cjson.null then team = '-' end
  return ns .. ':user:' .. owner[1] .. ':' .. owner[2] .. ':' .. team .. ':' .. owner[4]
end
-- Ours: no team and the team '-' share greentic's lookup key, so each of the two keeps its own
-- entry too ('' for no team: an id is never empty). Other teams need none.
local function scoped_key(ns, owner)
  if owner[4] == cjson.null then return nil end
  local team = owner[3]
  if team == cjson.null then team = ''
  elseif team ~= '-' then return nil end
  return ns .. ':scoped-user:' .. owner[1] .. ':' .. owner[2] .. ':' .. team .. ':' .. owner[4]
end
local function point(ns, owner, key)
  local lookup = lookup_key(ns, owner)
  if lookup then redis.call('SET', lookup, key) end
  local scoped = scoped_key(ns, owner)
  if scoped then redis.call('SET', scoped, key) end
end
-- team and user: '' for none.
local function owned_by(owner, env, tenant, team, user)
  local function text(value)
    if value == cjson.null then return '' end
    return value
  end
  return owner[1] == env and owner[2] == tenant and text(owner[3]) == team and text(owner[4]) == user
end
"""

# KEYS: session, owner; ARGV: ns, key, data, owner JSON, "1" to point the owner's lookup here.
_CREATE: Final = (
    _OWNER
    + """
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[4])
if ARGV[5] == '1' then point(ARGV[1], cjson.decode(ARGV[4]), ARGV[2]) end
return 'ok'
"""
)

# KEYS: session, owner; ARGV: ns, key, data, env, tenant_id, team or "", user or "".
# The user is compared with the stored data's (greentic's ensure_ctx_preserved): it may not
# change, be dropped or be introduced, whatever user the owner got from the creating ctx.
# Only data that names the user points its lookup here.
_UPDATE: Final = (
    _OWNER
    + """
local stored = redis.call('GET', KEYS[1])
if not stored then return 'not_found' end
local owner = owner_of(KEYS[1], KEYS[2])
local team = owner[3]
if team == cjson.null then team = '' end
if owner[1] ~= ARGV[4] or owner[2] ~= ARGV[5] then return 'env/tenant' end
if team ~= ARGV[6] then return 'team' end
local ctx = cjson.decode(stored)['tenant_ctx']
local user = ctx['user_id']
if user == nil or user == cjson.null then user = ctx['user'] end
if user == nil or user == cjson.null then user = '' end
if user == '' and ARGV[7] ~= '' then return 'introduced' end
if ARGV[7] ~= user then return 'user' end
redis.call('SET', KEYS[1], ARGV[3])
if ARGV[7] ~= '' then point(ARGV[1], owner, ARGV[2]) end
return 'ok'
"""
)

# KEYS: session, owner; ARGV: ns, key. The lookup entries go only if they point at this key
# (greentic's key also when it does: it was then the owner's newest, whoever wrote it).
_REMOVE: Final = (
    _OWNER
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'not_found' end
local owner = owner_of(KEYS[1], KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2])
local lookup = lookup_key(ARGV[1], owner)
local newest = lookup and redis.call('GET', lookup) == ARGV[2]
if newest then redis.call('DEL', lookup) end
local scoped = scoped_key(ARGV[1], owner)
if scoped and (newest or redis.call('GET', scoped) == ARGV[2]) then redis.call('DEL', scoped) end
return 'ok'
"""
)

# ARGV: ns, env, tenant_id, team or "", user. Returns {key, data} or nil; cleans dangling entries.
# greentic's key holds the newest session written by anyone (a Rust runner writes only it), so it
# answers when its session is this scope's; otherwise it belongs to the other scope sharing it,
# and this scope's own entry answers.
_FIND: Final = (
    _OWNER
    + """
local ns = ARGV[1]
local wanted = {ARGV[2], ARGV[3], ARGV[4], ARGV[5]}
if wanted[3] == '' then wanted[3] = cjson.null end
local function candidate(entry)
  local key = redis.call('GET', entry)
  if not key then return nil end
  local session = ns .. ':session:' .. key
  local data = redis.call('GET', session)
  if not data then
    redis.call('DEL', entry)
    return nil
  end
  if owned_by(owner_of(session, ns .. ':owner:' .. key), ARGV[2], ARGV[3], ARGV[4], ARGV[5]) then
    return {key, data}
  end
  return nil
end
local found = candidate(lookup_key(ns, wanted))
if found then return found end
local scoped = scoped_key(ns, wanted)
if scoped then return candidate(scoped) end
return nil
"""
)


class RedisSessionStore(ClosesOnExit):
    """A ``SessionStore`` on a Redis server, in greentic-session's key layout.

    ``url`` is a redis-py URL (``redis://host:port/db``, ``rediss://``,
    ``unix://``); ``client`` may be given instead. Timeouts are in seconds.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        namespace: str = DEFAULT_NAMESPACE,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        client: redis.Redis | None = None,
    ) -> None:
        if (
            not isinstance(namespace, str)
            or not namespace
            or not namespace.isprintable()
            or any(character.isspace() for character in namespace)
            or not _encodable(namespace)
        ):
            raise InvalidInputError(
                f"namespace must be a non-empty string of printable characters without spaces, "
                f"not {namespace!r}",
                field="namespace",
                rule="non-empty, printable, no spaces",
            )
        if client is None and not (isinstance(url, str) and url and _encodable(url)):
            raise InvalidInputError(f"url must be a redis URL, not {url!r}", field="url", rule="a URL")
        if client is not None and not isinstance(client, redis.Redis):
            raise InvalidInputError(
                f"client must be a redis.Redis, not {type(client).__name__}", field="client", rule="a Redis"
            )
        connect_timeout = _timeout("connect_timeout", connect_timeout)
        command_timeout = _timeout("command_timeout", command_timeout)
        self.namespace = namespace
        self.address = url if client is None else _describe(client)
        self._client = client or redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            decode_responses=True,
        )
        self._closed = False
        self._create = self._client.register_script(_CREATE)
        self._update = self._client.register_script(_UPDATE)
        self._remove = self._client.register_script(_REMOVE)
        self._find = self._client.register_script(_FIND)

    # -- keys of the layout ------------------------------------------------------

    def _session_key(self, key: str) -> str:
        return f"{self.namespace}:session:{key}"

    def _owner_key(self, key: str) -> str:
        return f"{self.namespace}:owner:{key}"

    # -- the contract ------------------------------------------------------------

    def create_session(self, ctx: TenantCtx, data: SessionData) -> SessionKey:
        check_context_fence(ctx, data)
        scope = session_scope(ctx, data)
        key = SessionKey(str(uuid.uuid4()))
        self._store(key, data, scope, active=True)
        return key

    def get_session(self, key: SessionKey | str) -> SessionData | None:
        checked = check_key(key)
        name = self._session_key(checked)
        value = self._call(self._client.get, name)
        return None if value is None else _stored_data(name, value)

    def update_session(self, key: SessionKey | str, data: SessionData) -> None:
        checked = check_key(key)
        owner = check_session_data(data).tenant_ctx
        outcome = self._call(
            self._update,
            [self._session_key(checked), self._owner_key(checked)],
            [
                self.namespace,
                checked,
                data.to_json(),
                owner.env,
                owner.tenant_id,
                owner.effective_team or "",
                owner.effective_user or "",
            ],
        )
        if outcome == "not_found":
            raise SessionNotFoundError(f"no session with key {checked}", key=checked)
        if outcome == "introduced":
            raise TenantMismatchError(
                f"user mismatch: session {checked}'s data names no user, the update names one",
                part="user",
                field=MISMATCH_FIELDS["user"],
                rule="an update cannot introduce a user",
            )
        if outcome != "ok":
            part = str(outcome)
            raise TenantMismatchError(
                f"{part} mismatch: an update may not change"
                f"{' or drop' if part == 'user' else ''} session {checked}'s {part}",
                part=part,
                field=MISMATCH_FIELDS.get(part, "tenant_ctx"),
                rule=f"an update keeps the {part}",
            )

    def remove_session(self, key: SessionKey | str) -> None:
        checked = check_key(key)
        outcome = self._call(
            self._remove, [self._session_key(checked), self._owner_key(checked)], [self.namespace, checked]
        )
        if outcome == "not_found":
            raise SessionNotFoundError(f"no session with key {checked}", key=checked)

    def find_by_user(self, ctx: TenantCtx, user: UserId | str) -> tuple[SessionKey, SessionData] | None:
        return self._find_scope(lookup_scope(check_tenant_ctx(ctx), user))

    # -- wait routing: issue 14, in progress (replaced by the backend's implementation) --

    def register_wait(
        self,
        ctx: TenantCtx,
        user_id: UserId | str,
        scope: ReplyScope,
        key: SessionKey | str,
        data: SessionData,
        ttl: datetime.timedelta | None = None,
    ) -> None:
        raise NotImplementedError("register_wait: not yet on this backend")

    def find_wait_by_scope(
        self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope
    ) -> SessionKey | None:
        raise NotImplementedError("find_wait_by_scope: not yet on this backend")

    def list_waits_for_user(self, ctx: TenantCtx, user_id: UserId | str) -> list[SessionKey]:
        raise NotImplementedError("list_waits_for_user: not yet on this backend")

    def clear_wait(self, ctx: TenantCtx, user_id: UserId | str, scope: ReplyScope) -> None:
        raise NotImplementedError("clear_wait: not yet on this backend")

    def purge_expired(self) -> int:
        raise NotImplementedError("purge_expired: not yet on this backend")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    def __repr__(self) -> str:
        return f"RedisSessionStore({self.address!r}, namespace={self.namespace!r})"

    # -- moving data --------------------------------------------------------------

    def iter_sessions(self) -> Iterator[StoredSession]:
        """Every session with its key, owner and lookup state (SCAN: safe on a live server)."""
        prefix = f"{self.namespace}:session:"
        for name in self._call(self._client.scan_iter, match=f"{prefix}*", count=500):
            key = SessionKey(name[len(prefix) :])
            stored = self._stored(key)
            if stored is None:
                continue  # removed while we scanned
            data, scope = stored
            found = self._find_scope(scope) if scope.user is not None else None
            yield StoredSession(key, scope, data, found is not None and found[0] == key)

    def import_session(self, session: StoredSession) -> bool:
        """Store a session under its own key and owner; ``False`` if already there, equal.

        ``InvalidInputError`` if the key holds a different session (never overwritten).
        """
        session = check_stored_session(session)
        key = session.key
        existing = self._stored(key)
        if existing is not None and existing != (session.data, session.scope):
            raise InvalidInputError(
                f"key {key} already holds a different session", field="key", rule="no overwrite"
            )
        self._store(key, session.data, session.scope, active=session.active)
        return existing is None

    # -- internals ------------------------------------------------------------------

    def _store(self, key: SessionKey, data: SessionData, scope: SessionScope, *, active: bool) -> None:
        self._call(
            self._create,
            [self._session_key(key), self._owner_key(key)],
            [self.namespace, key, data.to_json(), json.dumps(list(scope)), "1" if active else "0"],
        )

    def _stored(self, key: SessionKey) -> tuple[SessionData, SessionScope] | None:
        """A session's data and owner scope (read from its data when it has no owner entry)."""
        name, owner_name = self._session_key(key), self._owner_key(key)
        value, owner = self._call(self._client.mget, [name, owner_name])
        if value is None:
            return None
        data = _stored_data(name, value)
        if owner:
            try:
                return data, SessionScope.parse(json.loads(owner), field="owner")
            except (ValueError, RecursionError) as error:
                raise _corrupt(owner_name, error) from None
        return data, session_scope(data.tenant_ctx, data)

    def _find_scope(self, scope: SessionScope) -> tuple[SessionKey, SessionData] | None:
        """The session the lookup of ``scope`` (which has a user) points at, if it is that scope's."""
        found = self._call(
            self._find,
            [],
            [self.namespace, scope.env, scope.tenant_id, scope.team or "", scope.user],
        )
        if not found:
            return None
        key, value = found
        return SessionKey(key), _stored_data(self._session_key(SessionKey(key)), value)

    def _call(self, operation: Any, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise StoreClosedError(f"the store at {self.address} is closed")
        try:
            return operation(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise BackendUnavailableError(
                f"Redis at {self.address} is unavailable: {error}", address=self.address
            ) from error
        except redis.exceptions.ResponseError as error:
            if str(error).startswith(_CORRUPT):
                name, _end = json.JSONDecoder().raw_decode(str(error), len(_CORRUPT))
                raise _corrupt(name, "it does not decode as JSON") from None
            raise BackendUnavailableError(
                f"Redis at {self.address} refused a command: {error}", address=self.address
            ) from error


def _stored_data(name: str, value: str) -> SessionData:
    """The session stored at Redis key ``name``; ``CorruptionError`` (greentic's ``Internal``) if damaged.

    Not ``InvalidInputError``: the caller gave nothing wrong, the store holds it (greentic's Redis
    store also answers ``Internal`` for stored JSON it cannot read).
    """
    try:
        return SessionData.from_json(value)
    except InvalidInputError as error:
        raise _corrupt(name, error) from None


def _corrupt(name: str, error: BaseException | str) -> CorruptionError:
    detail = message_of(error) if isinstance(error, BaseException) else error
    return CorruptionError(f"Redis key {name} holds a damaged value: {detail}", path=name, offset=0)


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate), as every Redis key and URL must be."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _timeout(name: str, value: float) -> float:
    """``value`` as a positive, finite number of seconds (``0`` would make the socket non-blocking)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise InvalidInputError(
            f"{name} must be a positive, finite number of seconds, not {value!r}", field=name, rule="> 0"
        )
    return float(value)


def _describe(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
