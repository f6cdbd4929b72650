"""Validated ids and session keys: the rules, the error they raise, and what they look like."""

from __future__ import annotations

import pickle
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filestore import (
    EnvId,
    FlowId,
    InvalidInputError,
    PackId,
    SessionKey,
    TeamId,
    TenantId,
    UserId,
)
from filestore.ids import MAX_ID_LENGTH, MAX_KEY_LENGTH, check_key

from .support.strategies import FORBIDDEN_ID_CHARS, ID_ALPHABET, bad_ids, ids

ID_TYPES: Final[list[type[str]]] = [EnvId, TenantId, TeamId, UserId, FlowId, PackId]
by_name = pytest.mark.parametrize("id_type", ID_TYPES, ids=lambda kind: kind.__name__)


def rejects(id_type: type[str], value: object) -> InvalidInputError:
    """Assert ``id_type(value)`` raises InvalidInputError (a ValueError) naming the type; return it."""
    with pytest.raises(InvalidInputError) as info:
        id_type(value)
    error = info.value
    assert isinstance(error, ValueError)
    assert id_type.__name__ in str(error)
    assert error.field == id_type.__name__
    assert error.rule
    return error


@by_name
@given(value=ids())
def test_valid_ids_are_strings_of_their_type(id_type: type[str], value: str) -> None:
    """A valid id is a str of its own type, equal to, hashing as and serialising as the plain string."""
    made = id_type(value)
    assert isinstance(made, str)
    assert type(made) is id_type
    assert made == value
    assert hash(made) == hash(value)
    assert str(made) == value
    assert f"{made}" == value


@by_name
@given(value=bad_ids())
def test_bad_ids_are_refused(id_type: type[str], value: str) -> None:
    """Every bad id (empty, too long, forbidden character) raises InvalidInputError naming type and rule."""
    rejects(id_type, value)


@by_name
def test_empty_is_refused(id_type: type[str]) -> None:
    """The empty string is not an id, and the rule says so."""
    assert rejects(id_type, "").rule == "not empty"


@by_name
def test_length_limit_is_256_inclusive(id_type: type[str]) -> None:
    """256 characters are an id; 257 are refused with the length rule, and the message gives the length."""
    assert MAX_ID_LENGTH == 256
    assert id_type("a" * 256) == "a" * 256
    assert id_type("Z9._-" * 51 + "x") == "Z9._-" * 51 + "x"
    error = rejects(id_type, "a" * 257)
    assert "256" in error.rule
    assert "257" in str(error)


@by_name
def test_single_characters(id_type: type[str]) -> None:
    """Every allowed character is an id on its own, including '.', '_' and '-' (even '.' and '..')."""
    for char in ID_ALPHABET:
        assert id_type(char) == char
    assert id_type("..") == ".."
    assert id_type("-") == "-"


@by_name
@pytest.mark.parametrize("bad", FORBIDDEN_ID_CHARS, ids=lambda char: f"U+{ord(char):04X}")
def test_forbidden_characters_anywhere(id_type: type[str], bad: str) -> None:
    """A forbidden character is refused alone, at the start, in the middle and at the end."""
    for value in (bad, bad + "abc", "ab" + bad + "c", "abc" + bad):
        error = rejects(id_type, value)
        assert "ASCII letters" in error.rule


def test_trailing_newline_is_refused() -> None:
    """'dev\\n' is refused: the pattern must match the whole string, not stop at a line end."""
    rejects(EnvId, "dev\n")
    rejects(UserId, "u1\r\n")


@by_name
@pytest.mark.parametrize("value", [5, 0, None, b"dev", bytearray(b"dev"), ["dev"], 1.5, True])
def test_non_strings_are_refused(id_type: type[str], value: object) -> None:
    """An id must be a str: numbers, bytes, None and lists are refused, never converted."""
    assert rejects(id_type, value).rule == "must be a string"


@given(value=ids())
def test_parse_names_the_given_field(value: str) -> None:
    """parse() reports errors under the field it is given, so the model can say 'tenant_ctx.env'."""
    assert EnvId.parse(value, field="env") == value
    with pytest.raises(InvalidInputError) as info:
        EnvId.parse(value + " ", field="tenant_ctx.env")
    assert info.value.field == "tenant_ctx.env"
    assert str(info.value).startswith("InvalidInput: tenant_ctx.env: EnvId")


def test_an_id_of_another_type_is_revalidated_and_retyped() -> None:
    """Passing a TeamId where a UserId is wanted gives a UserId (the types differ only in name)."""
    user = UserId(TeamId("support"))
    assert type(user) is UserId
    assert user == "support"
    assert type(EnvId(EnvId("dev"))) is EnvId


def test_repeated_construction_is_stable() -> None:
    """Building the same id twice (the validation cache) gives equal values of the right type."""
    first, second = TenantId("acme"), TenantId("acme")
    assert first == second
    assert type(second) is TenantId
    assert type(UserId("acme")) is UserId
    rejects(TenantId, "ac me")
    rejects(TenantId, "ac me")


