"""CBOR encoding in small pieces, for a snapshot written beside live writers.

``cbor2.dumps`` of a big index snapshot runs in C for tens of milliseconds
without letting another thread run (the GIL), and joining the result into
one ``bytes`` copies it again. A snapshot written on a thread of its own
would then still stall every writer of the process. ``encode_parts`` gives
the bytes ``cbor2.dumps`` would, exactly, but as a list of parts none of them
large (long lists of texts, and ``Joined`` texts, are encoded ``CHUNK`` items
at a time, with ``let_others_run`` between chunks; byte strings are passed
through uncopied, and so are ``Pieces``), for the caller to checksum and write part by part.

Only the subset of CBOR the snapshot uses: maps with text keys, lists,
texts, byte strings and integers, all of definite length (RFC 8949).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

import attrs

from filestore import strictcbor

# Items encoded between two chances for other threads to run: well under a millisecond of
# work (1,024 index entries took 1.6 ms), so a writer waiting for the GIL waits that long,
# not the 5 ms switch interval.
CHUNK: Final = 256

_BYTES: Final = 2
_TEXT: Final = 3
_ARRAY: Final = 4
_MAP: Final = 5


_pacing = threading.local()


def let_others_run() -> None:
    """Give up the GIL for a moment, so a thread waiting for it runs now; in a thread ``paced``
    by a ``wait``, call that first (to let a write in progress finish, say)."""
    wait: Callable[[], None] | None = getattr(_pacing, "wait", None)
    if wait is not None:
        wait()
    time.sleep(0)


@contextlib.contextmanager
def paced(wait: Callable[[], None]) -> Iterator[None]:
    """Within the block, this thread's ``let_others_run`` calls ``wait`` first."""
    _pacing.wait = wait
    try:
        yield
    finally:
        _pacing.wait = None


@attrs.frozen
class Pieces:
    """The byte string ``b"".join(parts)``, encoded without ever building it whole."""

    parts: list[bytes]


@attrs.frozen
class Joined:
    """The text ``"\\n".join(texts)``, encoded without ever building it whole."""

    texts: list[str]


def head(major: int, length: int) -> bytes:
    """A CBOR data item head: major type ``major`` with argument ``length`` (RFC 8949 3.1)."""
    if length < 24:
        return bytes([major << 5 | length])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * width):
            return bytes([major << 5 | info]) + length.to_bytes(width, "big")
    raise ValueError("a length beyond CBOR's 64 bits")  # pragma: no cover


def encode_parts(value: object) -> list[bytes]:
    """Parts whose concatenation is ``cbor2.dumps(value)`` (with each ``Joined`` as its text
    and each ``Pieces`` as its bytes)."""
    parts: list[bytes] = []
    _encode(value, parts)
    return parts


def _encode(value: object, parts: list[bytes]) -> None:
    if isinstance(value, Joined):
        _encode_joined(value.texts, parts)
    elif isinstance(value, Pieces):
        parts.append(head(_BYTES, sum(map(len, value.parts))))
        parts.extend(value.parts)
    elif isinstance(value, bytes):
        parts.append(head(_BYTES, len(value)))
        parts.append(value)
    elif isinstance(value, dict):
        parts.append(head(_MAP, len(value)))
        for key, item in value.items():
            parts.append(strictcbor.dumps(key))
            _encode(item, parts)
    elif isinstance(value, list) and (len(value) > CHUNK or any(isinstance(item, Joined) for item in value)):
        parts.append(head(_ARRAY, len(value)))
        for start in range(0, len(value), CHUNK):
            chunk = value[start : start + CHUNK]
            if all(isinstance(item, str) for item in chunk):
                parts.append(strictcbor.dumps(chunk)[len(head(_ARRAY, len(chunk))) :])
            else:
                for item in chunk:
                    _encode(item, parts)
            let_others_run()
    else:
        parts.append(strictcbor.dumps(value))


def _encode_joined(texts: list[str], parts: list[bytes]) -> None:
    pieces = []
    for start in range(0, len(texts), CHUNK):
        piece = "\n".join(texts[start : start + CHUNK])
        pieces.append((piece if start == 0 else "\n" + piece).encode("utf-8"))
        let_others_run()
    parts.append(head(_TEXT, sum(map(len, pieces))))
    parts.extend(pieces)
