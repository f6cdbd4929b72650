"""The greentic session data model: ``TenantCtx``, ``SessionCursor``, ``SessionData``, ``ReplyScope``.

Frozen attrs classes that mirror greentic-types. Construction validates every
field (ids by the rule in ``filestore.ids``, integers by their Rust width),
and so does decoding: ``from_json``/``from_dict``/``from_cbor`` go through the
same constructors. ``to_dict`` gives the JSON shape serde emits: optional
fields are omitted when absent, ``attributes`` when empty.

Decoding accepts ``null`` for an optional field (serde's ``default``),
ignores unknown fields, and takes a struct written as an array of its fields
in declaration order, as serde does by default. ``attributes`` is a map or
absent, never ``null`` (serde defaults only a missing field), and its keys
are emitted sorted, as serde's ``BTreeMap``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Self

import attrs
import cbor2

from filestore import serdejson, strictcbor
from filestore.fields import (
    DocumentCodec,
    JsonDict,
    decoding,
    field_path,
    i128,
    instance_of,
    invalid,
    load_cbor,
    load_json,
    optional_instance_of,
    optional_text,
    required_field,
    required_text,
    struct_fields,
    to_actor_id,
    to_attributes,
    to_env,
    to_flow_id,
    to_pack_id,
    to_team,
    to_team_id,
    to_tenant,
    to_tenant_id,
    to_user,
    to_user_id,
    u32,
)
from filestore.ids import EnvId, FlowId, PackId, TeamId, TenantId, UserId

# -- the model --------------------------------------------------------------


@attrs.frozen
class InvocationDeadline(DocumentCodec):
    """greentic's deadline: milliseconds since the Unix epoch (an ``i128``)."""

    unix_millis: int = attrs.field(validator=i128)

    document: ClassVar[str] = "deadline"

    def to_dict(self) -> JsonDict:
        return {"unix_millis": self.unix_millis}

    @classmethod
    def from_dict(cls, doc: object, *, where: str = "deadline") -> Self:
        mapping = struct_fields(doc, where, ("unix_millis",))
        millis = required_field(mapping, "unix_millis", where)
        # serde_json parses a 128-bit integer from its text, where -0 is 0.
        return decoding(where, cls, 0 if isinstance(millis, serdejson.NegativeZero) else millis)


@attrs.frozen
class Impersonation(DocumentCodec):
    """Who acts on behalf of the context's user, and why."""

    actor_id: UserId = attrs.field(converter=to_actor_id)
    reason: str | None = attrs.field(default=None, validator=optional_text)

    document: ClassVar[str] = "impersonation"

    def to_dict(self) -> JsonDict:
        doc = self._encodable()
        doc["actor_id"] = str(self.actor_id)
        return doc

    def _encodable(self) -> JsonDict:
        doc: JsonDict = {"actor_id": self.actor_id}
        if self.reason is not None:
            doc["reason"] = self.reason
        return doc

    @classmethod
    def from_dict(cls, doc: object, *, where: str = "impersonation") -> Self:
        mapping = struct_fields(doc, where, ("actor_id", "reason"), ("reason",))
        return decoding(where, cls, required_field(mapping, "actor_id", where), mapping.get("reason"))


# TenantCtx's optional plain-string fields, in serde's field order.
_CTX_OPTIONAL_STRINGS: Final = (
    "session_id",
    "flow_id",
    "node_id",
    "provider_id",
    "trace_id",
    "i18n_id",
    "correlation_id",
)
_NO_OPTIONAL_STRINGS: Final = (None,) * len(_CTX_OPTIONAL_STRINGS)
_CTX_ID_FIELDS: Final = ("env", "tenant", "tenant_id", "team", "team_id", "user", "user_id")
# Every TenantCtx field in greentic-types' declaration order (a struct written as an array).
_CTX_FIELDS: Final = (
    "env",
    "tenant",
    "tenant_id",
    "team",
    "team_id",
    "user",
    "user_id",
    *_CTX_OPTIONAL_STRINGS,
    "attributes",
    "deadline",
    "attempt",
    "idempotency_key",
    "impersonation",
)


