"""The example runner as a real process: SIGKILLed half-way through 50 conversations, restarted on
the same store, every conversation finished with every answer its own (``examples/runner``).

The runner prints its URL once it listens; the test reads that line from
its stdout pipe (never a delay). Fifty flows run at once: three tenants,
two teams and no team, three users whose ids repeat under every tenant and
team, and two threads of one conversation beside a thread-less one. Each
answered the name question before the first kill. After the restart all
send their email at once and the runner is killed again as the tenth
answer arrives, others in flight. After the second restart each resends
its answers quoting the old prompts: an answered step must be recognised
as taken (so it was durable), an unanswered one is taken at most once; then
every flow finishes. The same on Redis, named by a URL.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiohttp

from filestore import open_store
from tests.support.installed import examples_only
from tests.support.redis_server import drop_namespace, redis_url

ROOT = Path(__file__).resolve().parent.parent
FLOWS = 50
# The email answers received before the second SIGKILL (the rest are in flight or not sent).
KILL_AFTER = 10
_T = TypeVar("_T")


class Flow(NamedTuple):
    """One conversation's place and the answers its user gives."""

    number: int
    where: dict[str, str]

    @property
    def name(self) -> str:
        return f"Name {self.number}"

    @property
    def email(self) -> str:
        return f"user{self.number}@tenant{self.number}.example"


def flows() -> list[Flow]:
    places = itertools.product(
        ("acme", "globex", "initech"),
        (None, "support"),
        ("alice", "bob", "carol"),
        (("chat-1", None), ("chat-1", "t-1"), ("chat-2", None)),
    )
    result = []
    for number, (tenant, team, user, (conversation, thread)) in enumerate(itertools.islice(places, FLOWS)):
        where = {"tenant": tenant, "user": user, "conversation": conversation}
        if team is not None:
            where["team"] = team
        if thread is not None:
            where["thread"] = thread
        result.append(Flow(number, where))
    return result


class RunningRunner:
    """``python -m examples.runner`` on a store, started and stopped by the test."""

    def __init__(self, target: str, log: Path) -> None:
        environment = dict(os.environ)
        # The example alone on the path: the checkout's own filestore must not shadow the one
        # under test (the installed wheel in CI; this checkout's otherwise, on PYTHONPATH already).
        place = examples_only(ROOT, log.parent)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(place), environment.get("PYTHONPATH")]))
        self.log = log
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "examples.runner", "--store", target],
                cwd=place,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        assert line.startswith("runner listening on "), f"{line!r}; stderr: {log.read_text()}"
        self.url = line.removeprefix("runner listening on ").strip()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(30) == -signal.SIGKILL

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(30) == 0, self.log.read_text()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        assert self.process.stdout is not None
        self.process.stdout.close()


async def say(
    session: aiohttp.ClientSession, url: str, flow: Flow, text: str, reply_to: str | None
) -> dict[str, Any]:
    body = {**flow.where, "text": text}
    if reply_to is not None:
        body["reply_to"] = reply_to
    async with session.post(f"{url}/messages", json=body) as response:
        assert response.status == 200, await response.text()
        reply: dict[str, Any] = await response.json()
        return reply


def email_question(flow: Flow) -> str:
    return f"Thanks, {flow.name}. What is your email address?"


def confirm_question(flow: Flow) -> str:
    return f"Register {flow.name} <{flow.email}>? (yes/no)"


async def first_half(url: str, flow: Flow) -> None:
    """hi, then the name, each answered with the next question."""
    async with aiohttp.ClientSession() as session:
        hello = await say(session, url, flow, "hi", None)
        assert (hello["text"], hello["prompt"]) == ("What is your name?", "ask.name#1"), flow
        named = await say(session, url, flow, flow.name, "ask.name#1")
        assert (named["text"], named["prompt"]) == (email_question(flow), "ask.email#2"), flow


