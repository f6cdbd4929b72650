"""The data model: serde's JSON shape, CBOR, the helpers, and validation on every way in."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, Final

import attrs
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from filestore import (
    EnvId,
    FlowId,
    Impersonation,
    InvalidInputError,
    InvocationDeadline,
    PackId,
    SessionCursor,
    SessionData,
    TeamId,
    TenantCtx,
    TenantId,
    UserId,
)

from .support.documents import MISSING, Doc, full_doc, set_path
from .support.strategies import bad_ids, cursors, ids, session_datas, tenant_ctxs

# The example of SessionData's JSON from the team's specification (serde's output; the
# specification is not in this repository), character for character: this literal is the reference.
SPEC_EXAMPLE: Final = r"""
{"tenant_ctx": {"env": "dev", "tenant": "acme", "tenant_id": "acme", "team": "support",
  "team_id": "support", "user": "u-42", "user_id": "u-42", "attempt": 0},
 "flow_id": "onboarding.flow", "cursor": {"node_pointer": "node.wait", "wait_reason": "input"},
 "context_json": "{\"step\":2}"}
"""

CTX_REQUIRED: Final = frozenset({"env", "tenant", "tenant_id", "attempt"})
CTX_OPTIONAL_IDS: Final = ("team", "team_id", "user", "user_id")
CTX_OPTIONAL_STRINGS: Final = (
    "session_id",
    "flow_id",
    "node_id",
    "provider_id",
    "trace_id",
    "i18n_id",
    "correlation_id",
    "idempotency_key",
)
CTX_ID_FIELDS: Final = ("env", "tenant", "tenant_id", *CTX_OPTIONAL_IDS)


def decode_dict(doc: Doc) -> SessionData:
    return SessionData.from_dict(doc)


def decode_json_text(doc: Doc) -> SessionData:
    return SessionData.from_json(json.dumps(doc))


def decode_json_bytes(doc: Doc) -> SessionData:
    return SessionData.from_json(json.dumps(doc).encode())


def decode_json_dict(doc: Doc) -> SessionData:
    return SessionData.from_json(doc)


def decode_cbor(doc: Doc) -> SessionData:
    return SessionData.from_cbor(cbor2.dumps(doc))


DECODERS: Final[list[Callable[[Doc], SessionData]]] = [
    decode_dict,
    decode_json_text,
    decode_json_bytes,
    decode_json_dict,
    decode_cbor,
]


def expect_invalid(field: str, call: Callable[[], object]) -> InvalidInputError:
    """Assert ``call`` raises InvalidInputError (a ValueError) for ``field``, named in its message."""
    with pytest.raises(InvalidInputError) as info:
        call()
    error = info.value
    assert isinstance(error, ValueError)
    assert error.field == field, f"expected field {field!r}, got {error.field!r}: {error}"
    assert field in str(error)
    assert error.rule
    return error


def cbor_map(entries: list[tuple[object, object]], *, indefinite: bool = False) -> bytes:
    """Encode a CBOR map by hand from already-chosen entries (cbor2 would never write these)."""
    body = b"".join(cbor2.dumps(key) + cbor2.dumps(value) for key, value in entries)
    if indefinite:
        return b"\xbf" + body + b"\xff"
    assert len(entries) < 24
    return bytes([0xA0 + len(entries)]) + body


# -- round trips --------------------------------------------------------------


@given(session_datas())
def test_session_json_round_trip(session: SessionData) -> None:
    """to_json/from_json, to_dict/from_dict, and from_json of bytes or a dict all give the session back."""
    assert SessionData.from_json(session.to_json()) == session
    assert SessionData.from_json(session.to_json().encode()) == session
    assert SessionData.from_dict(session.to_dict()) == session
    assert SessionData.from_json(session.to_dict()) == session
    assert json.loads(session.to_json()) == session.to_dict()


@given(session_datas())
def test_session_cbor_round_trip(session: SessionData) -> None:
    """to_cbor/from_cbor gives the session back, and the CBOR map holds exactly the JSON shape."""
    assert SessionData.from_cbor(session.to_cbor()) == session
    assert cbor2.loads(session.to_cbor()) == session.to_dict()


@given(tenant_ctxs())
def test_tenant_ctx_round_trips(ctx: TenantCtx) -> None:
    """TenantCtx alone round-trips through JSON text, a dict and CBOR."""
    assert TenantCtx.from_json(ctx.to_json()) == ctx
    assert TenantCtx.from_json(ctx.to_dict()) == ctx
    assert TenantCtx.from_dict(ctx.to_dict()) == ctx
    assert TenantCtx.from_cbor(ctx.to_cbor()) == ctx


@given(cursors())
def test_cursor_round_trips(cursor: SessionCursor) -> None:
    """SessionCursor alone round-trips through JSON text, a dict and CBOR."""
    assert SessionCursor.from_json(cursor.to_json()) == cursor
    assert SessionCursor.from_json(cursor.to_dict()) == cursor
    assert SessionCursor.from_dict(cursor.to_dict()) == cursor
    assert SessionCursor.from_cbor(cursor.to_cbor()) == cursor


@pytest.mark.parametrize("kind", [SessionData, TenantCtx, SessionCursor, Impersonation, InvocationDeadline])
def test_model_instances_have_no_instance_dict(kind: type) -> None:
    """The model classes stay slotted (no per-instance __dict__), codec base class included."""
    assert "__dict__" not in dir(kind)
    assert not any("__dict__" in vars(base) for base in kind.__mro__ if base is not object)


@given(session_datas())
def test_decoded_sessions_are_equal_and_hash_alike(session: SessionData) -> None:
    """A decoded copy is equal to and hashes like the original, and a set keeps one of them."""
    copy = SessionData.from_cbor(session.to_cbor())
    assert copy is not session
    assert hash(copy) == hash(session)
    assert {copy, session} == {session}
    assert hash(copy.tenant_ctx) == hash(session.tenant_ctx)


@given(session_datas())
def test_to_dict_holds_only_plain_json_types(session: SessionData) -> None:
    """to_dict gives plain str/int/dict values (no id subclasses, no mappingproxy), like serde's output."""

    def check(value: object) -> None:
        if isinstance(value, dict):
            assert type(value) is dict
            for name, item in value.items():
                assert type(name) is str
                check(item)
        else:
            assert type(value) in {str, int}, repr(value)

    check(session.to_dict())


