"""What the runner receives and answers: chat-like messages, as JSON over HTTP.

A message is ``{"tenant", "team"?, "user", "conversation", "thread"?,
"reply_to"?, "text"}``. ``tenant``, ``team`` and ``user`` are greentic ids
(checked as the store checks them); the rest is free text. A field the
runner does not know is refused rather than ignored, so a typo in a client
(``"thred"``) cannot route a reply to the wrong flow.
"""

from __future__ import annotations

import json
from typing import Final

import attrs

from filestore import (
    InvalidInputError,
    ReplyScope,
    SessionKey,
    TeamId,
    TenantCtx,
    TenantId,
    UserId,
    webhook_to_session_key,
)

REQUIRED: Final = ("tenant", "user", "conversation", "text")
OPTIONAL: Final = ("team", "thread", "reply_to")
# The webhook "source" every key of this runner is made under (greentic's mapping helpers).
SOURCE: Final = "filestore-runner"


@attrs.frozen
class Message:
    """One incoming chat message, its ids checked."""

    tenant: TenantId
    user: UserId
    conversation: str
    text: str
    team: TeamId | None = None
    thread: str | None = None
    reply_to: str | None = None

    @classmethod
    def from_dict(cls, doc: object) -> Message:
        """A message from decoded JSON; ``InvalidInputError`` naming the field at fault."""
        if not isinstance(doc, dict):
            raise InvalidInputError(
                f"a message is a JSON object, not {type(doc).__name__}", field="message", rule="an object"
            )
        unknown = sorted(set(doc) - {*REQUIRED, *OPTIONAL})
        if unknown:
            raise InvalidInputError(
                f"unknown field {unknown[0]!r} (a message has {', '.join(REQUIRED + OPTIONAL)})",
                field=str(unknown[0]),
                rule="a known field",
            )
        for name in REQUIRED:
            if name not in doc:
                raise InvalidInputError(f"{name} is missing", field=name, rule="required")
        text = {name: _text(doc, name) for name in ("conversation", "text", "thread", "reply_to")}
        team = doc.get("team")
        return cls(
            tenant=TenantId.parse(doc["tenant"], field="tenant"),
            user=UserId.parse(doc["user"], field="user"),
            conversation=_required(text["conversation"], "conversation"),
            text=_required(text["text"], "text"),
            team=None if team is None else TeamId.parse(team, field="team"),
            # An empty thread is no thread: ReplyScope hashes the two alike, so the key must too.
            thread=text["thread"] or None,
            reply_to=text["reply_to"] or None,
        )

    @classmethod
    def from_json(cls, body: str | bytes) -> Message:
        """A message from a request body; ``InvalidInputError`` if it is not JSON or not a message."""
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidInputError(f"not JSON: {error}", field="message", rule="JSON") from None
        return cls.from_dict(doc)

    def tenant_ctx(self, env: str) -> TenantCtx:
        """The greentic context the message's flow runs in: env, tenant, its team and user."""
        return TenantCtx.new(env, self.tenant).with_team(self.team).with_user(self.user)

    def scope(self) -> ReplyScope:
        """Where the flow waits: the conversation and thread (see ``docs/runner.md``).

        ``reply_to`` is left out on purpose: chat users answer without
        quoting, so a wait keyed by the quoted message would be missed.
        """
        return ReplyScope(conversation=self.conversation, thread=self.thread)

    def session_key(self, env: str) -> SessionKey:
        """The flow's deterministic key: ``webhook_to_session_key`` of who and where.

        The subject joins env, tenant, team and user with ``:`` (no id may
        hold one, so the join is unambiguous); the conversation and thread,
        free text, go in as a JSON array for the same reason. A retried first
        message so maps to the same key, and a restart needs no lookup table.
        """
        subject = ":".join((env, self.tenant, self.team or "", self.user))
        return webhook_to_session_key(SOURCE, subject, json.dumps([self.conversation, self.thread]))


def _text(doc: dict[object, object], name: str) -> str | None:
    value = doc.get(name)
    if value is None or isinstance(value, str):
        return value
    raise InvalidInputError(f"{name} must be text, not {type(value).__name__}", field=name, rule="a string")


def _required(value: str | None, name: str) -> str:
    if not value:
        raise InvalidInputError(f"{name} must not be empty", field=name, rule="not empty")
    return value
