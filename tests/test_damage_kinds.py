"""Every kind of damage, in every durability mode, checked by opening, every read and fsck.

The stores: a second generation (after ``compact --keep-old`` of a first in
which the same owners' sessions were all removed) of 24 creates, updates and
removes by users of two tenants, ``acme`` and ``evil``, with the same user
names; written in ``fsync``, ``group`` and ``none`` mode; closed (so with a
snapshot covering the whole log), each damage tried with that snapshot and
without one. The damage (``support.corruption``): bit flips, zeroed blocks,
truncations, overwrites with random bytes, and misdirected writes: a valid
frame of the log copied over another record of the same length, of another
length, of another tenant's session, and a frame of the first generation.

Each damaged copy is checked against the model (what was acknowledged, and
what replaying only the intact records gives):

- opening either raises ``CorruptionError`` naming the log and pointing at
  ``filestore fsck --repair``, changing no file, or opens; then every read
  (``get_session`` of every key ever created, ``find_by_user`` of every
  owner, ``iter_sessions``, ``session_keys``) returns the acknowledged value,
  or what the intact records say when the damage hit the record that set it,
  or raises ``CorruptionError``: never another key's or tenant's session;
  and a session (or lookup) whose records all lie intact where they were
  written reads exactly as acknowledged: opening dropped no intact record;
- ``fsck`` finds the damage (exit 4) and changes nothing; ``fsck --repair``
  exits 1, leaves a clean store that opens, from its log alone, with exactly
  what the intact records say, and names as lost exactly the damaged records
  before the last intact one (a log whose end is lost looks like a shorter
  log: documented). Damage that leaves a valid shorter log (a cut, or zeros,
  from a record boundary on) may be beyond fsck: it then says 0 and the store
  shows that prefix.

The default lane draws a few hundred damages with Hypothesis; the slow lane
sweeps every pair of records, every old frame over every record, every cut,
and overwrites and flips at a stride, in every mode.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from filestore import CorruptionError, FileSessionStore, SessionData
from filestore.engine.framing import FILE_HEADER_SIZE
from filestore.engine.layout import LOG_NAME, SNAPSHOT_NAME
from filestore.offline.fsck import fsck

from .support.corruption import (
    BLOCK,
    Damage,
    Generations,
    Pristine,
    State,
    build_second_generation,
    flip,
    larger_workload,
    misdirected,
    observe,
    old_frame_over,
    overwrite,
    owner_ctx,
    record_targets,
    records_in_place,
    state_of_intact_records,
    zero_block,
)

MODES: Final = ("fsync", "group", "none")
TENANTS: Final = ("acme", "evil")
OPERATIONS: Final = larger_workload(24, seed=13, tenants=TENANTS)
OLD: Final = larger_workload(10, seed=5, tenants=TENANTS)
KINDS: Final = (
    "bit-flips",
    "zero-block",
    "truncation",
    "random-overwrite",
    "copy-same-length",
    "copy-other-length",
    "copy-other-tenant",
    "old-generation",
)


@attrs.frozen
class Case:
    """One mode's damaged-store material: the second generation, what each record wrote."""

    mode: str
    generations: Generations
    targets: list[tuple[str, str]]  # (key, owner) of each record, from 1

    @property
    def pristine(self) -> Pristine:
        return self.generations.pristine

    @property
    def count(self) -> int:
        return len(self.targets)

    def length(self, number: int) -> int:
        return self.pristine.ends[number] - self.pristine.ends[number - 1]

    def tenant(self, number: int) -> str:
        return owner_ctx(self.targets[number - 1][1]).tenant_id


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """The store written in each durability mode, closed."""
    built = {}
    for mode in MODES:
        directory = tmp_path_factory.mktemp(f"kinds-{mode}") / "store"
        generations = build_second_generation(directory, OLD, OPERATIONS, durability=mode)
        built[mode] = Case(mode, generations, record_targets(generations.pristine, OPERATIONS))
    return built


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where damaged copies are made, one at a time."""
    return tmp_path_factory.mktemp("kinds-work")


# -- the damage -------------------------------------------------------------------


def newest(case: Case, number: int) -> bool:
    """Whether record ``number`` is a PUT and its session's newest record (the index points at it)."""
    key = case.targets[number - 1][0]
    last = max(n for n, (written, _) in enumerate(case.targets, start=1) if written == key)
    return number == last and OPERATIONS[number - 1].kind != "remove"


