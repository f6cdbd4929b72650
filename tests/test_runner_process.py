"""The example runner as a real process: SIGKILLed half-way through 50 conversations, restarted on
the same store, every conversation finished with every answer its own (``examples/runner``).

The runner prints its URL once it listens; the test reads that line from
its stdout pipe (never a delay). Fifty flows run at once: three tenants,
two teams and no team, three users whose ids repeat under every tenant and
team, and two threads of one conversation beside a thread-less one. Each
answered the name question before the kill; after the restart each resends
that answer quoting the old prompt (it must be recognised as taken, so the
step was durable) and then finishes.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from filestore import open_store

ROOT = Path(__file__).resolve().parent.parent
FLOWS = 50


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
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
        self.log = log
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "examples.runner", "--store", target],
                cwd=ROOT,
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
    session: aiohttp.ClientSession, url: str, flow: Flow, text: str, reply_to: Any
) -> dict[str, Any]:
    body = {**flow.where, "text": text}
    if reply_to is not None:
        body["reply_to"] = reply_to
    async with session.post(f"{url}/messages", json=body) as response:
        assert response.status == 200, await response.text()
        reply: dict[str, Any] = await response.json()
        return reply


async def first_half(url: str, flow: Flow) -> tuple[str, str]:
    """hi, then the name: returns the prompts of the name question and of the email question."""
    async with aiohttp.ClientSession() as session:
        hello = await say(session, url, flow, "hi", None)
        assert (hello["text"], hello["prompt"]) == ("What is your name?", "ask.name#1"), flow
        named = await say(session, url, flow, flow.name, hello["prompt"])
        assert named["text"] == f"Thanks, {flow.name}. What is your email address?", flow
        assert named["prompt"] == "ask.email#2"
        return hello["prompt"], named["prompt"]


async def second_half(url: str, flow: Flow, prompts: tuple[str, str]) -> str:
    """The name again (a retry of an answered question), then the email and yes: the key used."""
    asked_name, asked_email = prompts
    async with aiohttp.ClientSession() as session:
        retried = await say(session, url, flow, flow.name, asked_name)
        question = f"Thanks, {flow.name}. What is your email address?"
        assert (retried["text"], retried["prompt"]) == (f"That was answered already. {question}", asked_email)
        confirm = await say(session, url, flow, flow.email, asked_email)
        assert confirm["text"] == f"Register {flow.name} <{flow.email}>? (yes/no)", flow
        done = await say(session, url, flow, "yes", confirm["prompt"])
        assert (done["text"], done["step"]) == (f"Registered {flow.name} <{flow.email}>. Thank you!", "done")
        key: str = done["key"]
        assert key == confirm["key"] == retried["key"]
        return key


def run_across_a_kill(target: str, log: Path) -> None:
    """Half of every flow, SIGKILL, restart on ``target``, the other half; then the store is empty."""
    every = flows()
    assert len({tuple(sorted(flow.where.items())) for flow in every}) == FLOWS
    runner = RunningRunner(target, log)
    try:
        prompts = asyncio.run(_gather(first_half(runner.url, flow) for flow in every))
        runner.kill()
    finally:
        runner.close()
    runner = RunningRunner(target, log)
    try:
        keys = asyncio.run(_gather(second_half(runner.url, flow, prompts[flow.number]) for flow in every))
        runner.stop()
    finally:
        runner.close()
    assert len(set(keys)) == FLOWS
    with open_store(target) as store:
        assert list(store.iter_sessions()) == []


async def _gather(coroutines: Iterator[Any]) -> list[Any]:
    return list(await asyncio.gather(*coroutines))


def test_fifty_flows_survive_a_sigkill_on_a_directory_store(tmp_path: Path) -> None:
    """On a directory store: every step answered before the SIGKILL is there after the restart,
    in its own flow, and every flow finishes with its own user's name and email."""
    run_across_a_kill(str(tmp_path / "sessions"), tmp_path / "runner.log")
