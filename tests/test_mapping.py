"""greentic's deterministic keys: the hashed ``mapping`` helpers, and ``canonical_session_key``.

Every digest below came from ``printf '%s' '<input>' | sha256sum``; none is
recomputed here, so a change to the key format cannot hide behind its own test.
The canonical keys are greentic-types' own test vectors.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filestore import (
    InvalidInputError,
    SessionKey,
    canonical_session_key,
    telegram_update_to_session_key,
    webhook_to_session_key,
)
from filestore.ids import MAX_KEY_LENGTH, check_key

HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


@pytest.mark.parametrize(
    ("bot_id", "chat_id", "user_id", "digest"),
    [
        # printf '%s' 'tg:bot:1:2' | sha256sum
        ("bot", 1, 2, "62f39beb18699630425c067fbed167a5198b2d39b8d0942a518bbc26e0b302f9"),
        # printf '%s' 'tg:bot42:1001:7' | sha256sum
        ("bot42", 1001, 7, "9726697e8bb60c798ceddd70cd32055235be0601c0bcfd5bc3fe1527d2b2a161"),
        # printf '%s' 'tg:b:-100:u' | sha256sum (a group chat id is negative)
        ("b", -100, "u", "d41c63dee7933a57d528e6040f5d80708f8ea55c50dd76be001b31e8daab482a"),
        # printf '%s' 'tg:123456:ABC-def:-1' | sha256sum
        ("123456", "ABC-def", -1, "8dfa950cf59860a5d6fa0cc8528246043ca453c358aeb8b7158df635f9faa39c"),
        # printf '%s' 'tg:bot:ч:ü' | sha256sum (non-ASCII is hashed as UTF-8)
        ("bot", "ч", "ü", "61f19a23e1b23dcba369e18b82362f25d1de200eb349025f34c89084a92959fc"),
        # printf '%s' 'tg:::' | sha256sum
        ("", "", "", "a9e65bd2831f23322ccf29b797e683f3925c94ae54539347ce35d34c56d8f355"),
    ],
)
def test_telegram_key_is_the_sha256_of_the_tg_string(
    bot_id: str, chat_id: str | int, user_id: str | int, digest: str
) -> None:
    """telegram_update_to_session_key is hex SHA-256 of "tg:{bot_id}:{chat_id}:{user_id}" in UTF-8."""
    key = telegram_update_to_session_key(bot_id, chat_id, user_id)
    assert key == digest
    assert type(key) is SessionKey


def test_telegram_integer_and_string_ids_give_the_same_key() -> None:
    """Telegram's numeric chat and user ids hash as their decimal text: 1001 and "1001" agree."""
    assert telegram_update_to_session_key("bot", "1", "2") == (
        "62f39beb18699630425c067fbed167a5198b2d39b8d0942a518bbc26e0b302f9"
    )
    assert telegram_update_to_session_key("bot42", "1001", 7) == telegram_update_to_session_key(
        "bot42", 1001, "7"
    )


@pytest.mark.parametrize(
    ("source", "subject", "id_hint", "digest"),
    [
        # printf '%s' 'wh:github:push:abc-1' | sha256sum
        ("github", "push", "abc-1", "f5cfaf69a75fca0b26f36f6d3d7c9020fb6fba007ccd3924080c2e6b15c8666a"),
        # printf '%s' 'wh:stripe:invoice.paid:evt_1' | sha256sum
        (
            "stripe",
            "invoice.paid",
            "evt_1",
            "42d50549b763c0cee9b814ad1da95e308f17f27b753dc163130dfe86426d480c",
        ),
        # printf '%s' 'wh:src:subj:ü' | sha256sum
        ("src", "subj", "ü", "9fcdf81e14de72421d1b81e733fe9aabe08d4c5ccd4b9fcc0ef0e6e52481fa02"),
        # printf '%s' 'wh:::' | sha256sum
        ("", "", "", "a8e665de75db47b1072f21634dc029ba37e2c943d32f4c3421299514b1e36cbd"),
    ],
)
def test_webhook_key_is_the_sha256_of_the_wh_string(
    source: str, subject: str, id_hint: str, digest: str
) -> None:
    """webhook_to_session_key is hex SHA-256 of "wh:{source}:{subject}:{id_hint}" in UTF-8."""
    key = webhook_to_session_key(source, subject, id_hint)
    assert key == digest
    assert type(key) is SessionKey


