"""One-pass decoding of ``SessionData``: the fast path of ``from_cbor`` and ``from_json``.

Every read that misses the store's cache decodes a session, and the
constructors' way (attrs' __init__ running a converter or validator per
field, ids parsed one call at a time) cost several times the CBOR decoding
itself. ``from_cbor`` and ``from_json`` (of text: what they see is only what
cbor2 or json made) first try the common shape: objects, not arrays; every
field checked by the same rule its converter or validator applies, ids
looked up among those already validated (one dict lookup, and the object
found is shared: interned); then the frozen objects are filled slot by slot.
Anything else (a struct written as an array, ``-0``, a field that breaks a
rule) returns None and takes the constructors' way, which raises the exact
error, or builds what this path declined.

Imported by ``filestore.model`` at its end, once the classes it builds exist.
"""

from __future__ import annotations

from typing import Any, Final, cast

from filestore.errors import InvalidInputError
from filestore.fields import (
    I128_MAX,
    I128_MIN,
    U32_MAX,
    FrozenMap,
    is_text,
    slot_builder,
)
from filestore.ids import EnvId, FlowId, PackId, TeamId, TenantId, UserId, known_ids
from filestore.model import (
    _CTX_OPTIONAL_STRINGS,
    _NO_OPTIONAL_STRINGS,
    Impersonation,
    InvocationDeadline,
    SessionCursor,
    SessionData,
    TenantCtx,
)

# Keyed by whatever a document holds: a lookup of a non-str finds nothing (or raises TypeError).
_ENVS: Final = cast("dict[Any, EnvId]", known_ids(EnvId))
_TENANTS: Final = cast("dict[Any, TenantId]", known_ids(TenantId))
_TEAMS: Final = cast("dict[Any, TeamId]", known_ids(TeamId))
_USERS: Final = cast("dict[Any, UserId]", known_ids(UserId))
_FLOWS: Final = cast("dict[Any, FlowId]", known_ids(FlowId))
_PACKS: Final = cast("dict[Any, PackId]", known_ids(PackId))
_NO_ATTRIBUTES: Final = FrozenMap({})  # immutable, so every context without attributes shares one

_build_session = slot_builder(SessionData)
_build_ctx = slot_builder(
    TenantCtx, first=("env", "tenant", "tenant_id", "team", "team_id", "user", "user_id", "attempt")
)
_build_cursor = slot_builder(SessionCursor)
_build_deadline = slot_builder(InvocationDeadline)
_build_impersonation = slot_builder(Impersonation)


def fast_session(doc: object) -> SessionData | None:
    """The session in a decoded document of the common shape, or None: the caller then takes from_dict."""
    try:
        if type(doc) is not dict:
            return None
        get = doc.get
        ctx = _fast_ctx(get("tenant_ctx"))
        cursor = get("cursor")
        context_json = get("context_json")
        if ctx is None or type(cursor) is not dict:
            return None
        if not (type(context_json) is str and context_json.isascii()) and not is_text(context_json):
            return None
        node = cursor.get("node_pointer")
        wait = cursor.get("wait_reason")
        outbox = cursor.get("outbox_marker")
        if not (type(node) is str and node.isascii()) and not is_text(node):
            return None
        if wait is not None and not (type(wait) is str and wait.isascii()) and not is_text(wait):
            return None
        if outbox is not None and not is_text(outbox):
            return None
        flow = get("flow_id")
        pack = get("pack_id")
        return _build_session(
            ctx,
            _FLOWS.get(flow) or FlowId.parse(flow, field="flow_id"),
            _build_cursor(node, wait, outbox),
            context_json,
            None if pack is None else _PACKS.get(pack) or PackId.parse(pack, field="pack_id"),
        )
    except (InvalidInputError, TypeError):
        # A broken id, or an unhashable value looked up as one: from_dict reports it.
        return None


