"""``ReplyScope`` (alias ``WaitScope``): serde's JSON shape, its CBOR, validation, and ``scope_hash``.

The fixtures under ``data/interop/serde`` were recorded from greentic-types
with serde_json (see ``data/interop/README.md``); the other digests below came
from ``printf ... | sha256sum``, never from the code under test.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path
from typing import Any, Final

import attrs
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from filestore import InvalidInputError, ReplyScope, WaitScope

from .support.strategies import optional_texts, reply_scopes

SERDE: Final = Path(__file__).resolve().parent / "data" / "interop" / "serde"
ENCODE_FIXTURES: Final = sorted((SERDE / "encode").glob("ReplyScope__*.json"))
HASH_FIXTURES: Final = json.loads((SERDE / "extra" / "reply_scope_hashes.json").read_text(encoding="utf-8"))
HEX_SHA256: Final = re.compile(r"[0-9a-f]{64}")
OPTIONAL_FIELDS: Final = ("thread", "reply_to", "correlation")
SURROGATE: Final = "\ud800"


# -- the recorded serde data ----------------------------------------------------------


def test_the_recorded_fixtures_are_there() -> None:
    """The serde recordings this module checks were copied in (an empty glob would check nothing)."""
    assert len(ENCODE_FIXTURES) == 2
    assert len(HASH_FIXTURES) >= 1


@pytest.mark.parametrize("path", ENCODE_FIXTURES, ids=lambda path: path.stem)
def test_serde_encodings_are_reproduced_byte_for_byte(path: Path) -> None:
    """Each ``encode`` fixture parses, and ``to_json`` writes exactly the bytes serde_json wrote."""
    recorded = path.read_bytes()
    scope = ReplyScope.from_json(recorded)
    assert scope.to_json().encode("utf-8") == recorded
    assert ReplyScope.from_cbor(scope.to_cbor()) == scope


@pytest.mark.parametrize("case", HASH_FIXTURES, ids=lambda case: case["hash"][:12])
def test_recorded_scope_hashes_are_reproduced(case: dict[str, Any]) -> None:
    """Each recorded scope, decoded, hashes to what greentic-types' ``scope_hash()`` returned."""
    scope = ReplyScope.from_dict(case["scope"])
    assert scope.scope_hash() == case["hash"]
    assert scope.to_dict() == case["scope"]


def test_the_issue_test_vector() -> None:
    """The test vector of greentic-types' own test and of issue 14."""
    scope = ReplyScope(conversation="chat-1", thread="topic-9", reply_to="msg-3", correlation="cid-7")
    assert scope.scope_hash() == "5251e2c9eb975466809eecbe51be7aa8dc7785ad05cb393a8f47a3a2f42cc544"


# -- scope_hash -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "digest"),
    [
        # printf 'chat-1\n\n\n' | sha256sum
        (ReplyScope("chat-1"), "92a2c35e189b17f366c3d0e5b9dc6d760a23d344517f5630a06578cf04e118fc"),
        # printf 'chat-2\n\nmsg-9\n' | sha256sum
        (
            ReplyScope("chat-2", reply_to="msg-9"),
            "fe27cb4f8a37aa496a805f58564596ca49158c98e2b65e97c82cb2a4960b9be1",
        ),
        # printf '\n\n\n' | sha256sum
        (ReplyScope(""), "6a3cf5192354f71615ac51034b3e97c20eda99643fcaf5bbe6d41ad59bd12167"),
        # printf 'ч\n🙂\n\n' | sha256sum (non-ASCII is hashed as UTF-8)
        (ReplyScope("ч", thread="🙂"), "bc6c4cb6f71bde7e2b2faaf9bffaef8b841fba57d2187814e28b16616db6ea1d"),
    ],
)
def test_scope_hash_against_sha256sum(scope: ReplyScope, digest: str) -> None:
    """scope_hash is hex SHA-256 of the four fields joined by newlines, an absent field as ''."""
    assert scope.scope_hash() == digest


def test_a_newline_inside_a_field_hashes_like_the_next_field() -> None:
    """Rust joins the fields without escaping: conversation "a\\nb" alone hashes as conversation "a",
    thread "b" and correlation "\\n".

    Kept on purpose: a wait registered by the Rust crate must be found by the same hash.
    """
    # printf 'a\nb\n\n\n' | sha256sum
    digest = "dd51168e781406dc2f35208136e6aff93d1e62d297f8cea0fb744160905e178f"
    assert ReplyScope("a\nb").scope_hash() == digest
    assert ReplyScope("a", thread="b", correlation="\n").scope_hash() == digest


