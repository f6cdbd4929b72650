"""``open_async_store``: one way to open any async backend, as ``filestore.backends.open_store``.

The same targets: ``"memory:"``, a ``redis://`` / ``rediss://`` / ``unix://``
URL (``?namespace=`` picks the key namespace), or a store directory. A
directory is opened in a worker thread (opening replays the log's tail), so
the event loop goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import urllib.parse
from typing import Any

from filestore.aio.filestore import AsyncFileSessionStore
from filestore.aio.memory import AsyncInMemorySessionStore
from filestore.aio.protocol import AsyncSessionStore
from filestore.aio.redis import AsyncRedisSessionStore
from filestore.backends import REDIS_SCHEMES
from filestore.errors import InvalidInputError
from filestore.redis_store import DEFAULT_NAMESPACE


async def open_async_store(target: str | os.PathLike[str], **options: Any) -> AsyncSessionStore:
    """Open the async store ``target`` names; ``options`` go to its constructor.

    Refusals are ``open_store``'s: ``InvalidInputError`` for a target that is
    not text or names no store, and for an option the store does not take.
    """
    try:
        text = os.fspath(target)
    except TypeError:
        text = None
    if not isinstance(text, str):
        raise InvalidInputError(
            f"target must be a str (a directory, memory: or a redis:// URL), not {type(target).__name__}",
            field="target",
            rule="a str",
        )
    if text == "memory:":
        _check_options(AsyncInMemorySessionStore, options)
        return AsyncInMemorySessionStore(**options)
    if text.startswith(REDIS_SCHEMES):
        parsed = urllib.parse.urlsplit(text)
        query = urllib.parse.parse_qs(parsed.query)
        namespace = query.pop("namespace", [DEFAULT_NAMESPACE])[0]
        rest = urllib.parse.urlencode({name: values[-1] for name, values in query.items()})
        url = urllib.parse.urlunsplit(parsed._replace(query=rest))
        _check_options(AsyncRedisSessionStore, options, given_by_spec={"namespace"})
        return AsyncRedisSessionStore(url, namespace=namespace, **options)
    if not text or "://" in text:
        raise InvalidInputError(
            f"not a store: {text!r} (use a directory, memory: or a redis:// URL)",
            field="target",
            rule="a store",
        )
    _check_options(AsyncFileSessionStore, options)
    return await asyncio.to_thread(AsyncFileSessionStore, text, **options)


def _check_options(kind: type, options: dict[str, Any], *, given_by_spec: set[str] | None = None) -> None:
    """Refuse an option ``kind``'s constructor does not take (Python would raise a bare ``TypeError``)."""
    taken = given_by_spec or set()
    accepted = {
        name
        for name, parameter in inspect.signature(kind).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in taken
    }
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InvalidInputError(
            f"{kind.__name__} takes no option {', '.join(unknown)} "
            f"(it takes: {', '.join(sorted(accepted)) or 'none'})",
            field=unknown[0],
            rule="a known option",
        )
