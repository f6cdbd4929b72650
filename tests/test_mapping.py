"""greentic-session's deterministic keys, against digests computed once with sha256sum."""

from __future__ import annotations

from filestore import SessionKey, telegram_update_to_session_key, webhook_to_session_key


def test_telegram_key_is_the_sha256_of_the_tg_string() -> None:
    """telegram_update_to_session_key hashes "tg:{bot}:{chat}:{user}" (printf ... | sha256sum)."""
    key = telegram_update_to_session_key("bot42", 1001, 7)
    assert key == "9726697e8bb60c798ceddd70cd32055235be0601c0bcfd5bc3fe1527d2b2a161"
    assert isinstance(key, SessionKey)
    assert telegram_update_to_session_key("bot42", "1001", "7") == key
    assert telegram_update_to_session_key("b", -100, "u") == (
        "d41c63dee7933a57d528e6040f5d80708f8ea55c50dd76be001b31e8daab482a"
    )


def test_webhook_key_is_the_sha256_of_the_wh_string() -> None:
    """webhook_to_session_key hashes "wh:{source}:{subject}:{id_hint}"."""
    assert webhook_to_session_key("github", "push", "abc-1") == (
        "f5cfaf69a75fca0b26f36f6d3d7c9020fb6fba007ccd3924080c2e6b15c8666a"
    )
