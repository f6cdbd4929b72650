"""Crash-state simulation: record what the store asks of the file system, then
rebuild every directory a power loss could leave behind.

``RecordingIO`` performs each operation for real and appends it to a log,
tagged with the store call in progress. ``crash_states`` replays a prefix of
that log into a model of one directory and, at each crash point, yields the
states our persistence model allows:

- data fdatasync'd stays; an un-synced write may be lost, kept, torn (at 512
  and 4096 byte boundaries and at an arbitrary point), or land as zeros or
  garbage, and un-synced writes may land out of order;
- a create, rename, link or unlink not followed by a directory fsync may be
  undone (a prefix of them survives, or all but one).

This is the ALICE/CrashMonkey method in miniature; the checker lives in
``test_crash_states.py``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import attrs

from filestore.engine.fileio import OsFileIO


@attrs.frozen
class Op:
    """One recorded file-system operation. ``name`` is the file's name in the store directory."""

    kind: str  # create | write | truncate | sync | rename | link | unlink | sync_dir | begin | end
    inode: int = -1
    name: str = ""
    target: str = ""
    offset: int = 0
    data: bytes = b""
    call: int = -1


class RecordingIO(OsFileIO):
    """Does every operation for real, and logs the ones that change the directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = str(directory)
        self.ops: list[Op] = []
        self.initial: dict[str, bytes] = {}
        self.names: dict[str, int] = {}
        self._fd_inode: dict[int, int] = {}
        self._next_inode = 0
        for entry in sorted(os.listdir(directory)):
            full = os.path.join(self.directory, entry)
            if os.path.isfile(full) and entry not in {"LOCK", "OPEN"}:
                self.initial[entry] = Path(full).read_bytes()
                self.names[entry] = self._new_inode()

    def _new_inode(self) -> int:
        self._next_inode += 1
        return self._next_inode

    def _name(self, path: str) -> str:
        return os.path.relpath(path, self.directory)

    def begin(self, call: int) -> None:
        self.ops.append(Op("begin", call=call))

    def end(self, call: int) -> None:
        self.ops.append(Op("end", call=call))

    def open(self, path: str, *, create: bool = False, exclusive: bool = False, mode: int = 0o600) -> int:
        existed = os.path.exists(path)
        fd = super().open(path, create=create, exclusive=exclusive, mode=mode)
        name = self._name(path)
        if not existed:
            self.names[name] = self._new_inode()
            self.ops.append(Op("create", inode=self.names[name], name=name))
        self._fd_inode[fd] = self.names[name]
        return fd

    def open_readonly(self, path: str) -> int:
        fd = super().open_readonly(path)
        self._fd_inode[fd] = self.names.get(self._name(path), -1)
        return fd

    def close(self, fd: int) -> None:
        self._fd_inode.pop(fd, None)
        super().close(fd)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        super().pwrite(fd, data, offset)
        self.ops.append(Op("write", inode=self._fd_inode[fd], offset=offset, data=bytes(data)))

    def truncate(self, fd: int, size: int) -> None:
        super().truncate(fd, size)
        self.ops.append(Op("truncate", inode=self._fd_inode[fd], offset=size))

    def sync_data(self, fd: int) -> None:
        super().sync_data(fd)
        self.ops.append(Op("sync", inode=self._fd_inode[fd]))

    def rename(self, source: str, target: str) -> None:
        super().rename(source, target)
        source_name, target_name = self._name(source), self._name(target)
        self.names[target_name] = self.names.pop(source_name)
        self.ops.append(Op("rename", name=source_name, target=target_name))

    def link(self, source: str, target: str) -> None:
        super().link(source, target)
        source_name, target_name = self._name(source), self._name(target)
        self.names[target_name] = self.names[source_name]
        self.ops.append(Op("link", name=source_name, target=target_name))

    def unlink(self, path: str) -> None:
        super().unlink(path)
        name = self._name(path)
        self.names.pop(name, None)
        self.ops.append(Op("unlink", name=name))

    def sync_dir(self, path: str) -> None:
        super().sync_dir(path)
        if os.path.abspath(path) == os.path.abspath(self.directory):
            self.ops.append(Op("sync_dir"))


@attrs.define
class _Inode:
    durable: bytearray
    current: bytearray
    pending: list[Op] = attrs.field(factory=list)


def _apply_data(content: bytearray, op: Op) -> None:
    if op.kind == "write":
        end = op.offset + len(op.data)
        if len(content) < end:
            content.extend(bytes(end - len(content)))
        content[op.offset : end] = op.data
    elif op.kind == "truncate":
        del content[op.offset :]
        if len(content) < op.offset:
            content.extend(bytes(op.offset - len(content)))


def _apply_dir(names: dict[str, int], op: Op) -> None:
    if op.kind == "create":
        names[op.name] = op.inode
    elif op.kind == "rename":
        if op.name in names:
            names[op.target] = names.pop(op.name)
    elif op.kind == "link":
        if op.name in names:
            names[op.target] = names[op.name]
    elif op.kind == "unlink":
        names.pop(op.name, None)


@attrs.frozen
class CrashState:
    """A directory a power loss may leave: file name -> bytes, and what was acknowledged."""

    files: dict[str, bytes]
    point: int
    variant: str
    acknowledged_calls: int
    in_flight_call: int | None

    def write_to(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            (directory / name).write_bytes(content)


class _Model:
    """The directory's durable and volatile state after a prefix of the log."""

    def __init__(self, initial: dict[str, bytes]) -> None:
        self.inodes: dict[int, _Inode] = {}
        self.names: dict[str, int] = {}
        for number, (name, content) in enumerate(sorted(initial.items()), start=1):
            self.inodes[number] = _Inode(bytearray(content), bytearray(content))
            self.names[name] = number
        self.durable_names = dict(self.names)
        self.pending_dir: list[Op] = []
        self.acknowledged = 0
        self.in_flight: int | None = None

    def apply(self, op: Op) -> None:
        if op.kind == "begin":
            self.in_flight = op.call
        elif op.kind == "end":
            self.acknowledged = op.call + 1
            self.in_flight = None
        elif op.kind in {"write", "truncate"}:
            inode = self.inodes[op.inode]
            _apply_data(inode.current, op)
            inode.pending.append(op)
        elif op.kind == "sync":
            inode = self.inodes[op.inode]
            inode.durable = bytearray(inode.current)
            inode.pending.clear()
        elif op.kind == "create":
            self.inodes[op.inode] = _Inode(bytearray(), bytearray())
            _apply_dir(self.names, op)
            self.pending_dir.append(op)
        elif op.kind in {"rename", "link", "unlink"}:
            _apply_dir(self.names, op)
            self.pending_dir.append(op)
        elif op.kind == "sync_dir":
            self.durable_names = dict(self.names)
            self.pending_dir.clear()

    def names_with(self, kept_dir_ops: list[Op]) -> dict[str, int]:
        names = dict(self.durable_names)
        for op in kept_dir_ops:
            _apply_dir(names, op)
        return names

    def content(self, inode: int, kept: list[Op], torn: tuple[Op, bytes] | None = None) -> bytes:
        content = bytearray(self.inodes[inode].durable)
        for op in kept:
            _apply_data(content, op)
        if torn is not None:
            op, data = torn
            _apply_data(content, attrs.evolve(op, data=data))
        return bytes(content)


