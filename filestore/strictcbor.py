"""Strict CBOR decoding, the one way filestore reads CBOR (sessions, records, snapshots).

A fresh decoder per call, refusing indefinite lengths, duplicate map keys,
and any bytes after the first item (``cbor2.loads`` silently ignores them).
"""

from __future__ import annotations

import io
from typing import Any

import cbor2


def loads(data: bytes) -> Any:
    """The single CBOR item in ``data``; ``cbor2.CBORDecodeError`` for anything else."""
    stream = io.BytesIO(data)
    # cbor2.load builds its decoder in C: cheaper than constructing CBORDecoder here.
    value = cbor2.load(stream, allow_indefinite=False, allow_duplicate_keys=False)
    if stream.tell() != len(data):
        raise cbor2.CBORDecodeError(f"{len(data) - stream.tell()} bytes after the CBOR item")
    return value