@given(st.text())
def test_context_json_is_kept_verbatim(text: str) -> None:
    """context_json is opaque: any text comes back exactly, never parsed or normalised."""
    session = SessionData(TenantCtx.new("dev", "acme"), "f", SessionCursor("n"), text)
    assert SessionData.from_json(session.to_json()).context_json == text
    assert SessionData.from_cbor(session.to_cbor()).context_json == text
    assert session.to_dict()["context_json"] == text


def test_to_json_is_serde_compact_utf8() -> None:
    """to_json is compact like serde_json::to_string, with non-ASCII text left unescaped."""
    session = SessionData(TenantCtx.new("dev", "acme"), "f", SessionCursor("n"), "héllo 日本")
    text = session.to_json()
    assert isinstance(text, str)
    assert ", " not in text
    assert ": " not in text
    assert "héllo 日本" in text


# -- the JSON shape -----------------------------------------------------------


def test_spec_example_decodes_to_the_expected_fields() -> None:
    """The specification's serde example (SPEC_EXAMPLE) decodes field by field to what it says."""
    session = SessionData.from_json(SPEC_EXAMPLE)
    ctx = session.tenant_ctx
    assert (ctx.env, ctx.tenant, ctx.tenant_id) == ("dev", "acme", "acme")
    assert (ctx.team, ctx.team_id, ctx.user, ctx.user_id) == ("support", "support", "u-42", "u-42")
    assert type(ctx.env) is EnvId
    assert type(ctx.tenant_id) is TenantId
    assert type(ctx.team) is TeamId
    assert type(ctx.user_id) is UserId
    assert ctx.attempt == 0
    for name in CTX_OPTIONAL_STRINGS:
        assert getattr(ctx, name) is None, name
    assert (ctx.deadline, ctx.impersonation, dict(ctx.attributes)) == (None, None, {})
    assert session.flow_id == "onboarding.flow"
    assert type(session.flow_id) is FlowId
    assert session.pack_id is None
    assert session.cursor == SessionCursor("node.wait", "input", None)
    assert session.context_json == '{"step":2}'
    assert ctx == TenantCtx.new("dev", "acme").with_team("support").with_user("u-42")


def test_spec_example_reencodes_to_the_same_object() -> None:
    """SPEC_EXAMPLE's to_dict (and to_json, reparsed) equals the parsed literal exactly."""
    parsed = json.loads(SPEC_EXAMPLE)
    session = SessionData.from_json(SPEC_EXAMPLE)
    assert session.to_dict() == parsed
    assert json.loads(session.to_json()) == parsed
    assert cbor2.loads(session.to_cbor()) == parsed
    assert SessionData.from_dict(parsed) == session


def test_full_document_reencodes_to_the_same_object() -> None:
    """A document with every optional field set (i18n_id, attributes, pack_id...) is kept whole."""
    doc = full_doc()
    session = SessionData.from_dict(doc)
    assert session.to_dict() == doc
    ctx = session.tenant_ctx
    assert ctx.i18n_id == "en-GB"
    assert dict(ctx.attributes) == {"channel": "telegram"}
    assert ctx.deadline == InvocationDeadline(1_700_000_000_000)
    assert ctx.impersonation == Impersonation("admin", "ticket 7")
    assert session.pack_id == "pack-1"
    assert type(session.pack_id) is PackId


def test_absent_optionals_are_omitted() -> None:
    """Absent optionals are left out of the JSON; attempt is always present."""
    assert TenantCtx.new("dev", "acme").to_dict() == {
        "env": "dev",
        "tenant": "acme",
        "tenant_id": "acme",
        "attempt": 0,
    }
    assert SessionCursor("n").to_dict() == {"node_pointer": "n"}
    assert Impersonation("admin").to_dict() == {"actor_id": "admin"}
    session = SessionData(TenantCtx.new("dev", "acme"), "f", SessionCursor("n"), "{}")
    assert set(session.to_dict()) == {"tenant_ctx", "flow_id", "cursor", "context_json"}
    assert "pack_id" in attrs.evolve(session, pack_id="p").to_dict()


def test_attributes_are_emitted_only_when_not_empty() -> None:
    """attributes is omitted when empty (however given) and emitted as a plain map when set.

    A decoded ``null`` is refused: serde defaults only a missing map.
    """
    ctx = TenantCtx.new("dev", "acme")
    assert "attributes" not in attrs.evolve(ctx, attributes={}).to_dict()
    assert "attributes" not in TenantCtx.from_dict({**ctx.to_dict(), "attributes": {}}).to_dict()
    expect_invalid("attributes", lambda: TenantCtx.from_dict({**ctx.to_dict(), "attributes": None}))
    assert attrs.evolve(ctx, attributes={"k": "v"}).to_dict()["attributes"] == {"k": "v"}