def rolls_back(case: Case, source: int, target: int) -> bool:
    """Whether copying ``source`` over ``target`` puts an older record of a session, of the same
    length, where the index says the session's newest record is (only its record number tells
    them apart: ``test_an_older_record_of_a_session_over_its_newest_is_never_returned``)."""
    key = case.targets[target - 1][0]
    newest = max(n for n, (written, _) in enumerate(case.targets, start=1) if written == key)
    return (
        case.targets[source - 1][0] == key
        and source < target == newest
        and OPERATIONS[target - 1].kind != "remove"
        and case.length(source) == case.length(target)
    )


def copy_pairs(case: Case, kind: str) -> list[tuple[int, int]]:
    """Every (source, target) pair of distinct records that makes a copy of ``kind``."""
    everything = range(1, case.count + 1)
    pairs = [(source, target) for source in everything for target in everything if source != target]
    if kind == "copy-same-length":
        return [(s, t) for s, t in pairs if case.length(s) == case.length(t)]
    if kind == "copy-other-length":
        return [(s, t) for s, t in pairs if case.length(s) != case.length(t)]
    return [(s, t) for s, t in pairs if case.tenant(s) != case.tenant(t)]


def draw_damage(case: Case, kind: str, draw: st.DataObject) -> Damage:
    """One damage of ``kind`` to ``case``'s log, drawn by Hypothesis."""
    log = case.pristine.log
    size = len(log)
    if kind == "bit-flips":
        bits = draw.draw(st.lists(st.integers(0, size * 8 - 1), min_size=1, max_size=8), label="bits")
        return Damage(kind, flip(log, bits))
    if kind == "zero-block":
        start = draw.draw(st.integers(0, size - 1), label="block start")
        return Damage(kind, zero_block(log, start, BLOCK))
    if kind == "truncation":
        return Damage(kind, log[: draw.draw(st.integers(0, size - 1), label="size")])
    if kind == "random-overwrite":
        # Mostly in the middle (records with records after them), anywhere otherwise.
        at = draw.draw(st.integers(0, size - 1), label="at")
        noise = draw.draw(st.binary(min_size=2, max_size=64), label="bytes")
        return Damage(kind, overwrite(log, at, noise))
    if kind == "old-generation":
        frames = case.generations.old_frames
        frame = frames[draw.draw(st.integers(0, len(frames) - 1), label="old record")]
        return old_frame_over(case.pristine, frame, draw.draw(st.integers(1, case.count), label="target"))
    source, target = draw.draw(st.sampled_from(copy_pairs(case, kind)), label="source, target")
    return attrs.evolve(misdirected(case.pristine, source, target), kind=kind)


def every_damage(case: Case, stride: int) -> Iterator[Damage]:
    """The slow lane's sweep: every copy pair, every old frame over every record; cuts at every
    record boundary, a byte either side of it and every ``stride`` bytes; flips, zeroed blocks
    and random overwrites every ``stride`` bytes."""
    log = case.pristine.log
    for kind in ("copy-same-length", "copy-other-length", "copy-other-tenant"):
        for source, target in copy_pairs(case, kind):
            yield attrs.evolve(misdirected(case.pristine, source, target), kind=kind)
    for frame in case.generations.old_frames:
        for target in range(1, case.count + 1):
            yield old_frame_over(case.pristine, frame, target)
    ends = case.pristine.ends
    cuts = {
        *range(0, len(log), stride),
        *ends[:-1],
        *(end + 1 for end in ends[:-1]),
        *(end - 1 for end in ends[1:]),
    }
    for size in sorted(cuts):
        yield Damage("truncation", log[:size])
    noise = random.Random(len(log))
    for at in range(0, len(log), stride):
        yield Damage("bit-flips", flip(log, [at * 8 + noise.randrange(8)]))
        yield Damage("zero-block", zero_block(log, at, BLOCK))
        yield Damage("random-overwrite", overwrite(log, at, noise.randbytes(noise.randrange(2, 65))))


# -- the checks -------------------------------------------------------------------


@attrs.frozen
class Model:
    """What a damaged log may show: the acknowledged state, and what its intact records say."""

    acknowledged: State
    in_place: list[bool]  # each record's bytes lie where they were written
    by_in_place: State  # replaying the records that lie in place
    by_whole: State  # replaying every record of which a whole copy survives (fsck's model)
    lost: tuple[int, ...]  # the damaged records fsck can name: those before the last whole one
    prefix: int | None  # records in a valid shorter log the damage left (a cut or zeros), if so


