"""Strict CBOR decoding, the one way filestore reads CBOR (sessions, records, snapshots), and
the one way it calls cbor2's encoder, which must not swallow an interrupt.

Decoding: a fresh decoder per call, refusing indefinite lengths, duplicate map
keys, and any bytes after the first item (``cbor2.loads`` silently ignores them).

Encoding (issue 20): cbor2's C encoder asks Python-level ``isinstance``
checks (``abc.ABCMeta.__instancecheck__``) of every list, tuple and ``str``
subclass it meets, and reports an exception raised there as "Exception
ignored" instead of raising it. A SIGINT whose handler runs in that check
is lost: Ctrl-C did not stop a writing process 13 times in 200. ``dumps``
notices such an interrupt (``KeyboardInterrupt``, or ``SystemExit`` from a
signal handler) and raises it when the encoder returns.
"""

from __future__ import annotations

import io
import sys
import threading
from typing import Any, Final

import cbor2

# Signal handlers run in the main thread only: only there can the encoder drop an interrupt.
_MAIN: Final = threading.main_thread().ident
_get_ident: Final = threading.get_ident
_cbor2_dumps: Final = cbor2.dumps
_previous_hook = sys.unraisablehook
_active = False  # the main thread is in cbor2.dumps
_dropped: BaseException | None = None


def _catch_interrupts(unraisable: Any) -> None:
    """``sys.unraisablehook``: keep an interrupt the encoder drops in the main thread (for
    ``dumps`` to raise), pass everything else on to the hook that was there before."""
    global _dropped  # noqa: PLW0603 - one main thread, one pending interrupt
    error = unraisable.exc_value
    if _active and _get_ident() == _MAIN and isinstance(error, (KeyboardInterrupt, SystemExit)):
        _dropped = _dropped or error
        return
    _previous_hook(unraisable)


def dumps(value: object) -> bytes:
    """``cbor2.dumps(value)``, but an interrupt that arrives during it is raised, never lost."""
    global _active, _dropped, _previous_hook  # noqa: PLW0603
    if _get_ident() != _MAIN:
        return _cbor2_dumps(value)
    if sys.unraisablehook is not _catch_interrupts:
        # Installed here rather than once: whoever replaced it since (a test runner does,
        # around each test) is chained to.
        _previous_hook = sys.unraisablehook
        sys.unraisablehook = _catch_interrupts
    _active = True
    try:
        encoded = _cbor2_dumps(value)
    finally:
        _active = False
    if _dropped is not None:
        dropped, _dropped = _dropped, None
        raise dropped
    return encoded


def loads(data: bytes) -> Any:
    """The single CBOR item in ``data``; ``cbor2.CBORDecodeError`` for anything else."""
    stream = io.BytesIO(data)
    # cbor2.load builds its decoder in C: cheaper than constructing CBORDecoder here.
    value = cbor2.load(stream, allow_indefinite=False, allow_duplicate_keys=False)
    if stream.tell() != len(data):
        raise cbor2.CBORDecodeError(f"{len(data) - stream.tell()} bytes after the CBOR item")
    return value
