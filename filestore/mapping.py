"""Deterministic session keys, as greentic-session's ``mapping`` module makes them.

A runner that derives the key from the incoming message (rather than storing
a random one) finds the same session again without a lookup.
"""

from __future__ import annotations

import hashlib

from filestore.ids import SessionKey


def _sha256_key(text: str) -> SessionKey:
    return SessionKey(hashlib.sha256(text.encode("utf-8")).hexdigest())


def telegram_update_to_session_key(bot_id: str, chat_id: str | int, user_id: str | int) -> SessionKey:
    """Hex SHA-256 of ``"tg:{bot_id}:{chat_id}:{user_id}"``."""
    return _sha256_key(f"tg:{bot_id}:{chat_id}:{user_id}")


def webhook_to_session_key(source: str, subject: str, id_hint: str) -> SessionKey:
    """Hex SHA-256 of ``"wh:{source}:{subject}:{id_hint}"``."""
    return _sha256_key(f"wh:{source}:{subject}:{id_hint}")