@given(reply_scopes())
def test_scope_hash_is_sha256_of_the_joined_fields(scope: ReplyScope) -> None:
    """For any scope, the hash is 64 lower-case hex digits of the newline-joined UTF-8 fields."""
    joined = "\n".join(
        [scope.conversation, scope.thread or "", scope.reply_to or "", scope.correlation or ""]
    )
    assert scope.scope_hash() == hashlib.sha256(joined.encode("utf-8")).hexdigest()
    assert HEX_SHA256.fullmatch(scope.scope_hash())


@given(reply_scopes())
def test_scope_hash_is_stable_across_every_encoding(scope: ReplyScope) -> None:
    """A scope decoded from its JSON, its dict, its CBOR or a pickle hashes as the original."""
    copies = [
        ReplyScope.from_json(scope.to_json()),
        ReplyScope.from_dict(scope.to_dict()),
        ReplyScope.from_cbor(scope.to_cbor()),
        pickle.loads(pickle.dumps(scope)),  # noqa: S301 - our own bytes
    ]
    for copy in copies:
        assert copy == scope
        assert copy.scope_hash() == scope.scope_hash()


@given(reply_scopes(), st.sampled_from(("conversation", *OPTIONAL_FIELDS)), st.text(min_size=1, max_size=8))
def test_changing_one_field_changes_the_hash(scope: ReplyScope, field: str, suffix: str) -> None:
    """Appending text to any one field gives another hash (greentic-types' own test, generalised):
    the hashed string grows, whatever the text."""
    changed = attrs.evolve(scope, **{field: (getattr(scope, field) or "") + suffix})
    assert changed.scope_hash() != scope.scope_hash()


# -- absent against empty ---------------------------------------------------------------


@given(reply_scopes(), st.sampled_from(OPTIONAL_FIELDS))
def test_absent_and_empty_differ_as_values_but_hash_alike(scope: ReplyScope, field: str) -> None:
    """As serde has them: an absent optional field is omitted, an empty one written as "";
    the two are different values (equality, JSON) with one scope_hash."""
    unset: dict[str, Any] = {field: None}
    absent = attrs.evolve(scope, **unset)
    empty = attrs.evolve(scope, **{field: ""})
    assert absent != empty
    assert field not in absent.to_dict()
    assert empty.to_dict()[field] == ""
    assert ReplyScope.from_json(empty.to_json()) == empty
    assert ReplyScope.from_json(absent.to_json()) == absent
    assert absent.scope_hash() == empty.scope_hash()


def test_the_empty_string_is_a_valid_conversation() -> None:
    """conversation is a plain Rust ``String``: serde accepts "", so does ReplyScope."""
    scope = ReplyScope.from_json('{"conversation":""}')
    assert scope == ReplyScope("")
    assert scope.to_json() == '{"conversation":""}'


# -- the JSON shape and decoding ----------------------------------------------------------


@given(reply_scopes())
def test_json_keys_are_exactly_the_fields_set_in_serde_order(scope: ReplyScope) -> None:
    """to_json writes conversation, then each optional field that is not None, in declaration order."""
    expected = ["conversation", *(name for name in OPTIONAL_FIELDS if getattr(scope, name) is not None)]
    assert list(json.loads(scope.to_json())) == expected


@pytest.mark.parametrize("field", OPTIONAL_FIELDS)
def test_null_optional_field_reads_as_absent(field: str) -> None:
    """serde's ``default`` on an Option: ``null`` decodes as absent, and is omitted when written."""
    scope = ReplyScope.from_json(json.dumps({"conversation": "c", field: None}))
    assert scope == ReplyScope("c")
    assert scope.to_json() == '{"conversation":"c"}'


def test_unknown_fields_are_ignored() -> None:
    """No ``deny_unknown_fields`` in greentic-types: extra fields are ignored, and not written back."""
    scope = ReplyScope.from_json('{"extra":[1,{"x":null}],"conversation":"c","thread":"t"}')
    assert scope.to_json() == '{"conversation":"c","thread":"t"}'


@pytest.mark.parametrize(
    "doc",
    [{}, {"conversation": None}, {"thread": "t"}],
    ids=["empty", "conversation-null", "conversation-missing"],
)
def test_conversation_is_required(doc: dict[str, Any]) -> None:
    """A missing or null conversation is refused (serde: a ``String`` has no default), naming the field."""
    for decode in (
        ReplyScope.from_dict,
        ReplyScope.from_json,
        lambda d: ReplyScope.from_cbor(cbor2.dumps(d)),
    ):
        with pytest.raises(InvalidInputError) as info:
            decode(doc)
        assert info.value.field == "conversation"


