"""The error hierarchy: one root, builtin bases, greentic codes, fields, pickling, readable messages.

``str(error)`` is greentic-types' ``GreenticError`` Display, ``"{code:?}: {message}"``
(``NotFound: no session with key k-1``); ``error.message`` is the bare message.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from typing import Any, Final

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import filestore
from filestore import (
    BackendUnavailableError,
    CorruptionError,
    EnvId,
    ErrorCode,
    FilestoreError,
    InvalidInputError,
    LockTimeoutError,
    SessionNotFoundError,
    StoreClosedError,
    StoreFullError,
    StoreInUseError,
    StorePoisonedError,
    StoreReadOnlyError,
    TenantMismatchError,
    UnsupportedFilesystemError,
    UnsupportedPlatformError,
    UntrustedDirectoryError,
    WriteInDoubtError,
)
from filestore.errors import message_of


@attrs.frozen
class Case:
    """One error class: how to build it, and what it must be."""

    kind: type[FilestoreError]
    code: ErrorCode
    builtins: tuple[type[BaseException], ...]
    fields: dict[str, Any]

    def build(self, message: str = "something went wrong", **overrides: Any) -> FilestoreError:
        return self.kind(message, **{**self.fields, **overrides})


CASES: Final = [
    Case(SessionNotFoundError, ErrorCode.NOT_FOUND, (KeyError, LookupError), {"key": "k-1"}),
    Case(
        InvalidInputError,
        ErrorCode.INVALID_INPUT,
        (ValueError,),
        {"field": "tenant_ctx.env", "rule": "not empty"},
    ),
    Case(
        TenantMismatchError,
        ErrorCode.INVALID_INPUT,
        (InvalidInputError, ValueError),
        {"part": "team", "field": "tenant_ctx", "rule": "same team"},
    ),
    Case(CorruptionError, ErrorCode.INTERNAL, (), {"path": "/s/sessions.log", "offset": 4096}),
    Case(LockTimeoutError, ErrorCode.TIMEOUT, (TimeoutError, OSError), {"path": "/s/LOCK", "timeout": 1.5}),
    Case(StoreClosedError, ErrorCode.UNAVAILABLE, (), {}),
    Case(StorePoisonedError, ErrorCode.UNAVAILABLE, (), {"path": "/s", "cause": "OSError: [Errno 5] EIO"}),
    Case(
        WriteInDoubtError,
        ErrorCode.UNAVAILABLE,
        (StorePoisonedError,),
        {"path": "/s", "cause": "OSError: [Errno 5] EIO"},
    ),
    Case(StoreFullError, ErrorCode.UNAVAILABLE, (), {"path": "/s", "cause": "OSError: [Errno 28] ENOSPC"}),
    Case(StoreInUseError, ErrorCode.CONFLICT, (), {"path": "/s"}),
    Case(UnsupportedFilesystemError, ErrorCode.UNAVAILABLE, (), {"path": "/mnt/s", "fstype": "nfs4"}),
    Case(UnsupportedPlatformError, ErrorCode.UNAVAILABLE, (), {"path": "/s", "platform": "darwin"}),
    Case(BackendUnavailableError, ErrorCode.UNAVAILABLE, (), {"address": "redis://h:6379/0"}),
    Case(
        UntrustedDirectoryError,
        ErrorCode.PERMISSION_DENIED,
        (PermissionError, OSError),
        {"path": "/s", "uid": 65534, "mode": 0o777},
    ),
    Case(
        StoreReadOnlyError,
        ErrorCode.PERMISSION_DENIED,
        (PermissionError, OSError),
        {"path": "/s/sessions.log"},
    ),
]


def builtin_ancestors(kind: type[BaseException]) -> set[type]:
    """The builtin classes ``kind`` is an instance of (its own included, if builtin)."""
    return {base for base in kind.__mro__ if base.__module__ == "builtins"}


def case_id(case: Case) -> str:
    return case.kind.__name__


def roundtrip(error: FilestoreError, protocol: int) -> FilestoreError:
    copy = pickle.loads(pickle.dumps(error, protocol=protocol))  # noqa: S301 - bytes made one line above
    assert isinstance(copy, FilestoreError)
    return copy


def test_every_public_error_is_covered() -> None:
    """Every exception class filestore exports is a FilestoreError and has a case in this module."""
    exported = {
        value
        for name in filestore.__all__
        if isinstance(value := getattr(filestore, name), type) and issubclass(value, BaseException)
    }
    assert all(issubclass(kind, FilestoreError) for kind in exported)
    assert exported == {case.kind for case in CASES} | {FilestoreError}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_code_is_greentics(case: Case) -> None:
    """Each error carries its greentic ErrorCode, on the class and on instances."""
    assert case.kind.code is case.code
    error = case.build()
    assert error.code is case.code
    assert isinstance(error.code, ErrorCode)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_builtin_bases(case: Case) -> None:
    """Each error is a FilestoreError and exactly the builtins a caller would catch it as."""
    error = case.build()
    assert isinstance(error, FilestoreError)
    for builtin in case.builtins:
        assert isinstance(error, builtin)
    # No builtin beyond those and their own bases: a caller catching another would swallow this error.
    expected = builtin_ancestors(Exception).union(*(builtin_ancestors(kind) for kind in case.builtins))
    assert builtin_ancestors(case.kind) == expected


@pytest.mark.parametrize(
    ("kind", "builtin"),
    [
        (SessionNotFoundError, KeyError),
        (InvalidInputError, ValueError),
        (TenantMismatchError, ValueError),
        (TenantMismatchError, InvalidInputError),
        (LockTimeoutError, TimeoutError),
        (UntrustedDirectoryError, PermissionError),
        (StoreReadOnlyError, PermissionError),
    ],
)
def test_except_clauses_for_the_builtin_catch_it(
    kind: type[FilestoreError], builtin: type[BaseException]
) -> None:
    """`except KeyError` / `ValueError` / `TimeoutError` / `PermissionError` catch the matching error."""
    case = next(case for case in CASES if case.kind is kind)
    with pytest.raises(builtin):
        raise case.build()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fields_are_attributes(case: Case) -> None:
    """The structured fields given at construction are attributes, and message is kept."""
    error = case.build("the message")
    assert error.message == "the message"
    for name, value in case.fields.items():
        assert getattr(error, name) == value


def test_invalid_input_fields_default_to_empty() -> None:
    """InvalidInputError's field and rule are optional and default to empty strings."""
    error = InvalidInputError("bad")
    assert (error.field, error.rule) == ("", "")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_pickle_round_trip_keeps_type_fields_and_message(case: Case, protocol: int) -> None:
    """Errors survive pickling (multiprocessing), at every protocol, with type, code, message and fields."""
    error = case.build("no session with key 'k-1'")
    copy = roundtrip(error, protocol)
    assert type(copy) is type(error)
    assert copy.code is case.code
    assert copy.message == error.message
    assert str(copy) == str(error)
    assert copy.args == error.args
    for name, value in case.fields.items():
        assert getattr(copy, name) == value


