"""A model-based random test across processes: writers, one compactor, one killer, in every mode.

Each round forks several writer processes and one compacting process on one
store. Every writer owns a tenant (``t0``, ``t1``...) and keeps an oracle file
of its calls: an *intent* line before each create, update or remove and an
*ack* line after it returns (as ``test_kills.py`` does). Writers also read
(``get_session``, ``find_by_user``) and check each answer against the model
their own oracle replays: their latest acknowledged value, the lookup an
``InMemorySessionStore`` would give, never another tenant's session. The
parent is the killer: it SIGKILLs some writers, each once it has reported a
random number of acknowledged calls (the kill then lands wherever that writer
is: in a call, between calls, waiting for the lock), and asks the compactor
for an online compaction every few acknowledged calls (so compactions run
while writers write). Everything is synchronised through pipes; nothing waits
by the clock.

After every round the parent opens the store and checks each tenant against
its writer's oracle (a process kill loses nothing in any durability mode: every
acknowledged call is there with its latest value, the one call a kill caught is
wholly there or wholly absent), every user lookup, that no session exists that
no writer wrote, and then that ``fsck`` exits 0.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Mapping
from multiprocessing.connection import Connection, wait
from pathlib import Path

import attrs
import pytest

from filestore import FileSessionStore, SessionData, TenantCtx
from filestore.offline.fsck import fsck

from .support import ctx, data

FORK = multiprocessing.get_context("fork")
MODES = ("fsync", "group", "none")
TEAMS = ("support", None)
USERS = ("u1", "u2")
Scope = tuple[str | None, str]


def _context(writer: int, team: str | None, user: str | None) -> TenantCtx:
    return ctx(tenant=f"t{writer}", team=team, user=user)


def _line(entry: Mapping[str, object]) -> bytes:
    return (json.dumps(entry) + "\n").encode()


def _complete_lines(raw: bytes) -> bytes:
    """The oracle up to its last newline: a kill during a line's write can leave it torn."""
    return raw[: raw.rfind(b"\n") + 1]


def _entries(raw: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in _complete_lines(raw).decode().splitlines()]


@attrs.define
class Model:
    """What a writer's oracle says its tenant holds: sessions, their scopes, the user lookups."""

    contents: dict[str, str] = attrs.field(factory=dict)
    scopes: dict[str, Scope] = attrs.field(factory=dict)
    lookups: dict[Scope, str] = attrs.field(factory=dict)
    in_flight: dict[str, object] | None = None
    failures: list[str] = attrs.field(factory=list)

    def apply(self, entry: Mapping[str, object]) -> None:
        """One acknowledged call, as ``InMemorySessionStore`` would apply it."""
        key = str(entry["key"])
        if entry["ack"] == "create":
            self.scopes[key] = (_team(entry["team"]), str(entry["user"]))
        if entry["ack"] == "remove":
            del self.contents[key]
            scope = self.scopes.pop(key)
            if self.lookups.get(scope) == key:
                del self.lookups[scope]
        else:
            self.contents[key] = str(entry["value"])
            self.lookups[self.scopes[key]] = key


def _team(value: object) -> str | None:
    return None if value is None else str(value)


def replay(raw: bytes) -> Model:
    """The model after an oracle's complete lines, and the call in flight (an intent with no ack)."""
    model = Model()
    for entry in _entries(raw):
        if "failure" in entry:
            model.failures.append(str(entry["failure"]))
        elif "intent" in entry:
            model.in_flight = entry
        else:
            model.in_flight = None
            if "ack" in entry:
                model.apply(entry)
    return model


