"""The flow: ask name, ask email, confirm; paused between messages as a wait in the store.

Each step ends by parking the flow with ``register_wait`` under the
message's ``ReplyScope`` (its conversation and thread) and the flow's
deterministic key; the next message finds it with ``find_wait_by_scope``
and resumes from the cursor and context in its ``SessionData``. The reply
goes back only after the store's await returned, so a flow the user was
answered about survives a crash (the async stores return once the write is
durable). See ``docs/runner.md`` for the whole story.

Expiry has two clocks on purpose. The user is told a question expired
``ttl`` after it was asked (the deadline is kept in the context); the store
keeps the wait ``grace`` longer, with its own TTL, so the runner can still
see it and say so, and only then forgets it by itself, even if the user
never writes again.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import attrs

from examples.runner.message import Message
from filestore import AsyncSessionStore, EnvId, FlowId, SessionCursor, SessionData, SessionKey, TenantCtx
from filestore.waits import system_clock

FLOW_ID: Final = FlowId("register.flow")
ASK_NAME: Final = "ask.name"
ASK_EMAIL: Final = "ask.email"
CONFIRM: Final = "confirm"
DONE: Final = "done"
EXPIRED: Final = "expired"
WAIT_REASON: Final = "user-input"
DEFAULT_TTL: Final = datetime.timedelta(minutes=15)
DEFAULT_GRACE: Final = datetime.timedelta(days=1)
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_YES: Final = frozenset({"yes", "y"})
_NO: Final = frozenset({"no", "n"})

Clock = Callable[[], int]
"""Unix milliseconds (``filestore.waits.system_clock``, or a test's manual clock)."""


class FlowConflictError(Exception):
    """Another flow waits at this message's scope; this runner leaves it alone."""


@attrs.frozen
class Reply:
    """What the runner answers: the text, the step the flow is now at, and the prompt to quote.

    ``prompt`` is the id a client puts in ``reply_to`` to answer this
    question; ``None`` once the flow has ended (``done``) or expired.
    """

    text: str
    step: str
    key: SessionKey
    prompt: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"text": self.text, "step": self.step, "key": self.key, "prompt": self.prompt}


@attrs.frozen
class FlowState:
    """A paused flow: its node, the number of questions asked, its deadline and the answers so far."""

    node: str
    asked: int
    expires_at_ms: int
    name: str | None = None
    email: str | None = None

    @property
    def prompt(self) -> str:
        """The id of the question now waiting for an answer (``ask.email#2``)."""
        return f"{self.node}#{self.asked}"

    def to_data(self, ctx: TenantCtx) -> SessionData:
        context: dict[str, int | str] = {"asked": self.asked, "expires_at_ms": self.expires_at_ms}
        if self.name is not None:
            context["name"] = self.name
        if self.email is not None:
            context["email"] = self.email
        return SessionData(
            tenant_ctx=ctx,
            flow_id=FLOW_ID,
            cursor=SessionCursor(node_pointer=self.node, wait_reason=WAIT_REASON),
            context_json=json.dumps(context, sort_keys=True),
        )

    @classmethod
    def from_data(cls, data: SessionData) -> FlowState:
        """The state ``to_data`` stored; ``ValueError``, ``KeyError`` or ``TypeError`` for any other."""
        context = json.loads(data.context_json)
        asked, expires_at_ms = context["asked"], context["expires_at_ms"]
        name, email = context.get("name"), context.get("email")
        if not all(type(number) is int for number in (asked, expires_at_ms)):
            raise TypeError("asked and expires_at_ms must be integers")
        if not all(answer is None or isinstance(answer, str) for answer in (name, email)):
            raise TypeError("name and email must be text")
        return cls(data.cursor.node_pointer, asked, expires_at_ms, name, email)

    def question(self) -> str:
        """The question this state waits on, as the user reads it."""
        if self.node == ASK_NAME:
            return "What is your name?"
        if self.node == ASK_EMAIL:
            return f"Thanks, {self.name}. What is your email address?"
        return f"Register {self.name} <{self.email}>? (yes/no)"