def model_of(case: Case, damage: Damage) -> Model:
    pristine, log = case.pristine, damage.log
    in_place = records_in_place(pristine, log)
    whole = [kept or number in damage.copies for number, kept in enumerate(in_place, start=1)]
    last_whole = max((n for n in range(1, case.count + 1) if whole[n - 1]), default=0)
    ends = pristine.ends
    prefixes = [
        done
        for done, end in enumerate(ends)
        if log[:end] == pristine.log[:end] and not log[end:].strip(b"\0")
    ]
    return Model(
        pristine.states[-1],
        in_place,
        state_of_intact_records(pristine, OPERATIONS, in_place),
        state_of_intact_records(pristine, OPERATIONS, whole),
        tuple(n for n in range(1, last_whole) if not whole[n - 1]),
        max(prefixes, default=None),
    )


def store_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.name not in {"LOCK", "OPEN"}}


def damaged_copy(case: Case, where: Path, damage: Damage, *, snapshot: bool) -> Path:
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(case.pristine.directory, where)
    (where / LOG_NAME).write_bytes(damage.log)
    if not snapshot:
        (where / SNAPSHOT_NAME).unlink()
    return where


def check_open(case: Case, where: Path, damage: Damage, model: Model) -> str:
    """Open the damaged copy and read everything; check it against the model. The outcome's name."""
    before = store_files(where)
    refusal: CorruptionError | None = None
    try:
        store = FileSessionStore(where, durability=case.mode)
    except CorruptionError as error:
        refusal = error
    if refusal is not None:
        assert refusal.path == str(where / LOG_NAME), f"the refusal names {refusal.path}, not the log"
        # A damaged file header (offset 0) is named as such, with `filestore fsck`, which says
        # whether the header can be rebuilt; damaged records point at the repair itself.
        pointer = "`filestore fsck`" if refusal.offset == 0 else "`filestore fsck --repair`"
        assert pointer in str(refusal), f"the refusal does not point at {pointer}: {refusal}"
        assert store_files(where) == before, "a refused open changed the store's files"
        return "refused"
    with store:
        return check_reads(case, store, model)


def check_reads(case: Case, store: FileSessionStore, model: Model) -> str:
    """Every read call against the model: the acknowledged value, or what the intact records say
    when the damage hit the record that set it, or ``CorruptionError``; exact for every session
    and lookup whose records all lie in place."""
    touched: dict[str, list[int]] = {}  # key or owner -> the records that wrote it
    for number, (key, owner) in enumerate(case.targets, start=1):
        touched.setdefault(key, []).append(number)
        touched.setdefault(owner, []).append(number)
    states = (model.acknowledged, model.by_in_place, model.by_whole)

    def allowed(key: str) -> set[SessionData | None]:
        return {state.sessions.get(key) for state in states}

    def exact(name: str) -> bool:
        return all(model.in_place[number - 1] for number in touched[name])

    errors = 0
    for key in sorted({key for key, _ in case.targets}):
        try:
            found = store.get_session(key)
        except CorruptionError:
            assert not exact(key), f"get_session({key}): an intact record raised"
            errors += 1
            continue
        if exact(key):
            assert found == model.acknowledged.sessions.get(key), f"get_session({key}): intact record lost"
        assert found in allowed(key), f"get_session({key}) returned data never acknowledged for it"
    for owner in case.pristine.users:
        context = owner_ctx(owner)
        try:
            hit = store.find_by_user(context, owner.rpartition(":")[2])
        except CorruptionError:
            assert not exact(owner), f"find_by_user({owner}): intact records raised"
            errors += 1
            continue
        got = None if hit is None else str(hit[0])
        if exact(owner):
            assert got == model.acknowledged.lookup.get(owner), f"find_by_user({owner}): intact lookup lost"
        assert got in {state.lookup.get(owner) for state in states}, (
            f"find_by_user({owner}): another's session"
        )
        if hit is not None:
            assert hit[1] in allowed(got or ""), f"find_by_user({owner}) returned data never acknowledged"
            assert hit[1].tenant_ctx.tenant_id == context.tenant_id, f"find_by_user({owner}): another tenant"
    everything = {key for key, _ in case.targets}
    assert set(map(str, store.session_keys())) <= everything, "session_keys() names keys never created"
    try:
        listed = list(store.iter_sessions())
    except CorruptionError:
        errors += 1
        listed = []
    for session in listed:
        assert session.data in allowed(str(session.key)), f"iter_sessions: {session.key} never held that"
        assert session.data is not None
        assert session.scope.tenant_id == session.data.tenant_ctx.tenant_id
    return "opened, reads raised" if errors else "opened"