@given(tenant_ctxs())
def test_json_keys_are_exactly_the_fields_set(ctx: TenantCtx) -> None:
    """to_dict holds the required keys plus exactly the optional fields that are set."""
    expected = set(CTX_REQUIRED)
    for name in (*CTX_OPTIONAL_IDS, *CTX_OPTIONAL_STRINGS, "deadline", "impersonation"):
        if getattr(ctx, name) is not None:
            expected.add(name)
    if ctx.attributes:
        expected.add("attributes")
    doc = ctx.to_dict()
    assert set(doc) == expected
    assert None not in doc.values()


NULLABLE_PATHS: Final = [
    *(f"tenant_ctx.{name}" for name in (*CTX_OPTIONAL_IDS, *CTX_OPTIONAL_STRINGS)),
    "tenant_ctx.deadline",
    "tenant_ctx.impersonation",
    "tenant_ctx.impersonation.reason",
    "pack_id",
    "cursor.wait_reason",
    "cursor.outbox_marker",
]


@pytest.mark.parametrize("path", NULLABLE_PATHS)
@pytest.mark.parametrize("decode", DECODERS, ids=lambda decoder: decoder.__name__)
def test_null_reads_as_absent(path: str, decode: Callable[[Doc], SessionData]) -> None:
    """null for an optional field decodes exactly as if the field were omitted (serde's default)."""
    with_null = decode(set_path(full_doc(), path, None))
    without = decode(set_path(full_doc(), path, MISSING))
    assert with_null == without
    assert with_null.to_dict() == set_path(full_doc(), path, MISSING)


@pytest.mark.parametrize("decode", DECODERS, ids=lambda decoder: decoder.__name__)
def test_null_attributes_are_refused(decode: Callable[[Doc], SessionData]) -> None:
    """attributes: null is refused by every decoder (serde defaults only a missing BTreeMap)."""
    expect_invalid(
        "tenant_ctx.attributes", lambda: decode(set_path(full_doc(), "tenant_ctx.attributes", None))
    )


@pytest.mark.parametrize(
    "where", ["", "tenant_ctx", "cursor", "tenant_ctx.deadline", "tenant_ctx.impersonation"]
)
@pytest.mark.parametrize("decode", DECODERS, ids=lambda decoder: decoder.__name__)
def test_unknown_fields_are_ignored(where: str, decode: Callable[[Doc], SessionData]) -> None:
    """Unknown fields, at the top or inside any nested object, are ignored as serde does."""
    doc = full_doc()
    target = doc
    for name in filter(None, where.split(".")):
        target = target[name]
    target["added_in_a_later_version"] = {"anything": [1, "two", None]}
    target["x-vendor"] = 7
    assert decode(doc) == SessionData.from_dict(full_doc())


# -- helpers ------------------------------------------------------------------


@given(ids(), ids())
def test_new_sets_tenant_and_tenant_id_and_nothing_else(env: str, tenant: str) -> None:
    """TenantCtx.new sets env, tenant and tenant_id (equal), attempt 0, every other field absent."""
    ctx = TenantCtx.new(env, tenant)
    assert (ctx.env, ctx.tenant, ctx.tenant_id, ctx.attempt) == (env, tenant, tenant, 0)
    for name in (*CTX_OPTIONAL_IDS, *CTX_OPTIONAL_STRINGS, "deadline", "impersonation"):
        assert getattr(ctx, name) is None, name
    assert dict(ctx.attributes) == {}
    assert ctx.to_dict() == {"env": env, "tenant": tenant, "tenant_id": tenant, "attempt": 0}


@given(tenant_ctxs(), st.none() | ids())
def test_with_team_and_with_user_set_both_paired_fields(ctx: TenantCtx, value: str | None) -> None:
    """with_team sets team and team_id, with_user user and user_id; None clears both; nothing else moves."""
    teamed = ctx.with_team(value)
    assert (teamed.team, teamed.team_id, teamed.effective_team) == (value, value, value)
    assert teamed == attrs.evolve(ctx, team=value, team_id=value)
    usered = ctx.with_user(value)
    assert (usered.user, usered.user_id, usered.effective_user) == (value, value, value)
    assert usered == attrs.evolve(ctx, user=value, user_id=value)


@pytest.mark.parametrize(
    ("helper", "field"),
    [
        ("with_session", "session_id"),
        ("with_flow", "flow_id"),
        ("with_node", "node_id"),
        ("with_provider", "provider_id"),
    ],
)
@given(ctx=tenant_ctxs(), value=st.none() | st.text(max_size=10))
def test_string_helpers_set_their_field_only(
    helper: str, field: str, ctx: TenantCtx, value: str | None
) -> None:
    """with_session/flow/node/provider set their one field (None clears it) and change nothing else."""
    changed = getattr(ctx, helper)(value)
    assert getattr(changed, field) == value
    changes: dict[str, Any] = {field: value}
    assert changed == attrs.evolve(ctx, **changes)


@given(tenant_ctxs(), st.integers(0, 2**32 - 1))
def test_with_attempt(ctx: TenantCtx, attempt: int) -> None:
    """with_attempt sets attempt (any u32) and nothing else."""
    changed = ctx.with_attempt(attempt)
    assert changed.attempt == attempt
    assert changed == attrs.evolve(ctx, attempt=attempt)
    assert changed.to_dict()["attempt"] == attempt


