"""Hypothesis strategies for ids and the data model, shared by every test module.

Typical examples are small (short ids, a few optional fields set) so that
failures shrink to something readable; the boundaries (256-character ids,
the ends of the ``u32`` and ``i128`` ranges) are still drawn now and then.
"""

from __future__ import annotations

import json
from types import EllipsisType
from typing import Final, NamedTuple

from hypothesis import strategies as st

from filestore import (
    Impersonation,
    InvocationDeadline,
    ReplyScope,
    SessionCursor,
    SessionData,
    TenantCtx,
)

ID_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
MAX_ID_LENGTH: Final = 256
U32_MAX: Final = 2**32 - 1
I128_MIN: Final = -(2**127)
I128_MAX: Final = 2**127 - 1

# Characters an id must refuse, chosen for the ways a validator goes wrong:
# separators of the Redis layout (':' and '/'), whitespace (including a
# trailing newline, which a regex ending in '$' would let through), NUL,
# non-ASCII letters and digits that str.isalnum()/'\w'/'\d' would accept.
FORBIDDEN_ID_CHARS: Final = (
    " ",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\x7f",
    "/",
    "\\",
    ":",
    "@",
    "#",
    "*",
    "+",
    ",",
    "é",
    "ü",
    "ß",
    "ч",
    "日",
    "٣",  # ARABIC-INDIC DIGIT THREE: a digit to str.isdigit(), not to the rule
    "\uff21",  # FULLWIDTH LATIN CAPITAL LETTER A
    "\u00a0",  # NO-BREAK SPACE
    "\u200b",  # ZERO WIDTH SPACE
    "🙂",
)


