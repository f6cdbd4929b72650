"""The HTTP face of the runner (aiohttp): ``POST /messages`` takes a message, answers its reply.

Status codes: 200 with the reply; 400 for a request that is not a message
(the body says which field and why, with greentic's error code); 409 when
another flow waits in the conversation; 503 when the store cannot serve
(closed, unreachable, full); the client may retry those. A 200 is sent only
after the store's write returned, so an acknowledged step is never lost.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from examples.runner.flow import FlowConflictError, Runner
from examples.runner.message import Message
from filestore import FilestoreError, InvalidInputError

RUNNER: Final = web.AppKey("runner", Runner)
# A chat message is small; a bigger body is a mistake or an attack, refused before it is read.
MAX_BODY: Final = 64 * 1024


def make_app(runner: Runner) -> web.Application:
    """The web application serving ``runner`` (its store is the caller's to open and close)."""
    app = web.Application(client_max_size=MAX_BODY)
    app[RUNNER] = runner
    app.router.add_post("/messages", receive)
    app.router.add_get("/health", health)
    return app


async def receive(request: web.Request) -> web.Response:
    """One message in, its reply out (see the module docs for the status codes)."""
    try:
        message = Message.from_json(await request.read())
        reply = await request.app[RUNNER].handle(message)
    except InvalidInputError as error:
        return _error(400, error.code.serde_name, error.message)
    except FlowConflictError as error:
        return _error(409, "conflict", str(error))
    except FilestoreError as error:
        return _error(503, error.code.serde_name, error.message)
    return web.json_response(reply.to_dict())


async def health(request: web.Request) -> web.Response:
    """200 while the runner serves (a load balancer's probe)."""
    return web.json_response({"status": "ok"})


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)
