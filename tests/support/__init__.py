"""What the tests share: the builders every module uses to make a tenant and its session data.

The rest of the shared support lives beside this file, one concern a module:
``backends`` (the stores every contract test runs on), ``fileio`` (the FileIO
doubles), ``corruption`` (damaging a store's files), ``crashsim`` (the states
a power loss may leave), ``permissions`` (umask and file modes),
``strategies`` (Hypothesis), ``descriptors`` (what a process holds open),
``interrupting`` (interrupts raised at a chosen file-layer call) and
``redis_server`` (and ``redis_cluster``: a cluster and a Sentinel group).
Test modules import from here, never from one another.
"""

from __future__ import annotations

from filestore import SessionCursor, SessionData, TenantCtx


def ctx(
    env: str = "dev", tenant: str = "acme", team: str | None = "support", user: str | None = "u1"
) -> TenantCtx:
    """A tenant context: by default ``dev/acme``, team ``support``, user ``u1``."""
    return TenantCtx.new(env, tenant).with_team(team).with_user(user)


def data(context: TenantCtx | None = None, step: int = 0, flow: str = "onboarding.flow") -> SessionData:
    """Session data for ``context`` (default ``ctx()``), distinct for each ``step``."""
    return SessionData(
        tenant_ctx=context if context is not None else ctx(),
        flow_id=flow,
        cursor=SessionCursor(node_pointer=f"node.{step}", wait_reason="input"),
        context_json=f'{{"step":{step}}}',
    )