def test_with_deadline_and_with_impersonation() -> None:
    """with_deadline/with_impersonation set (and with None clear) their field, emitted in serde's shape."""
    ctx = TenantCtx.new("dev", "acme")
    deadline = InvocationDeadline(-(2**127))
    impersonation = Impersonation("admin", "support ticket")
    changed = ctx.with_deadline(deadline).with_impersonation(impersonation)
    assert (changed.deadline, changed.impersonation) == (deadline, impersonation)
    assert changed.to_dict()["deadline"] == {"unix_millis": -(2**127)}
    assert changed.to_dict()["impersonation"] == {"actor_id": "admin", "reason": "support ticket"}
    assert changed.with_deadline(None).with_impersonation(None) == ctx
    assert changed.impersonation is not None
    assert type(changed.impersonation.actor_id) is UserId


def test_helpers_return_new_values_and_leave_the_original() -> None:
    """Every with_* helper returns a new context; the one it was called on is unchanged."""
    ctx = TenantCtx.new("dev", "acme")
    before = ctx.to_dict()
    results = [
        ctx.with_team("t"),
        ctx.with_user("u"),
        ctx.with_session("s"),
        ctx.with_flow("f"),
        ctx.with_node("n"),
        ctx.with_provider("p"),
        ctx.with_attempt(3),
        ctx.with_deadline(InvocationDeadline(1)),
        ctx.with_impersonation(Impersonation("a")),
    ]
    assert ctx.to_dict() == before
    assert all(result != ctx for result in results)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda ctx: ctx.with_team("a b"), "team"),
        (lambda ctx: ctx.with_team(""), "team"),
        (lambda ctx: ctx.with_user("u/1"), "user"),
        (lambda ctx: ctx.with_session(5), "session_id"),
        (lambda ctx: ctx.with_flow(b"f"), "flow_id"),
        (lambda ctx: ctx.with_node(1.5), "node_id"),
        (lambda ctx: ctx.with_provider(["p"]), "provider_id"),
        (lambda ctx: ctx.with_attempt(-1), "attempt"),
        (lambda ctx: ctx.with_attempt(2**32), "attempt"),
        (lambda ctx: ctx.with_attempt(True), "attempt"),
        (lambda ctx: ctx.with_deadline(5), "deadline"),
        (lambda ctx: ctx.with_deadline({"unix_millis": 5}), "deadline"),
        (lambda ctx: ctx.with_impersonation("admin"), "impersonation"),
    ],
)
def test_helpers_validate_like_construction(call: Callable[[TenantCtx], object], field: str) -> None:
    """A with_* helper given a bad value raises InvalidInputError naming the field."""
    expect_invalid(field, lambda: call(TenantCtx.new("dev", "acme")))


def test_effective_team_and_user_prefer_the_id_fields() -> None:
    """effective_team/effective_user are team_id/user_id, or else team/user, or else None."""
    ctx = TenantCtx(
        env="dev", tenant="acme", tenant_id="acme", team="t", team_id="tid", user="u", user_id="uid"
    )
    assert (ctx.effective_team, ctx.effective_user) == ("tid", "uid")
    fallback = attrs.evolve(ctx, team_id=None, user_id=None)
    assert (fallback.effective_team, fallback.effective_user) == ("t", "u")
    only_ids = attrs.evolve(ctx, team=None, user=None)
    assert (only_ids.effective_team, only_ids.effective_user) == ("tid", "uid")
    bare = TenantCtx.new("dev", "acme")
    assert (bare.effective_team, bare.effective_user) == (None, None)


# -- frozen, equal, hashable ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (TenantCtx.new("dev", "acme"), "env"),
        (TenantCtx.new("dev", "acme"), "attempt"),
        (SessionCursor("n"), "node_pointer"),
        (SessionData(TenantCtx.new("dev", "acme"), "f", SessionCursor("n"), "{}"), "context_json"),
        (InvocationDeadline(1), "unix_millis"),
        (Impersonation("admin"), "reason"),
    ],
    ids=lambda item: type(item).__name__ if not isinstance(item, str) else item,
)
def test_values_are_frozen(value: object, field: str) -> None:
    """Assigning to any field of a model value raises, and the value is unchanged."""
    before = getattr(value, field)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(value, field, before)
    with pytest.raises(AttributeError):
        setattr(value, field, "other")
    assert getattr(value, field) == before


def test_attributes_cannot_be_mutated_in_place() -> None:
    """attributes is a read-only copy: neither the context's map nor the caller's dict can change it."""
    given_map = {"k": "v"}
    ctx = attrs.evolve(TenantCtx.new("dev", "acme"), attributes=given_map)
    given_map["k"] = "changed"
    given_map["new"] = "x"
    assert dict(ctx.attributes) == {"k": "v"}
    with pytest.raises(TypeError):
        ctx.attributes["k"] = "w"  # type: ignore[index]


def test_equality_and_hash_by_content() -> None:
    """Values built separately from the same fields are equal, hash alike and dedupe in a set."""

    def build() -> SessionData:
        ctx = TenantCtx.new("dev", "acme").with_team("t").with_deadline(InvocationDeadline(5))
        ctx = attrs.evolve(ctx, attributes={"k": "v"})
        return SessionData(ctx, "f", SessionCursor("n", "w"), "{}", pack_id="p")

    first, second = build(), build()
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1
    assert first != attrs.evolve(first, context_json="{ }")
    assert first.tenant_ctx != attrs.evolve(first.tenant_ctx, attributes={"k": "other"})
    assert hash(TenantCtx.new("dev", "acme")) == hash(TenantCtx.new("dev", "acme"))
    assert hash(InvocationDeadline(5)) == hash(InvocationDeadline(5))
    assert hash(Impersonation("a", "r")) == hash(Impersonation("a", "r"))


