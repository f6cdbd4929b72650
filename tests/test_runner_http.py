"""The example runner's HTTP layer and its serving loop, in process (``examples/runner``).

``make_app`` served on a loopback port: the status codes of
``examples.runner.webhook``. ``serve`` and ``main`` on ``memory:``: ready
once listening, stopped by an event or a signal, the store closed after.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from examples.runner import Runner, make_app, serve
from examples.runner.server import STORE_VARIABLE, main, parse_args
from filestore import AsyncInMemorySessionStore, ReplyScope, SessionCursor, SessionData, TenantCtx

MESSAGE = {"tenant": "acme", "user": "alice", "conversation": "chat-1", "text": "hi"}


class Client:
    """A client of an app served on a loopback port (aiohttp's own test_utils would do as well)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def post(self, path: str, **request: Any) -> aiohttp.ClientResponse:
        return await self.session.post(self.url + path, **request)

    async def get(self, path: str) -> aiohttp.ClientResponse:
        return await self.session.get(self.url + path)


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[Client]:
    """``app`` listening on a free loopback port for the block, and a client of it."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        _host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            yield Client(session, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


async def post(client: Client, body: object) -> tuple[int, dict[str, Any]]:
    response = await client.post("/messages", json=body)
    payload: dict[str, Any] = await response.json()
    return response.status, payload


def test_a_message_gets_its_reply_as_json() -> None:
    """POST /messages answers 200 with the reply's text, step, key and prompt; /health answers ok."""

    async def scenario() -> None:
        async with AsyncInMemorySessionStore() as store:
            runner = Runner(store)
            async with served(make_app(runner)) as client:
                status, reply = await post(client, MESSAGE)
                assert status == 200
                assert reply["text"] == "What is your name?"
                assert (reply["step"], reply["prompt"]) == ("ask.name", "ask.name#1")
                status, reply = await post(client, {**MESSAGE, "text": "Alice", "reply_to": reply["prompt"]})
                assert (status, reply["prompt"]) == (200, "ask.email#2")
                health = await client.get("/health")
                assert (health.status, await health.json()) == (200, {"status": "ok"})

    asyncio.run(scenario())


def test_errors_have_their_status_and_greentic_code() -> None:
    """A bad message is 400 with greentic's invalid_input and the reason; another flow's wait is
    409; a store that cannot serve (closed) is 503 with its code; a huge body is refused (413)."""

    async def scenario() -> None:
        store = AsyncInMemorySessionStore()
        async with served(make_app(Runner(store))) as client:
            status, body = await post(client, {**MESSAGE, "tenant": "a b"})
            assert (status, body["error"]) == (400, "invalid_input")
            assert "tenant" in body["message"]
            ctx = TenantCtx.new("dev", "acme").with_user("alice")
            other = SessionData(ctx, "survey.flow", SessionCursor("q1"), "{}")
            await store.register_wait(ctx, "alice", ReplyScope("chat-1"), "survey-1", other)
            status, body = await post(client, MESSAGE)
            assert (status, body["error"]) == (409, "conflict")
            await store.close()
            status, body = await post(client, MESSAGE)
            assert (status, body["error"]) == (503, "unavailable")
            response = await client.post("/messages", data=b"x" * (128 * 1024))
            assert response.status == 413

    asyncio.run(scenario())


def test_serve_announces_its_url_then_stops_and_closes_the_store() -> None:
    """serve() calls ready(url) once it accepts connections on 127.0.0.1; the URL answers; setting
    stop ends it."""

    async def scenario() -> None:
        stop = asyncio.Event()
        urls: asyncio.Queue[str] = asyncio.Queue()
        serving = asyncio.create_task(serve("memory:", ready=urls.put_nowait, stop=stop))
        url = await urls.get()
        assert url.startswith("http://127.0.0.1:")
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/messages", json=MESSAGE) as response,
        ):
            assert (await response.json())["text"] == "What is your name?"
        stop.set()
        await serving
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"{url}/health")

    asyncio.run(scenario())


def test_main_serves_until_sigterm_and_writes_the_ready_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() with the store from RUNNER_STORE prints its URL, writes it to --ready-file, serves,
    and returns 0 on SIGTERM (the test sends it once the file is written, read from a FIFO)."""
    ready = tmp_path / "ready"
    os.mkfifo(ready)
    monkeypatch.setenv(STORE_VARIABLE, "memory:")
    seen: list[str] = []

    def stop_when_ready() -> None:
        with open(ready, encoding="utf-8") as fifo:
            seen.append(fifo.readline().strip())
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=stop_when_ready)
    watcher.start()
    assert main(["--ready-file", str(ready), "--ttl", "60"]) == 0
    watcher.join()
    assert seen[0].startswith("http://127.0.0.1:")
    assert capsys.readouterr().out == f"runner listening on {seen[0]}\n"


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        ([], "no store"),
        (["--store", "memory:", "--ttl", "0"], "--ttl"),
        (["--store", "x", "--grace", "-1"], "--grace"),
        (["--store", "x", "--env", "no env"], "--env"),
    ],
)
def test_bad_command_lines_are_usage_errors(
    argv: list[str], complaint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No store (neither --store nor RUNNER_STORE), a TTL not above 0, a negative grace or an env
    that is not a greentic id: exit 2, saying which."""
    monkeypatch.delenv(STORE_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err
