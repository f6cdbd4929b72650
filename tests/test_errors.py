"""The error hierarchy: one root, builtin bases, greentic codes, fields, pickling, messages."""

from __future__ import annotations

import pickle

import pytest

from filestore import (
    BackendUnavailableError,
    CorruptionError,
    ErrorCode,
    FilestoreError,
    InvalidInputError,
    LockTimeoutError,
    SessionNotFoundError,
    StoreClosedError,
    StoreInUseError,
    StorePoisonedError,
    TenantMismatchError,
    UnsupportedFilesystemError,
)

EXAMPLES: list[tuple[FilestoreError, ErrorCode, type[BaseException] | None, dict[str, object]]] = [
    (SessionNotFoundError("no session with key k", key="k"), ErrorCode.NOT_FOUND, KeyError, {"key": "k"}),
    (
        InvalidInputError("env: bad", field="env", rule="not empty"),
        ErrorCode.INVALID_INPUT,
        ValueError,
        {"field": "env", "rule": "not empty"},
    ),
    (
        TenantMismatchError("team mismatch", part="team", field="tenant_ctx.team"),
        ErrorCode.INVALID_INPUT,
        ValueError,
        {"part": "team", "field": "tenant_ctx.team"},
    ),
    (
        CorruptionError("damaged", path="/s/sessions.log", offset=40),
        ErrorCode.INTERNAL,
        None,
        {"path": "/s/sessions.log", "offset": 40},
    ),
    (
        LockTimeoutError("waited", path="/s/LOCK", timeout=1.5),
        ErrorCode.TIMEOUT,
        TimeoutError,
        {"path": "/s/LOCK", "timeout": 1.5},
    ),
    (StoreClosedError("closed"), ErrorCode.UNAVAILABLE, None, {}),
    (
        StorePoisonedError("refusing", path="/s", cause="OSError: EIO"),
        ErrorCode.UNAVAILABLE,
        None,
        {"path": "/s", "cause": "OSError: EIO"},
    ),
    (StoreInUseError("in use", path="/s"), ErrorCode.CONFLICT, None, {"path": "/s"}),
    (
        UnsupportedFilesystemError("nfs", path="/s", fstype="nfs4"),
        ErrorCode.UNAVAILABLE,
        None,
        {"path": "/s", "fstype": "nfs4"},
    ),
    (
        BackendUnavailableError("down", address="redis://h:1/0"),
        ErrorCode.UNAVAILABLE,
        None,
        {"address": "redis://h:1/0"},
    ),
]


@pytest.mark.parametrize(("error", "code", "builtin", "fields"), EXAMPLES, ids=lambda x: type(x).__name__)
def test_error_shape(
    error: FilestoreError, code: ErrorCode, builtin: type[BaseException] | None, fields: dict[str, object]
) -> None:
    """Each error is a FilestoreError with its greentic code, builtin base and fields."""
    assert isinstance(error, FilestoreError)
    assert error.code is code
    if builtin is not None:
        assert isinstance(error, builtin)
    for name, value in fields.items():
        assert getattr(error, name) == value


@pytest.mark.parametrize(("error", "code", "builtin", "fields"), EXAMPLES, ids=lambda x: type(x).__name__)
def test_errors_pickle_with_their_fields(
    error: FilestoreError, code: ErrorCode, builtin: type[BaseException] | None, fields: dict[str, object]
) -> None:
    """Errors survive pickling (multiprocessing) with message and fields intact."""
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, made one line above
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    for name, value in fields.items():
        assert getattr(copy, name) == value


def test_str_is_the_plain_message() -> None:
    """str() is the message itself: no KeyError-style quoting."""
    error = SessionNotFoundError("no session with key k", key="k")
    assert str(error) == "no session with key k"
    assert not str(error).startswith("'")


def test_error_codes_are_greentics() -> None:
    """The codes are spelled as greentic-types' ErrorCode variants."""
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