# -- invalid input: ids -------------------------------------------------------


@pytest.mark.parametrize("field", CTX_ID_FIELDS)
@given(bad=bad_ids())
def test_bad_ids_are_refused_at_construction(field: str, bad: str) -> None:
    """Every id field of TenantCtx refuses a bad id with InvalidInputError naming the field and type."""
    kwargs: dict[str, Any] = {"env": "dev", "tenant": "acme", "tenant_id": "acme", field: bad}
    error = expect_invalid(field, lambda: TenantCtx(**kwargs))
    type_name = {"env": "EnvId", "tenant": "TenantId", "tenant_id": "TenantId"}.get(
        field, "TeamId" if field.startswith("team") else "UserId"
    )
    assert type_name in str(error)


@given(bad=bad_ids())
def test_bad_flow_pack_and_actor_ids_are_refused_at_construction(bad: str) -> None:
    """flow_id, pack_id and impersonation's actor_id refuse a bad id, naming their field."""
    ctx = TenantCtx.new("dev", "acme")
    assert "FlowId" in str(expect_invalid("flow_id", lambda: SessionData(ctx, bad, SessionCursor("n"), "")))
    assert "PackId" in str(
        expect_invalid("pack_id", lambda: SessionData(ctx, "f", SessionCursor("n"), "", pack_id=bad))
    )
    assert "UserId" in str(expect_invalid("actor_id", lambda: Impersonation(bad)))
    expect_invalid("env", lambda: TenantCtx.new(bad, "acme"))
    expect_invalid("tenant", lambda: TenantCtx.new("dev", bad))


ID_PATHS: Final = [
    *(f"tenant_ctx.{name}" for name in CTX_ID_FIELDS),
    "tenant_ctx.impersonation.actor_id",
    "flow_id",
    "pack_id",
]


@pytest.mark.parametrize("path", ID_PATHS)
@given(bad=bad_ids())
def test_bad_ids_are_refused_when_decoding(path: str, bad: str) -> None:
    """Decoding (dict, JSON text/bytes/dict, CBOR) validates every id; the error names the field path."""
    for decode in DECODERS:
        expect_invalid(path, functools.partial(decode, set_path(full_doc(), path, bad)))


@pytest.mark.parametrize("field", CTX_ID_FIELDS)
def test_tenant_ctx_decoded_alone_names_the_bare_field(field: str) -> None:
    """TenantCtx.from_json/from_cbor on their own name the field without a prefix."""
    doc = full_doc()["tenant_ctx"]
    doc[field] = "not valid"
    expect_invalid(field, lambda: TenantCtx.from_json(json.dumps(doc)))
    expect_invalid(field, lambda: TenantCtx.from_cbor(cbor2.dumps(doc)))


@pytest.mark.parametrize("value", [5, None, b"dev", ["dev"], 1.5])
def test_non_string_ids_are_refused(value: object) -> None:
    """An id field given a non-string (number, bytes, list...) is invalid input, never converted."""
    expect_invalid("env", lambda: TenantCtx(env=value, tenant="acme", tenant_id="acme"))  # type: ignore[arg-type]
    if value is not None:
        expect_invalid("tenant_ctx.env", lambda: decode_dict(set_path(full_doc(), "tenant_ctx.env", value)))
        expect_invalid("flow_id", lambda: decode_cbor(set_path(full_doc(), "flow_id", value)))


# -- invalid input: other fields ------------------------------------------------

