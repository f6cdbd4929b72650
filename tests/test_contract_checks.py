"""The contract module's ``check_*`` helpers on their own: what they return, and each refusal's words.

``tests/test_contract.py`` pins the rules through every backend; this module
pins the helpers the backends share: each returns what it checked, and the
owner checks (one comparison behind them) word each mismatch their own way.
"""

from __future__ import annotations

import pytest

from filestore import (
    InvalidInputError,
    SessionCursor,
    SessionData,
    SessionScope,
    TenantCtx,
    TenantMismatchError,
)
from filestore.contract import (
    check_context_fence,
    check_ctx_preserved,
    check_same_owner,
    check_session_data,
    check_tenant_ctx,
)

OWNER = TenantCtx.new("dev", "acme").with_team("support").with_user("u1")
SCOPE = SessionScope(OWNER.env, OWNER.tenant_id, OWNER.team_id, OWNER.user_id)


def session(context: TenantCtx) -> SessionData:
    return SessionData(context, "onboarding.flow", SessionCursor("node.wait"), "{}")


def test_every_check_returns_what_it_checked() -> None:
    """check_tenant_ctx gives the ctx back; the other three give the session data back, the same object."""
    data = session(OWNER)
    assert check_tenant_ctx(OWNER) is OWNER
    assert check_session_data(data) is data
    assert check_context_fence(OWNER, data) is data
    assert check_same_owner(SCOPE, data) is data
    anonymous = session(OWNER.with_user(None))
    assert check_same_owner(SCOPE, anonymous) is anonymous  # an import may leave the user out
    assert check_ctx_preserved(session(OWNER), data) is data
    assert check_ctx_preserved(anonymous, anonymous) is anonymous


@pytest.mark.parametrize(
    ("data_ctx", "part", "field", "message", "rule"),
    [
        (
            TenantCtx.new("prod", "acme").with_team("support").with_user("u1"),
            "env/tenant",
            "tenant_ctx",
            "env/tenant mismatch: ctx is dev/acme, session data is prod/acme",
            "ctx and data agree on env and tenant",
        ),
        (
            OWNER.with_team(None),
            "team",
            "tenant_ctx.team",
            "team mismatch: ctx has team support, session data has no team",
            "ctx and data agree on team",
        ),
        (
            OWNER.with_user("u2"),
            "user",
            "tenant_ctx.user",
            "user mismatch: session data names user u2, ctx names u1",
            "ctx names the data's user",
        ),
    ],
)
def test_context_fence_words(data_ctx: TenantCtx, part: str, field: str, message: str, rule: str) -> None:
    """create_session's fence names the part, field and rule, in the ctx's and the data's terms."""
    with pytest.raises(TenantMismatchError) as info:
        check_context_fence(OWNER, session(data_ctx))
    assert (info.value.message, info.value.part, info.value.field, info.value.rule) == (
        message,
        part,
        field,
        rule,
    )


@pytest.mark.parametrize(
    ("data_ctx", "part", "field", "message", "rule"),
    [
        (
            TenantCtx.new("dev", "globex").with_team("support").with_user("u1"),
            "env/tenant",
            "tenant_ctx",
            "env/tenant mismatch: the session belongs to dev/acme, the update names dev/globex",
            "an update keeps env and tenant",
        ),
        (
            OWNER.with_team("sales"),
            "team",
            "tenant_ctx.team",
            "team mismatch: the session belongs to team support, the update names team sales",
            "an update keeps the team",
        ),
        (
            OWNER.with_user("u2"),
            "user",
            "tenant_ctx.user",
            "user mismatch: the session belongs to user u1, the update names user u2",
            "an update keeps the user",
        ),
    ],
)
def test_same_owner_words(data_ctx: TenantCtx, part: str, field: str, message: str, rule: str) -> None:
    """update_session's owner check names the part, field and rule, in the stored owner's terms."""
    with pytest.raises(TenantMismatchError) as info:
        check_same_owner(SCOPE, session(data_ctx))
    assert (info.value.message, info.value.part, info.value.field, info.value.rule) == (
        message,
        part,
        field,
        rule,
    )


@pytest.mark.parametrize(
    ("stored_ctx", "data_ctx", "part", "field", "message", "rule"),
    [
        (
            OWNER,
            TenantCtx.new("dev", "globex").with_team("support").with_user("u1"),
            "env/tenant",
            "tenant_ctx",
            "env/tenant mismatch: the session belongs to dev/acme, the update names dev/globex",
            "an update keeps env and tenant",
        ),
        (
            OWNER,
            OWNER.with_team(None),
            "team",
            "tenant_ctx.team",
            "team mismatch: the session belongs to team support, the update names no team",
            "an update keeps the team",
        ),
        (
            OWNER,
            OWNER.with_user("u2"),
            "user",
            "tenant_ctx.user",
            "user mismatch: the session belongs to user u1, the update names user u2",
            "an update keeps the user",
        ),
        (
            OWNER,
            OWNER.with_user(None),
            "user",
            "tenant_ctx.user",
            "user mismatch: the session belongs to user u1, the update names no user",
            "an update keeps the user",
        ),
        (
            OWNER.with_user(None),
            OWNER,
            "user",
            "tenant_ctx.user",
            "user mismatch: the session's data names no user, the update names user u1",
            "an update cannot introduce a user",
        ),
    ],
)
def test_ctx_preserved_words(
    stored_ctx: TenantCtx, data_ctx: TenantCtx, part: str, field: str, message: str, rule: str
) -> None:
    """update_session's comparison with the stored data names the part, field and rule: a user
    changed, dropped or introduced each in its own words."""
    with pytest.raises(TenantMismatchError) as info:
        check_ctx_preserved(session(stored_ctx), session(data_ctx))
    assert (info.value.message, info.value.part, info.value.field, info.value.rule) == (
        message,
        part,
        field,
        rule,
    )


def test_type_checks_come_before_the_owner_checks() -> None:
    """A ctx or data of the wrong type is InvalidInputError (the ctx named first), not a mismatch."""
    data = session(OWNER)
    with pytest.raises(InvalidInputError, match=r"^InvalidInput: ctx: expected TenantCtx, not dict$"):
        check_context_fence({}, {})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"^InvalidInput: data: expected SessionData, not dict$"):
        check_context_fence(OWNER, data.to_dict())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"^InvalidInput: data: expected SessionData, not dict$"):
        check_same_owner(SCOPE, data.to_dict())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"^InvalidInput: data: expected SessionData, not dict$"):
        check_ctx_preserved(data, data.to_dict())  # type: ignore[arg-type]