async def emails_cut_by_a_kill(url: str, every: list[Flow], runner: RunningRunner) -> list[bool]:
    """Each flow's email at once; SIGKILL as the KILL_AFTER-th answer arrives, so others are in
    flight. Which flows got their answer (those steps must have been stored)."""
    answered = 0

    async def one(session: aiohttp.ClientSession, flow: Flow) -> bool:
        nonlocal answered
        try:
            reply = await say(session, url, flow, flow.email, "ask.email#2")
        except aiohttp.ClientError:
            return False  # no answer: the step may or may not have been stored
        assert (reply["text"], reply["prompt"]) == (confirm_question(flow), "confirm#3"), flow
        answered += 1
        if answered == KILL_AFTER:
            runner.process.send_signal(signal.SIGKILL)
        return True

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(one(session, flow) for flow in every)))


async def second_half(url: str, flow: Flow, email_answered: bool) -> str:
    """Retries quoting old prompts, then yes: the key of the flow.

    The name again, quoting its prompt: taken already (it was answered before the first
    kill). The email again, quoting its prompt: taken already if it was answered before the
    second kill, else taken now or already; either way the confirmation comes next.
    """
    async with aiohttp.ClientSession() as session:
        retried = await say(session, url, flow, flow.name, "ask.name#1")
        assert retried["text"].startswith("That was answered already. "), (flow, retried)
        if not email_answered:
            assert retried["text"] in {
                f"That was answered already. {email_question(flow)}",
                f"That was answered already. {confirm_question(flow)}",
            }, flow
        confirm = await say(session, url, flow, flow.email, "ask.email#2")
        taken_before = f"That was answered already. {confirm_question(flow)}"
        expected = {taken_before} if email_answered else {taken_before, confirm_question(flow)}
        assert confirm["text"] in expected, (flow, email_answered, confirm)
        assert confirm["prompt"] == "confirm#3"
        done = await say(session, url, flow, "yes", "confirm#3")
        assert (done["text"], done["step"]) == (f"Registered {flow.name} <{flow.email}>. Thank you!", "done")
        key: str = done["key"]
        assert key == confirm["key"] == retried["key"]
        return key


def run_across_kills(target: str, log: Path) -> None:
    """Half of every flow and a SIGKILL; a restart on ``target``, the email answers cut by a
    second SIGKILL; a restart, retries and the rest. Then the store holds nothing."""
    every = flows()
    assert len({tuple(sorted(flow.where.items())) for flow in every}) == FLOWS
    runner = RunningRunner(target, log)
    try:
        asyncio.run(_gather(first_half(runner.url, flow) for flow in every))
        runner.kill()
    finally:
        runner.close()
    runner = RunningRunner(target, log)
    try:
        answered = asyncio.run(emails_cut_by_a_kill(runner.url, every, runner))
        assert runner.process.wait(30) == -signal.SIGKILL
        assert sum(answered) >= KILL_AFTER
    finally:
        runner.close()
    runner = RunningRunner(target, log)
    try:
        keys = asyncio.run(_gather(second_half(runner.url, flow, answered[flow.number]) for flow in every))
        runner.stop()
    finally:
        runner.close()
    assert len(set(keys)) == FLOWS
    with open_store(target) as store:
        assert list(store.iter_sessions()) == []


async def _gather(coroutines: Iterator[Coroutine[Any, Any, _T]]) -> list[_T]:
    return list(await asyncio.gather(*coroutines))


def test_fifty_flows_survive_a_sigkill_on_a_directory_store(tmp_path: Path) -> None:
    """On a directory store: every step answered before a SIGKILL (between messages, or with
    others in flight) is there after the restart, in its own flow, a retried answer is not taken
    twice, and every flow finishes with its own user's name and email."""
    run_across_kills(str(tmp_path / "sessions"), tmp_path / "runner.log")


def test_fifty_flows_survive_a_sigkill_on_redis(tmp_path: Path) -> None:
    """The same runner on Redis, named by a redis:// URL (with its namespace): the same flows across
    the same kills (Redis keeps what each acknowledged write stored), each finished with its own
    answers, nothing left in the namespace."""
    namespace = f"runner-test-{uuid.uuid4().hex}"
    try:
        run_across_kills(f"{redis_url()}?namespace={namespace}", tmp_path / "runner.log")
    finally:
        drop_namespace(namespace)