BAD_FIELDS: Final[list[tuple[str, object, str]]] = [
    # attempt: a u32, not a bool, string or float
    ("tenant_ctx.attempt", -1, "tenant_ctx.attempt"),
    ("tenant_ctx.attempt", 2**32, "tenant_ctx.attempt"),
    ("tenant_ctx.attempt", 2**64, "tenant_ctx.attempt"),
    ("tenant_ctx.attempt", True, "tenant_ctx.attempt"),
    ("tenant_ctx.attempt", False, "tenant_ctx.attempt"),
    ("tenant_ctx.attempt", "1", "tenant_ctx.attempt"),
    ("tenant_ctx.attempt", 1.0, "tenant_ctx.attempt"),
    ("tenant_ctx.attempt", [1], "tenant_ctx.attempt"),
    # deadline: an object holding an i128
    ("tenant_ctx.deadline", 5, "tenant_ctx.deadline"),
    ("tenant_ctx.deadline", "2030-01-01", "tenant_ctx.deadline"),
    ("tenant_ctx.deadline", [1, 2], "tenant_ctx.deadline"),  # [1] is the struct as an array
    ("tenant_ctx.deadline", {}, "tenant_ctx.deadline.unix_millis"),
    ("tenant_ctx.deadline.unix_millis", MISSING, "tenant_ctx.deadline.unix_millis"),
    ("tenant_ctx.deadline.unix_millis", None, "tenant_ctx.deadline.unix_millis"),
    ("tenant_ctx.deadline.unix_millis", "soon", "tenant_ctx.deadline.unix_millis"),
    ("tenant_ctx.deadline.unix_millis", 1.5, "tenant_ctx.deadline.unix_millis"),
    ("tenant_ctx.deadline.unix_millis", True, "tenant_ctx.deadline.unix_millis"),
    ("tenant_ctx.deadline.unix_millis", 2**127, "tenant_ctx.deadline.unix_millis"),
    ("tenant_ctx.deadline.unix_millis", -(2**127) - 1, "tenant_ctx.deadline.unix_millis"),
    # impersonation: an object with a UserId and an optional string
    ("tenant_ctx.impersonation", "admin", "tenant_ctx.impersonation"),
    ("tenant_ctx.impersonation", {}, "tenant_ctx.impersonation.actor_id"),
    ("tenant_ctx.impersonation.actor_id", MISSING, "tenant_ctx.impersonation.actor_id"),
    ("tenant_ctx.impersonation.actor_id", 7, "tenant_ctx.impersonation.actor_id"),
    ("tenant_ctx.impersonation.reason", 7, "tenant_ctx.impersonation.reason"),
    # attributes: a map of strings to strings
    ("tenant_ctx.attributes", ["k"], "tenant_ctx.attributes"),
    ("tenant_ctx.attributes", "k=v", "tenant_ctx.attributes"),
    ("tenant_ctx.attributes", {"k": 1}, "tenant_ctx.attributes"),
    ("tenant_ctx.attributes", {"k": None}, "tenant_ctx.attributes"),
    ("tenant_ctx.attributes", {"k": {"nested": "v"}}, "tenant_ctx.attributes"),
    # free-form optional strings
    *((f"tenant_ctx.{name}", 5, f"tenant_ctx.{name}") for name in CTX_OPTIONAL_STRINGS),
    *((f"tenant_ctx.{name}", ["x"], f"tenant_ctx.{name}") for name in CTX_OPTIONAL_STRINGS),
    ("cursor.node_pointer", 5, "cursor.node_pointer"),
    ("cursor.wait_reason", {"why": "input"}, "cursor.wait_reason"),
    ("cursor.outbox_marker", 3, "cursor.outbox_marker"),
    # context_json: a string, never a parsed object
    ("context_json", {"step": 2}, "context_json"),
    ("context_json", ["step"], "context_json"),
    ("context_json", 2, "context_json"),
    ("context_json", True, "context_json"),
    # nested objects that are not objects
    ("tenant_ctx", [], "tenant_ctx"),
    ("tenant_ctx", "dev/acme", "tenant_ctx"),
    ("cursor", "node.wait", "cursor"),
    ("cursor", 5, "cursor"),
    # missing (or null) required fields, at every level
    *((path, MISSING, path) for path in ("tenant_ctx", "flow_id", "cursor", "context_json")),
    *((path, None, path) for path in ("tenant_ctx", "flow_id", "cursor", "context_json")),
    *((f"tenant_ctx.{name}", MISSING, f"tenant_ctx.{name}") for name in sorted(CTX_REQUIRED)),
    *((f"tenant_ctx.{name}", None, f"tenant_ctx.{name}") for name in sorted(CTX_REQUIRED)),
    ("cursor.node_pointer", MISSING, "cursor.node_pointer"),
    ("cursor.node_pointer", None, "cursor.node_pointer"),
]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    BAD_FIELDS,
    ids=[f"{path}={'MISSING' if value is MISSING else repr(value)[:20]}" for path, value, _ in BAD_FIELDS],
)
def test_bad_fields_are_refused_when_decoding(path: str, value: object, field: str) -> None:
    """A wrong type, range or missing field, on every decoding path, is InvalidInputError naming it."""
    for decode in DECODERS:
        expect_invalid(field, functools.partial(decode, set_path(full_doc(), path, value)))


# The model's constructors typed loosely: these calls break the annotations on purpose.
LooseTenantCtx: Final[Callable[..., object]] = TenantCtx
LooseDeadline: Final[Callable[..., object]] = InvocationDeadline
LooseImpersonation: Final[Callable[..., object]] = Impersonation
LooseCursor: Final[Callable[..., object]] = SessionCursor
LooseSession: Final[Callable[..., object]] = SessionData
CTX_ARGS: Final = {"env": "dev", "tenant": "a", "tenant_id": "a"}


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: LooseTenantCtx(**CTX_ARGS, attempt=-1), "attempt"),
        (lambda: LooseTenantCtx(**CTX_ARGS, attempt=2**32), "attempt"),
        (lambda: LooseTenantCtx(**CTX_ARGS, attempt=True), "attempt"),
        (lambda: LooseTenantCtx(**CTX_ARGS, attempt="0"), "attempt"),
        (lambda: LooseTenantCtx(**CTX_ARGS, attempt=0.0), "attempt"),
        (lambda: LooseTenantCtx(**CTX_ARGS, attempt=None), "attempt"),
        (lambda: LooseTenantCtx(**CTX_ARGS, deadline=5), "deadline"),
        (lambda: LooseTenantCtx(**CTX_ARGS, deadline={"unix_millis": 5}), "deadline"),
        (lambda: LooseTenantCtx(**CTX_ARGS, impersonation="u"), "impersonation"),
        (lambda: LooseTenantCtx(**CTX_ARGS, attributes=[("k", "v")]), "attributes"),
        (lambda: LooseTenantCtx(**CTX_ARGS, attributes={1: "v"}), "attributes"),
        (lambda: LooseTenantCtx(**CTX_ARGS, attributes={"k": b"v"}), "attributes"),
        (lambda: LooseTenantCtx(**CTX_ARGS, i18n_id=5), "i18n_id"),
        (lambda: LooseTenantCtx(**CTX_ARGS, trace_id=b"t"), "trace_id"),
        (lambda: LooseTenantCtx(**CTX_ARGS, idempotency_key=1), "idempotency_key"),
        (lambda: LooseDeadline(2**127), "unix_millis"),
        (lambda: LooseDeadline(-(2**127) - 1), "unix_millis"),
        (lambda: LooseDeadline(True), "unix_millis"),
        (lambda: LooseDeadline("5"), "unix_millis"),
        (lambda: LooseDeadline(5.0), "unix_millis"),
        (lambda: LooseImpersonation("admin", 5), "reason"),
        (lambda: LooseCursor(None), "node_pointer"),
        (lambda: LooseCursor("n", 5), "wait_reason"),
        (lambda: LooseCursor("n", None, b"m"), "outbox_marker"),
        (lambda: LooseSession({"env": "dev"}, "f", SessionCursor("n"), "{}"), "tenant_ctx"),
        (lambda: LooseSession(TenantCtx.new("d", "a"), "f", {"node_pointer": "n"}, "{}"), "cursor"),
        (lambda: LooseSession(TenantCtx.new("d", "a"), "f", SessionCursor("n"), {"step": 2}), "context_json"),
        (lambda: LooseSession(TenantCtx.new("d", "a"), "f", SessionCursor("n"), b"{}"), "context_json"),
        (lambda: LooseSession(TenantCtx.new("d", "a"), "f", SessionCursor("n"), None), "context_json"),
        (lambda: LooseSession(TenantCtx.new("d", "a"), None, SessionCursor("n"), "{}"), "flow_id"),
    ],
)
def test_bad_values_are_refused_at_construction(build: Callable[[], object], field: str) -> None:
    """Constructors refuse wrong types and out-of-range integers with InvalidInputError naming the field."""
    expect_invalid(field, build)


