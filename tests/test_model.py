"""The data model: serde's JSON shape, CBOR, the helpers, and validation on every path in."""

from __future__ import annotations

import json
from typing import Any

import attrs
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from filestore import (
    Impersonation,
    InvalidInputError,
    InvocationDeadline,
    SessionCursor,
    SessionData,
    TenantCtx,
    UserId,
)

from .strategies import bad_ids, cursors, session_datas, tenant_ctxs

SPEC_EXAMPLE = """
{"tenant_ctx": {"env": "dev", "tenant": "acme", "tenant_id": "acme", "team": "support",
  "team_id": "support", "user": "u-42", "user_id": "u-42", "attempt": 0},
 "flow_id": "onboarding.flow", "cursor": {"node_pointer": "node.wait", "wait_reason": "input"},
 "context_json": "{\\"step\\":2}"}
"""


@given(session_datas())
def test_json_round_trip(session: SessionData) -> None:
    """to_json/from_json, to_dict/from_dict and from_json of a dict all give the session back."""
    assert SessionData.from_json(session.to_json()) == session
    assert SessionData.from_dict(session.to_dict()) == session
    assert SessionData.from_json(session.to_dict()) == session
    assert SessionData.from_json(session.to_json().encode()) == session


@given(session_datas())
def test_cbor_round_trip(session: SessionData) -> None:
    """to_cbor/from_cbor gives the session back, and the CBOR holds the JSON shape."""
    assert SessionData.from_cbor(session.to_cbor()) == session
    assert cbor2.loads(session.to_cbor()) == session.to_dict()


@given(tenant_ctxs())
def test_tenant_ctx_round_trips(ctx: TenantCtx) -> None:
    """TenantCtx alone round-trips through JSON and CBOR."""
    assert TenantCtx.from_json(ctx.to_json()) == ctx
    assert TenantCtx.from_cbor(ctx.to_cbor()) == ctx


@given(cursors())
def test_cursor_round_trips(cursor: SessionCursor) -> None:
    """SessionCursor alone round-trips through JSON and CBOR."""
    assert SessionCursor.from_json(cursor.to_json()) == cursor
    assert SessionCursor.from_cbor(cursor.to_cbor()) == cursor


def test_spec_example_parses_and_reemits_the_same_shape() -> None:
    """SPEC.md's serde example decodes to the expected fields and encodes back to the same object."""
    parsed = json.loads(SPEC_EXAMPLE)
    session = SessionData.from_json(SPEC_EXAMPLE)
    assert session.tenant_ctx == TenantCtx.new("dev", "acme").with_team("support").with_user("u-42")
    assert session.flow_id == "onboarding.flow"
    assert session.cursor == SessionCursor("node.wait", "input")
    assert session.context_json == '{"step":2}'
    assert session.pack_id is None
    assert session.to_dict() == parsed
    assert json.loads(session.to_json()) == parsed


def test_to_json_is_serde_compact() -> None:
    """JSON text is compact, like serde_json::to_string, with UTF-8 left as is."""
    ctx = TenantCtx.new("dev", "acme")
    session = SessionData(ctx, "f", SessionCursor("n"), "héllo")
    text = session.to_json()
    assert ", " not in text
    assert ": " not in text
    assert "héllo" in text


def test_absent_optionals_are_omitted() -> None:
    """Optional fields are left out when absent; attempt is always present; attributes only when set."""
    minimal = TenantCtx.new("dev", "acme").to_dict()
    assert minimal == {"env": "dev", "tenant": "acme", "tenant_id": "acme", "attempt": 0}
    assert SessionCursor("n").to_dict() == {"node_pointer": "n"}
    with_attributes = attrs.evolve(TenantCtx.new("dev", "acme"), attributes={"k": "v"})
    assert with_attributes.to_dict()["attributes"] == {"k": "v"}
    session = SessionData(TenantCtx.new("dev", "acme"), "f", SessionCursor("n"), "{}", pack_id="p")
    assert session.to_dict()["pack_id"] == "p"


def test_null_optionals_and_unknown_fields_are_accepted() -> None:
    """null for an optional field reads as absent (serde default); unknown fields are ignored."""
    doc: dict[str, Any] = {
        "env": "dev",
        "tenant": "acme",
        "tenant_id": "acme",
        "team": None,
        "user": None,
        "deadline": None,
        "attempt": 3,
        "future_field": {"anything": 1},
    }
    assert TenantCtx.from_dict(doc) == TenantCtx.new("dev", "acme").with_attempt(3)


def test_helpers_keep_paired_fields_in_step() -> None:
    """new() and every with_* helper set what the Rust helpers set."""
    ctx = TenantCtx.new("dev", "acme")
    assert (ctx.tenant, ctx.tenant_id, ctx.attempt) == ("acme", "acme", 0)
    ctx = ctx.with_team("support").with_user("u1")
    assert (ctx.team, ctx.team_id, ctx.user, ctx.user_id) == ("support", "support", "u1", "u1")
    deadline = InvocationDeadline(1_700_000_000_000)
    impersonation = Impersonation("admin", "support ticket")
    ctx = (
        ctx.with_session("s")
        .with_flow("f")
        .with_node("n")
        .with_provider("p")
        .with_attempt(2)
        .with_deadline(deadline)
        .with_impersonation(impersonation)
    )
    assert (ctx.session_id, ctx.flow_id, ctx.node_id, ctx.provider_id) == ("s", "f", "n", "p")
    assert (ctx.attempt, ctx.deadline, ctx.impersonation) == (2, deadline, impersonation)
    assert ctx.to_dict()["deadline"] == {"unix_millis": 1_700_000_000_000}
    assert ctx.to_dict()["impersonation"] == {"actor_id": "admin", "reason": "support ticket"}
    assert ctx.effective_user == UserId("u1")


def test_effective_team_and_user_prefer_the_id_fields() -> None:
    """team_id and user_id win over team and user."""
    ctx = TenantCtx(
        env="dev", tenant="acme", tenant_id="acme", team="t", team_id="tid", user="u", user_id="uid"
    )
    assert (ctx.effective_team, ctx.effective_user) == ("tid", "uid")
    assert attrs.evolve(ctx, team_id=None, user_id=None).effective_team == "t"


def test_model_is_frozen_and_hashable() -> None:
    """Values are immutable, equal by content, and hashable."""
    ctx = TenantCtx.new("dev", "acme")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        ctx.env = "prod"  # type: ignore[misc, assignment]
    session = SessionData(ctx, "f", SessionCursor("n"), "{}")
    assert {session, SessionData(TenantCtx.new("dev", "acme"), "f", SessionCursor("n"), "{}")} == {session}


