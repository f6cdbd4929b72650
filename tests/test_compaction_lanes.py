"""Compaction in every mode: syncs counted over random call sequences, descriptors over many handles.

The sync check is issue 13's item 1 as a property: in the modes that promise
it (``fsync`` and ``group``), every acknowledged create, update and remove is
covered, within its call, by an fdatasync of the current log (counted per
inode by ``SyncLedger``) completed after its record was written, whatever
sequence of writes and online compactions (by this handle or by another it
follows, any number in a row) came before; the contents match a model
throughout. The resource lane holds several handles of every mode on one
store through many compactions, each handle compacting in turn.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filestore import FileSessionStore, SessionData

from .support import ctx, data
from .support.descriptors import held_files, needs_proc
from .support.fileio import SyncLedger

USERS = ("u1", "u2", "u3")

# One step: ("create", user), ("update", which), ("remove", which), ("other-writes", user),
# or ("compact", by) with by "this" or "other" and a count of compactions in a row.
Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["create", "other-writes"]), st.integers(0, len(USERS) - 1)),
        st.tuples(st.sampled_from(["update", "remove"]), st.integers(0, 7)),
        st.tuples(st.sampled_from(["compact-this", "compact-other"]), st.integers(1, 3)),
    ),
    min_size=1,
    max_size=14,
)


def _synced_within(ledger: SyncLedger, log: Path, write: Callable[[], object]) -> str:
    """Run ``write``; '' if its one record went to the current log and an fdatasync of that log
    completed after it before the call returned, else what went wrong."""
    since = ledger.mark()
    write()
    inodes, syncs = ledger.records_and_syncs(since, ledger.mark())
    if inodes != [log.stat().st_ino]:
        return f"records in inodes {inodes}, the current log is {log.stat().st_ino}"
    return "" if syncs >= 1 else "no fdatasync of the current log after the record"


def _append_result(results: list[str], call: Callable[[], str]) -> None:
    results.append(call())


def _run(directory: Path, durability: str, sequence: list[Step]) -> tuple[int, int]:
    """Play ``sequence``; check every write's sync and the contents; (writes, compactions)."""
    ledger = SyncLedger()
    store = FileSessionStore(directory, durability=durability, io=ledger, preallocate_bytes=0)
    other = FileSessionStore(directory, preallocate_bytes=0)
    log = directory / "sessions.log"
    model: dict[str, SessionData] = {}
    live: list[str] = []
    writes = compactions = 0
    try:
        for number, (verb, argument) in enumerate(sequence, start=1):
            problem = ""
            if verb == "create" or (verb in {"update", "remove"} and not live):
                context = ctx(user=USERS[argument % len(USERS)])
                created: list[str] = []
                stored = data(context, step=number)
                create = partial(store.create_session, context, stored)
                problem = _synced_within(ledger, log, partial(_append_result, created, create))
                model[created[0]] = stored
                live.append(created[0])
            elif verb == "update":
                key = live[argument % len(live)]
                stored = data(model[key].tenant_ctx, step=number)
                problem = _synced_within(ledger, log, partial(store.update_session, key, stored))
                model[key] = stored
            elif verb == "remove":
                key = live.pop(argument % len(live))
                problem = _synced_within(ledger, log, partial(store.remove_session, key))
                del model[key]
            elif verb == "other-writes":
                context = ctx(user=USERS[argument])
                key = other.create_session(context, data(context, step=number))
                model[key] = data(context, step=number)
                live.append(key)
            else:
                compacting = store if verb == "compact-this" else other
                for _ in range(argument):
                    compacting.compact()
                compactions += argument
            writes += verb in {"create", "update", "remove"}
            assert not problem, f"step {number} ({verb}) after {compactions} compactions: {problem}"
            assert set(store.session_keys()) == set(model)
            for key, stored in model.items():
                assert store.get_session(key) == stored
    finally:
        other.close()
        store.close()
    with FileSessionStore(directory) as reopened:
        assert {key: reopened.get_session(key) for key in model} == model
        assert len(reopened) == len(model)
    return writes, compactions


@pytest.mark.parametrize("durability", ["fsync", "group"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=steps)
def test_every_write_is_synced_after_any_compactions(durability: str, sequence: list[Step]) -> None:
    """Random sequences of creates, updates, removes, another handle's writes and runs of online
    compactions by this handle or another one: every write this handle acknowledges was covered,
    within its call, by an fdatasync of the current log after its record; contents always match."""
    with tempfile.TemporaryDirectory() as root:
        _run(Path(root) / "s", durability, sequence)


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["fsync", "group"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=steps)
def test_every_write_is_synced_after_any_compactions_slow(durability: str, sequence: list[Step]) -> None:
    """The slow lane: 150 random sequences a mode."""
    with tempfile.TemporaryDirectory() as root:
        _run(Path(root) / "s", durability, sequence)


def test_the_sync_check_can_fail(tmp_path: Path) -> None:
    """The check is not vacuous: a write in ``none`` mode (which syncs nothing) is reported."""
    ledger = SyncLedger()
    with FileSessionStore(tmp_path / "s", durability="none", io=ledger) as store:
        problem = _synced_within(
            ledger, tmp_path / "s" / "sessions.log", lambda: store.create_session(ctx(), data())
        )
    assert problem == "no fdatasync of the current log after the record"


@needs_proc
def test_descriptors_stay_flat_with_many_handles_in_every_mode(tmp_path: Path) -> None:
    """Five handles on one store, of every durability mode, take turns compacting (30 compactions)
    and each writes after every compaction: the descriptors the process holds stay as many as after
    the first round, and none holds a deleted log. A sixth handle, idle meanwhile, holds at most the
    one log it last read (deleted now) until its next call, and none after it."""
    directory = tmp_path / "s"
    modes = ["fsync", "group", "none", "fsync", "group"]
    handles = [FileSessionStore(directory, durability=mode) for mode in modes]
    idle = FileSessionStore(directory, durability="none")
    keys = [
        handle.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"))) for n, handle in enumerate(handles)
    ]
    assert idle.get_session(keys[0]) == data(ctx(user="u0"))

    def one_round(step: int) -> None:
        handles[step % len(handles)].compact()
        for number, handle in enumerate(handles):
            handle.update_session(keys[number], data(ctx(user=f"u{number}"), step=step))
        for number, handle in enumerate(handles):
            other = keys[(number + 1) % len(keys)]
            assert handle.get_session(other) == data(ctx(user=f"u{(number + 1) % len(keys)}"), step=step)

    one_round(0)
    held_after_first, _ = held_files(directory)
    for step in range(1, 30):
        one_round(step)
    held, deleted = held_files(directory)
    assert held == held_after_first
    assert len(deleted) == 1, "only the idle handle's last log, replaced since"
    assert idle.get_session(keys[0]) == data(ctx(user="u0"), step=29)
    assert held_files(directory) == (held_after_first, [])
    for handle in [*handles, idle]:
        handle.close()
    with FileSessionStore(directory) as reopened:
        assert len(reopened) == len(handles)
