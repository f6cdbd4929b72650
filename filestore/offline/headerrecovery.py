"""Finding the identity of a log whose file header is damaged, for ``fsck --repair``.

The 40-byte header holds only the store UUID and the generation, and both
are recoverable: every record's CRC is salted with them, so a candidate pair
is right when the records verify under its salt. Candidate UUIDs: the one
the identity file names and the one left in the damaged header. Candidate
generations: those of the damaged header, the snapshot and kept old logs,
then the one a record's CRC implies: a CRC-32 is affine in its initial
value, and the salt in the generation's bytes, so both are solved for
(``_solve``) rather than searched, up to ``MAX_GENERATION_SEARCHED``.

When the first records verify, the first two must verify as records 1 and
2 (a wrong salt passes one CRC-32 about once in 2**32 tries). When they are
damaged too (the header and the records after it zeroed, and no snapshot or
old log left to say the generation), every record-like frame in the first
``SEARCH_WINDOW`` bytes proposes the generation its CRC implies, and the
candidate whose salt verifies the most frames there wins: a frame copied
from an older generation proposes that generation, but verifies alone.

A log with no record yet proves nothing about its generation: the UUID must
come from the identity file, and the generation from the first hint (else 1);
any later record is salted with it.
"""

from __future__ import annotations

import functools
import os
import uuid
import zlib
from collections.abc import Callable, Iterable
from typing import Final, TypeVar

from filestore.engine.directory import read_meta_uuid
from filestore.engine.fileio import FileIO
from filestore.engine.framing import (
    FILE_HEADER_SIZE,
    FRAME_CRC_OFFSET,
    FRAME_HEADER_SIZE,
    KINDS,
    KNOWN_FLAGS,
    RECORD_MAGIC,
    FileHeader,
    find_valid_frames,
    frame_crc,
    frame_length,
    is_zero,
    verify_frame,
)
from filestore.engine.layout import META_NAME, SNAPSHOT_NAME, is_old_name
from filestore.engine.snapshot import decode_snapshot

MAX_GENERATION_SEARCHED: Final = 1 << 20
SEARCH_WINDOW: Final = 1 << 20
# Record-like frames after damage asked which generation their CRC implies; the first few
# suffice (the current generation's records outnumber copies from older ones).
CANDIDATE_FRAMES: Final = 32
_T = TypeVar("_T")


def recover_header(io: FileIO, directory: str, fd: int) -> tuple[FileHeader, str] | None:
    """The header the log at ``fd`` was written with, and how it was found; ``None`` if not found."""
    raw_uuid, raw_generation = FileHeader.unverified_fields(io.pread(fd, FILE_HEADER_SIZE, 0))
    meta = _parse_uuid(read_meta_uuid(io, os.path.join(directory, META_NAME)))
    found = (raw_generation, _snapshot_generation(io, directory), *_old_log_generations(io, directory))
    hints = _unique(g for g in found if g is not None and 1 <= g <= MAX_GENERATION_SEARCHED)
    size = io.size(fd)
    window_end = min(size, FILE_HEADER_SIZE + SEARCH_WINDOW)
    window = io.pread(fd, max(0, window_end - FILE_HEADER_SIZE), FILE_HEADER_SIZE)
    if is_zero(window) and size == window_end:
        if meta is None:
            return None
        generation = hints[0] if hints else 1
        how = f"the log holds no record: the identity file's UUID, generation {generation}"
        return FileHeader(meta, generation), how
    uuids = _unique(candidate for candidate in (meta, raw_uuid) if candidate is not None)
    first, second = _leading_frames(window)
    if first:
        for store_uuid in uuids:
            seed = zlib.crc32(store_uuid.bytes)
            for generation in _unique([*hints, *_implied_generations(seed, [first])]):
                salt = zlib.crc32(generation.to_bytes(8, "little"), seed)
                if _verifies(salt, first, 1) and (second is None or _verifies(salt, second, 2)):
                    return FileHeader(store_uuid, generation), _how(store_uuid, meta, generation)
    # The first records are damaged too: the identity whose salt verifies the most frames.
    best: tuple[int, FileHeader] | None = None
    candidates = _record_like_frames(window)
    for store_uuid in uuids:
        seed = zlib.crc32(store_uuid.bytes)
        for generation in _unique([*hints, *_implied_generations(seed, candidates)]):
            header = FileHeader(store_uuid, generation)
            verified = len(find_valid_frames(header.salt, window, 0, FILE_HEADER_SIZE))
            if verified and (best is None or verified > best[0]):
                best = verified, header
    if best is None:
        return None
    verified, header = best
    how = _how(header.store_uuid, meta, header.generation)
    return header, f"{how} ({verified} records after the damage verify with it)"


