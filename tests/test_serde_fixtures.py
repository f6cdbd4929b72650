"""filestore's JSON agrees with serde_json's, fixture by fixture.

The fixtures under ``tests/data/interop/serde`` were recorded by running the
real greentic-types types through serde_json (see that folder's README):

- ``encode/<Type>__<case>.json``: the exact bytes serde writes; parsed and
  written again by filestore they must be identical;
- ``accept/<Type>__<case>.json``: serde accepts it and writes
  ``<case>.canonical.json``; filestore must do both;
- ``reject/<Type>__<case>.json``: serde refuses it; filestore refuses it with
  ``InvalidInputError``.

The only accept cases filestore refuses are its documented strictness
(docs/api.md, "stricter than serde"), listed in ``STRICTER`` with the reason.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
import redis

import filestore
from filestore import (
    InMemorySessionStore,
    InvalidInputError,
    RedisSessionStore,
    SessionData,
    TenantCtx,
    export_sessions,
)

from .support.redis_server import redis_url

DATA: Final = Path(__file__).resolve().parent / "data" / "interop" / "serde"
TYPES: Final = (
    "TenantCtx",
    "SessionCursor",
    "SessionData",
    "SessionKey",
    "InvocationDeadline",
    "Impersonation",
    "ReplyScope",
    "ErrorCode",
)

# accept/ cases filestore refuses on purpose: (the reason, a phrase its error message carries).
DUPLICATE_KEYS: Final = ("duplicate keys are refused in every object", "duplicate field")
STRICTER: Final = {
    "TenantCtx__attributes_duplicate_key_last_wins": DUPLICATE_KEYS,
    "TenantCtx__duplicate_unknown_field": DUPLICATE_KEYS,
    "TenantCtx__unknown_field_with_duplicate_inner_keys": DUPLICATE_KEYS,
    "TenantCtx__id_257_chars": ("ids are at most 256 characters", "more than 256"),
    "TenantCtx__deep_unknown_field_5000": ("nesting is limited (Python's recursion limit)", "recursion"),
}


def fixtures(folder: str) -> list[Path]:
    return sorted(
        path for path in (DATA / folder).glob("*.json") if not path.name.endswith(".canonical.json")
    )


def type_of(path: Path) -> str:
    return path.name.split("__", 1)[0]


def codec(type_name: str) -> tuple[Callable[[bytes], Any], Callable[[Any], str]]:
    """The type's ``from_json`` and ``to_json``; skips a type this tree does not have yet."""
    kind = getattr(filestore, type_name, None)
    if kind is None:
        assert type_name == "ReplyScope", f"no codec for {type_name}"
        pytest.skip("ReplyScope lands in the scope helper's branch")
    return kind.from_json, lambda value: value.to_json()


def ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


ENCODE: Final = fixtures("encode")
ACCEPT: Final = fixtures("accept")
REJECT: Final = fixtures("reject")


def test_fixture_set_is_whole() -> None:
    """Every fixture names a known type, each accept case has its canonical form, STRICTER real cases."""
    assert ENCODE
    assert ACCEPT
    assert REJECT
    assert {type_of(path) for path in ENCODE + ACCEPT + REJECT} <= set(TYPES)
    for path in ACCEPT:
        assert path.with_name(path.stem + ".canonical.json").is_file(), path.name
    assert set(STRICTER) <= {path.stem for path in ACCEPT}


@pytest.mark.parametrize("path", ENCODE, ids=ids(ENCODE))
def test_encode_fixture_round_trips_byte_identically(path: Path) -> None:
    """serde's output, parsed and written again by filestore, is the same bytes."""
    parse, write = codec(type_of(path))
    recorded = path.read_bytes()
    assert write(parse(recorded)).encode("utf-8") == recorded


@pytest.mark.parametrize("path", ACCEPT, ids=ids(ACCEPT))
def test_accept_fixture_is_accepted_and_canonicalised(path: Path) -> None:
    """What serde accepts filestore accepts and writes as serde does (or refuses, if listed as stricter)."""
    parse, write = codec(type_of(path))
    if path.stem in STRICTER:
        _reason, phrase = STRICTER[path.stem]
        with pytest.raises(InvalidInputError, match=phrase):
            parse(path.read_bytes())
        return
    canonical = path.with_name(path.stem + ".canonical.json").read_bytes()
    assert write(parse(path.read_bytes())).encode("utf-8") == canonical


@pytest.mark.parametrize("path", REJECT, ids=ids(REJECT))
def test_reject_fixture_is_refused(path: Path) -> None:
    """What serde refuses filestore refuses, with InvalidInputError."""
    parse, _write = codec(type_of(path))
    with pytest.raises(InvalidInputError):
        parse(path.read_bytes())


@pytest.mark.parametrize("name", ["SessionData__full_v04", "SessionData__spec_example"])
def test_redis_values_and_export_lines_hold_serdes_bytes(name: str) -> None:
    """A session is stored in Redis as exactly serde's bytes, and an export line carries them verbatim."""
    recorded = (DATA / "encode" / f"{name}.json").read_text(encoding="utf-8")
    session = SessionData.from_json(recorded)
    namespace = f"t:serde:{random.randrange(1 << 30)}"
    with RedisSessionStore(redis_url(), namespace=namespace) as store:
        key = store.create_session(session.tenant_ctx, session)
        with redis.Redis.from_url(redis_url()) as raw:
            stored = raw.get(f"{namespace}:session:{key}")
        store.remove_session(key)
    assert stored == recorded.encode("utf-8")
    memory = InMemorySessionStore()
    memory.create_session(session.tenant_ctx, session)
    out = io.StringIO()
    export_sessions(memory, out)
    assert ',"session":' + recorded + "}" in out.getvalue()