@pytest.mark.parametrize("field", ["conversation", *OPTIONAL_FIELDS])
@pytest.mark.parametrize("value", [5, 1.5, True, [], {}, ["c"]], ids=repr)
def test_non_string_fields_are_refused(field: str, value: object) -> None:
    """Every field must be a string (serde refuses numbers, booleans, arrays and objects)."""
    doc: dict[str, object] = {"conversation": "c", field: value}
    with pytest.raises(InvalidInputError) as info:
        ReplyScope.from_json(json.dumps(doc))
    assert info.value.field == field
    with pytest.raises(InvalidInputError):
        ReplyScope(**doc)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["conversation", *OPTIONAL_FIELDS])
def test_lone_surrogates_are_refused(field: str) -> None:
    """A lone surrogate (a "\\ud800" escape) is not text serde_json accepts, nor a hash input."""
    with pytest.raises(InvalidInputError):
        ReplyScope.from_json('{"conversation":"c","%s":"\\ud800"}' % field)  # noqa: UP031
    with pytest.raises(InvalidInputError):
        ReplyScope(**{"conversation": "c", field: SURROGATE})


@pytest.mark.parametrize(
    "text",
    [
        '{"conversation":"a","conversation":"b"}',
        '{"conversation":"a","thread":"t","thread":"t"}',
        "[]",
        "null",
        '"chat-1"',
        "{",
        '{"conversation":"a"} x',
    ],
)
def test_invalid_documents_are_invalid_input(text: str) -> None:
    """Duplicate fields (filestore's deliberate strictness), non-objects and broken JSON are refused."""
    with pytest.raises(InvalidInputError):
        ReplyScope.from_json(text)


@given(st.text(max_size=40))
def test_any_text_decodes_or_is_invalid_input(text: str) -> None:
    """from_json of arbitrary text gives a ReplyScope or InvalidInputError, never another exception."""
    try:
        scope = ReplyScope.from_json(text)
    except InvalidInputError:
        return
    assert ReplyScope.from_json(scope.to_json()) == scope


_JSON_VALUES: Final = (
    st.none() | st.booleans() | st.integers() | st.text(max_size=6) | st.lists(st.none(), max_size=1)
)


@given(
    st.dictionaries(
        st.sampled_from(["conversation", *OPTIONAL_FIELDS, "unknown"]),
        _JSON_VALUES,
    )
)
def test_any_object_is_decoded_exactly_when_serde_would(doc: dict[str, object]) -> None:
    """serde's rule, field by field: conversation a string; each optional field a string, null
    or missing; anything under an unknown name. Accepted documents keep every string as given."""

    def serde_accepts() -> bool:
        if not isinstance(doc.get("conversation"), str):
            return False
        return all(doc.get(name) is None or isinstance(doc.get(name), str) for name in OPTIONAL_FIELDS)

    try:
        scope = ReplyScope.from_json(json.dumps(doc))
    except InvalidInputError:
        assert not serde_accepts()
        return
    assert serde_accepts()
    for name in ("conversation", *OPTIONAL_FIELDS):
        assert getattr(scope, name) == doc.get(name)


# -- the value type ---------------------------------------------------------------------


def test_wait_scope_is_the_same_class() -> None:
    """WaitScope is greentic's legacy alias: the very same class, not a subclass."""
    assert WaitScope is ReplyScope


@given(st.text(max_size=8), optional_texts)
def test_scopes_are_frozen_hashable_and_equal_by_content(conversation: str, thread: str | None) -> None:
    """Two scopes with the same fields are equal and hash alike; no field can be reassigned."""
    scope = ReplyScope(conversation, thread=thread)
    assert scope == ReplyScope(conversation, thread=thread)
    assert hash(scope) == hash(ReplyScope(conversation, thread=thread))
    assert not hasattr(scope, "__dict__")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        scope.conversation = "other"  # type: ignore[misc]


def test_a_scope_written_as_an_array_is_read_as_serde_reads_a_struct() -> None:
    """serde takes a struct as an array of its fields in declaration order; the optional ones
    (``#[serde(default)]``) may be left off the end, the required conversation may not, and
    the array may not run past the last field."""
    assert ReplyScope.from_json('["c1","t"]') == ReplyScope("c1", thread="t")
    assert ReplyScope.from_json('["c1",null,"m",null]') == ReplyScope("c1", reply_to="m")
    for document in ("[]", '["c1",null,null,null,"x"]'):
        with pytest.raises(InvalidInputError):
            ReplyScope.from_json(document)