def check_fsck(case: Case, where: Path, model: Model) -> str:
    """fsck finds the damage and changes nothing; the repair keeps exactly the intact records."""
    before = store_files(where)
    found = fsck(where)
    assert store_files(where) == before, "fsck without --repair changed the store"
    repaired = fsck(where, repair=True)
    left = [f"{finding.kind}: {finding.detail}" for finding in fsck(where).errors]
    assert left == [], "the repaired store is not clean"
    (where / SNAPSHOT_NAME).unlink(missing_ok=True)  # the log itself must hold the repaired state
    with FileSessionStore(where, durability=case.mode) as store:
        state = observe(store, case.pristine.users)
    if model.prefix is not None and found.exit_code == 0:
        assert repaired.exit_code == 0
        assert state == case.pristine.states[model.prefix], "a clean check, yet the store shows less"
        return "fsck: clean (a shorter valid log)"
    assert found.exit_code == 4, "fsck missed the damage"
    assert repaired.exit_code == 1, f"the repair left something uncorrected: {repaired.errors}"
    if model.prefix is not None:
        assert state == case.pristine.states[model.prefix]
    else:
        assert state == model.by_whole, "the repair dropped an intact record, or kept a damaged one"
        assert tuple(repaired.lost) == model.lost, "the repair's lost records are not the damaged ones"
    return "fsck: found, repaired"


def check(case: Case, workdir: Path, damage: Damage, *, snapshot: bool) -> tuple[str, str]:
    """Every check of one damage; the outcomes of opening and of fsck."""
    model = model_of(case, damage)
    opened = check_open(case, damaged_copy(case, workdir / "open", damage, snapshot=snapshot), damage, model)
    repaired = check_fsck(case, damaged_copy(case, workdir / "fsck", damage, snapshot=snapshot), model)
    return opened, repaired


# -- the lanes --------------------------------------------------------------------


def test_the_stores_mix_tenants_lengths_and_generations(cases: dict[str, Case]) -> None:
    """The workload gives every kind something to do, in every mode: both tenants with the same
    user names, frames of equal and unequal length, old frames of the same lengths as current ones;
    and the undamaged store passes every check."""
    for case in cases.values():
        owners = case.pristine.users
        assert {owner_ctx(owner).tenant_id for owner in owners} == set(TENANTS)
        assert {"u0", "evil:u0"} <= set(owners) or {"u1", "evil:u1"} <= set(owners)
        for kind in ("copy-same-length", "copy-other-length", "copy-other-tenant"):
            assert len(copy_pairs(case, kind)) >= case.count, (case.mode, kind)
        lengths = {case.length(n) for n in range(1, case.count + 1)}
        assert any(len(frame) in lengths for frame in case.generations.old_frames)
        pristine = Damage("none", case.pristine.log)
        assert model_of(case, pristine).prefix == case.count
        assert check(case, case.pristine.directory.parent / "w", pristine, snapshot=True) == (
            "opened",
            "fsck: clean (a shorter valid log)",
        )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(draw=st.data())
def test_random_damage_of_every_kind_in_every_mode(
    cases: dict[str, Case], workdir: Path, draw: st.DataObject
) -> None:
    """A random damage of each kind, in each mode, with and without a snapshot: opening refuses
    (pointing at fsck --repair) or keeps every intact record; no read returns data never
    acknowledged for its key or owner; fsck finds it and the repair keeps exactly the intact records."""
    case = cases[draw.draw(st.sampled_from(MODES), label="mode")]
    kind = draw.draw(st.sampled_from(KINDS), label="kind")
    snapshot = draw.draw(st.booleans(), label="snapshot")
    damage = draw_damage(case, kind, draw)
    opened, repaired = check(case, workdir, damage, snapshot=snapshot)
    event(f"{kind}: {opened}; {repaired}")


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_every_damage_in_the_sweep(
    cases: dict[str, Case], workdir: Path, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sweep of ``every_damage`` (every copy pair, old frame and cut; flips, blocks and
    overwrites every 23 bytes), with and without a snapshot: every check passes; the tally is printed."""
    case = cases[mode]
    tally: Counter[tuple[str, str, str]] = Counter()
    for damage in every_damage(case, stride=23):
        for snapshot in (True, False):
            opened, repaired = check(case, workdir, damage, snapshot=snapshot)
            tally[damage.kind, opened, repaired] += 1
    kinds = Counter(kind for kind, _, _ in tally.elements())
    assert set(kinds) == set(KINDS), kinds
    with capsys.disabled():
        print(f"\n{mode}: {sum(tally.values())} damages")
        for (kind, opened, repaired), count in sorted(tally.items()):
            print(f"  {kind:18} {opened:22} {repaired:34} {count}")


def test_an_evil_frame_over_an_acme_record_is_never_read_as_acmes(
    cases: dict[str, Case], workdir: Path
) -> None:
    """The review's case, in every mode: a valid record of tenant ``evil`` copied over an ``acme``
    record of the same length; the acme owner's reads raise CorruptionError (or show its intact
    earlier state), never evil's session, and the repair loses only the overwritten record."""
    for case in cases.values():
        pairs = [
            (s, t)
            for s, t in copy_pairs(case, "copy-other-tenant")
            if case.length(s) == case.length(t) and case.tenant(t) == "acme" and newest(case, t)
        ]
        assert pairs, case.mode
        for source, target in pairs[:4]:
            damage = misdirected(case.pristine, source, target)
            assert check(case, workdir, damage, snapshot=True)[0] in {"opened, reads raised", "refused"}
            check(case, workdir, damage, snapshot=False)