def test_attributes_are_emitted_sorted_in_json_and_cbor() -> None:
    """attributes given in any order come out sorted by code point (UTF-8 byte order), as a BTreeMap."""
    given = {"é": "1", "a": "2", "Z": "3", "10": "4", "9": "5"}
    context = TenantCtx(env="dev", tenant="acme", tenant_id="acme", attributes=given)
    expected = ["10", "9", "Z", "a", "é"]
    assert sorted(name.encode("utf-8") for name in given) == [name.encode("utf-8") for name in expected]
    assert list(json.loads(context.to_json())["attributes"]) == expected
    assert list(cbor2.loads(context.to_cbor())["attributes"]) == expected
    assert list(context.attributes) == expected
    reversed_order = TenantCtx(
        env="dev", tenant="acme", tenant_id="acme", attributes=dict(reversed(given.items()))
    )
    assert reversed_order.to_json() == context.to_json()
    assert reversed_order.to_cbor() == context.to_cbor()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["unknown", "nested", "cursor_unknown"])
def test_non_finite_constants_are_refused_anywhere(constant: str, where: str) -> None:
    """NaN and the infinities are not JSON: refused even where the field would be ignored."""
    text = {
        "unknown": f'"x":{constant}',
        "nested": f'"x":{{"y":[1,{{"z":{constant}}}]}}',
        "cursor_unknown": '"x":0',
    }[where]
    cursor = f'{{"node_pointer":"n","x":{constant}}}' if where == "cursor_unknown" else '{"node_pointer":"n"}'
    document = (
        '{"tenant_ctx":{"env":"dev","tenant":"acme","tenant_id":"acme","attempt":0,'
        + text
        + '},"flow_id":"f","cursor":'
        + cursor
        + ',"context_json":"{}"}'
    )
    with pytest.raises(InvalidInputError, match="not a JSON number"):
        SessionData.from_json(document)


def test_negative_zero_follows_serde_json() -> None:
    """-0 is a float to serde_json: refused as a u32 (attempt), ignored in an unknown field, and 0 as an i128.

    serde_json reads a 128-bit integer (``unix_millis``) from its digits, where -0 is 0.
    """
    base = '{"env":"dev","tenant":"acme","tenant_id":"acme",'
    with pytest.raises(InvalidInputError, match="-0"):
        TenantCtx.from_json(base + '"attempt":-0}')
    assert TenantCtx.from_json(base + '"attempt":0,"x":-0}') == TenantCtx.new("dev", "acme")
    with_deadline = TenantCtx.from_json(base + '"deadline":{"unix_millis":-0},"attempt":0}')
    assert with_deadline.deadline is not None
    assert type(with_deadline.deadline.unix_millis) is int
    assert with_deadline.to_json() == base + '"deadline":{"unix_millis":0},"attempt":0}'


def test_bytes_must_be_utf8() -> None:
    """JSON bytes are UTF-8 only, as serde_json's from_slice: no UTF-16, no byte-order mark."""
    text = '{"env":"dev","tenant":"acme","tenant_id":"acme","attempt":0}'
    assert TenantCtx.from_json(text.encode("utf-8")) == TenantCtx.new("dev", "acme")
    for encoded in (text.encode("utf-16"), b"\xef\xbb\xbf" + text.encode("utf-8")):
        with pytest.raises(InvalidInputError, match="not valid JSON"):
            TenantCtx.from_json(encoded)


def test_error_code_spellings() -> None:
    """Codes written as data are serde's snake_case; the enum's value stays the Rust variant's name."""
    assert [code.serde_name for code in filestore.ErrorCode] == [
        "unknown",
        "invalid_input",
        "not_found",
        "conflict",
        "timeout",
        "unauthenticated",
        "permission_denied",
        "rate_limited",
        "unavailable",
        "internal",
    ]
    assert filestore.ErrorCode.NOT_FOUND.to_json() == '"not_found"'
    assert str(filestore.ErrorCode.NOT_FOUND) == "NotFound"
    assert filestore.ErrorCode.from_json('"permission_denied"') is filestore.ErrorCode.PERMISSION_DENIED
    for text in ('"NotFound"', '"nope"', "3", "{", "NaN"):
        with pytest.raises(InvalidInputError):
            filestore.ErrorCode.from_json(text)


def test_session_key_json() -> None:
    """A key is a plain JSON string both ways; one the stores would refuse is refused when read."""
    key = filestore.SessionKey.from_json(b'"k-1"')
    assert key == "k-1"
    assert isinstance(key, filestore.SessionKey)
    assert key.to_json() == '"k-1"'
    for text in ('""', "3", "{", '"' + "k" * 257 + '"'):
        with pytest.raises(InvalidInputError):
            filestore.SessionKey.from_json(text)