@pytest.mark.parametrize("case", CASES, ids=case_id)
@given(message=st.text(max_size=40), text_field=st.text(max_size=20))
def test_pickle_round_trip_of_any_text(case: Case, message: str, text_field: str) -> None:
    """Any message and any string field values survive pickling unchanged."""
    overrides = {name: text_field for name, value in case.fields.items() if isinstance(value, str)}
    error = case.build(message, **overrides)
    copy = roundtrip(error, pickle.HIGHEST_PROTOCOL)
    assert type(copy) is type(error)
    assert copy.message == message
    assert str(copy) == f"{case.code.value}: {message}"
    for name in case.fields:
        assert getattr(copy, name) == getattr(error, name)


def test_an_error_raised_by_validation_pickles() -> None:
    """An InvalidInputError raised by id validation round-trips with its field and rule."""
    with pytest.raises(InvalidInputError) as info:
        EnvId("")
    copy = roundtrip(info.value, pickle.HIGHEST_PROTOCOL)
    assert isinstance(copy, InvalidInputError)
    assert (copy.field, copy.rule, str(copy)) == (info.value.field, info.value.rule, str(info.value))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_str_is_greentics_display_and_message_the_plain_message(case: Case) -> None:
    """str() is "{code}: {message}" (no KeyError-style repr quoting, no field dump); .message is bare."""
    message = "no session with key k-1 (it's gone)"
    error = case.build(message)
    assert str(error) == f"{case.code.value}: {message}"
    assert error.message == message
    assert f"{error}" == str(error)