def test_integer_bounds_are_inclusive() -> None:
    """attempt accepts 0 and 2**32-1; unix_millis accepts both ends of i128 (and they round-trip)."""
    ctx = TenantCtx.new("dev", "acme")
    assert ctx.with_attempt(2**32 - 1).attempt == 2**32 - 1
    for millis in (-(2**127), 2**127 - 1, 0, -1):
        decoded = TenantCtx.from_cbor(ctx.with_deadline(InvocationDeadline(millis)).to_cbor())
        assert decoded.deadline == InvocationDeadline(millis)
        assert TenantCtx.from_json(ctx.with_deadline(InvocationDeadline(millis)).to_json()) == decoded


# -- invalid input: documents -----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", " ", "{", '{"tenant_ctx": ', "nope", "{'single': 'quotes'}", b"\xff\xfe\x00", "[" * 100_000],
    ids=["empty", "blank", "open-brace", "truncated", "word", "single-quotes", "not-utf8", "deep"],
)
def test_invalid_json_text_is_invalid_input(text: str | bytes) -> None:
    """Text that is not JSON is InvalidInputError naming the document, for every model type."""
    expect_invalid("session", lambda: SessionData.from_json(text))
    expect_invalid("tenant_ctx", lambda: TenantCtx.from_json(text))
    expect_invalid("cursor", lambda: SessionCursor.from_json(text))


@pytest.mark.parametrize("text", ["[1, 2, 3, 4, 5, 6]", "null", "3", '"text"', "true", "[]"])
def test_json_that_is_not_an_object_is_invalid_input(text: str) -> None:
    """Valid JSON that is neither an object nor an array of the struct's fields is InvalidInputError
    naming the document (an array of the wrong length included)."""
    expect_invalid("session", lambda: SessionData.from_json(text))
    expect_invalid("tenant_ctx", lambda: TenantCtx.from_json(text))
    expect_invalid("cursor", lambda: SessionCursor.from_json(text))


@pytest.mark.parametrize("value", [5, None, ["{}"], 1.5])
def test_from_json_refuses_what_is_neither_text_nor_a_dict(value: object) -> None:
    """from_json given a number, None or a list is InvalidInputError, not a TypeError."""
    expect_invalid("session", lambda: SessionData.from_json(value))  # type: ignore[arg-type]


def test_from_dict_refuses_a_non_object() -> None:
    """from_dict given a non-mapping is InvalidInputError naming the document."""
    expect_invalid("session", lambda: SessionData.from_dict(["tenant_ctx"]))
    expect_invalid("tenant_ctx", lambda: TenantCtx.from_dict("dev"))
    expect_invalid("cursor", lambda: SessionCursor.from_dict(None))


def _valid_entries() -> list[tuple[object, object]]:
    return list(full_doc().items())


def _ctx_with_duplicate_env() -> bytes:
    ctx_entries: list[tuple[object, object]] = [*full_doc()["tenant_ctx"].items(), ("env", "prod")]
    body = b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in ctx_entries)
    header = bytes([0xB8, len(ctx_entries)])
    doc = {**full_doc(), "tenant_ctx": None}
    entries = b"".join(
        cbor2.dumps(k) + (header + body if k == "tenant_ctx" else cbor2.dumps(v)) for k, v in doc.items()
    )
    return bytes([0xA0 + len(doc)]) + entries


def _indefinite_context_json() -> bytes:
    doc = full_doc()
    chunks = b"\x7f" + cbor2.dumps('{"step"') + cbor2.dumps(":2}") + b"\xff"
    entries = b"".join(
        cbor2.dumps(k) + (chunks if k == "context_json" else cbor2.dumps(v)) for k, v in doc.items()
    )
    return bytes([0xA0 + len(doc)]) + entries


INVALID_CBOR: Final[dict[str, bytes]] = {
    "empty": b"",
    "break-byte": b"\xff",
    "reserved-additional-info": b"\x1c",
    "truncated": SessionData.from_dict(full_doc()).to_cbor()[:-3],
    "string-longer-than-input": b"\x7a\xff\xff\xff\xff",
    "duplicate-top-level-key": cbor_map([*_valid_entries(), ("flow_id", "other.flow")]),
    "duplicate-nested-key": _ctx_with_duplicate_env(),
    "indefinite-map": cbor_map(_valid_entries(), indefinite=True),
    "indefinite-text": _indefinite_context_json(),
    "bad-datetime-tag": b"\xc1\x61a",
}