class Runner:
    """Drives the registration flow for every message, over one ``AsyncSessionStore``.

    Messages of one conversation and thread are handled one at a time (a
    lock per flow key), so two quick messages cannot both answer the same
    question; different conversations run concurrently and share the
    store's syncs. Two runner processes on one store are not serialised
    against each other: route a conversation to one runner.
    """

    def __init__(
        self,
        store: AsyncSessionStore,
        *,
        env: str = "dev",
        ttl: datetime.timedelta = DEFAULT_TTL,
        grace: datetime.timedelta = DEFAULT_GRACE,
        clock: Clock = system_clock,
    ) -> None:
        self.store = store
        # Checked once here, or every message would be refused as if its own fields were bad.
        self.env = EnvId.parse(env, field="env")
        self.ttl = ttl
        self.grace = grace
        self.clock = clock
        self._locks: dict[SessionKey, tuple[asyncio.Lock, int]] = {}

    async def handle(self, message: Message) -> Reply:
        """Answer ``message``: start its flow, resume it one step, or say it expired.

        Raises ``FlowConflictError`` when a wait of another flow holds the
        scope, and the store's errors (``InvalidInputError`` among them) as
        they come; the store is then as it was before the message.
        """
        ctx = message.tenant_ctx(self.env)
        scope = message.scope()
        async with self._flow_lock(message.session_key(self.env)):
            key = await self.store.find_wait_by_scope(ctx, message.user, scope)
            data = None if key is None else await self.store.get_session(key)
            if key is None or data is None:
                return await self._park(message, message.session_key(self.env), self._fresh(ASK_NAME))
            if data.flow_id != FLOW_ID:
                raise FlowConflictError(f"flow {data.flow_id} waits in this conversation")
            try:
                state = FlowState.from_data(data)
            except (ValueError, KeyError, TypeError):
                # A context this runner cannot read (hand-edited, another version's): begin again.
                return await self._park(message, key, self._fresh(ASK_NAME))
            if self.clock() >= state.expires_at_ms:
                await self.store.clear_wait(ctx, message.user, scope)
                text = (
                    f"Sorry, this registration expired: no answer came within {_duration(self.ttl)}. "
                    "Send any message to start again."
                )
                return Reply(text, EXPIRED, key)
            if message.reply_to is not None and message.reply_to != state.prompt:
                # A retried or late answer to an earlier question: it was taken already.
                return Reply(f"That was answered already. {state.question()}", state.node, key, state.prompt)
            return await self._step(message, key, state)

    async def _step(self, message: Message, key: SessionKey, state: FlowState) -> Reply:
        answer = message.text.strip()
        if state.node == ASK_NAME:
            if not answer:
                return Reply(f"Please tell me your name. {state.question()}", state.node, key, state.prompt)
            return await self._park(message, key, self._next(state, ASK_EMAIL, name=answer))
        if state.node == ASK_EMAIL:
            if _EMAIL.fullmatch(answer) is None:
                text = f"That does not look like an email address. {state.question()}"
                return Reply(text, state.node, key, state.prompt)
            return await self._park(message, key, self._next(state, CONFIRM, email=answer))
        if state.node == CONFIRM and answer.lower() in _YES:
            await self.store.clear_wait(message.tenant_ctx(self.env), message.user, message.scope())
            return Reply(f"Registered {state.name} <{state.email}>. Thank you!", DONE, key)
        if state.node == CONFIRM and answer.lower() in _NO:
            restart = attrs.evolve(self._next(state, ASK_NAME), name=None, email=None)
            return await self._park(message, key, restart, prefix="Let's start again. ")
        if state.node == CONFIRM:
            return Reply(f"Please answer yes or no. {state.question()}", state.node, key, state.prompt)
        # A cursor this runner never writes (an older version's node): begin again.
        return await self._park(message, key, self._next(state, ASK_NAME))

    def _fresh(self, node: str) -> FlowState:
        return FlowState(node, 1, self._deadline())

    def _next(self, state: FlowState, node: str, **answers: str) -> FlowState:
        return attrs.evolve(
            state, node=node, asked=state.asked + 1, expires_at_ms=self._deadline(), **answers
        )

    def _deadline(self) -> int:
        return self.clock() + self.ttl // datetime.timedelta(milliseconds=1)

    async def _park(self, message: Message, key: SessionKey, state: FlowState, *, prefix: str = "") -> Reply:
        """Pause the flow at ``state`` (durably, when the await returns), then say what it asks."""
        ctx = message.tenant_ctx(self.env)
        data = state.to_data(ctx)
        await self.store.register_wait(ctx, message.user, message.scope(), key, data, self.ttl + self.grace)
        return Reply(prefix + state.question(), state.node, key, state.prompt)

    @asynccontextmanager
    async def _flow_lock(self, key: SessionKey) -> AsyncIterator[None]:
        """Hold the lock of flow ``key``; the last holder drops it, so idle flows cost nothing."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def active_locks(self) -> int:
        """Messages being handled or queued behind another of their flow (0 when idle: an idle
        flow holds no lock)."""
        return sum(users for _lock, users in self._locks.values())


def _duration(span: datetime.timedelta) -> str:
    """``15 minutes``, ``1 minute``, ``90 seconds``: how a user reads a TTL."""
    seconds = int(span.total_seconds())
    if seconds % 60 == 0 and seconds >= 60:
        minutes = seconds // 60
        return f"{minutes} minute{'s' * (minutes != 1)}"
    return f"{seconds} second{'s' * (seconds != 1)}"
