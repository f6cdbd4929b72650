"""serde_json's grammar and output, in Python's ``json``: how filestore reads and writes documents.

The model's codecs, ``ErrorCode``/``SessionKey`` and import lines all parse through ``loads``.

Python's ``json`` is laxer than serde_json in ways a document could carry
into the store and back out to a Rust reader; here each is closed:

- ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON: refused anywhere in a
  document (serde_json refuses them even in a field it ignores);
- ``-0`` is an integer to Python but the float ``-0.0`` to serde_json, so an
  unsigned field refuses it: it is read as ``NegativeZero`` (a float), which
  only a 128-bit field (``unix_millis``, parsed by serde_json as text) takes as 0;
- bytes must be UTF-8 (``json.loads`` would also guess UTF-16 and UTF-32 and
  skip a byte-order mark; serde_json takes neither).

Deliberately stricter than serde_json: a duplicate key in any object is
refused (serde refuses a duplicate known field but keeps the last key of a
map and skips repeated unknown fields), and nesting deeper than Python's
recursion limit is refused (serde_json skips an unknown field of any depth).
"""

from __future__ import annotations

import json
from typing import Any


class NegativeZero(float):
    """The JSON number ``-0``: serde_json reads it as the float ``-0.0``."""

    __slots__ = ()

    def __new__(cls) -> NegativeZero:
        return super().__new__(cls, -0.0)


NEGATIVE_ZERO = NegativeZero()


def _integer(text: str) -> int | float:
    return NEGATIVE_ZERO if text == "-0" else int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        names = [name for name, _ in pairs]
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"duplicate field {duplicate!r}")
    return document


# One decoder and one encoder for every call: ``json.loads`` and ``json.dumps``
# given options build a new one (and its C scanner) each time. Both are
# stateless between calls, as the json module's own shared default ones are.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_refuse_duplicate_keys, parse_int=_integer, parse_constant=_refuse_constant
)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(text: str | bytes | bytearray) -> Any:
    """The JSON value in ``text``; ``ValueError`` (or ``RecursionError``) if serde_json would refuse it."""
    if type(text) is str:
        pass
    elif isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")  # UnicodeDecodeError is a ValueError
    elif not isinstance(text, str):
        # What json.loads says of anything else; the decoder's own message would differ.
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {type(text).__name__}")
    # json.loads refuses a byte-order mark before the document; the decoder alone would not.
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


def dumps(value: Any) -> str:
    """serde_json's compact text: no spaces, UTF-8 left as is, control characters escaped."""
    return _ENCODER.encode(value)
