"""The demo: a flow runner pausing and resuming sessions across a restart.

``filestore demo [DIR]`` runs ``run_demo``; it is what the README's first
command shows a newcomer.

Each message is a find, then an update, create or remove: not atomic
together, so two runners resuming one user's flow at once would race (one
removes the session the other is about to update). A real deployment routes
one user's messages to one runner at a time; the demo does the same with a
lock beside the store directory, so a second run waits for the first and
then resumes what it left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import filelock

from filestore.engine.layout import LOG_NAME
from filestore.engine.store import FileSessionStore
from filestore.model import SessionCursor, SessionData, TenantCtx

DEMO_USERS = ("alice", "bob", "carol")
# The nodes of the demo's onboarding flow, in order; the session ends after the last.
FLOW = ("ask.name", "ask.email", "confirm")


def _paused_at(ctx: TenantCtx, step: int, answers: dict[str, str]) -> SessionData:
    return SessionData(
        tenant_ctx=ctx,
        flow_id="onboarding.flow",
        cursor=SessionCursor(node_pointer=FLOW[step], wait_reason="user-input"),
        context_json=json.dumps({"step": step, "answers": answers}),
    )


def _handle_message(
    store: FileSessionStore, ctx: TenantCtx, user: str, text: str, say: Callable[[str], None]
) -> None:
    """What a runner does with an incoming message: resume the user's flow, or start one."""
    found = store.find_by_user(ctx, user)
    if found is None:
        key = store.create_session(ctx, _paused_at(ctx, 0, {}))
        say(f"  {user}: no paused flow; started one, paused at {FLOW[0]} (session {key[:8]})")
        return
    key, paused = found
    state = json.loads(paused.context_json)
    step, answers = state["step"], state["answers"]
    answers[FLOW[step]] = text
    if step + 1 == len(FLOW):
        store.remove_session(key)
        say(f"  {user}: answered {FLOW[step]}; flow finished, session {key[:8]} removed")
        return
    store.update_session(key, _paused_at(ctx, step + 1, answers))
    say(f"  {user}: resumed session {key[:8]} at {FLOW[step]}, now paused at {FLOW[step + 1]}")


def demo_lock_path(directory: Path) -> Path:
    """The lock one demo run holds over ``directory``: a hidden file beside it, never inside the store."""
    # Resolved: "." has no name (the lock went inside the store), and "../d" is "d" by another
    # spelling, which must not get a lock of its own.
    resolved = directory.resolve()
    return resolved.parent / f".{resolved.name}.demo-lock"


def run_demo(directory: Path, say: Callable[[str], None] = print) -> int:
    """Play three users through a three-step flow, restarting the 'runner' midway.

    Returns the number of sessions left paused in the store. A run waits for
    another run on the same directory to finish first.
    """
    say(f"filestore demo: store at {directory}")
    FileSessionStore(directory).close()  # makes the directory and its parents, as safely as a store does
    lock = filelock.FileLock(demo_lock_path(directory))
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        say(f"another demo is running on {directory}; waiting for it to finish")
        lock.acquire()
    try:
        return _play(directory, say)
    finally:
        lock.release()


def _play(directory: Path, say: Callable[[str], None]) -> int:
    ctx_of = {user: TenantCtx.new("dev", "acme").with_team("support").with_user(user) for user in DEMO_USERS}
    with FileSessionStore(directory) as store:
        say(f"opened with {len(store)} paused sessions; first messages arrive:")
        for user in DEMO_USERS:
            _handle_message(store, ctx_of[user], user, f"hello from {user}", say)
        _handle_message(store, ctx_of["alice"], "alice", "Alice", say)
    say("runner restarts (the store is closed and reopened; every acknowledged write is on disk)")
    started = time.perf_counter()
    with FileSessionStore(directory) as store:
        elapsed_ms = (time.perf_counter() - started) * 1000
        say(f"reopened in {elapsed_ms:.1f} ms with {len(store)} paused sessions; more messages arrive:")
        for user in DEMO_USERS:
            _handle_message(store, ctx_of[user], user, f"{user}@example.com", say)
        _handle_message(store, ctx_of["alice"], "alice", "yes", say)
        left = len(store)
    log_bytes = (directory / LOG_NAME).stat().st_size
    say(f"done: {left} sessions still paused, log is {log_bytes} bytes")
    return left