class Writer:
    """One writer process's loop: random calls on its tenant, each read checked against its model."""

    def __init__(self, store: FileSessionStore, oracle: str, writer: int, seed: int) -> None:
        self.store = store
        self.writer = writer
        self.rng = random.Random(seed)
        self.model = replay(Path(oracle).read_bytes())
        assert self.model.in_flight is None, "the parent settles every call in flight between rounds"
        self.fd = os.open(oracle, os.O_WRONLY | os.O_APPEND)
        self.base = seed * 10_000

    def note(self, entry: Mapping[str, object]) -> None:
        os.write(self.fd, _line(entry))

    def check(self, what: str, found: object, expected: object) -> None:
        if found != expected:
            raise AssertionError(f"{what}: found {found!r}, expected {expected!r}")

    def expected_lookup(self, scope: Scope) -> tuple[str, str] | None:
        key = self.model.lookups.get(scope)
        return None if key is None else (key, self.model.contents[key])

    def step(self, number: int) -> None:
        rng, model, store = self.rng, self.model, self.store
        live = sorted(model.contents)
        roll = rng.random()
        value = self.base + number
        if roll < 0.3 or not live:
            team, user = rng.choice(TEAMS), rng.choice(USERS)
            stored = data(_context(self.writer, team, user), step=value)
            self.note({"intent": "create", "team": team, "user": user, "value": stored.to_json()})
            key = str(store.create_session(_context(self.writer, team, user), stored))
            ack = {"ack": "create", "key": key, "team": team, "user": user, "value": stored.to_json()}
        elif roll < 0.6:
            key = rng.choice(live)
            team, user = model.scopes[key]
            stored = data(_context(self.writer, team, user), step=value)
            self.note({"intent": "update", "key": key, "value": stored.to_json()})
            store.update_session(key, stored)
            ack = {"ack": "update", "key": key, "value": stored.to_json()}
        elif roll < 0.75:
            key = rng.choice(live)
            self.note({"intent": "remove", "key": key})
            store.remove_session(key)
            ack = {"ack": "remove", "key": key}
        elif roll < 0.88:
            key = rng.choice(live)
            found: SessionData | None = store.get_session(key)
            self.check(f"get {key}", None if found is None else found.to_json(), model.contents[key])
            return
        else:
            team, user = rng.choice(TEAMS), rng.choice(USERS)
            hit = store.find_by_user(_context(self.writer, team, None), user)
            answer = None if hit is None else (str(hit[0]), hit[1].to_json())
            self.check(f"find_by_user {team}/{user}", answer, self.expected_lookup((team, user)))
            return
        self.note(ack)
        model.apply(ack)
        after = store.get_session(key)
        self.check(
            f"get {key} after {ack['ack']}",
            None if after is None else after.to_json(),
            model.contents.get(key),
        )


def _write(
    directory: str,
    oracle: str,
    writer: int,
    seed: int,
    durability: str,
    calls: int | None,
    progress: Connection,
) -> None:
    """A writer process: ``calls`` steps (or until killed), reporting each step's end on ``progress``;
    anything raised is noted in its oracle, for the parent's report."""
    try:
        with FileSessionStore(directory, durability=durability) as store:
            loop = Writer(store, oracle, writer, seed)
            number = 0
            while calls is None or number < calls:
                number += 1
                loop.step(number)
                progress.send(number)
    except BaseException as error:
        with open(oracle, "ab") as lines:
            lines.write(_line({"failure": f"{type(error).__name__}: {error}"}))
        raise


def _compact(directory: str, durability: str, orders: Connection, done: Connection) -> None:
    """The compacting process: one online compaction per order, until told to stop."""
    with FileSessionStore(directory, durability=durability) as store:
        while orders.recv() == "compact":
            store.compact()
            done.send("compacted")


def _settle(store: FileSessionStore, writer: int, oracle: Path, found: dict[str, str]) -> Model:
    """Compare the store's sessions of ``writer``'s tenant with its oracle, and append to the oracle
    how the call a kill caught ended (a torn last line is cut off first). Returns the model."""
    raw = oracle.read_bytes()
    os.truncate(oracle, len(_complete_lines(raw)))
    model = replay(raw)
    assert model.failures == [], f"writer {writer} saw a wrong answer: {model.failures}"
    in_flight = model.in_flight
    if found != model.contents:
        assert in_flight is not None, f"writer {writer}: the store differs from the acknowledged calls"
        landed: dict[str, object] = {"ack": in_flight["intent"], "key": in_flight.get("key")}
        if in_flight["intent"] == "create":
            extra = set(found) - set(model.contents)
            assert len(extra) == 1, f"writer {writer}: the create in flight must add one session"
            landed.update(key=extra.pop(), team=in_flight["team"], user=in_flight["user"])
        landed.update(value=in_flight.get("value"), settled=True)
        with oracle.open("ab") as lines:
            lines.write(_line(landed))
        model.apply(landed)
        assert found == model.contents, f"writer {writer}: the call in flight is only partly there"
    elif in_flight is not None:
        with oracle.open("ab") as lines:
            lines.write(_line({"aborted": in_flight["intent"], "settled": True}))
    for team in TEAMS:
        for user in USERS:
            hit = store.find_by_user(_context(writer, team, None), user)
            key = model.lookups.get((team, user))
            expected = None if key is None else (key, model.contents[key])
            assert (None if hit is None else (str(hit[0]), hit[1].to_json())) == expected, (
                f"writer {writer}: lookup of {team}/{user}"
            )
    return model


def _check_round(directory: Path, oracles: list[Path], durability: str) -> None:
    """Every tenant as its writer's oracle says, nothing no writer wrote, then fsck exits 0."""
    with FileSessionStore(directory, durability=durability) as store:
        by_tenant: dict[str, dict[str, str]] = {}
        for key in store.session_keys():
            session = store.get_session(key)
            assert session is not None
            by_tenant.setdefault(session.tenant_ctx.tenant, {})[str(key)] = session.to_json()
        assert set(by_tenant) <= {f"t{writer}" for writer in range(len(oracles))}, "a tenant no writer used"
        for writer, oracle in enumerate(oracles):
            _settle(store, writer, oracle, by_tenant.get(f"t{writer}", {}))
    report = fsck(directory)
    assert report.exit_code == 0, [finding.detail for finding in report.findings]