def _how(store_uuid: uuid.UUID, meta: uuid.UUID | None, generation: int) -> str:
    source = "the identity file" if store_uuid == meta else "the damaged header"
    return f"the records verify with the UUID from {source} and generation {generation}"


def _leading_frames(window: bytes) -> tuple[bytes, bytes | None]:
    """The first frame's bytes (empty if its header is unusable), and the second's (``None``: none)."""
    first_length = frame_length(window[:FRAME_HEADER_SIZE]) if len(window) >= FRAME_HEADER_SIZE else None
    if first_length is None or first_length > len(window):
        return b"", None
    rest = window[first_length:]
    if is_zero(rest[:FRAME_HEADER_SIZE]):
        return window[:first_length], None
    second_length = frame_length(rest[:FRAME_HEADER_SIZE]) if len(rest) >= FRAME_HEADER_SIZE else None
    if second_length is None or second_length > len(rest):
        return window[:first_length], b""
    return window[:first_length], rest[:second_length]


def _verifies(salt: int, data: bytes, seq: int) -> bool:
    frame = verify_frame(salt, data, 0)
    return frame is not None and frame.seq == seq


def _record_like_frames(window: bytes) -> list[bytes]:
    """The first ``CANDIDATE_FRAMES`` spans of ``window`` that look like a whole frame (magic,
    known kind and flags, a length that fits), whether or not they verify under any salt."""
    found: list[bytes] = []
    position = window.find(RECORD_MAGIC)
    while position != -1 and len(found) < CANDIDATE_FRAMES:
        length = frame_length(window[position : position + FRAME_HEADER_SIZE])
        kind, flags = window[position + 2 : position + 4].ljust(2, b"\0")
        plausible = kind in KINDS and not flags & ~KNOWN_FLAGS
        if plausible and length is not None and position + length <= len(window):
            found.append(window[position : position + length])
        position = window.find(RECORD_MAGIC, position + 1)
    return found


def _implied_generations(seed: int, frames: Iterable[bytes]) -> list[int]:
    """For each frame, the generation (at most ``MAX_GENERATION_SEARCHED``) whose salt, with the
    store UUID's CRC ``seed``, makes the frame's CRC verify, if there is one."""
    found: list[int] = []
    for frame in frames:
        body = frame[:FRAME_CRC_OFFSET] + frame[FRAME_HEADER_SIZE:]
        salt = _solve(functools.partial(zlib.crc32, body), frame_crc(frame))
        if salt is None:
            continue
        generation = _solve(lambda low: zlib.crc32(low.to_bytes(8, "little"), seed), salt)
        if generation is not None and 1 <= generation <= MAX_GENERATION_SEARCHED:
            found.append(generation)
    return found


def _solve(function: Callable[[int], int], target: int) -> int | None:
    """The 32-bit ``x`` with ``function(x) == target``, for ``function`` affine over GF(2)
    (a CRC-32 of fixed bytes as a function of its initial value, or of 4 leading data bytes
    followed by zeros): Gaussian elimination on the images of the 32 unit vectors."""
    constant = function(0)
    basis: dict[int, tuple[int, int]] = {}  # leading bit -> (image, the x it is the image of)

    def reduce(image: int, preimage: int) -> tuple[int, int]:
        for bit in range(31, -1, -1):
            if image >> bit & 1 and bit in basis:
                image ^= basis[bit][0]
                preimage ^= basis[bit][1]
        return image, preimage

    for bit in range(32):
        image, preimage = reduce(function(1 << bit) ^ constant, 1 << bit)
        if image:
            basis[image.bit_length() - 1] = image, preimage
    rest, solution = reduce(target ^ constant, 0)
    return solution if rest == 0 else None


def _snapshot_generation(io: FileIO, directory: str) -> int | None:
    try:
        body = decode_snapshot(io.read_file(os.path.join(directory, SNAPSHOT_NAME)))
    except OSError:
        return None
    generation = body.get("generation") if body is not None else None
    return generation if isinstance(generation, int) else None


def _old_log_generations(io: FileIO, directory: str) -> list[int]:
    """Generations of kept old logs: the current one is usually the newest plus one."""
    found: list[int] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        if not is_old_name(name):
            continue
        try:
            fd = io.open_readonly(os.path.join(directory, name))
        except OSError:
            continue
        try:
            header = FileHeader.decode(io.pread(fd, FILE_HEADER_SIZE, 0))
        except OSError:
            continue
        finally:
            io.close(fd)
        if header is not None:
            found.append(header.generation + 1)
    return sorted(found, reverse=True)


def _parse_uuid(text: str | None) -> uuid.UUID | None:
    if text is None:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _unique(values: Iterable[_T]) -> list[_T]:
    seen: list[_T] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen
