"""The validated identifier types of greentic-types, and the opaque session key.

An id is a ``str`` subclass, so it compares, hashes and serialises as the
plain string it is; constructing one validates it:

- not empty;
- only ASCII letters, digits, ``.``, ``_`` and ``-`` (the Rust rule);
- at most ``MAX_ID_LENGTH`` characters (ours: hostile input must not bloat
  the index).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Final, NamedTuple, TypeVar

from filestore import serdejson
from filestore.errors import InvalidInputError

MAX_ID_LENGTH: Final = 256
MAX_KEY_LENGTH: Final = 256

_ID_CHARS: Final = r"[A-Za-z0-9._-]"
_ID_PATTERN: Final = re.compile(_ID_CHARS + "+")
ID_RULE: Final = "only ASCII letters, digits, '.', '_' and '-'"
# The same rule over many ids joined by newlines (which no id may contain):
# one regex pass instead of one ``parse`` call per id.
_JOINED_IDS: Final = re.compile(rf"{_ID_CHARS}{{1,{MAX_ID_LENGTH}}}(?:\n{_ID_CHARS}{{1,{MAX_ID_LENGTH}}})*")
_JOINED_OPTIONAL_IDS: Final = re.compile(
    rf"{_ID_CHARS}{{0,{MAX_ID_LENGTH}}}(?:\n{_ID_CHARS}{{0,{MAX_ID_LENGTH}}})*"
)

_IdT = TypeVar("_IdT", bound="_ValidatedId")

# Ids repeat across sessions (env, tenant, team, user), and every read decodes
# them again: each id type remembers the ones already validated (one dict per
# type, so a lookup needs no (type, value) tuple), and decoding hands out the
# one remembered object (interned). Bounded, so hostile input cannot grow it
# without limit.
_KNOWN_LIMIT: Final = 65_536


class _ValidatedId(str):
    """Base of the validated ids; subclasses differ only in name."""

    __slots__ = ()

    _known: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._known = {}

    def __new__(cls: type[_IdT], value: str) -> _IdT:
        return cls.parse(value, field=cls.__name__)

    @classmethod
    def parse(cls: type[_IdT], value: object, *, field: str) -> _IdT:
        """Validate ``value`` as this id type; errors name ``field`` and the rule."""
        if type(value) is str:
            known = cls._known.get(value)
            if known is not None:
                return known  # type: ignore[no-any-return]
        elif isinstance(value, cls):
            return value
        # "tenant_id: TenantId ..." names both; constructed directly, the type is the field.
        type_name = cls.__name__
        where = f"{field}: {type_name}" if field != type_name else type_name
        if not isinstance(value, str):
            raise InvalidInputError(
                f"{where} must be a string, not {type(value).__name__}",
                field=field,
                rule="must be a string",
            )
        if not value:
            raise InvalidInputError(f"{where} must not be empty", field=field, rule="not empty")
        if len(value) > MAX_ID_LENGTH:
            raise InvalidInputError(
                f"{where} is {len(value)} characters, more than {MAX_ID_LENGTH}",
                field=field,
                rule=f"at most {MAX_ID_LENGTH} characters",
            )
        if _ID_PATTERN.fullmatch(value) is None:
            raise InvalidInputError(
                f"{where} {value!r} may contain {ID_RULE}",
                field=field,
                rule=ID_RULE,
            )
        validated = str.__new__(cls, value)
        known_ids = cls._known
        if len(known_ids) >= _KNOWN_LIMIT:
            known_ids.clear()
        known_ids[value] = validated
        return validated

    @classmethod
    def parse_joined(
        cls: type[_IdT], joined: str, count: int, *, optional: bool, field: str, typed: bool = True
    ) -> list[_IdT | None]:
        """``count`` ids joined by newlines (``None`` written as an empty string when
        ``optional``), validated by the same rule as ``parse`` in one pass.

        For bulk loads (the index snapshot): ``ValueError`` naming ``field`` if
        any id breaks the rule or the count is wrong. Unless ``typed``, the ids
        are handed out as the plain strings (equal, hashing alike): an index of a
        million users keeps 48 bytes less per user than in the id type.
        """
        if count == 0:
            if joined:
                raise ValueError(f"{field}: ids where none were expected")
            return []
        pattern = _JOINED_OPTIONAL_IDS if optional else _JOINED_IDS
        if pattern.fullmatch(joined) is None:
            raise ValueError(f"{field}: an id is empty, too long, or may contain {ID_RULE}")
        parts = joined.split("\n")
        if len(parts) != count:
            raise ValueError(f"{field}: {len(parts)} ids where {count} were expected")
        if not typed:
            return [part or None for part in parts]  # type: ignore[misc]
        new = str.__new__
        distinct = set(parts)
        if len(distinct) > len(parts) // 2:
            return [new(cls, part) if part else None for part in parts]
        # Few distinct values (env, tenant, team): few objects.
        shared = {part: new(cls, part) if part else None for part in distinct}
        return [shared[part] for part in parts]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__repr__(self)})"


def known_ids(kind: type[_IdT]) -> dict[str, _IdT]:
    """The ids of type ``kind`` validated so far, by their text: a hit is a valid id, interned.

    The same dict for the life of the process (emptied, never replaced, when
    full), so a decoder may hold it. Only ``parse`` adds to it.
    """
    return kind._known


class EnvId(_ValidatedId):
    """An environment id (``dev``, ``prod``...)."""

    __slots__ = ()


class TenantId(_ValidatedId):
    """A tenant id."""

    __slots__ = ()


class TeamId(_ValidatedId):
    """A team id, within a tenant."""

    __slots__ = ()


class UserId(_ValidatedId):
    """A user id, within a tenant (and team)."""

    __slots__ = ()


class FlowId(_ValidatedId):
    """A flow id."""

    __slots__ = ()


class PackId(_ValidatedId):
    """A pack id."""

    __slots__ = ()


class SessionKey(str):
    """An opaque session key, as greentic-session's (which does not validate it).

    Keys the stores make are uuid4 strings. The stores reject a key given to
    ``get``/``update``/``remove`` that is empty or longer than
    ``MAX_KEY_LENGTH``: see ``check_key``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"SessionKey({str.__repr__(self)})"

    def to_json(self) -> str:
        """serde's JSON for the key: a plain string (the Rust type is ``serde(transparent)``)."""
        return serdejson.dumps(str(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> SessionKey:
        """Parse a key written by serde; ``InvalidInputError`` if it is no string or breaks ``check_key``."""
        try:
            value = serdejson.loads(text)
        except (ValueError, RecursionError, TypeError) as error:
            raise InvalidInputError(f"key: not valid JSON: {error}", field="key", rule="valid JSON") from None
        return check_key(value)


def check_key(key: object) -> SessionKey:
    """Return ``key`` as a ``SessionKey``, or raise ``InvalidInputError``."""
    if not isinstance(key, str):
        raise InvalidInputError(
            f"key: a session key must be a string, not {type(key).__name__}",
            field="key",
            rule="must be a string",
        )
    if not key:
        raise InvalidInputError("key: a session key must not be empty", field="key", rule="not empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInputError(
            f"key: a session key is at most {MAX_KEY_LENGTH} characters, this one {len(key)}",
            field="key",
            rule=f"at most {MAX_KEY_LENGTH} characters",
        )
    if not key.isascii():
        # A lone surrogate is a str no UTF-8 writer can encode: Redis's client
        # would fail on it mid-call, and no store could have written it.
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                "key: a session key holds a lone surrogate, which is not valid text",
                field="key",
                rule="valid Unicode text",
            ) from None
    return key if isinstance(key, SessionKey) else SessionKey(key)


class SessionScope(NamedTuple):
    """Who owns a session: ``(env, tenant_id, team, user)``.

    ``team`` is the context's ``team_id`` or else ``team``; ``user`` likewise.
    A scope with a user is the session's user lookup key.
    """

    env: EnvId
    tenant_id: TenantId
    team: TeamId | None
    user: UserId | None

    @classmethod
    def parse(cls, value: object, *, field: str = "scope") -> SessionScope:
        """A stored ``[env, tenant_id, team, user]`` list, validated; ``InvalidInputError`` if not."""
        if not isinstance(value, list) or len(value) != len(cls._fields):
            raise InvalidInputError(f"{field} is not a list of four ids", field=field, rule="scope")
        env, tenant, team, user = value
        return cls(
            EnvId.parse(env, field=f"{field}.env"),
            TenantId.parse(tenant, field=f"{field}.tenant_id"),
            None if team is None else TeamId.parse(team, field=f"{field}.team"),
            None if user is None else UserId.parse(user, field=f"{field}.user"),
        )