@attrs.frozen
class Plan:
    """How big a run is: writers, rounds, steps of a writer that is not killed, compaction pace."""

    writers: int
    rounds: int
    calls: int
    compact_every: int


def _round(
    directory: Path, oracles: list[Path], durability: str, plan: Plan, round_number: int, rng: random.Random
) -> Counter[str]:
    """One round: start the writers and the compactor, kill some writers, end the others."""
    figures: Counter[str] = Counter()
    victims = set(rng.sample(range(plan.writers), rng.randint(1, plan.writers - 1)))
    kill_after = {writer: rng.randint(1, plan.calls) for writer in victims}
    orders_in, orders_out = FORK.Pipe(duplex=False)
    done_in, done_out = FORK.Pipe(duplex=False)
    compactor = FORK.Process(target=_compact, args=(str(directory), durability, orders_in, done_out))
    compactor.start()
    done_out.close()
    progress: dict[Connection, int] = {}
    writers = []
    for writer in range(plan.writers):
        receiver, sender = FORK.Pipe(duplex=False)
        seed = round_number * 100 + writer
        calls = None if writer in victims else plan.calls
        process = FORK.Process(
            target=_write,
            args=(str(directory), str(oracles[writer]), writer, seed, durability, calls, sender),
        )
        process.start()
        sender.close()  # so that the writer's end of the pipe closing is seen here
        progress[receiver] = writer
        writers.append(process)
    steps = ordered_at = 0
    compacting = False
    open_pipes: list[Connection] = [*progress, done_in]
    while len(open_pipes) > 1 or compacting:
        for ready in wait(open_pipes):
            assert isinstance(ready, Connection)
            try:
                message = ready.recv()
            except EOFError:
                open_pipes.remove(ready)
                compacting = compacting and ready is not done_in  # a dead compactor: seen below
                continue
            if ready is done_in:
                compacting = False
                figures["compactions"] += 1
                continue
            writer = progress[ready]
            steps += 1
            if writer in victims and message >= kill_after[writer]:
                victims.discard(writer)
                os.kill(writers[writer].pid or 0, signal.SIGKILL)
                figures["kills"] += 1
            if not compacting and steps - ordered_at >= plan.compact_every and len(open_pipes) > 1:
                orders_out.send("compact")
                compacting, ordered_at = True, steps
    orders_out.send("stop")
    compactor.join(60)
    assert compactor.exitcode == 0
    for writer, process in enumerate(writers):
        process.join(60)
        expected = -signal.SIGKILL if writer in kill_after else 0
        failures = replay(oracles[writer].read_bytes()).failures
        assert process.exitcode == expected, f"writer {writer} ended with {process.exitcode}: {failures}"
    figures["steps"] += steps
    _check_round(directory, oracles, durability)
    return figures


def run_model(tmp_path: Path, durability: str, plan: Plan, seed: int) -> Counter[str]:
    """``plan.rounds`` rounds, each checked; the figures of the whole run."""
    directory = tmp_path / "store"
    FileSessionStore(directory).close()
    oracles = [tmp_path / f"oracle{writer}.jsonl" for writer in range(plan.writers)]
    for oracle in oracles:
        oracle.touch()
    rng = random.Random(seed)
    figures: Counter[str] = Counter()
    started = time.monotonic()
    for round_number in range(plan.rounds):
        figures += _round(directory, oracles, durability, plan, round_number, rng)
    for oracle in oracles:
        entries = _entries(oracle.read_bytes())
        figures["acknowledged"] += sum(1 for entry in entries if "ack" in entry)
        figures["caught in a call"] += sum(1 for entry in entries if "settled" in entry)
    figures["seconds"] = round(time.monotonic() - started)
    print(f"{durability}: {plan} {dict(figures)}")
    assert figures["kills"] >= plan.rounds
    assert figures["compactions"] > 0
    assert figures["acknowledged"] > plan.rounds * plan.calls
    return figures


@pytest.mark.parametrize("durability", MODES)
def test_processes_writing_compacting_and_killed_lose_nothing(tmp_path: Path, durability: str) -> None:
    """3 writers and a compactor, 3 rounds, 1 or 2 writers SIGKILLed a round, in each durability
    mode: every round leaves each tenant exactly as its writer's acknowledged calls say (the call a
    kill caught wholly there or absent), every lookup right, no foreign session, fsck clean."""
    run_model(tmp_path, durability, Plan(writers=3, rounds=3, calls=25, compact_every=12), seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("durability", MODES)
def test_processes_writing_compacting_and_killed_lose_nothing_slow(tmp_path: Path, durability: str) -> None:
    """The slow lane: 5 writers and a compactor, 15 rounds of up to 120 steps a writer."""
    run_model(tmp_path, durability, Plan(writers=5, rounds=15, calls=120, compact_every=20), seed=5)
