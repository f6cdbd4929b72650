"""The one-pass decoder of ``from_cbor``/``from_json`` against the constructors' way (``from_dict``).

``SessionData.from_cbor`` and ``from_json`` build the common shape of a
session without attrs' converters and validators (issue 15). These tests pin
that the shortcut changes nothing: every document decodes to the same
objects, of the same types, or fails with the same error (message, field and
rule) as ``from_dict`` of the same document, which goes through the
constructors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final

import attrs
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

import filestore.ids
from filestore import (
    EnvId,
    InvalidInputError,
    PackId,
    SessionCursor,
    SessionData,
    TenantCtx,
    TenantId,
    serdejson,
)
from filestore.fields import FrozenMap
from filestore.ids import known_ids

from .support.documents import MISSING, PATHS, Doc, full_doc, set_path
from .support.strategies import bad_ids, ids, session_datas

_json_like: Final = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=2)
    ),
    max_leaves=4,
)
# What may replace a field: anything JSON can hold, ids good and bad, absence, and near-misses.
replacements: Final = st.one_of(
    _json_like,
    ids(),
    bad_ids(),
    st.just(MISSING),
    st.sampled_from([0, -1, 2**32 - 1, 2**32, 2**127, True, "", "\ud800", "caf\u00e9", {}, []]),
)


def outcome(call: Callable[[], SessionData]) -> SessionData | tuple[str, str, str]:
    """The session ``call`` decodes, or the (message, field, rule) of its InvalidInputError."""
    try:
        return call()
    except InvalidInputError as error:
        return str(error), error.field, error.rule


def assert_same_objects(mine: object, theirs: object) -> None:
    """Equal, and of the same type all the way down (ids as their id types, attributes a FrozenMap)."""
    assert type(mine) is type(theirs), (mine, theirs)
    assert mine == theirs
    kind = type(mine)
    if attrs.has(kind):
        for field in attrs.fields(kind):
            assert_same_objects(getattr(mine, field.name), getattr(theirs, field.name))


def assert_same_outcome(decoded: SessionData | tuple[str, str, str], doc: Doc) -> None:
    expected = outcome(lambda: SessionData.from_dict(doc))
    if isinstance(expected, SessionData):
        assert_same_objects(decoded, expected)
    else:
        assert decoded == expected


@given(session_datas())
def test_valid_sessions_decode_to_the_same_objects(session: SessionData) -> None:
    """from_cbor and from_json give what from_dict gives: equal objects, of the same types, field by field."""
    doc = session.to_dict()
    assert_same_objects(SessionData.from_cbor(session.to_cbor()), SessionData.from_dict(doc))
    assert_same_objects(SessionData.from_json(session.to_json()), SessionData.from_dict(doc))
    assert_same_objects(SessionData.from_cbor(session.to_cbor()), session)


@pytest.mark.parametrize("path", PATHS)
@given(value=replacements)
def test_a_changed_field_decodes_or_fails_as_from_dict_does(path: str, value: object) -> None:
    """Any field replaced or removed: the same session, or the very same error, on every path in."""
    check_changes([(path, value)])


@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), replacements), min_size=2, max_size=4))
def test_changed_fields_decode_or_fail_as_from_dict_does(changes: list[tuple[str, object]]) -> None:
    """Several fields changed at once: the same session, or the same first error as from_dict's."""
    check_changes(changes)


def check_changes(changes: list[tuple[str, object]]) -> None:
    doc = full_doc()
    for path, value in changes:
        try:
            set_path(doc, path, value)
        except (KeyError, TypeError):
            continue  # an earlier change removed or replaced this path's parent
    try:
        text = json.dumps(doc, allow_nan=False)
    except ValueError:
        text = None  # a float JSON cannot hold: CBOR only
    if text is not None:
        assert_same_outcome(outcome(lambda: SessionData.from_json(text)), doc)
        assert_same_outcome(outcome(lambda: SessionData.from_json(text.encode())), doc)
    try:
        blob = cbor2.dumps(doc)
    except UnicodeEncodeError:
        return  # a lone surrogate: no UTF-8 (so no CBOR) can carry it
    assert_same_outcome(outcome(lambda: SessionData.from_cbor(blob)), doc)


