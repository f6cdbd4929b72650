"""Validated ids and session keys: the rules, and what they look like."""

from __future__ import annotations

import pytest
from hypothesis import given

from filestore import EnvId, FlowId, InvalidInputError, PackId, SessionKey, TeamId, TenantId, UserId
from filestore.ids import check_key

from .strategies import bad_ids, ids

ID_TYPES = [EnvId, TenantId, TeamId, UserId, FlowId, PackId]


@pytest.mark.parametrize("id_type", ID_TYPES, ids=lambda kind: kind.__name__)
@given(value=ids())
def test_valid_ids_are_strings_of_their_type(id_type: type[str], value: str) -> None:
    """A valid id is a str of its own type, equal to and hashing as the plain string."""
    made = id_type(value)
    assert isinstance(made, str)
    assert type(made) is id_type
    assert made == value
    assert hash(made) == hash(value)


@pytest.mark.parametrize("id_type", ID_TYPES, ids=lambda kind: kind.__name__)
@given(value=bad_ids())
def test_bad_ids_name_the_type_and_rule(id_type: type[str], value: str) -> None:
    """A bad id raises InvalidInputError whose message names the type and whose rule says why."""
    with pytest.raises(InvalidInputError) as info:
        id_type(value)
    assert id_type.__name__ in str(info.value)
    assert info.value.rule


def test_length_limit_is_256_inclusive() -> None:
    """256 characters are fine, 257 are refused."""
    assert EnvId("a" * 256) == "a" * 256
    with pytest.raises(InvalidInputError) as info:
        EnvId("a" * 257)
    assert "256" in info.value.rule


def test_non_strings_are_refused() -> None:
    """An id must be a string: numbers and None are refused, not converted."""
    for value in (5, None, b"dev"):
        with pytest.raises(InvalidInputError):
            EnvId(value)  # type: ignore[arg-type]


def test_repr_names_the_type() -> None:
    """repr shows the id type, so logs tell a tenant from a user."""
    assert repr(TenantId("acme")) == "TenantId('acme')"
    assert repr(SessionKey("k")) == "SessionKey('k')"


def test_check_key_rules() -> None:
    """Session keys are opaque, but empty, over-long and non-string keys are invalid input."""
    assert check_key("x" * 256) == "x" * 256
    assert isinstance(check_key("k"), SessionKey)
    for bad in ("", "x" * 257, 5, None):
        with pytest.raises(InvalidInputError) as info:
            check_key(bad)
        assert info.value.field == "key"
