"""A webhook flow runner on filestore's async stores: pause, restart, resume.

An aiohttp service on loopback takes chat-like messages and drives a
three-step registration flow (ask name, ask email, confirm), paused between
messages as a wait in the store. ``docs/runner.md`` is its tutorial;
``python -m examples.runner --store DIR`` runs it.

- ``message``: the incoming message, its session key and reply scope;
- ``flow``: the flow and its state, over an ``AsyncSessionStore``;
- ``webhook``: the HTTP layer;
- ``server``: opening the store, serving, readiness and signals.
"""

from __future__ import annotations

from examples.runner.flow import FlowConflictError, FlowState, Reply, Runner
from examples.runner.message import Message
from examples.runner.server import main, serve
from examples.runner.webhook import make_app

__all__ = ["FlowConflictError", "FlowState", "Message", "Reply", "Runner", "main", "make_app", "serve"]