@pytest.mark.parametrize("mode", MODES)
def test_an_older_record_of_a_session_over_its_newest_is_never_returned(
    cases: dict[str, Case], workdir: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A misdirected write of an earlier record of a session (same key and owner, same length)
    over the session's newest record, opened with the snapshot (whose spot checks are turned off,
    as they miss most keys of a large store): reading the session returns its acknowledged value
    or raises CorruptionError, never the older value (a silent rollback). Over the log's last
    record, opening refuses (pointing at fsck --repair) rather than cut the copy as a torn tail."""
    monkeypatch.setattr("filestore.engine.snapshot.SPOT_CHECKS", 0)
    case = cases[mode]
    everything = range(1, case.count + 1)
    pairs = [(s, t) for s in everything for t in everything if s != t and rolls_back(case, s, t)]
    assert pairs, "the workload has an update of the same length as an earlier record of its session"
    for source, target in pairs:
        key = case.targets[target - 1][0]
        damage = misdirected(case.pristine, source, target)
        where = damaged_copy(case, workdir / "rollback", damage, snapshot=True)
        if target == case.count:
            # Over the last record the snapshot no longer matches the log's end, and
            # replay finds the copy where the next record belongs: damage, not a torn tail.
            with pytest.raises(CorruptionError, match="`filestore fsck --repair`"):
                FileSessionStore(where, durability=mode)
            continue
        with FileSessionStore(where, durability=mode) as store:
            try:
                found = store.get_session(key)
            except CorruptionError:
                continue
            assert found == case.pristine.states[-1].sessions[key], f"record {source} over {target}"


@pytest.mark.parametrize("size", [0, 1, 39])
def test_fsck_of_a_log_cut_inside_its_file_header(cases: dict[str, Case], workdir: Path, size: int) -> None:
    """Found by this lane: a log cut short inside its 40-byte file header made ``fsck`` (check
    and repair) fail with a bare ``OSError`` (EINVAL: a read of negative length past the end).
    Opening refuses with CorruptionError; fsck finds the damage, the repair rebuilds the header
    (every record is gone with the cut, none is named lost) and leaves a clean, empty store."""
    case = cases["fsync"]
    where = damaged_copy(
        case, workdir / "header-cut", Damage("truncation", case.pristine.log[:size]), snapshot=True
    )
    assert fsck(where).exit_code == 4
    repaired = fsck(where, repair=True)
    assert (repaired.exit_code, repaired.lost) == (1, [])
    assert fsck(where).exit_code == 0
    with FileSessionStore(where) as store:
        assert observe(store, case.pristine.users) == State({}, {})


def test_header_and_first_records_zeroed_without_a_snapshot_repair_clean(
    cases: dict[str, Case], workdir: Path
) -> None:
    """512 bytes from offset 0 or 20 (the header and records 1 and 2) of a second-generation log
    zeroed, in every mode, its snapshot and old log gone, so no file says the generation: the
    repair rebuilds the header with the generation whose salt verifies the records after the
    damage, keeps every intact record, names records 1 and 2 lost, exits 1, and leaves a clean
    store (found by this lane)."""
    for case in cases.values():
        for start in (0, FILE_HEADER_SIZE // 2):
            damage = Damage("zero-block", zero_block(case.pristine.log, start, BLOCK))
            assert model_of(case, damage).lost == (1, 2)
            assert check(case, workdir, damage, snapshot=False) == ("refused", "fsck: found, repaired")
