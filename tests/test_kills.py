"""Real process kills: a writer SIGKILLed at random moments never loses an acknowledged call.

The child (creating, updating and removing sessions, registering and clearing
waits) writes an *intent* line to an oracle file before each call and an
*ack* line after it returns (unbuffered writes: a SIGKILL cannot lose a line
once written). The parent kills it at a random moment, reopens the store, and
checks it against the oracle (sessions and wait scopes): every acknowledged
call is there; the one call in flight is fully there or fully absent. The kill may also land inside a line's
write (a write that crosses a page boundary can be cut short): that torn last
line is ignored, as if never begun, and cut off before the next cycle.

The writer may also compact online between calls, in each durability mode (a
process kill loses nothing in any mode: the records are in the OS's hands).

The default lane kills a few dozen times; the slow lane (``pytest -m slow``)
200 times, and 100 times a compacting writer in each mode.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from filestore import FileSessionStore, ReplyScope, SessionData, SessionKey
from filestore.offline.fsck import fsck

from .support import ctx, data
from .support.fileio import ExitAt

FORK = multiprocessing.get_context("fork")
WAIT_USERS = ("u1", "u2")
SCOPES = {"s1": ReplyScope("chat-1"), "s2": ReplyScope("chat-2", reply_to="m-1")}
DAY = datetime.timedelta(days=1)


def _line(entry: Mapping[str, object]) -> bytes:
    """One oracle line: an entry as JSON, and the newline that says the line is whole."""
    return (json.dumps(entry) + "\n").encode()


def _oracle_line(fd: int, entry: Mapping[str, object]) -> None:
    os.write(fd, _line(entry))


def _random_writer(
    directory: str,
    oracle: str,
    seed: int,
    ready: Connection,
    durability: str = "fsync",
    compacting: float = 0.0,
) -> None:
    """Random creates, updates, removes, wait registrations and clears, and with probability
    ``compacting`` per step an online compaction (between its own oracle lines: no call is
    in flight during it)."""
    rng = random.Random(seed)
    fd = os.open(oracle, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with FileSessionStore(
        directory, preallocate_bytes=8192, snapshot_every_records=25, durability=durability
    ) as store:
        live = list(store.session_keys())
        ready.send("go")
        step = 0
        while True:
            step += 1
            user = rng.choice(("u1", "u2", "u3"))
            roll = rng.random()
            if rng.random() < compacting:
                _oracle_line(fd, {"compacting": step})
                store.compact()
                _oracle_line(fd, {"compacted": step})
            elif roll < 0.3 or not live:
                stored = data(ctx(user=user), step=seed * 100_000 + step)
                _oracle_line(fd, {"intent": "create", "value": stored.to_json()})
                key = store.create_session(ctx(user=user), stored)
                _oracle_line(fd, {"ack": "create", "key": key, "value": stored.to_json()})
                live.append(key)
            elif roll < 0.55:
                key = rng.choice(live)
                current = store.get_session(key)
                assert current is not None
                stored = data(current.tenant_ctx, step=seed * 100_000 + step)
                _oracle_line(fd, {"intent": "update", "key": key, "value": stored.to_json()})
                store.update_session(key, stored)
                _oracle_line(fd, {"ack": "update", "key": key, "value": stored.to_json()})
            elif roll < 0.7:
                key = live.pop(rng.randrange(len(live)))
                _oracle_line(fd, {"intent": "remove", "key": key})
                store.remove_session(key)
                _oracle_line(fd, {"ack": "remove", "key": key})
            elif roll < 0.88:
                # A caller's key of one user (wait keys never move between users).
                number = rng.randrange(4)
                key, user = SessionKey(f"wait-{number}"), WAIT_USERS[number % 2]
                stored = data(ctx(user=user), step=seed * 100_000 + step)
                scope = rng.choice(sorted(SCOPES))
                call = {"key": key, "value": stored.to_json(), "user": user, "scope": scope}
                _oracle_line(fd, {"intent": "register", **call})
                store.register_wait(ctx(user=user), user, SCOPES[scope], key, stored, DAY)
                _oracle_line(fd, {"ack": "register", **call})
                if key not in live:
                    live.append(key)
            else:
                user, scope = rng.choice(WAIT_USERS), rng.choice(sorted(SCOPES))
                _oracle_line(fd, {"intent": "clear", "user": user, "scope": scope})
                store.clear_wait(ctx(user=user), user, SCOPES[scope])
                _oracle_line(fd, {"ack": "clear", "user": user, "scope": scope})
                live = list(store.session_keys())


def _complete_lines(raw: bytes) -> bytes:
    """The oracle up to its last newline: a kill during a write can leave a torn last line."""
    return raw[: raw.rfind(b"\n") + 1]


def _entries(raw: bytes) -> list[dict[str, object]]:
    """The oracle's complete lines, parsed; a torn last line is left out."""
    return [json.loads(line) for line in _complete_lines(raw).decode().splitlines()]


