"""Finding the identity of a log whose file header is damaged, for ``fsck --repair``.

The 40-byte header holds only the store UUID and the generation, and both
are recoverable: every record's CRC is salted with them, so a candidate pair
is right when the first records verify under its salt. Candidates: the UUID
the identity file names and the one left in the damaged header; generations
from the damaged header, the snapshot and kept old logs, then every
generation up to ``MAX_GENERATION_SEARCHED``. A wrong salt passes one CRC-32
about once in 2**32 tries, so an exhaustive hit must also verify the record
after the first, when there is one.

A log with no record yet proves nothing about its generation: the UUID must
come from the identity file, and the generation from the first hint (else 1);
any later record is salted with it.
"""

from __future__ import annotations

import os
import uuid
import zlib
from collections.abc import Iterable, Iterator
from typing import Final, TypeVar

from filestore.engine.directory import read_meta_uuid
from filestore.engine.fileio import FileIO
from filestore.engine.framing import (
    FILE_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    FileHeader,
    find_valid_frames,
    frame_length,
    is_zero,
    verify_frame,
)
from filestore.engine.layout import META_NAME, SNAPSHOT_NAME, is_old_name
from filestore.engine.snapshot import decode_snapshot

MAX_GENERATION_SEARCHED: Final = 1 << 20
SEARCH_WINDOW: Final = 1 << 20
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
            for generation in _generations(hints):
                salt = zlib.crc32(generation.to_bytes(8, "little"), seed)
                if _verifies(salt, first, 1) and (second is None or _verifies(salt, second, 2)):
                    return FileHeader(store_uuid, generation), _how(store_uuid, meta, generation)
    # The first records are damaged too: try only the likely identities, against any record.
    for store_uuid in uuids:
        for generation in hints:
            header = FileHeader(store_uuid, generation)
            if find_valid_frames(header.salt, window, 0, FILE_HEADER_SIZE):
                return header, _how(store_uuid, meta, generation)
    return None


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


def _generations(hints: list[int]) -> Iterator[int]:
    yield from hints
    tried = set(hints)
    for generation in range(1, MAX_GENERATION_SEARCHED + 1):
        if generation not in tried:
            yield generation


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