@pytest.mark.parametrize("field", ["env", "tenant", "tenant_id", "team", "team_id", "user", "user_id"])
@given(bad=bad_ids())
def test_bad_ids_are_refused_at_construction(field: str, bad: str) -> None:
    """Every id field refuses a bad id with InvalidInputError naming the field."""
    kwargs: dict[str, Any] = {"env": "dev", "tenant": "acme", "tenant_id": "acme", field: bad}
    with pytest.raises(InvalidInputError) as info:
        TenantCtx(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("field", ["env", "tenant", "tenant_id", "team", "team_id", "user", "user_id"])
@given(bad=bad_ids())
def test_bad_ids_are_refused_when_decoding(field: str, bad: str) -> None:
    """Decoding JSON or CBOR validates ids as construction does; the error names the field path."""
    doc = SessionData(TenantCtx.new("dev", "acme"), "f", SessionCursor("n"), "{}").to_dict()
    doc["tenant_ctx"][field] = bad
    with pytest.raises(InvalidInputError) as from_json:
        SessionData.from_json(json.dumps(doc))
    assert from_json.value.field == f"tenant_ctx.{field}"
    with pytest.raises(InvalidInputError) as from_cbor:
        SessionData.from_cbor(cbor2.dumps(doc))
    assert from_cbor.value.field == f"tenant_ctx.{field}"


@given(bad=bad_ids())
def test_bad_flow_pack_and_actor_ids_are_refused(bad: str) -> None:
    """flow_id, pack_id and the impersonation actor are validated ids too."""
    ctx = TenantCtx.new("dev", "acme")
    with pytest.raises(InvalidInputError):
        SessionData(ctx, bad, SessionCursor("n"), "{}")
    with pytest.raises(InvalidInputError):
        SessionData(ctx, "f", SessionCursor("n"), "{}", pack_id=bad)
    with pytest.raises(InvalidInputError):
        Impersonation(bad)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"attempt": -1}, "tenant_ctx.attempt"),
        ({"attempt": 2**32}, "tenant_ctx.attempt"),
        ({"attempt": True}, "tenant_ctx.attempt"),
        ({"attempt": "1"}, "tenant_ctx.attempt"),
        ({"deadline": {"unix_millis": "soon"}}, "tenant_ctx.deadline.unix_millis"),
        ({"deadline": {}}, "tenant_ctx.deadline.unix_millis"),
        ({"deadline": 5}, "tenant_ctx.deadline"),
        ({"impersonation": {"reason": "x"}}, "tenant_ctx.impersonation.actor_id"),
        ({"session_id": 5}, "tenant_ctx.session_id"),
        ({"attributes": {"k": 1}}, "tenant_ctx.attributes"),
        ({"attributes": ["k"]}, "tenant_ctx.attributes"),
        ({"env": None}, "tenant_ctx.env"),
    ],
)
def test_bad_context_fields_are_refused(change: dict[str, Any], field: str) -> None:
    """Wrong types and ranges in a context are InvalidInputError naming the field path."""
    doc = SessionData(TenantCtx.new("dev", "acme"), "f", SessionCursor("n"), "{}").to_dict()
    doc["tenant_ctx"].update(change)
    with pytest.raises(InvalidInputError) as info:
        SessionData.from_dict(doc)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"context_json": {"step": 1}}, "context_json"),
        ({"context_json": None}, "context_json"),
        ({"flow_id": None}, "flow_id"),
        ({"cursor": {"wait_reason": "x"}}, "cursor.node_pointer"),
        ({"cursor": "n"}, "cursor"),
        ({"tenant_ctx": []}, "tenant_ctx"),
    ],
)
def test_bad_session_fields_are_refused(change: dict[str, Any], field: str) -> None:
    """Missing or mistyped session fields are InvalidInputError naming the field."""
    doc = SessionData(TenantCtx.new("dev", "acme"), "f", SessionCursor("n"), "{}").to_dict()
    doc.update(change)
    with pytest.raises(InvalidInputError) as info:
        SessionData.from_dict(doc)
    assert info.value.field == field


@pytest.mark.parametrize(
    "text", ["", "{", "[1, 2]", "null", '"text"', b"\xff\xfe", '{"tenant_ctx": 1}'], ids=repr
)
def test_bad_json_text_is_invalid_input(text: str | bytes) -> None:
    """Invalid JSON, or JSON that is not a session object, is InvalidInputError."""
    with pytest.raises(InvalidInputError):
        SessionData.from_json(text)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xff",
        cbor2.dumps([1, 2]),
        # A map with a duplicate key ("a" twice).
        bytes([0xA2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02]),
        # An indefinite-length map.
        bytes([0xBF, 0x61, 0x61, 0x01, 0xFF]),
    ],
    ids=["empty", "truncated", "array", "duplicate-key", "indefinite"],
)
def test_bad_cbor_is_invalid_input(blob: bytes) -> None:
    """Invalid CBOR, duplicate keys, indefinite lengths and non-maps are InvalidInputError."""
    with pytest.raises(InvalidInputError):
        SessionData.from_cbor(blob)


@given(st.text())
def test_context_json_is_kept_verbatim(text: str) -> None:
    """context_json is stored as given: never parsed, never normalised."""
    session = SessionData(TenantCtx.new("dev", "acme"), "f", SessionCursor("n"), text)
    assert SessionData.from_json(session.to_json()).context_json == text
    assert SessionData.from_cbor(session.to_cbor()).context_json == text