def test_telegram_and_webhook_keys_never_collide_on_the_same_parts() -> None:
    """The "tg:" and "wh:" prefixes keep the two key spaces apart for identical parts."""
    assert telegram_update_to_session_key("a", "b", "c") != webhook_to_session_key("a", "b", "c")
    assert telegram_update_to_session_key("", "", "") != webhook_to_session_key("", "", "")


@given(st.text(max_size=20), st.text(max_size=20) | st.integers(), st.text(max_size=20) | st.integers())
def test_keys_are_valid_store_keys(bot_id: str, chat_id: str | int, user_id: str | int) -> None:
    """Any derived key is 64 lowercase hex characters, so every store accepts it as a key."""
    for key in (
        telegram_update_to_session_key(bot_id, chat_id, user_id),
        webhook_to_session_key(bot_id, str(chat_id), str(user_id)),
    ):
        assert HEX_SHA256.fullmatch(key)
        assert check_key(key) == key


# -- canonical_session_key (greentic-types) -------------------------------------------


def test_canonical_key_includes_every_part() -> None:
    """greentic-types' test: tenant, provider, anchor and user joined by colons."""
    key = canonical_session_key("tenant", "webhook", "room-1", "user-5")
    assert key == "tenant:webhook:room-1:user-5"
    assert type(key) is SessionKey


def test_canonical_key_defaults_anchor_and_user() -> None:
    """greentic-types' test: a missing anchor is "conversation", a missing user "user"."""
    assert canonical_session_key("tenant", "webhook") == "tenant:webhook:conversation:user"
    assert canonical_session_key("tenant", "webhook", None, None) == "tenant:webhook:conversation:user"
    assert canonical_session_key("t", "p", user="u1") == "t:p:conversation:u1"
    assert canonical_session_key("t", "p", anchor="chat-1") == "t:p:chat-1:user"


def test_canonical_key_keeps_empty_parts_empty() -> None:
    """Only None takes the default (Rust's ``unwrap_or`` on an ``Option``): "" stays "", as in Rust."""
    assert canonical_session_key("t", "p", "", "") == "t:p::"
    assert canonical_session_key("", "", None, None) == "::conversation:user"


def test_canonical_key_joins_parts_as_given() -> None:
    """No id check and no escaping, as greentic-types: non-ASCII and colons inside a part pass through."""
    assert canonical_session_key("acme", "telegram", "chat 1", "ü") == "acme:telegram:chat 1:ü"
    assert canonical_session_key("a:b", "c") == canonical_session_key("a", "b:c")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((None, "p"), "tenant"),
        (("t", 5), "provider"),
        (("t", "p", 1), "anchor"),
        (("t", "p", None, b"u"), "user"),
        (("t", "p", True), "anchor"),
    ],
)
def test_canonical_key_refuses_parts_that_are_not_text(args: tuple[object, ...], field: str) -> None:
    """A part that is not a str (or None for anchor and user) is InvalidInputError, never formatted in."""
    with pytest.raises(InvalidInputError) as info:
        canonical_session_key(*args)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(
    "args",
    [("t" * MAX_KEY_LENGTH, "p"), ("t", "p", "\ud800"), ("t", "p", None, "\udfff")],
    ids=["too-long", "surrogate-anchor", "surrogate-user"],
)
def test_canonical_key_refuses_a_key_no_store_accepts(args: tuple[str, ...]) -> None:
    """A key longer than MAX_KEY_LENGTH or holding a lone surrogate is refused when made, not when used."""
    with pytest.raises(InvalidInputError):
        canonical_session_key(*args)


@given(
    st.text(max_size=40),
    st.text(max_size=40),
    st.none() | st.text(max_size=40),
    st.none() | st.text(max_size=40),
)
def test_canonical_key_is_the_joined_parts(
    tenant: str, provider: str, anchor: str | None, user: str | None
) -> None:
    """For any text parts, the key is the four parts joined by ':' and a valid store key."""
    key = canonical_session_key(tenant, provider, anchor, user)
    assert key == ":".join(
        [tenant, provider, "conversation" if anchor is None else anchor, "user" if user is None else user]
    )
    assert check_key(key) == key
