"""The example runner's flow, in process on the async in-memory store (``examples/runner``).

Each test drives ``Runner.handle`` with messages and reads the replies and
the store; time is a ``ManualClock`` given to both the runner and the
store, so expiry is tested without waiting. The HTTP layer and ``serve``
are in ``test_runner_http.py``; the real process, killed and restarted, in
``test_runner_process.py``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from examples.runner import FlowConflictError, FlowState, Message, Reply, Runner
from examples.runner.flow import ASK_EMAIL, ASK_NAME, CONFIRM, DONE, EXPIRED, FLOW_ID
from examples.runner.message import SOURCE
from filestore import (
    AsyncInMemorySessionStore,
    InvalidInputError,
    ReplyScope,
    SessionCursor,
    SessionData,
    TenantCtx,
    webhook_to_session_key,
)
from tests.support.clocks import ManualClock

_T = TypeVar("_T")
TTL = datetime.timedelta(minutes=15)
GRACE = datetime.timedelta(hours=1)
TTL_MS = 15 * 60 * 1000
GRACE_MS = 60 * 60 * 1000


def run(test: Callable[[Runner, AsyncInMemorySessionStore, ManualClock], Awaitable[_T]]) -> _T:
    """Run ``test`` on a fresh runner over an in-memory store sharing one manual clock."""
    clock = ManualClock()

    async def scenario() -> _T:
        async with AsyncInMemorySessionStore(clock=clock) as store:
            runner = Runner(store, ttl=TTL, grace=GRACE, clock=clock)
            result = await test(runner, store, clock)
            assert runner.active_locks() == 0, "a finished message left its flow lock behind"
            return result

    return asyncio.run(scenario())


def message(text: str, reply_to: str | None = None, **where: str | None) -> Message:
    fields: dict[str, str | None] = {"tenant": "acme", "user": "alice", "conversation": "chat-1"}
    fields.update(where)
    return Message.from_dict({**fields, "text": text, "reply_to": reply_to})


def test_a_conversation_runs_name_email_confirm_to_the_end() -> None:
    """start -> name -> email -> yes: each reply asks the next question, quoting the answers so far;
    the prompts count up; the last reply ends the flow and leaves no wait behind."""

    async def test(runner: Runner, store: AsyncInMemorySessionStore, clock: ManualClock) -> list[Reply]:
        replies = [await runner.handle(message("hi"))]
        replies.append(await runner.handle(message("Alice", replies[-1].prompt)))
        replies.append(await runner.handle(message("alice@example.org", replies[-1].prompt)))
        replies.append(await runner.handle(message("yes", replies[-1].prompt)))
        ctx = TenantCtx.new("dev", "acme").with_user("alice")
        assert await store.list_waits_for_user(ctx, "alice") == []
        assert await store.get_session(replies[0].key) is None
        return replies

    replies = run(test)
    assert [(reply.text, reply.step, reply.prompt) for reply in replies] == [
        ("What is your name?", ASK_NAME, "ask.name#1"),
        ("Thanks, Alice. What is your email address?", ASK_EMAIL, "ask.email#2"),
        ("Register Alice <alice@example.org>? (yes/no)", CONFIRM, "confirm#3"),
        ("Registered Alice <alice@example.org>. Thank you!", DONE, None),
    ]
    assert len({reply.key for reply in replies}) == 1


def test_the_paused_flow_is_a_wait_holding_cursor_and_context() -> None:
    """Between messages the flow is a wait of its user at the conversation's scope, under the
    deterministic key; its SessionData holds the node as cursor and the answers as context."""

    async def test(runner: Runner, store: AsyncInMemorySessionStore, clock: ManualClock) -> None:
        first = await runner.handle(message("hi", team="support", thread="t-1"))
        await runner.handle(message("Alice", first.prompt, team="support", thread="t-1"))
        ctx = TenantCtx.new("dev", "acme").with_team("support").with_user("alice")
        subject = "dev:acme:support:alice"
        key = webhook_to_session_key(SOURCE, subject, json.dumps(["chat-1", "t-1"]))
        assert first.key == key
        assert await store.find_wait_by_scope(ctx, "alice", ReplyScope("chat-1", thread="t-1")) == key
        data = await store.get_session(key)
        assert data is not None
        assert data.tenant_ctx == ctx
        assert data.flow_id == FLOW_ID
        assert data.cursor == SessionCursor(node_pointer=ASK_EMAIL, wait_reason="user-input")
        assert json.loads(data.context_json) == {
            "asked": 2,
            "expires_at_ms": clock() + TTL_MS,
            "name": "Alice",
        }
        assert FlowState.from_data(data).to_data(ctx) == data

    run(test)


def test_wrong_answers_ask_again_and_change_nothing() -> None:
    """A blank name, an address without @, and neither yes nor no each repeat the question with
    the same prompt and leave the stored flow as it was; "no" starts over, forgetting the answers."""

    async def test(runner: Runner, store: AsyncInMemorySessionStore, clock: ManualClock) -> list[Reply]:
        replies = [await runner.handle(message("hi"))]
        replies.append(await runner.handle(message("   ")))
        replies.append(await runner.handle(message("Bob")))
        before = await store.get_session(replies[0].key)
        replies.append(await runner.handle(message("not-an-address")))
        assert await store.get_session(replies[0].key) == before
        replies.append(await runner.handle(message("bob@example.org")))
        replies.append(await runner.handle(message("maybe")))
        replies.append(await runner.handle(message("NO")))
        data = await store.get_session(replies[0].key)
        assert data is not None
        assert "name" not in json.loads(data.context_json)
        replies.append(await runner.handle(message("Robert")))
        return replies

    replies = run(test)
    assert [(reply.text, reply.prompt) for reply in replies] == [
        ("What is your name?", "ask.name#1"),
        ("Please tell me your name. What is your name?", "ask.name#1"),
        ("Thanks, Bob. What is your email address?", "ask.email#2"),
        ("That does not look like an email address. Thanks, Bob. What is your email address?", "ask.email#2"),
        ("Register Bob <bob@example.org>? (yes/no)", "confirm#3"),
        ("Please answer yes or no. Register Bob <bob@example.org>? (yes/no)", "confirm#3"),
        ("Let's start again. What is your name?", "ask.name#4"),
        ("Thanks, Robert. What is your email address?", "ask.email#5"),
    ]


def test_an_answer_to_an_earlier_question_is_not_taken_twice() -> None:
    """A message quoting a prompt already answered (a client's retry after a lost reply) changes
    nothing and gets the current question again; quoting the current prompt, or none, is an answer."""

    async def test(runner: Runner, store: AsyncInMemorySessionStore, clock: ManualClock) -> list[Reply]:
        first = await runner.handle(message("hi"))
        second = await runner.handle(message("Alice", first.prompt))
        before = await store.get_session(first.key)
        retried = await runner.handle(message("Alice", first.prompt))
        assert await store.get_session(first.key) == before
        return [retried, await runner.handle(message("a@example.org", second.prompt))]

    retried, answered = run(test)
    assert (retried.text, retried.step, retried.prompt) == (
        "That was answered already. Thanks, Alice. What is your email address?",
        ASK_EMAIL,
        "ask.email#2",
    )
    assert answered.step == CONFIRM


def test_flows_of_the_same_user_id_elsewhere_never_meet() -> None:
    """One user id under two tenants, two teams, no team, and two threads of one conversation:
    six flows, interleaved step by step, each ending with its own answers under its own key."""
    places: list[dict[str, str | None]] = [
        {"tenant": "acme"},
        {"tenant": "globex"},
        {"tenant": "acme", "team": "support"},
        {"tenant": "acme", "team": "sales"},
        {"tenant": "acme", "thread": "t-1"},
        {"tenant": "acme", "team": "support", "thread": "t-1"},
    ]

    async def test(runner: Runner, store: AsyncInMemorySessionStore, clock: ManualClock) -> list[Reply]:
        prompts: list[str | None] = [None] * len(places)
        last: list[Reply] = []
        for step in ("hi", "name", "email", "yes"):
            last = []
            for number, place in enumerate(places):
                text = {"name": f"name-{number}", "email": f"u{number}@t{number}.example"}.get(step, step)
                reply = await runner.handle(message(text, prompts[number], **place))
                prompts[number] = reply.prompt
                last.append(reply)
        return last

    finals = run(test)
    assert [reply.text for reply in finals] == [
        f"Registered name-{number} <u{number}@t{number}.example>. Thank you!" for number in range(len(places))
    ]
    assert len({reply.key for reply in finals}) == len(places)


def test_a_question_left_past_its_ttl_is_answered_as_expired() -> None:
    """Past the TTL (by the manual clock, no sleep) the next message is told the registration
    expired and the wait is cleared; the message after that starts a new flow."""

    async def test(runner: Runner, store: AsyncInMemorySessionStore, clock: ManualClock) -> list[Reply]:
        first = await runner.handle(message("hi"))
        await runner.handle(message("Alice", first.prompt))
        clock.advance(TTL_MS - 1)
        still = await runner.handle(message("not-an-address"))
        clock.advance(1)
        expired = await runner.handle(message("alice@example.org"))
        assert await store.get_session(first.key) is None
        return [still, expired, await runner.handle(message("hello again"))]

    still, expired, again = run(test)
    assert still.step == ASK_EMAIL
    assert (expired.step, expired.prompt) == (EXPIRED, None)
    assert expired.text == (
        "Sorry, this registration expired: no answer came within 15 minutes. Send any message to start again."
    )
    assert (again.text, again.prompt) == ("What is your name?", "ask.name#1")


def test_each_answer_gives_the_next_question_a_fresh_ttl() -> None:
    """The deadline runs from the last question asked: answering just before it keeps the flow alive."""

    async def test(runner: Runner, store: AsyncInMemorySessionStore, clock: ManualClock) -> Reply:
        first = await runner.handle(message("hi"))
        clock.advance(TTL_MS - 1)
        second = await runner.handle(message("Alice", first.prompt))
        clock.advance(TTL_MS - 1)
        return await runner.handle(message("alice@example.org", second.prompt))

    assert run(test).step == CONFIRM


def test_the_store_forgets_a_wait_after_the_grace_period() -> None:
    """The store's own TTL is the runner's TTL plus its grace: past both, the store holds nothing
    (a user who never writes again costs nothing), and a message starts a new flow."""

    async def test(runner: Runner, store: AsyncInMemorySessionStore, clock: ManualClock) -> Reply:
        first = await runner.handle(message("hi"))
        ctx = TenantCtx.new("dev", "acme").with_user("alice")
        clock.advance(TTL_MS + GRACE_MS - 1)
        assert await store.list_waits_for_user(ctx, "alice") == [first.key]
        clock.advance(1)
        assert await store.list_waits_for_user(ctx, "alice") == []
        return await runner.handle(message("Alice", first.prompt))

    again = run(test)
    assert (again.text, again.prompt) == ("What is your name?", "ask.name#1")


class GatedStore(AsyncInMemorySessionStore):
    """An in-memory store whose ``register_wait`` holds until the test opens ``gate``, as a
    durable store's sync would, saying when one has ``entered``."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock=clock)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def register_wait(self, *args: Any, **kwargs: Any) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().register_wait(*args, **kwargs)


def test_messages_of_one_flow_are_taken_one_at_a_time() -> None:
    """Three answers to the name question sent at once while the store is slow to write: the
    later two queue on the flow's lock (they never read the state the first is changing), so one
    becomes the name and the others answer the email question. Another flow's message meanwhile
    is not held by that lock."""
    clock = ManualClock()

    async def scenario() -> list[Reply]:
        store = GatedStore(clock)
        runner = Runner(store, ttl=TTL, grace=GRACE, clock=clock)
        first = await runner.handle(message("hi"))
        other = await runner.handle(message("hi", thread="t-2"))
        store.gate.clear()
        store.entered.clear()
        same_flow = [asyncio.create_task(runner.handle(message(text))) for text in ("Ann", "Bea", "x@y.org")]
        await store.entered.wait()
        assert runner.active_locks() == 3  # the first at its write, two queued behind it
        # Another flow's message (one that writes nothing) is not held by this flow's lock.
        blank = await runner.handle(message("   ", other.prompt, thread="t-2"))
        assert blank.text == "Please tell me your name. What is your name?"
        store.gate.set()
        replies = [await task for task in same_flow]
        assert runner.active_locks() == 0
        data = await store.get_session(first.key)
        assert data is not None
        assert json.loads(data.context_json)["asked"] == 3
        return replies

    replies = asyncio.run(scenario())
    assert [reply.step for reply in replies] == [ASK_EMAIL, ASK_EMAIL, CONFIRM]
    assert replies[1].text.startswith("That does not look like an email address. Thanks, Ann.")
    assert replies[2].text == "Register Ann <x@y.org>? (yes/no)"


def test_another_flows_wait_is_left_alone() -> None:
    """A wait of another flow at the message's scope is a FlowConflictError; it stays as it was."""

    async def test(runner: Runner, store: AsyncInMemorySessionStore, clock: ManualClock) -> None:
        ctx = TenantCtx.new("dev", "acme").with_user("alice")
        scope = ReplyScope("chat-1")
        other = SessionData(ctx, "survey.flow", SessionCursor("q1"), "{}")
        await store.register_wait(ctx, "alice", scope, "survey-1", other)
        with pytest.raises(FlowConflictError, match=r"survey\.flow"):
            await runner.handle(message("hi"))
        assert await store.find_wait_by_scope(ctx, "alice", scope) == "survey-1"
        assert await store.get_session("survey-1") == other

    run(test)


def test_a_cursor_this_runner_never_writes_starts_the_flow_over() -> None:
    """A stored flow at an unknown node (say, an older version's) is restarted at the name question."""

    async def test(runner: Runner, store: AsyncInMemorySessionStore, clock: ManualClock) -> Reply:
        first = await runner.handle(message("hi"))
        ctx = TenantCtx.new("dev", "acme").with_user("alice")
        old = FlowState("ask.phone", 7, clock() + TTL_MS).to_data(ctx)
        await store.register_wait(ctx, "alice", ReplyScope("chat-1"), first.key, old)
        return await runner.handle(message("0123"))

    assert run(test).prompt == "ask.name#8"


@pytest.mark.parametrize(
    "context",
    [
        "not json",
        "[]",
        "{}",
        '{"asked": 1}',
        '{"asked": "1", "expires_at_ms": 0}',
        '{"asked": 1, "expires_at_ms": 0, "name": 5}',
    ],
)
def test_a_context_this_runner_cannot_read_starts_the_flow_over(context: str) -> None:
    """A stored flow whose context is not what the runner writes (not JSON, fields missing or of
    the wrong type) is restarted at the name question, not a crash of the request."""

    async def test(runner: Runner, store: AsyncInMemorySessionStore, clock: ManualClock) -> Reply:
        first = await runner.handle(message("hi"))
        ctx = TenantCtx.new("dev", "acme").with_user("alice")
        odd = SessionData(ctx, FLOW_ID, SessionCursor(ASK_EMAIL, "user-input"), context)
        await store.register_wait(ctx, "alice", ReplyScope("chat-1"), first.key, odd)
        return await runner.handle(message("alice@example.org"))

    again = run(test)
    assert (again.text, again.prompt) == ("What is your name?", "ask.name#1")


@pytest.mark.parametrize(
    ("ttl", "said"),
    [
        (datetime.timedelta(minutes=1), "1 minute"),
        (datetime.timedelta(minutes=15), "15 minutes"),
        (datetime.timedelta(seconds=90), "90 seconds"),
        (datetime.timedelta(seconds=1), "1 second"),
    ],
)
def test_the_expiry_reply_says_how_long_the_question_waited(ttl: datetime.timedelta, said: str) -> None:
    """The expired reply states the TTL in words a user reads: minutes when whole, else seconds."""
    clock = ManualClock()

    async def scenario() -> Reply:
        async with AsyncInMemorySessionStore(clock=clock) as store:
            runner = Runner(store, ttl=ttl, clock=clock)
            await runner.handle(message("hi"))
            clock.advance(ttl // datetime.timedelta(milliseconds=1))
            return await runner.handle(message("Alice"))

    reply = asyncio.run(scenario())
    assert reply.step == EXPIRED
    assert f"no answer came within {said}." in reply.text


def test_session_keys_tell_every_place_apart() -> None:
    """The key of a flow differs whenever env, tenant, team, user, conversation or thread does,
    even where joining the parts as text would collide; an empty thread is no thread."""
    base = {"tenant": "a", "user": "u", "conversation": "c", "text": "x"}
    variants: list[dict[str, str | None]] = [
        {},
        {"tenant": "b"},
        {"team": "t"},
        {"user": "v"},
        {"conversation": "c:"},
        {"conversation": '", "'},
        {"conversation": "c", "thread": "t"},
        {"conversation": "c:t"},
        {"tenant": "a.t"},
    ]
    keys = [Message.from_dict({**base, **variant}).session_key("dev") for variant in variants]
    assert len(set(keys)) == len(keys)
    assert Message.from_dict(base).session_key("prod") not in keys
    empty_thread = Message.from_dict({**base, "thread": "", "reply_to": ""})
    assert (empty_thread.thread, empty_thread.reply_to) == (None, None)
    assert empty_thread.session_key("dev") == keys[0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("[1]", "message"),
        ("{", "message"),
        (b"\xff", "message"),
        ('{"tenant": "a", "user": "u", "conversation": "c", "text": "x", "thred": "t"}', "thred"),
        ('{"tenant": "a", "user": "u", "conversation": "c"}', "text"),
        ('{"tenant": "a b", "user": "u", "conversation": "c", "text": "x"}', "tenant"),
        ('{"tenant": "a", "team": 3, "user": "u", "conversation": "c", "text": "x"}', "team"),
        ('{"tenant": "a", "user": "", "conversation": "c", "text": "x"}', "user"),
        ('{"tenant": "a", "user": "u", "conversation": "", "text": "x"}', "conversation"),
        ('{"tenant": "a", "user": "u", "conversation": "c", "text": ["x"]}', "text"),
        ('{"tenant": "a", "user": "u", "conversation": "c", "text": "x", "thread": 1}', "thread"),
    ],
)
def test_a_malformed_message_is_refused_naming_its_field(body: str | bytes, field: str) -> None:
    """Not JSON, not an object, an unknown or missing field, a bad id or a non-text value: an
    InvalidInputError naming the field, before any store call."""
    with pytest.raises(InvalidInputError) as raised:
        Message.from_json(body)
    assert raised.value.field == field


def test_a_runner_refuses_an_env_that_is_not_an_id() -> None:
    """The env is checked when the runner is made, not found wrong on every message."""

    async def scenario() -> None:
        async with AsyncInMemorySessionStore() as store:
            with pytest.raises(InvalidInputError) as raised:
                Runner(store, env="dev env")
            assert raised.value.field == "env"

    asyncio.run(scenario())


def test_a_message_scope_leaves_reply_to_out() -> None:
    """The wait scope is the conversation and thread; reply_to only names the prompt answered."""
    parsed = message("x", "ask.name#1", thread="t-1")
    assert parsed.scope() == ReplyScope("chat-1", thread="t-1")
    assert parsed.tenant_ctx("dev") == TenantCtx.new("dev", "acme").with_user("alice")