def _torn_versions(op: Op, rng: random.Random, thorough: bool) -> Iterator[tuple[str, bytes]]:
    """What may reach the disk of one un-synced write."""
    size = len(op.data)
    cuts = {size // 2}
    for boundary in (512, 4096):
        # A cut where the write crosses a sector or page boundary.
        first = (op.offset // boundary + 1) * boundary - op.offset
        if 0 < first < size:
            cuts.add(first)
    if thorough:
        cuts.update(rng.randrange(1, size) for _ in range(4) if size > 1)
    for cut in sorted(cut for cut in cuts if 0 < cut < size):
        yield f"torn@{cut}", op.data[:cut]
    yield "zeros", bytes(size)
    yield "garbage", rng.randbytes(size)


def crash_states(
    initial: dict[str, bytes], ops: list[Op], *, thorough: bool = False, seed: int = 0
) -> Iterator[CrashState]:
    """Every crash state of the model at every point of ``ops`` (see module docs)."""
    for model, point, variant in _variants(initial, ops, thorough=thorough, seed=seed):
        yield variant.build(model, point)


def count_crash_states(
    initial: dict[str, bytes], ops: list[Op], *, thorough: bool = False, seed: int = 0
) -> int:
    """How many states ``crash_states`` yields for these arguments, without building their files."""
    return sum(1 for _ in _variants(initial, ops, thorough=thorough, seed=seed))


@attrs.frozen
class _Variant:
    """One way the pending operations at a crash point may have reached the disk."""

    name: str
    kept_dir: list[Op]  # the pending directory operations that survived
    keep: object  # the pending writes that survived: "all", or a set of their ids
    torn: tuple[Op, bytes] | None = None  # a pending write that reached the disk as these bytes

    def build(self, model: _Model, point: int) -> CrashState:
        names = model.names_with(self.kept_dir)
        files: dict[str, bytes] = {}
        for name, inode in names.items():
            pending = model.inodes[inode].pending
            kept = [
                op
                for op in pending
                if self.keep == "all" or (isinstance(self.keep, set) and id(op) in self.keep)
            ]
            torn = self.torn if self.torn is not None and self.torn[0] in pending else None
            files[name] = model.content(inode, kept, torn)
        return CrashState(files, point, self.name, model.acknowledged, model.in_flight)


def _variants(
    initial: dict[str, bytes], ops: list[Op], *, thorough: bool, seed: int
) -> Iterator[tuple[_Model, int, _Variant]]:
    """Each crash point's variants, with the model as it stands there (valid until the next one)."""
    rng = random.Random(seed)
    model = _Model(initial)
    for point, op in enumerate(ops):
        model.apply(op)
        if op.kind in {"begin", "end"}:
            continue
        for variant in _variants_at(model, rng, thorough):
            yield model, point, variant


def _variants_at(model: _Model, rng: random.Random, thorough: bool) -> Iterator[_Variant]:
    pending_data = [(inode, op) for inode, state in model.inodes.items() for op in state.pending]
    everything = {id(op) for _, op in pending_data}
    yield _Variant("all-persisted", model.pending_dir, "all")
    if pending_data or model.pending_dir:
        yield _Variant("only-durable", [], set())
    for number, (_, op) in enumerate(pending_data):
        before = {id(other) for _, other in pending_data[:number]}
        if op.kind == "write":
            for label, data in _torn_versions(op, rng, thorough):
                yield _Variant(f"prefix-then-{label}", model.pending_dir, before, (op, data))
        yield _Variant("lost-one-write", model.pending_dir, everything - {id(op)})
    for number in range(len(model.pending_dir)):
        yield _Variant(f"dir-prefix-{number}", model.pending_dir[:number], "all")
        if thorough:
            without = model.pending_dir[:number] + model.pending_dir[number + 1 :]
            yield _Variant(f"dir-without-{number}", without, "all")