Waits = dict[tuple[str, str], str]


def _apply(contents: dict[str, str], waits: Waits, entry: Mapping[str, object]) -> None:
    """Apply an acknowledged (or landed) call to the oracle's sessions and wait scopes, by the
    memory store's rules."""
    call, key = entry["ack"], str(entry.get("key"))
    if call in {"create", "update"}:
        contents[key] = str(entry["value"])
        return
    if call == "clear":
        cleared = waits.pop((str(entry["user"]), str(entry["scope"])), None)
        if cleared is not None:
            contents.pop(cleared, None)
        return
    for address in [address for address, holder in waits.items() if holder == key]:
        del waits[address]
    if call == "remove":
        contents.pop(key, None)
        return
    assert call == "register", call
    contents[key] = str(entry["value"])
    waits[(str(entry["user"]), str(entry["scope"]))] = key


def _expected_state(raw: bytes) -> tuple[dict[str, str], Waits, dict[str, object] | None]:
    """The acknowledged sessions and wait scopes, and the call in flight (if the last intent
    has no ack).

    A torn last line is ignored: a torn intent's call never started, and a torn
    ack leaves its call in flight (it may or may not have landed).
    """
    contents: dict[str, str] = {}
    waits: Waits = {}
    in_flight: dict[str, object] | None = None
    for entry in _entries(raw):
        if "compacting" in entry or "compacted" in entry:
            continue  # only between calls: changes no session
        if "intent" in entry:
            in_flight = entry
            continue
        in_flight = None
        if "aborted" in entry:
            continue
        _apply(contents, waits, entry)
    return contents, waits, in_flight


def _expected(raw: bytes) -> tuple[dict[str, str], dict[str, object] | None]:
    """The acknowledged sessions, and the call in flight (see ``_expected_state``)."""
    contents, _, in_flight = _expected_state(raw)
    return contents, in_flight


def _found_waits(store: FileSessionStore) -> Waits:
    found: Waits = {}
    for user in WAIT_USERS:
        for name, scope in SCOPES.items():
            key = store.find_wait_by_scope(ctx(user=user), user, scope)
            if key is not None:
                found[(user, name)] = str(key)
    return found


def _check_against_oracle(directory: Path, oracle: Path) -> str:
    """Compare the store with the oracle; record in the oracle how the call in flight ended.

    Returns that ending: ``"between calls"``, ``"landed"`` or ``"lost"``. A torn
    last line is cut off first, so the lines appended next start on a line of their own.
    """
    raw = oracle.read_bytes()
    acknowledged, waits, in_flight = _expected_state(raw)
    os.truncate(oracle, len(_complete_lines(raw)))
    with FileSessionStore(directory) as store:
        found: dict[str, str] = {}
        for key in store.session_keys():
            session: SessionData | None = store.get_session(key)
            assert session is not None
            found[str(key)] = session.to_json()
        found_waits = _found_waits(store)
    if (found, found_waits) == (acknowledged, waits):
        # The call in flight (if any) did not land: say so, so the next cycle starts exact.
        if in_flight is None:
            return "between calls"
        with oracle.open("ab") as lines:
            lines.write(_line({"aborted": in_flight["intent"]}))
        return "lost"
    assert in_flight is not None, "the store differs from the acknowledged calls, with no call in flight"
    landed: dict[str, object] = {name: value for name, value in in_flight.items() if name != "intent"}
    landed["ack"] = in_flight["intent"]
    if in_flight["intent"] == "create":
        extra = set(found) - set(acknowledged)
        assert len(extra) == 1, "the in-flight create must add exactly one session"
        landed["key"] = extra.pop()
    _apply(acknowledged, waits, landed)
    assert (found, found_waits) == (acknowledged, waits), "the in-flight call is only partly there"
    with oracle.open("ab") as lines:
        lines.write(_line(landed))
    return "landed"


