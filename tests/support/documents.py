"""A session document with every field set, and a way to change one of its paths: what the
model's decoding tests break, field by field."""

from __future__ import annotations

import copy
from typing import Any, Final

Doc = dict[str, Any]
MISSING: Final = object()


def full_doc() -> Doc:
    """A valid session document with every field set, so any path can be replaced or removed."""
    return {
        "tenant_ctx": {
            "env": "dev",
            "tenant": "acme",
            "tenant_id": "acme",
            "team": "support",
            "team_id": "support",
            "user": "u1",
            "user_id": "u1",
            "session_id": "s",
            "flow_id": "f",
            "node_id": "n",
            "provider_id": "p",
            "trace_id": "t",
            "i18n_id": "en-GB",
            "correlation_id": "c",
            "attributes": {"channel": "telegram"},
            "deadline": {"unix_millis": 1_700_000_000_000},
            "attempt": 1,
            "idempotency_key": "i",
            "impersonation": {"actor_id": "admin", "reason": "ticket 7"},
        },
        "flow_id": "onboarding.flow",
        "pack_id": "pack-1",
        "cursor": {"node_pointer": "node.wait", "wait_reason": "input", "outbox_marker": "m1"},
        "context_json": '{"step":2}',
    }


def _paths(doc: Doc, prefix: str = "") -> list[str]:
    found = []
    for name, value in doc.items():
        path = f"{prefix}{name}"
        found.append(path)
        if isinstance(value, dict):
            found += _paths(value, f"{path}.")
    return found


PATHS: Final = _paths(full_doc())


def set_path(doc: Doc, path: str, value: object) -> Doc:
    """Set (or, with MISSING, delete) the dotted ``path`` of ``doc``; return ``doc``."""
    *parents, last = path.split(".")
    target = doc
    for name in parents:
        target = target[name]
    if value is MISSING:
        del target[last]
    else:
        # A copy: hypothesis may hand out one {} or [] for several paths, and setting the
        # same object at a path inside itself would make the document a cycle.
        target[last] = copy.deepcopy(value)
    return doc