@attrs.frozen
class TenantCtx(DocumentCodec):
    """greentic-types' tenant context: who a session belongs to, and call metadata.

    Build it with ``TenantCtx.new(env, tenant)`` and the ``with_*`` helpers,
    which keep the paired fields (``tenant``/``tenant_id``, ``team``/``team_id``,
    ``user``/``user_id``) in step, as the Rust helpers do.
    """

    env: EnvId = attrs.field(converter=to_env)
    tenant: TenantId = attrs.field(converter=to_tenant)
    tenant_id: TenantId = attrs.field(converter=to_tenant_id)
    team: TeamId | None = attrs.field(default=None, converter=to_team)
    team_id: TeamId | None = attrs.field(default=None, converter=to_team_id)
    user: UserId | None = attrs.field(default=None, converter=to_user)
    user_id: UserId | None = attrs.field(default=None, converter=to_user_id)
    session_id: str | None = attrs.field(default=None, validator=optional_text)
    flow_id: str | None = attrs.field(default=None, validator=optional_text)
    node_id: str | None = attrs.field(default=None, validator=optional_text)
    provider_id: str | None = attrs.field(default=None, validator=optional_text)
    trace_id: str | None = attrs.field(default=None, validator=optional_text)
    i18n_id: str | None = attrs.field(default=None, validator=optional_text)
    correlation_id: str | None = attrs.field(default=None, validator=optional_text)
    attributes: Mapping[str, str] = attrs.field(factory=dict, converter=to_attributes)
    deadline: InvocationDeadline | None = attrs.field(
        default=None, validator=optional_instance_of(InvocationDeadline)
    )
    attempt: int = attrs.field(default=0, validator=u32)
    idempotency_key: str | None = attrs.field(default=None, validator=optional_text)
    impersonation: Impersonation | None = attrs.field(
        default=None, validator=optional_instance_of(Impersonation)
    )

    document: ClassVar[str] = "tenant_ctx"

    @classmethod
    def new(cls, env: str, tenant: str) -> Self:
        """``TenantCtx::new``: ``tenant`` and ``tenant_id`` set, attempt 0, nothing else."""
        return cls(env=env, tenant=tenant, tenant_id=tenant)

    def with_team(self, team: str | None) -> Self:
        return attrs.evolve(self, team=team, team_id=team)

    def with_user(self, user: str | None) -> Self:
        return attrs.evolve(self, user=user, user_id=user)

    def with_session(self, session_id: str | None) -> Self:
        return attrs.evolve(self, session_id=session_id)

    def with_flow(self, flow_id: str | None) -> Self:
        return attrs.evolve(self, flow_id=flow_id)

    def with_node(self, node_id: str | None) -> Self:
        return attrs.evolve(self, node_id=node_id)

    def with_provider(self, provider_id: str | None) -> Self:
        return attrs.evolve(self, provider_id=provider_id)

    def with_attempt(self, attempt: int) -> Self:
        return attrs.evolve(self, attempt=attempt)

    def with_deadline(self, deadline: InvocationDeadline | None) -> Self:
        return attrs.evolve(self, deadline=deadline)

    def with_impersonation(self, impersonation: Impersonation | None) -> Self:
        return attrs.evolve(self, impersonation=impersonation)

    @property
    def effective_team(self) -> TeamId | None:
        """``team_id``, or else ``team``: the team the store's lookups use."""
        return self.team_id if self.team_id is not None else self.team

    @property
    def effective_user(self) -> UserId | None:
        """``user_id``, or else ``user``: the user the store's lookups use."""
        return self.user_id if self.user_id is not None else self.user

    def to_dict(self) -> JsonDict:
        """The JSON object serde emits for this context."""
        doc = self._encodable()
        for name in _CTX_ID_FIELDS:
            if name in doc:
                doc[name] = str(doc[name])
        if self.impersonation is not None:
            doc["impersonation"] = self.impersonation.to_dict()
        return doc

    def _encodable(self) -> JsonDict:
        # Field by field, in declaration order: every write of a session builds this.
        doc: JsonDict = {"env": self.env, "tenant": self.tenant, "tenant_id": self.tenant_id}
        if self.team is not None:
            doc["team"] = self.team
        if self.team_id is not None:
            doc["team_id"] = self.team_id
        if self.user is not None:
            doc["user"] = self.user
        if self.user_id is not None:
            doc["user_id"] = self.user_id
        texts = (
            self.session_id,
            self.flow_id,
            self.node_id,
            self.provider_id,
            self.trace_id,
            self.i18n_id,
            self.correlation_id,
        )
        if texts != _NO_OPTIONAL_STRINGS:  # most contexts set none of them
            doc.update(
                (name, text)
                for name, text in zip(_CTX_OPTIONAL_STRINGS, texts, strict=True)
                if text is not None
            )
        if self.attributes:
            doc["attributes"] = dict(self.attributes)
        if self.deadline is not None:
            doc["deadline"] = self.deadline.to_dict()
        doc["attempt"] = self.attempt
        if self.idempotency_key is not None:
            doc["idempotency_key"] = self.idempotency_key
        if self.impersonation is not None:
            doc["impersonation"] = self.impersonation._encodable()
        return doc

    @classmethod
    def from_dict(cls, doc: object, *, where: str = "") -> Self:
        """Decode serde's JSON object (already parsed), validating every field."""
        mapping = struct_fields(doc, where or "tenant_ctx", _CTX_FIELDS, ("attributes",))
        if "attributes" in mapping and mapping["attributes"] is None:
            # Only a missing map defaults to empty; serde refuses null for a BTreeMap.
            raise invalid(field_path(where, "attributes"), "a map of strings", "must be a map, not null")
        deadline = mapping.get("deadline")
        impersonation = mapping.get("impersonation")
        kwargs: dict[str, Any] = {
            "env": required_field(mapping, "env", where),
            "tenant": required_field(mapping, "tenant", where),
            "tenant_id": required_field(mapping, "tenant_id", where),
            "attempt": required_field(mapping, "attempt", where),
            "attributes": mapping.get("attributes"),
            "deadline": None
            if deadline is None
            else InvocationDeadline.from_dict(deadline, where=field_path(where, "deadline")),
            "impersonation": None
            if impersonation is None
            else Impersonation.from_dict(impersonation, where=field_path(where, "impersonation")),
        }
        for name in ("team", "team_id", "user", "user_id", "idempotency_key", *_CTX_OPTIONAL_STRINGS):
            kwargs[name] = mapping.get(name)
        return decoding(where, lambda: cls(**kwargs))


