"""Deterministic session keys, as greentic-session's ``mapping`` module makes them.

A runner that derives the key from the incoming message (rather than storing
a random one) finds the same session again without a lookup.
"""

from __future__ import annotations

import hashlib

from filestore.errors import InvalidInputError
from filestore.ids import SessionKey


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