def ids(max_size: int = 16) -> st.SearchStrategy[str]:
    """Valid ids: 1..256 ASCII letters, digits, '.', '_', '-'; mostly short, now and then long."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        # One draw in ten is long, up to the 256 maximum; shrinking goes to the short branch.
        if draw(st.integers(0, 9)) == 9:
            return draw(st.text(ID_ALPHABET, min_size=max_size + 1, max_size=MAX_ID_LENGTH))
        return draw(st.text(ID_ALPHABET, min_size=1, max_size=max_size))

    return build()


def bad_ids() -> st.SearchStrategy[str]:
    """Strings every id type must refuse: empty, longer than 256, or holding a forbidden character."""
    valid_part = st.text(ID_ALPHABET, max_size=6)
    # Lone surrogates (category Cs) cannot even be written as CBOR or UTF-8 JSON bytes;
    # test_model.py pins their refusal on its own.
    forbidden = st.sampled_from(FORBIDDEN_ID_CHARS) | st.characters(
        exclude_characters=ID_ALPHABET, exclude_categories=["Cs"]
    )
    with_forbidden = st.builds(lambda left, bad, right: left + bad + right, valid_part, forbidden, valid_part)
    return st.one_of(
        st.just(""),
        st.text(ID_ALPHABET, min_size=MAX_ID_LENGTH + 1, max_size=MAX_ID_LENGTH + 40),
        with_forbidden,
    )


# Free-form strings of the context (session_id, trace_id...): any text, unicode included.
optional_texts: Final = st.none() | st.text(max_size=24)

attributes_maps: Final = st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=3)

deadlines: Final = st.builds(
    InvocationDeadline,
    st.one_of(
        st.integers(0, 4_102_444_800_000),  # milliseconds up to 2100-01-01
        st.integers(I128_MIN, I128_MAX),
        st.sampled_from([I128_MIN, I128_MAX, -1, 0]),
    ),
)

impersonations: Final = st.builds(Impersonation, ids(), optional_texts)

attempts: Final = st.one_of(st.integers(0, 5), st.integers(0, U32_MAX), st.sampled_from([U32_MAX]))


def _paired(draw: st.DrawFn, value: str | None) -> tuple[str | None, str | None]:
    """A (name, name_id) pair whose effective value (name_id or else name) is ``value``."""
    if value is None:
        return None, None
    return draw(st.sampled_from([(value, value), (value, None), (None, value)]))


def tenant_ctxs(
    env: str | None = None,
    tenant: str | None = None,
    team: str | EllipsisType | None = ...,
    user: str | EllipsisType | None = ...,
) -> st.SearchStrategy[TenantCtx]:
    """Full contexts, each optional field (deadline, impersonation, attributes, i18n_id...) sometimes set.

    ``env`` and ``tenant`` pin ``env`` and ``tenant_id`` when given (``None``:
    any). ``team`` and ``user`` pin the *effective* team and user (``team_id``
    or else ``team``; likewise for the user) when given, ``None`` meaning
    "no team"/"no user"; ``...`` (the default) means any, absent included.
    The display field ``tenant`` usually equals ``tenant_id`` but not always.
    """

    @st.composite
    def build(draw: st.DrawFn) -> TenantCtx:
        tenant_id = tenant if tenant is not None else draw(ids())
        team_value = draw(st.none() | ids()) if isinstance(team, EllipsisType) else team
        user_value = draw(st.none() | ids()) if isinstance(user, EllipsisType) else user
        team_name, team_id = _paired(draw, team_value)
        user_name, user_id = _paired(draw, user_value)
        return TenantCtx(
            env=env if env is not None else draw(ids()),
            tenant=draw(st.sampled_from([tenant_id, tenant_id, tenant_id[:200] + ".display"])),
            tenant_id=tenant_id,
            team=team_name,
            team_id=team_id,
            user=user_name,
            user_id=user_id,
            session_id=draw(optional_texts),
            flow_id=draw(optional_texts),
            node_id=draw(optional_texts),
            provider_id=draw(optional_texts),
            trace_id=draw(optional_texts),
            i18n_id=draw(optional_texts),
            correlation_id=draw(optional_texts),
            attributes=draw(attributes_maps),
            deadline=draw(st.none() | deadlines),
            attempt=draw(attempts),
            idempotency_key=draw(optional_texts),
            impersonation=draw(st.none() | impersonations),
        )

    return build()


def cursors() -> st.SearchStrategy[SessionCursor]:
    """Cursors: any node pointer text, optional wait reason and outbox marker."""
    return st.builds(SessionCursor, st.text(max_size=24), optional_texts, optional_texts)


def reply_scopes() -> st.SearchStrategy[ReplyScope]:
    """Reply scopes: any conversation text (empty included), each optional field absent, empty or any text."""
    return st.builds(ReplyScope, st.text(max_size=16), optional_texts, optional_texts, optional_texts)


_json_values: Final = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)

# context_json is opaque: any text (unicode, not JSON at all), or serialised JSON as runners write it.
context_jsons: Final = st.text(max_size=120) | _json_values.map(json.dumps)


def session_datas(ctx: TenantCtx | None = None) -> st.SearchStrategy[SessionData]:
    """Sessions: a full context (or ``ctx``), any cursor, pack_id sometimes set, any context_json text."""
    return st.builds(
        SessionData,
        tenant_ctx=st.just(ctx) if ctx is not None else tenant_ctxs(),
        flow_id=ids(),
        cursor=cursors(),
        context_json=context_jsons,
        pack_id=st.none() | ids(),
    )


# -- a small world, for stateful tests ----------------------------------------
# Few enough names that sessions collide on the same user lookup all the time.

small_envs: Final = st.sampled_from(["dev", "prod"])
small_tenants: Final = st.sampled_from(["acme", "globex"])
small_teams: Final = st.sampled_from([None, "support"])
small_users: Final = st.sampled_from([None, "u1", "u2"])


class SmallScope(NamedTuple):
    """An owner drawn from the small world: env, tenant, team (or None), user (or None)."""

    env: str
    tenant: str
    team: str | None
    user: str | None


small_scopes: Final = st.builds(SmallScope, small_envs, small_tenants, small_teams, small_users)


def small_tenant_ctxs(scope: SmallScope | None = None) -> st.SearchStrategy[TenantCtx]:
    """Full contexts whose env, tenant_id, effective team and effective user come from the small world."""
    scopes = st.just(scope) if scope is not None else small_scopes
    return scopes.flatmap(lambda drawn: tenant_ctxs(drawn.env, drawn.tenant, drawn.team, drawn.user))


def small_session_datas(scope: SmallScope | None = None) -> st.SearchStrategy[SessionData]:
    """Sessions owned by a small-world scope (drawn, or ``scope``), with short payloads."""
    return st.builds(
        SessionData,
        tenant_ctx=small_tenant_ctxs(scope),
        flow_id=st.sampled_from(["onboarding.flow", "support.flow"]),
        cursor=st.builds(SessionCursor, st.sampled_from(["start", "node.wait"]), optional_texts),
        context_json=st.text(max_size=40),
        pack_id=st.none() | st.just("pack-1"),
    )
