"""Hypothesis strategies for the data model, shared by every test module."""

from __future__ import annotations

from hypothesis import strategies as st

from filestore import Impersonation, InvocationDeadline, SessionCursor, SessionData, TenantCtx

ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


def ids(max_size: int = 24) -> st.SearchStrategy[str]:
    """Valid ids: ASCII letters, digits, '.', '_' and '-'; mostly short, sometimes the 256 maximum."""
    return st.one_of(
        st.text(ID_ALPHABET, min_size=1, max_size=max_size),
        st.text(ID_ALPHABET, min_size=256, max_size=256),
    )


def bad_ids() -> st.SearchStrategy[str]:
    """Strings every id type must refuse: empty, too long, or with a forbidden character."""
    forbidden = st.sampled_from([" ", "/", ":", "ü", "\n", "\x00", "@", "é", "#", "\t"])
    return st.one_of(
        st.just(""),
        st.text(ID_ALPHABET, min_size=257, max_size=300),
        st.builds(
            lambda left, bad, right: left + bad + right,
            st.text(ID_ALPHABET, max_size=5),
            forbidden,
            st.text(ID_ALPHABET, max_size=5),
        ),
    )


optional_text = st.none() | st.text(max_size=30)


def tenant_ctxs(
    env: str | None = None, tenant: str | None = None, team: str | None = "", user: str | None = ""
) -> st.SearchStrategy[TenantCtx]:
    """Full contexts, every optional field sometimes set. Pass a value to pin a field;
    ``team``/``user`` of ``""`` (the default) mean "any"."""

    @st.composite
    def build(draw: st.DrawFn) -> TenantCtx:
        tenant_value = tenant if tenant is not None else draw(ids())
        team_value = draw(st.none() | ids()) if team == "" else team
        user_value = draw(st.none() | ids()) if user == "" else user
        return TenantCtx(
            env=env if env is not None else draw(ids()),
            tenant=draw(st.sampled_from([tenant_value, tenant_value[:240] + "-display"])),
            tenant_id=tenant_value,
            team=team_value,
            team_id=draw(st.sampled_from([team_value, None])) if team_value is not None else None,
            user=user_value,
            user_id=draw(st.sampled_from([user_value, None])) if user_value is not None else None,
            session_id=draw(optional_text),
            flow_id=draw(optional_text),
            node_id=draw(optional_text),
            provider_id=draw(optional_text),
            trace_id=draw(optional_text),
            i18n_id=draw(optional_text),
            correlation_id=draw(optional_text),
            attributes=draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
            deadline=draw(st.none() | st.builds(InvocationDeadline, st.integers(-(2**127), 2**127 - 1))),
            attempt=draw(st.integers(0, 2**32 - 1)),
            idempotency_key=draw(optional_text),
            impersonation=draw(st.none() | st.builds(Impersonation, ids(), optional_text)),
        )

    return build()


def cursors() -> st.SearchStrategy[SessionCursor]:
    return st.builds(SessionCursor, st.text(max_size=30), optional_text, optional_text)


def session_datas(ctx: TenantCtx | None = None) -> st.SearchStrategy[SessionData]:
    """Sessions, with context_json any text at all (it is stored verbatim)."""
    return st.builds(
        SessionData,
        tenant_ctx=st.just(ctx) if ctx is not None else tenant_ctxs(),
        flow_id=ids(),
        cursor=cursors(),
        context_json=st.text(max_size=200),
        pack_id=st.none() | ids(),
    )


# A small world for stateful tests: few enough names that sessions collide on users.
small_envs = st.sampled_from(["dev", "prod"])
small_tenants = st.sampled_from(["acme", "globex"])
small_teams = st.sampled_from([None, "support"])
small_users = st.sampled_from([None, "u1", "u2"])