@pytest.mark.parametrize("blob", INVALID_CBOR.values(), ids=list(INVALID_CBOR))
def test_invalid_cbor_is_invalid_input(blob: bytes) -> None:
    """Malformed CBOR, duplicate map keys and indefinite lengths are InvalidInputError naming the document."""
    expect_invalid("session", lambda: SessionData.from_cbor(blob))


def test_the_hand_built_cbor_is_otherwise_valid() -> None:
    """Sanity check of the fixtures above: the same entries, definite and unique, decode fine."""
    assert SessionData.from_cbor(cbor_map(_valid_entries())) == SessionData.from_dict(full_doc())


@pytest.mark.parametrize(
    "value",
    [[1, 2, 3, 4, 5, 6], 5, "session", b"bytes", None, {1, 2}],
    ids=lambda value: type(value).__name__,
)
def test_cbor_that_is_not_a_map_is_invalid_input(value: object) -> None:
    """Well-formed CBOR whose top item is not a map is InvalidInputError naming the document."""
    blob = cbor2.dumps(value)
    expect_invalid("session", lambda: SessionData.from_cbor(blob))
    expect_invalid("tenant_ctx", lambda: TenantCtx.from_cbor(blob))
    expect_invalid("cursor", lambda: SessionCursor.from_cbor(blob))


def outcome(call: Callable[[], SessionData]) -> SessionData | InvalidInputError:
    """The session ``call`` decodes, or the InvalidInputError it raises; any other error escapes."""
    try:
        return call()
    except InvalidInputError as error:
        return error


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_as_another_error(blob: bytes) -> None:
    """from_cbor on arbitrary bytes either decodes or raises InvalidInputError, nothing else."""
    result = outcome(lambda: SessionData.from_cbor(blob))
    if isinstance(result, InvalidInputError):
        assert result.field


@given(st.text(max_size=64))
def test_arbitrary_text_never_escapes_as_another_error(text: str) -> None:
    """from_json on arbitrary text either decodes or raises InvalidInputError, nothing else."""
    result = outcome(lambda: SessionData.from_json(text))
    if isinstance(result, InvalidInputError):
        assert result.field


_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=4), children, max_size=2)
    ),
    max_leaves=4,
)
_ALL_PATHS: Final = sorted(
    {path for path, _, _ in BAD_FIELDS} | set(NULLABLE_PATHS) | set(ID_PATHS) | {"tenant_ctx.team"}
)


@given(path=st.sampled_from(_ALL_PATHS), value=_json_like)
def test_any_value_in_any_field_is_accepted_or_invalid_input(path: str, value: object) -> None:
    """Whatever JSON value replaces any field, decoding either succeeds or raises InvalidInputError."""
    doc = set_path(full_doc(), path, value)
    result = outcome(lambda: decode_json_text(doc))
    if isinstance(result, InvalidInputError):
        assert result.field
        assert result.field in str(result)
        assert isinstance(outcome(lambda: decode_cbor(doc)), InvalidInputError)
    else:
        assert decode_cbor(doc) == result
        assert SessionData.from_json(result.to_json()) == result


# -- regressions: bugs found by these tests, each pinned before its fix -------------


def test_lone_surrogate_text_is_refused_as_invalid_input() -> None:
    """A lone surrogate in a string field is invalid input when decoded, never a later UnicodeEncodeError."""
    doc_text = json.dumps(full_doc()).replace('"{\\"step\\":2}"', '"\\ud800"')
    assert '"\\ud800"' in doc_text
    expect_invalid("context_json", lambda: SessionData.from_json(doc_text))
    ctx = TenantCtx.new("dev", "acme")
    expect_invalid("context_json", lambda: SessionData(ctx, "f", SessionCursor("n"), "\ud800"))
    expect_invalid("session_id", lambda: ctx.with_session("\udfff"))


def test_sessions_with_attributes_pickle_and_deepcopy() -> None:
    """A context with attributes pickles and deep-copies (multiprocessing passes sessions around)."""
    import copy  # noqa: PLC0415
    import pickle  # noqa: PLC0415

    ctx = attrs.evolve(TenantCtx.new("dev", "acme"), attributes={"locale": "fi", "channel": "web"})
    session = SessionData(ctx, "f", SessionCursor("n"), "{}")
    assert pickle.loads(pickle.dumps(session)) == session  # noqa: S301 - our own bytes
    assert copy.deepcopy(session) == session
    assert hash(ctx) == hash(attrs.evolve(ctx, attributes={"channel": "web", "locale": "fi"}))


def test_json_with_a_duplicate_field_is_refused() -> None:
    """Like serde, a JSON object naming a field twice is invalid input, not "last one wins"."""
    text = '{"env":"dev","env":"prod","tenant":"a","tenant_id":"a","attempt":0}'
    with pytest.raises(InvalidInputError) as info:
        TenantCtx.from_json(text)
    assert "duplicate" in str(info.value)


def test_cbor_with_trailing_bytes_is_refused() -> None:
    """Bytes after the CBOR item are refused rather than silently ignored."""
    blob = SessionData(TenantCtx.new("dev", "acme"), "f", SessionCursor("n"), "{}").to_cbor()
    assert SessionData.from_cbor(blob).flow_id == "f"
    with pytest.raises(InvalidInputError):
        SessionData.from_cbor(blob + b"\xff\x00garbage")