def _kill_cycles(
    tmp_path: Path, kills: int, seed: int, durability: str = "fsync", compacting: float = 0.0
) -> Counter[str]:
    """Start, kill and check the writer ``kills`` times; how each kill's call in flight ended
    (and, with ``compacting``, how many compactions ran and how many kills landed in one)."""
    directory = tmp_path / "store"
    oracle = tmp_path / "oracle.jsonl"
    FileSessionStore(directory).close()
    rng = random.Random(seed)
    endings: Counter[str] = Counter()
    for cycle in range(kills):
        receiver, sender = FORK.Pipe(duplex=False)
        child = FORK.Process(
            target=_random_writer,
            args=(str(directory), str(oracle), seed + cycle, sender, durability, compacting),
        )
        child.start()
        assert receiver.recv() == "go"
        # The kill's moment is random on purpose (not a synchronisation): anywhere in a call,
        # a compaction, or between them.
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(30)
        assert child.exitcode == -signal.SIGKILL
        entries = _entries(oracle.read_bytes())
        if entries and "compacting" in entries[-1]:
            endings["during a compaction"] += 1
        endings[_check_against_oracle(directory, oracle)] += 1
        # Nothing a kill leaves (a half-written compaction, a torn tail) may make fsck unhappy
        # once a store has opened it.
        report = fsck(directory)
        assert not report.errors, [finding.detail for finding in report.errors]
    entries = _entries(oracle.read_bytes())
    endings["acknowledged"] = sum(1 for entry in entries if "ack" in entry)
    endings["compactions"] = sum(1 for entry in entries if "compacted" in entry)
    return endings


def _assert_kills_hit_work(endings: Counter[str]) -> None:
    """The kills landed on a writer at work: some in the middle of a call, with sessions written."""
    print(f"process kills: {dict(endings)}")
    assert endings["landed"] + endings["lost"] > 0, "no kill caught a call in flight"
    assert endings["acknowledged"] > 0, "the writer acknowledged nothing"


def test_the_oracle_reader_ignores_a_torn_last_line() -> None:
    """A line cut short by a kill is left out: a torn intent's call never began; a torn ack's is in flight."""
    value = data(step=1).to_json()
    intent = {"intent": "update", "key": "k1", "value": value}
    acked = _line({"intent": "create", "value": value})
    acked += _line({"ack": "create", "key": "k1", "value": value})
    torn_intent = _line(intent)[:17]
    assert _expected(acked + torn_intent) == ({"k1": value}, None)
    torn_ack = _line({"ack": "update", "key": "k1", "value": value})[:-1]  # all but its newline
    assert _expected(acked + _line(intent) + torn_ack) == ({"k1": value}, intent)
    assert _complete_lines(acked + torn_intent) == acked
    assert _complete_lines(torn_intent) == b""