@pytest.mark.parametrize(
    "doc",
    [
        # a struct written as an array of its fields, as serde also reads it
        {**full_doc(), "cursor": ["node.wait", "input"]},
        {**full_doc(), "tenant_ctx": ["dev", "acme", "acme", None, None, None, None]},
        # -0 in JSON: serde's float, which only a 128-bit field reads as 0
        set_path(full_doc(), "tenant_ctx.deadline.unix_millis", -0),
        # null for every optional field, and unknown fields beside the known ones
        {**full_doc(), "pack_id": None, "unknown": [1, {"x": 2}]},
        set_path(full_doc(), "tenant_ctx.attributes", {}),
    ],
    ids=["cursor-array", "ctx-array", "negative-zero", "nulls-and-unknowns", "empty-attributes"],
)
def test_unusual_shapes_decode_as_from_dict_does(doc: Doc) -> None:
    """Shapes the one-pass decoder leaves to the constructors still decode, to what from_dict gives."""
    text = json.dumps(doc).replace('"unix_millis": 0', '"unix_millis": -0')
    assert_same_outcome(outcome(lambda: SessionData.from_json(text)), doc)
    assert_same_outcome(outcome(lambda: SessionData.from_cbor(cbor2.dumps(doc))), doc)


def test_negative_zero_attempt_is_refused_as_from_dict_refuses_it() -> None:
    """attempt -0 in JSON is serde's float: refused with the constructors' message, not read as 0."""
    text = json.dumps(full_doc()).replace('"attempt": 1', '"attempt": -0')
    result = outcome(lambda: SessionData.from_json(text))
    assert isinstance(result, tuple)
    assert result[1] == "tenant_ctx.attempt"
    assert "-0" in result[0]


def test_the_common_shape_never_runs_the_constructors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session as to_cbor/to_json write it is built without from_dict (the shortcut is taken)."""
    session = SessionData.from_dict(full_doc())
    plain = SessionData(TenantCtx.new("prod", "acme"), "f", SessionCursor("n"), "{}")
    blobs = [session.to_cbor(), plain.to_cbor()]
    texts = [session.to_json(), plain.to_json()]

    def refuse(doc: object) -> SessionData:
        raise AssertionError("from_dict was called")

    monkeypatch.setattr(SessionData, "from_dict", refuse)
    assert [SessionData.from_cbor(blob) for blob in blobs] == [session, plain]
    assert [SessionData.from_json(text) for text in texts] == [session, plain]


def test_decoded_ids_are_shared_not_copied() -> None:
    """Ids that repeat across sessions (env, tenant, team) decode to one object each: interned."""
    ctx = TenantCtx.new("prod", "acme").with_team("support")
    first = SessionData(ctx.with_user("u1"), "f", SessionCursor("n"), "{}")
    second = SessionData(ctx.with_user("u2"), "f", SessionCursor("n"), "{}")
    one = SessionData.from_cbor(first.to_cbor()).tenant_ctx
    two = SessionData.from_json(second.to_json()).tenant_ctx
    assert one.env is two.env
    assert one.tenant is two.tenant is one.tenant_id
    assert one.team is two.team is two.team_id
    assert one.user is one.user_id
    assert one.attributes is two.attributes
    assert one.attributes == FrozenMap({})


def test_known_ids_hold_what_parse_validated() -> None:
    """known_ids(kind) maps the text of each id parsed so far to that one id object, and nothing else."""
    parsed = EnvId.parse("known-env", field="env")
    assert known_ids(EnvId)["known-env"] is parsed
    assert EnvId("known-env") is parsed
    assert "known-env" not in known_ids(TenantId)
    with pytest.raises(InvalidInputError):
        EnvId("not valid")
    assert "not valid" not in known_ids(EnvId)


def test_known_ids_are_bounded_and_emptied_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """When full, an id type's known ids are emptied (not replaced: decoders hold the dict) and refilled."""
    monkeypatch.setattr(filestore.ids, "_KNOWN_LIMIT", 1)
    known = known_ids(PackId)
    PackId.parse("bounded-1", field="pack_id")
    PackId.parse("bounded-2", field="pack_id")
    assert known_ids(PackId) is known
    assert list(known) == ["bounded-2"]


@given(session_datas())
def test_encoders_write_exactly_what_to_dict_holds(session: SessionData) -> None:
    """to_cbor and to_json (which keep ids as their str types) write the bytes of to_dict's plain object."""
    assert session.to_cbor() == cbor2.dumps(session.to_dict())
    assert session.to_json() == serdejson.dumps(session.to_dict())
    ctx = session.tenant_ctx
    assert ctx.to_cbor() == cbor2.dumps(ctx.to_dict())
    assert ctx.to_json() == serdejson.dumps(ctx.to_dict())


@given(session_datas())
def test_decoded_sessions_pickle_copy_and_evolve(session: SessionData) -> None:
    """A session the one-pass decoder built is an ordinary instance: it pickles, deep-copies, evolves."""
    import copy  # noqa: PLC0415
    import pickle  # noqa: PLC0415

    decoded = SessionData.from_cbor(session.to_cbor())
    assert pickle.loads(pickle.dumps(decoded)) == session  # noqa: S301 - our own bytes
    assert copy.deepcopy(decoded) == session
    assert attrs.evolve(decoded, context_json="{}") == attrs.evolve(session, context_json="{}")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        decoded.context_json = "changed"  # type: ignore[misc]