def _fast_ctx(doc: object) -> TenantCtx | None:
    if type(doc) is not dict:
        return None
    get = doc.get
    env = get("env")
    tenant = get("tenant")
    tenant_id = get("tenant_id")
    team = get("team")
    team_id = get("team_id")
    user = get("user")
    user_id = get("user_id")
    attempt = get("attempt")
    # Most contexts hold these eight fields and nothing else: when the map has
    # no more keys than were found (the four required ones must be there, or
    # the ids below fail), every other field is absent.
    found = 4 + (team is not None) + (team_id is not None) + (user is not None) + (user_id is not None)
    rest = _ABSENT_REST if len(doc) == found else _fast_rest(doc)
    if rest is None or type(attempt) is not int or not 0 <= attempt <= U32_MAX:
        return None
    # The paired fields are usually equal: validate once, share the id.
    env = _ENVS.get(env) or EnvId.parse(env, field="env")
    tenant = _TENANTS.get(tenant) or TenantId.parse(tenant, field="tenant")
    if tenant_id == tenant:
        tenant_id = tenant
    else:
        tenant_id = _TENANTS.get(tenant_id) or TenantId.parse(tenant_id, field="tenant_id")
    if team is not None:
        team = _TEAMS.get(team) or TeamId.parse(team, field="team")
    if team_id is not None:
        team_id = team if team_id == team else _TEAMS.get(team_id) or TeamId.parse(team_id, field="team_id")
    if user is not None:
        user = _USERS.get(user) or UserId.parse(user, field="user")
    if user_id is not None:
        user_id = user if user_id == user else _USERS.get(user_id) or UserId.parse(user_id, field="user_id")
    return _build_ctx(env, tenant, tenant_id, team, team_id, user, user_id, attempt, *rest)


# TenantCtx's other fields, in the order _build_ctx takes them after the ids and attempt.
_CTX_REST: Final = (*_CTX_OPTIONAL_STRINGS, "attributes", "deadline", "idempotency_key", "impersonation")
_ABSENT_REST: Final = (*_NO_OPTIONAL_STRINGS, _NO_ATTRIBUTES, None, None, None)


def _fast_rest(doc: dict[Any, Any]) -> tuple[object, ...] | None:
    """The context's fields beyond its ids and attempt (as ``_CTX_REST``), checked; None to take from_dict."""
    values = list(map(doc.get, _CTX_REST))
    # The seven optional strings, then idempotency_key: plain text or absent.
    if not all(value is None or is_text(value) for value in (*values[:7], values[9])):
        return None
    extras = _fast_extras(doc, values[7], values[8], values[10])
    if extras is None:
        return None
    values[7], values[8], values[10] = extras
    return tuple(values)


def _fast_extras(
    doc: dict[Any, Any], attributes: object, deadline: object, impersonation: object
) -> tuple[FrozenMap, InvocationDeadline | None, Impersonation | None] | None:
    """A context's attributes, deadline and impersonation, or None to take from_dict."""
    if attributes is None:
        if "attributes" in doc:  # null: from_dict refuses it
            return None
        attributes = _NO_ATTRIBUTES
    elif type(attributes) is dict and all(
        is_text(name) and is_text(item) for name, item in attributes.items()
    ):
        attributes = FrozenMap(attributes) if attributes else _NO_ATTRIBUTES
    else:
        return None
    if deadline is not None:
        deadline = _fast_deadline(deadline)
        if deadline is None:
            return None
    if impersonation is not None:
        impersonation = _fast_impersonation(impersonation)
        if impersonation is None:
            return None
    return attributes, deadline, impersonation


def _fast_deadline(value: object) -> InvocationDeadline | None:
    if type(value) is not dict:
        return None
    millis = value.get("unix_millis")
    if type(millis) is not int or not I128_MIN <= millis <= I128_MAX:
        return None
    return _build_deadline(millis)


def _fast_impersonation(value: object) -> Impersonation | None:
    if type(value) is not dict:
        return None
    actor = value.get("actor_id")
    reason = value.get("reason")
    if reason is not None and not is_text(reason):
        return None
    return _build_impersonation(_USERS.get(actor) or UserId.parse(actor, field="actor_id"), reason)