# greentic-types' ``#[error("{code:?}: {message}")]``: the Debug name of each ErrorCode variant,
# written out here (not taken from ErrorCode) so a respelt member fails.
RUST_DISPLAY: Final = {
    ErrorCode.UNKNOWN: "Unknown: the message",
    ErrorCode.INVALID_INPUT: "InvalidInput: the message",
    ErrorCode.NOT_FOUND: "NotFound: the message",
    ErrorCode.CONFLICT: "Conflict: the message",
    ErrorCode.TIMEOUT: "Timeout: the message",
    ErrorCode.UNAUTHENTICATED: "Unauthenticated: the message",
    ErrorCode.PERMISSION_DENIED: "PermissionDenied: the message",
    ErrorCode.RATE_LIMITED: "RateLimited: the message",
    ErrorCode.UNAVAILABLE: "Unavailable: the message",
    ErrorCode.INTERNAL: "Internal: the message",
}


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_display_is_greentics_for_every_error_code(code: ErrorCode) -> None:
    """An error of each ErrorCode (those no class here raises too) displays as GreenticError does."""
    kind = type(f"{code.name.title()}Error", (FilestoreError,), {"code": code})
    error = kind("the message")
    assert str(error) == RUST_DISPLAY[code]
    assert error.message == "the message"


def test_rust_display_table_covers_every_error_code() -> None:
    """The Display table above names every ErrorCode, so a new variant needs its Rust spelling."""
    assert set(RUST_DISPLAY) == set(ErrorCode)


def test_message_of_gives_a_filestore_errors_bare_message_and_any_other_errors_str() -> None:
    """message_of, for embedding an error in another message, drops the code prefix (never doubled)."""
    inner = InvalidInputError("key: empty", field="key", rule="not empty")
    outer = CorruptionError(f"damaged ({message_of(inner)})", path="/s", offset=0)
    assert str(outer) == "Internal: damaged (key: empty)"
    assert message_of(ValueError("plain")) == "plain"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_traceback_line_is_readable(case: Case) -> None:
    """The last line of a traceback reads 'ErrorName: Code: message', unquoted."""
    error = case.build("key k-1 is not in the store")
    line = traceback.format_exception_only(error)[-1].strip()
    assert line.endswith(f"{case.kind.__name__}: {case.code.value}: key k-1 is not in the store")


def test_session_not_found_is_unlike_a_bare_key_error() -> None:
    """A bare KeyError quotes its message; SessionNotFoundError does not (the reason for __str__)."""
    message = "no session with key k-1"
    assert str(KeyError(message)) == repr(message)
    assert str(SessionNotFoundError(message, key="k-1")) == f"NotFound: {message}"


@pytest.mark.parametrize(
    ("kind", "supplied", "needed"),
    [
        (SessionNotFoundError, {}, "key"),
        (CorruptionError, {"path": "/p"}, "offset"),
        (LockTimeoutError, {"path": "/p"}, "timeout"),
        (TenantMismatchError, {}, "part"),
        (BackendUnavailableError, {}, "address"),
    ],
)
def test_structured_fields_are_required_keywords(
    kind: Callable[..., object], supplied: dict[str, object], needed: str
) -> None:
    """A leaf cannot be raised without its structured fields (they are keyword-only and required)."""
    with pytest.raises(TypeError, match=needed):
        kind("m", **supplied)
    with pytest.raises(TypeError):
        kind("m", *supplied.values(), "positional")


def test_error_codes_are_spelled_as_greentic_variants() -> None:
    """ErrorCode has greentic-types' ten variants, in order, spelled as in Rust, and compares as str."""
    assert [code.value for code in ErrorCode] == [
        "Unknown",
        "InvalidInput",
        "NotFound",
        "Conflict",
        "Timeout",
        "Unauthenticated",
        "PermissionDenied",
        "RateLimited",
        "Unavailable",
        "Internal",
    ]
    as_text: str = ErrorCode.NOT_FOUND
    assert as_text == "NotFound"
    assert str(ErrorCode.INVALID_INPUT) == "InvalidInput"
    assert ErrorCode("Timeout") is ErrorCode.TIMEOUT


def test_root_error_is_unknown_and_takes_any_fields() -> None:
    """FilestoreError itself has code Unknown, keeps arbitrary keyword fields, and pickles them."""
    error = FilestoreError("oops", detail=3)
    assert error.code is ErrorCode.UNKNOWN
    assert getattr(error, "detail") == 3  # noqa: B009 - the field is dynamic
    copy = roundtrip(error, pickle.HIGHEST_PROTOCOL)
    assert getattr(copy, "detail") == 3  # noqa: B009
    assert str(copy) == "Unknown: oops"
