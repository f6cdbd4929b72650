"""The greentic session data model: ``TenantCtx``, ``SessionCursor``, ``SessionData``.

Frozen attrs classes that mirror greentic-types. Construction validates every
field (ids by the rule in ``filestore.ids``, integers by their Rust width),
and so does decoding: ``from_json``/``from_dict``/``from_cbor`` go through the
same constructors. ``to_dict`` gives the JSON shape serde emits: optional
fields are omitted when absent, ``attributes`` when empty.

Decoding accepts ``null`` for an optional field (serde's ``default``) and
ignores unknown fields, as serde does by default.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final, Self

import attrs
import cbor2

from filestore import strictcbor
from filestore.errors import InvalidInputError
from filestore.ids import EnvId, FlowId, PackId, TeamId, TenantId, UserId

U32_MAX: Final = 2**32 - 1
I128_MIN: Final = -(2**127)
I128_MAX: Final = 2**127 - 1

JsonDict = dict[str, Any]


def _invalid(field: str, rule: str, detail: str) -> InvalidInputError:
    return InvalidInputError(f"{field}: {detail}", field=field, rule=rule)


# -- field converters -------------------------------------------------------
# attrs' mypy plugin understands only named functions as converters, hence one
# small function per field; each names its field in the error it raises.


def _env(value: str) -> EnvId:
    return EnvId.parse(value, field="env")


def _tenant(value: str) -> TenantId:
    return TenantId.parse(value, field="tenant")


def _tenant_id(value: str) -> TenantId:
    return TenantId.parse(value, field="tenant_id")


def _team(value: str | None) -> TeamId | None:
    return None if value is None else TeamId.parse(value, field="team")


def _team_id(value: str | None) -> TeamId | None:
    return None if value is None else TeamId.parse(value, field="team_id")


def _user(value: str | None) -> UserId | None:
    return None if value is None else UserId.parse(value, field="user")


def _user_id(value: str | None) -> UserId | None:
    return None if value is None else UserId.parse(value, field="user_id")


def _actor_id(value: str) -> UserId:
    return UserId.parse(value, field="actor_id")


def _flow_id(value: str) -> FlowId:
    return FlowId.parse(value, field="flow_id")


def _pack_id(value: str | None) -> PackId | None:
    return None if value is None else PackId.parse(value, field="pack_id")


class FrozenMap(Mapping[str, str]):
    """An immutable, hashable, picklable string map (``TenantCtx.attributes``)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return dict(self._items) == other if isinstance(other, Mapping) else NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, str]]]:
        return FrozenMap, (self._items,)


def _attributes(value: Mapping[str, str] | None) -> Mapping[str, str]:
    if value is None:
        return FrozenMap({})
    if not isinstance(value, Mapping):
        raise _invalid("attributes", "a map of strings", f"must be a map, not {type(value).__name__}")
    for name, item in value.items():
        if not isinstance(name, str) or not isinstance(item, str):
            raise _invalid("attributes", "a map of strings", "keys and values must be strings")
        _check_text(name, "attributes")
        _check_text(item, "attributes")
    return FrozenMap(value)


def _check_text(value: object, field: str) -> None:
    if not isinstance(value, str):
        raise _invalid(field, "a string", f"must be a string, not {type(value).__name__}")
    if not value.isascii():
        # A lone surrogate (say from a JSON "\ud800" escape) is a str no UTF-8
        # writer can encode: serde_json refuses it, so do we, before it is stored.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid(
                field, "valid Unicode text", "holds a lone surrogate, which is not valid text"
            ) from None