@attrs.frozen
class SessionCursor(DocumentCodec):
    """Where a paused flow stands: the node, why it waits, and its outbox marker."""

    node_pointer: str = attrs.field(validator=required_text)
    wait_reason: str | None = attrs.field(default=None, validator=optional_text)
    outbox_marker: str | None = attrs.field(default=None, validator=optional_text)

    document: ClassVar[str] = "cursor"

    def to_dict(self) -> JsonDict:
        doc: JsonDict = {"node_pointer": self.node_pointer}
        if self.wait_reason is not None:
            doc["wait_reason"] = self.wait_reason
        if self.outbox_marker is not None:
            doc["outbox_marker"] = self.outbox_marker
        return doc

    @classmethod
    def from_dict(cls, doc: object, *, where: str = "") -> Self:
        mapping = struct_fields(
            doc,
            where or "cursor",
            ("node_pointer", "wait_reason", "outbox_marker"),
            ("wait_reason", "outbox_marker"),
        )
        return decoding(
            where,
            cls,
            required_field(mapping, "node_pointer", where),
            mapping.get("wait_reason"),
            mapping.get("outbox_marker"),
        )


@attrs.frozen
class SessionData(DocumentCodec):
    """A paused flow: whose it is, which flow, where it stands, and its serialised state.

    ``context_json`` is stored verbatim and never parsed.
    """

    tenant_ctx: TenantCtx = attrs.field(validator=instance_of(TenantCtx))
    flow_id: FlowId = attrs.field(converter=to_flow_id)
    cursor: SessionCursor = attrs.field(validator=instance_of(SessionCursor))
    context_json: str = attrs.field(validator=required_text)
    pack_id: PackId | None = attrs.field(default=None, converter=to_pack_id)

    document: ClassVar[str] = "session"

    def to_dict(self) -> JsonDict:
        """The JSON object serde emits (``pack_id`` omitted when absent)."""
        doc: JsonDict = {"tenant_ctx": self.tenant_ctx.to_dict(), "flow_id": str(self.flow_id)}
        if self.pack_id is not None:
            doc["pack_id"] = str(self.pack_id)
        doc["cursor"] = self.cursor.to_dict()
        doc["context_json"] = self.context_json
        return doc

    def _encodable(self) -> JsonDict:
        doc: JsonDict = {"tenant_ctx": self.tenant_ctx._encodable(), "flow_id": self.flow_id}
        if self.pack_id is not None:
            doc["pack_id"] = self.pack_id
        doc["cursor"] = self.cursor.to_dict()
        doc["context_json"] = self.context_json
        return doc

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Self:
        """Parse serde's JSON (text, bytes or an already-parsed dict); ``InvalidInputError`` if invalid."""
        doc = load_json(text, cls.document)
        if cls is SessionData and doc is not text:
            fast = fast_session(doc)
            if fast is not None:
                return fast  # type: ignore[return-value] # cls is SessionData (typing.cast costs a call)
        return cls.from_dict(doc)

    @classmethod
    def from_cbor(cls, blob: bytes) -> Self:
        """Parse the CBOR ``to_cbor`` writes; ``InvalidInputError`` if it is not a valid document."""
        if cls is SessionData and type(blob) is bytes:
            # strictcbor directly (load_cbor's checks and messages are for the failures below).
            try:
                fast = fast_session(strictcbor.loads(blob))
            except (cbor2.CBORDecodeError, RecursionError):
                fast = None
            if fast is not None:
                return fast  # type: ignore[return-value] # cls is SessionData (typing.cast costs a call)
        return cls.from_dict(load_cbor(blob, cls.document))

    @classmethod
    def from_dict(cls, doc: object) -> Self:
        """Decode serde's JSON object (already parsed), validating every field."""
        mapping = struct_fields(
            doc, "session", ("tenant_ctx", "flow_id", "pack_id", "cursor", "context_json"), ("pack_id",)
        )
        tenant_ctx = TenantCtx.from_dict(required_field(mapping, "tenant_ctx", ""), where="tenant_ctx")
        cursor = SessionCursor.from_dict(required_field(mapping, "cursor", ""), where="cursor")
        return cls(
            tenant_ctx=tenant_ctx,
            flow_id=required_field(mapping, "flow_id", ""),
            cursor=cursor,
            context_json=required_field(mapping, "context_json", ""),
            pack_id=mapping.get("pack_id"),
        )