@by_name
def test_repr_names_the_type(id_type: type[str]) -> None:
    """repr shows the id type and the quoted value, so logs tell a tenant from a user."""
    assert repr(id_type("acme")) == f"{id_type.__name__}('acme')"


def test_session_key_repr_and_type() -> None:
    """SessionKey is a str subclass whose repr names it."""
    key = SessionKey("3f2c-k")
    assert isinstance(key, str)
    assert key == "3f2c-k"
    assert repr(key) == "SessionKey('3f2c-k')"


@by_name
def test_ids_pickle_as_their_type(id_type: type[str]) -> None:
    """An id survives pickling with its type and value."""
    copy = pickle.loads(pickle.dumps(id_type("acme")))  # noqa: S301 - bytes made in this line
    assert type(copy) is id_type
    assert copy == "acme"


def test_session_keys_are_opaque_and_not_validated() -> None:
    """SessionKey itself accepts any text, as the Rust type does (only the stores check keys)."""
    assert SessionKey("with spaces/and:colons ü") == "with spaces/and:colons ü"
    assert SessionKey("") == ""


@given(st.text(min_size=1, max_size=MAX_KEY_LENGTH))
def test_check_key_accepts_any_nonempty_text_up_to_256(key: str) -> None:
    """check_key returns a SessionKey for any non-empty string of at most 256 characters."""
    checked = check_key(key)
    assert type(checked) is SessionKey
    assert checked == key


def test_check_key_boundaries() -> None:
    """A 1- and a 256-character key are fine; a SessionKey comes back as is."""
    assert MAX_KEY_LENGTH == 256
    assert check_key("k") == "k"
    assert check_key("x" * 256) == "x" * 256
    key = SessionKey("k")
    assert check_key(key) is key


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("", "not empty"),
        ("x" * 257, "at most 256 characters"),
        ("x" * 10_000, "at most 256 characters"),
        (5, "must be a string"),
        (None, "must be a string"),
        (b"key", "must be a string"),
    ],
    ids=["empty", "257", "10000", "int", "None", "bytes"],
)
def test_check_key_rejects(key: object, rule: str) -> None:
    """Empty, over-long and non-string keys are InvalidInputError with field 'key' and the rule."""
    with pytest.raises(InvalidInputError) as info:
        check_key(key)
    assert isinstance(info.value, ValueError)
    assert info.value.field == "key"
    assert info.value.rule == rule
    assert str(info.value).startswith("InvalidInput: key: ")


@pytest.mark.parametrize("id_type", ID_TYPES)
@given(values=st.lists(st.one_of(st.none(), ids()), max_size=20), optional=st.booleans())
def test_parse_joined_agrees_with_parse(id_type: type[str], values: list[str | None], optional: bool) -> None:
    """Ids joined by newlines are accepted exactly when each would be, and come back typed alike."""
    joined = "\n".join(value or "" for value in values)
    parse_joined = id_type.parse_joined  # type: ignore[attr-defined]
    if any(value is None for value in values) and not optional:
        with pytest.raises(ValueError, match=r"scope\.x"):
            parse_joined(joined, len(values), optional=optional, field="scope.x")
        return
    parsed = parse_joined(joined, len(values), optional=optional, field="scope.x")
    assert parsed == values
    assert all(type(value) is id_type for value in parsed if value is not None)


@pytest.mark.parametrize("id_type", ID_TYPES)
@given(
    good=st.lists(ids(), min_size=1, max_size=5),
    # Not empty (an optional column's "none") and no newline (which would split it into others).
    bad=bad_ids().filter(lambda bad: bad and "\n" not in bad),
    where=st.integers(0, 5),
)
def test_parse_joined_refuses_any_bad_id(id_type: type[str], good: list[str], bad: str, where: int) -> None:
    """One id breaking the rule anywhere in the column refuses the whole column."""
    values = [*good[:where], bad, *good[where:]]
    joined = "\n".join(values)
    with pytest.raises(ValueError, match=r"scope\.x"):
        id_type.parse_joined(joined, len(values), optional=True, field="scope.x")  # type: ignore[attr-defined]


def test_parse_joined_checks_the_count() -> None:
    """The number of ids must be the one the snapshot says; none is an empty text."""
    assert UserId.parse_joined("", 0, optional=True, field="f") == []
    assert UserId.parse_joined("", 1, optional=True, field="f") == [None]
    assert UserId.parse_joined("a\n\nb", 3, optional=True, field="f") == ["a", None, "b"]
    for joined, count in (("a\nb", 3), ("a", 0), ("a\nb", 1)):
        with pytest.raises(ValueError, match=r"^f: "):
            UserId.parse_joined(joined, count, optional=True, field="f")
    with pytest.raises(ValueError, match="too long"):
        UserId.parse_joined("x" * (MAX_ID_LENGTH + 1), 1, optional=True, field="f")
    assert UserId.parse_joined("x" * MAX_ID_LENGTH, 1, optional=False, field="f") == ["x" * MAX_ID_LENGTH]