def _optional_str(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_text(value, attribute.name)


def _required_str(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _check_text(value, attribute.name)


def _integer(value: object, field: str, low: int, high: int) -> int:
    # bool is an int subclass; serde would refuse true/false for an integer.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(field, "an integer", f"must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise _invalid(field, f"between {low} and {high}", f"{value} is outside {low}..{high}")
    return value


def _u32(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _integer(value, attribute.name, 0, U32_MAX)


def _i128(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _integer(value, attribute.name, I128_MIN, I128_MAX)


def _instance_of(kind: type) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, kind):
            raise _invalid(
                attribute.name, kind.__name__, f"must be a {kind.__name__}, not {type(value).__name__}"
            )

    return check


def _optional_instance_of(kind: type) -> Any:
    check = _instance_of(kind)

    def optional(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            check(instance, attribute, value)

    return optional


# -- decoding helpers -------------------------------------------------------


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid(where or "document", "an object", f"must be an object, not {type(value).__name__}")
    return value


def _required(doc: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in doc or doc[name] is None:
        raise _invalid(_path(where, name), "required", "missing required field")
    return doc[name]


def _path(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _decoding(where: str, build: Any, *args: Any) -> Any:
    """Call a constructor, prefixing the field path of any error it raises."""
    try:
        return build(*args)
    except InvalidInputError as error:
        if not where:
            raise
        field = _path(where, error.field)
        raise InvalidInputError(f"{where}.{error}", field=field, rule=error.rule) from None


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # serde reports a duplicate field; json.loads would silently keep the last one.
    document = dict(pairs)
    if len(document) != len(pairs):
        names = [name for name, _ in pairs]
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"duplicate field {duplicate!r}")
    return document


def _load_json(text: str | bytes | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if isinstance(text, Mapping):
        return text
    if not isinstance(text, (str, bytes, bytearray)):
        raise _invalid(what, "JSON text", f"expected JSON text or a dict, not {type(text).__name__}")
    try:
        loaded = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except (ValueError, RecursionError) as error:
        raise _invalid(what, "valid JSON", f"not valid JSON: {error}") from None
    return _mapping(loaded, what)


def _load_cbor(blob: bytes, what: str) -> Mapping[str, Any]:
    try:
        loaded = strictcbor.loads(blob)
    except (cbor2.CBORDecodeError, RecursionError) as error:
        raise _invalid(what, "valid CBOR", f"not valid CBOR: {error}") from None
    return _mapping(loaded, what)


def _dump_json(doc: JsonDict) -> str:
    # serde_json's compact form, UTF-8 left as is.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


# -- the model --------------------------------------------------------------


@attrs.frozen
class InvocationDeadline:
    """greentic's deadline: milliseconds since the Unix epoch (an ``i128``)."""

    unix_millis: int = attrs.field(validator=_i128)

    def to_dict(self) -> JsonDict:
        return {"unix_millis": self.unix_millis}

    @classmethod
    def from_dict(cls, doc: object, *, where: str = "deadline") -> Self:
        mapping = _mapping(doc, where)
        return _decoding(where, cls, _required(mapping, "unix_millis", where))  # type: ignore[no-any-return]


@attrs.frozen
class Impersonation:
    """Who acts on behalf of the context's user, and why."""

    actor_id: UserId = attrs.field(converter=_actor_id)
    reason: str | None = attrs.field(default=None, validator=_optional_str)

    def to_dict(self) -> JsonDict:
        doc: JsonDict = {"actor_id": str(self.actor_id)}
        if self.reason is not None:
            doc["reason"] = self.reason
        return doc

    @classmethod
    def from_dict(cls, doc: object, *, where: str = "impersonation") -> Self:
        mapping = _mapping(doc, where)
        return _decoding(  # type: ignore[no-any-return]
            where, cls, _required(mapping, "actor_id", where), mapping.get("reason")
        )


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


@attrs.frozen
class TenantCtx:
    """greentic-types' tenant context: who a session belongs to, and call metadata.

    Build it with ``TenantCtx.new(env, tenant)`` and the ``with_*`` helpers,
    which keep the paired fields (``tenant``/``tenant_id``, ``team``/``team_id``,
    ``user``/``user_id``) in step, as the Rust helpers do.
    """

    env: EnvId = attrs.field(converter=_env)
    tenant: TenantId = attrs.field(converter=_tenant)
    tenant_id: TenantId = attrs.field(converter=_tenant_id)
    team: TeamId | None = attrs.field(default=None, converter=_team)
    team_id: TeamId | None = attrs.field(default=None, converter=_team_id)
    user: UserId | None = attrs.field(default=None, converter=_user)
    user_id: UserId | None = attrs.field(default=None, converter=_user_id)
    session_id: str | None = attrs.field(default=None, validator=_optional_str)
    flow_id: str | None = attrs.field(default=None, validator=_optional_str)
    node_id: str | None = attrs.field(default=None, validator=_optional_str)
    provider_id: str | None = attrs.field(default=None, validator=_optional_str)
    trace_id: str | None = attrs.field(default=None, validator=_optional_str)
    i18n_id: str | None = attrs.field(default=None, validator=_optional_str)
    correlation_id: str | None = attrs.field(default=None, validator=_optional_str)
    attributes: Mapping[str, str] = attrs.field(factory=dict, converter=_attributes)
    deadline: InvocationDeadline | None = attrs.field(
        default=None, validator=_optional_instance_of(InvocationDeadline)
    )
    attempt: int = attrs.field(default=0, validator=_u32)
    idempotency_key: str | None = attrs.field(default=None, validator=_optional_str)
    impersonation: Impersonation | None = attrs.field(
        default=None, validator=_optional_instance_of(Impersonation)
    )

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
        doc: JsonDict = {"env": str(self.env), "tenant": str(self.tenant), "tenant_id": str(self.tenant_id)}
        for name in ("team", "team_id", "user", "user_id"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = str(value)
        for name in _CTX_OPTIONAL_STRINGS:
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        if self.attributes:
            doc["attributes"] = dict(self.attributes)
        if self.deadline is not None:
            doc["deadline"] = self.deadline.to_dict()
        doc["attempt"] = self.attempt
        if self.idempotency_key is not None:
            doc["idempotency_key"] = self.idempotency_key
        if self.impersonation is not None:
            doc["impersonation"] = self.impersonation.to_dict()
        return doc

    @classmethod
    def from_dict(cls, doc: object, *, where: str = "") -> Self:
        """Decode serde's JSON object (already parsed), validating every field."""
        mapping = _mapping(doc, where or "tenant_ctx")
        deadline = mapping.get("deadline")
        impersonation = mapping.get("impersonation")
        kwargs: dict[str, Any] = {
            "env": _required(mapping, "env", where),
            "tenant": _required(mapping, "tenant", where),
            "tenant_id": _required(mapping, "tenant_id", where),
            "attempt": _required(mapping, "attempt", where),
            "attributes": mapping.get("attributes"),
            "deadline": None
            if deadline is None
            else InvocationDeadline.from_dict(deadline, where=_path(where, "deadline")),
            "impersonation": None
            if impersonation is None
            else Impersonation.from_dict(impersonation, where=_path(where, "impersonation")),
        }
        for name in ("team", "team_id", "user", "user_id", "idempotency_key", *_CTX_OPTIONAL_STRINGS):
            kwargs[name] = mapping.get(name)
        return _decoding(where, lambda: cls(**kwargs))  # type: ignore[no-any-return]

    def to_json(self) -> str:
        return _dump_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Self:
        """Parse serde's JSON (text, bytes or an already-parsed dict)."""
        return cls.from_dict(_load_json(text, "tenant_ctx"))

    def to_cbor(self) -> bytes:
        return cbor2.dumps(self.to_dict())

    @classmethod
    def from_cbor(cls, blob: bytes) -> Self:
        return cls.from_dict(_load_cbor(blob, "tenant_ctx"))


@attrs.frozen
class SessionCursor:
    """Where a paused flow stands: the node, why it waits, and its outbox marker."""

    node_pointer: str = attrs.field(validator=_required_str)
    wait_reason: str | None = attrs.field(default=None, validator=_optional_str)
    outbox_marker: str | None = attrs.field(default=None, validator=_optional_str)

    def to_dict(self) -> JsonDict:
        doc: JsonDict = {"node_pointer": self.node_pointer}
        if self.wait_reason is not None:
            doc["wait_reason"] = self.wait_reason
        if self.outbox_marker is not None:
            doc["outbox_marker"] = self.outbox_marker
        return doc

    @classmethod
    def from_dict(cls, doc: object, *, where: str = "") -> Self:
        mapping = _mapping(doc, where or "cursor")
        return _decoding(  # type: ignore[no-any-return]
            where,
            cls,
            _required(mapping, "node_pointer", where),
            mapping.get("wait_reason"),
            mapping.get("outbox_marker"),
        )

    def to_json(self) -> str:
        return _dump_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Self:
        return cls.from_dict(_load_json(text, "cursor"))

    def to_cbor(self) -> bytes:
        return cbor2.dumps(self.to_dict())

    @classmethod
    def from_cbor(cls, blob: bytes) -> Self:
        return cls.from_dict(_load_cbor(blob, "cursor"))


@attrs.frozen
class SessionData:
    """A paused flow: whose it is, which flow, where it stands, and its serialised state.

    ``context_json`` is stored verbatim and never parsed.
    """

    tenant_ctx: TenantCtx = attrs.field(validator=_instance_of(TenantCtx))
    flow_id: FlowId = attrs.field(converter=_flow_id)
    cursor: SessionCursor = attrs.field(validator=_instance_of(SessionCursor))
    context_json: str = attrs.field(validator=_required_str)
    pack_id: PackId | None = attrs.field(default=None, converter=_pack_id)

    def to_dict(self) -> JsonDict:
        """The JSON object serde emits (``pack_id`` omitted when absent)."""
        doc: JsonDict = {"tenant_ctx": self.tenant_ctx.to_dict(), "flow_id": str(self.flow_id)}
        if self.pack_id is not None:
            doc["pack_id"] = str(self.pack_id)
        doc["cursor"] = self.cursor.to_dict()
        doc["context_json"] = self.context_json
        return doc

    @classmethod
    def from_dict(cls, doc: object) -> Self:
        """Decode serde's JSON object (already parsed), validating every field."""
        mapping = _mapping(doc, "session")
        tenant_ctx = TenantCtx.from_dict(_required(mapping, "tenant_ctx", ""), where="tenant_ctx")
        cursor = SessionCursor.from_dict(_required(mapping, "cursor", ""), where="cursor")
        return cls(
            tenant_ctx=tenant_ctx,
            flow_id=_required(mapping, "flow_id", ""),
            cursor=cursor,
            context_json=_required(mapping, "context_json", ""),
            pack_id=mapping.get("pack_id"),
        )

    def to_json(self) -> str:
        return _dump_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Self:
        """Parse serde's JSON (text, bytes or an already-parsed dict)."""
        return cls.from_dict(_load_json(text, "session"))

    def to_cbor(self) -> bytes:
        return cbor2.dumps(self.to_dict())

    @classmethod
    def from_cbor(cls, blob: bytes) -> Self:
        return cls.from_dict(_load_cbor(blob, "session"))