@attrs.frozen
class ReplyScope(DocumentCodec):
    """Where a reply is anchored (greentic-types' ``ReplyScope``; ``WaitScope`` is its alias).

    A runner parks a paused flow as a wait under a scope and routes the
    user's next message by it. Every field is free text, as in Rust (plain
    ``String``s, not ids): the empty string is a value, kept apart from an
    absent field in equality and JSON (``"thread":""`` against no
    ``thread``), though ``scope_hash`` treats the two alike, as Rust does.
    """

    conversation: str = attrs.field(validator=required_text)
    thread: str | None = attrs.field(default=None, validator=optional_text)
    reply_to: str | None = attrs.field(default=None, validator=optional_text)
    correlation: str | None = attrs.field(default=None, validator=optional_text)

    document: ClassVar[str] = "reply_scope"

    def scope_hash(self) -> str:
        """Lower-case hex SHA-256 of the four fields joined by ``"\\n"``, an absent one as ``""``.

        The stores key a wait by this hash, so it must equal greentic-types'
        byte for byte; that includes its ambiguity (a ``"\\n"`` inside a field
        can make two scopes hash alike), which filestore keeps for parity.
        """
        parts = (self.conversation, self.thread or "", self.reply_to or "", self.correlation or "")
        # The validators refused lone surrogates, so every field encodes as UTF-8.
        return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()

    def to_dict(self) -> JsonDict:
        """The JSON object serde emits: absent optional fields omitted, empty strings kept."""
        doc: JsonDict = {"conversation": self.conversation}
        for name in ("thread", "reply_to", "correlation"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        return doc

    @classmethod
    def from_dict(cls, doc: object, *, where: str = "") -> Self:
        """Decode serde's JSON object (already parsed), validating every field."""
        mapping = struct_fields(
            doc,
            where or "reply_scope",
            ("conversation", "thread", "reply_to", "correlation"),
            ("thread", "reply_to", "correlation"),
        )
        return decoding(
            where,
            cls,
            required_field(mapping, "conversation", where),
            mapping.get("thread"),
            mapping.get("reply_to"),
            mapping.get("correlation"),
        )


WaitScope = ReplyScope
"""greentic-types' legacy name for ``ReplyScope``: the same class."""


# Last, because it builds the classes above (a cycle Python resolves only this way round):
# the one-pass decoding behind ``SessionData.from_cbor`` / ``from_json``.
from filestore.fastdecode import fast_session  # noqa: E402
