"""Deterministic session keys, as greentic-session's ``mapping`` module and
greentic-types' ``canonical_session_key`` make them.

A runner that derives the key from the incoming message (rather than storing
a random one) finds the same session again without a lookup.
"""

from __future__ import annotations

import hashlib
from typing import Final

from filestore.errors import InvalidInputError
from filestore.ids import SessionKey, check_key

# greentic-types' defaults for a canonical key's missing anchor and user.
DEFAULT_CANONICAL_ANCHOR: Final = "conversation"
DEFAULT_CANONICAL_USER: Final = "user"


def _sha256_key(text: str) -> SessionKey:
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            "a part of the key holds a lone surrogate, which is not valid text",
            field="key",
            rule="valid Unicode text",
        ) from None
    return SessionKey(hashlib.sha256(encoded).hexdigest())


def _part(value: object, field: str, *, numbers: bool = False) -> str | int:
    """``value`` if it is a ``str`` (or, with ``numbers``, an ``int`` that is not a bool).

    Anything else would be formatted into the key silently (``None`` as
    ``"None"``): ``InvalidInputError`` instead.
    """
    if isinstance(value, str) or (numbers and isinstance(value, int) and not isinstance(value, bool)):
        return value
    kinds = "a str or an int" if numbers else "a str"
    raise InvalidInputError(f"{field} must be {kinds}, not {type(value).__name__}", field=field, rule=kinds)


def telegram_update_to_session_key(bot_id: str, chat_id: str | int, user_id: str | int) -> SessionKey:
    """Hex SHA-256 of ``"tg:{bot_id}:{chat_id}:{user_id}"``; ``InvalidInputError`` for other types."""
    bot = _part(bot_id, "bot_id")
    chat = _part(chat_id, "chat_id", numbers=True)
    user = _part(user_id, "user_id", numbers=True)
    return _sha256_key(f"tg:{bot}:{chat}:{user}")


def webhook_to_session_key(source: str, subject: str, id_hint: str) -> SessionKey:
    """Hex SHA-256 of ``"wh:{source}:{subject}:{id_hint}"``; ``InvalidInputError`` for other types."""
    parts = (_part(source, "source"), _part(subject, "subject"), _part(id_hint, "id_hint"))
    return _sha256_key("wh:{}:{}:{}".format(*parts))


def canonical_session_key(
    tenant: str, provider: str, anchor: str | None = None, user: str | None = None
) -> SessionKey:
    """``"{tenant}:{provider}:{anchor}:{user}"``, anchor ``"conversation"`` and user ``"user"`` when ``None``.

    As greentic-types: the parts are joined as given, not hashed and not
    checked as ids; only ``None`` takes the default (an empty anchor or user
    stays empty), and a ``:`` inside a part is not escaped. Raises
    ``InvalidInputError`` for a part that is not a ``str`` (or ``None`` for
    anchor and user), and for a key no store would accept (longer than
    ``MAX_KEY_LENGTH``, or holding a lone surrogate).
    """
    parts = (
        _part(tenant, "tenant"),
        _part(provider, "provider"),
        DEFAULT_CANONICAL_ANCHOR if anchor is None else _part(anchor, "anchor"),
        DEFAULT_CANONICAL_USER if user is None else _part(user, "user"),
    )
    return check_key("{}:{}:{}:{}".format(*parts))