def test_the_oracle_check_cuts_a_torn_line_off(tmp_path: Path) -> None:
    """After a kill inside an intent line, the check passes and the next line starts on a line of its own."""
    directory = tmp_path / "store"
    with FileSessionStore(directory) as store:
        key = store.create_session(ctx(), data(step=1))
    value = data(step=1).to_json()
    acked = _line({"intent": "create", "value": value}) + _line({"ack": "create", "key": key, "value": value})
    oracle = tmp_path / "oracle.jsonl"
    oracle.write_bytes(acked + _line({"intent": "remove", "key": key})[:9])
    assert _check_against_oracle(directory, oracle) == "between calls"
    assert oracle.read_bytes() == acked
    with FileSessionStore(directory) as store:
        store.remove_session(key)  # the next writer's call lands, its ack torn
    oracle.write_bytes(oracle.read_bytes() + _line({"intent": "remove", "key": key}) + b'{"ack": "rem')
    assert _check_against_oracle(directory, oracle) == "landed"
    assert _expected(oracle.read_bytes()) == ({}, None)


def test_random_kills_lose_no_acknowledged_write(tmp_path: Path) -> None:
    """30 SIGKILLs at random moments of a busy writer: every acknowledged call survives."""
    _assert_kills_hit_work(_kill_cycles(tmp_path, kills=30, seed=1))


@pytest.mark.slow
def test_random_kills_lose_no_acknowledged_write_slow(tmp_path: Path) -> None:
    """The slow lane: 200 SIGKILLs."""
    _assert_kills_hit_work(_kill_cycles(tmp_path, kills=200, seed=7))


MODES = ("fsync", "group", "none")


def _assert_compactions_ran(endings: Counter[str]) -> None:
    """The writer compacted, acknowledged writes, and some kills landed inside a call or a
    compaction (in ``none`` mode a call takes microseconds: most kills fall between calls)."""
    print(f"process kills: {dict(endings)}")
    assert endings["compactions"] > 0, "the writer never compacted"
    assert endings["acknowledged"] > 0, "the writer acknowledged nothing"
    caught = endings["landed"] + endings["lost"] + endings["during a compaction"]
    assert caught > 0, "no kill caught a call or a compaction in flight"


@pytest.mark.parametrize("durability", MODES)
def test_random_kills_with_compactions_lose_nothing(tmp_path: Path, durability: str) -> None:
    """10 SIGKILLs of a writer that also compacts online (one step in ten), in each durability
    mode: every acknowledged call survives (a process crash loses nothing in any mode), and
    fsck finds the store clean after each recovery, also after kills inside a compaction."""
    _assert_compactions_ran(_kill_cycles(tmp_path, kills=10, seed=11, durability=durability, compacting=0.1))


@pytest.mark.slow
@pytest.mark.parametrize("durability", MODES)
def test_random_kills_with_compactions_lose_nothing_slow(tmp_path: Path, durability: str) -> None:
    """The slow lane: 100 SIGKILLs of a compacting writer in each mode, some inside a compaction."""
    endings = _kill_cycles(tmp_path, kills=100, seed=23, durability=durability, compacting=0.1)
    _assert_compactions_ran(endings)
    assert endings["during a compaction"] > 0, "no kill landed inside a compaction"


def _snapshot_then_die(directory: str, keys_out: Connection, operation: str, after: bool) -> None:
    store = FileSessionStore(directory, io=ExitAt(operation, after=after))
    keys = [store.create_session(ctx(user=f"u{n}"), data(ctx(user=f"u{n}"), step=n)) for n in range(5)]
    keys_out.send(keys)
    store.write_snapshot()
    os._exit(0)


@pytest.mark.parametrize(("operation", "after"), [("rename", False), ("rename", True), ("sync_dir", True)])
def test_death_while_writing_the_snapshot(tmp_path: Path, operation: str, after: bool) -> None:
    """A process that dies at each step of a snapshot write leaves a store with all its data."""
    directory = tmp_path / "store"
    FileSessionStore(directory).close()
    receiver, sender = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_snapshot_then_die, args=(str(directory), sender, operation, after))
    child.start()
    keys = receiver.recv()
    child.join(30)
    assert child.exitcode == 3
    with FileSessionStore(directory) as store:
        for number, key in enumerate(keys):
            assert store.get_session(key) == data(ctx(user=f"u{number}"), step=number)
    assert not fsck(directory).errors
