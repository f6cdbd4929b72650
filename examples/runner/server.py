"""Running the runner: open the store, serve on loopback, say where, stop on a signal.

``python -m examples.runner --store TARGET`` (or ``RUNNER_STORE=TARGET``):
TARGET is what ``open_async_store`` takes, a directory, a ``redis://`` URL
or ``memory:``. The service binds 127.0.0.1 only (it trusts its callers:
put a gateway in front of it), on ``--port`` or a free port, and once it
accepts connections prints ``runner listening on http://127.0.0.1:PORT`` on
stdout (and writes the URL to ``--ready-file``, in one write, so a FIFO
works): scripts and tests wait for that line, never for a delay. SIGTERM
and SIGINT stop it cleanly: requests in progress finish, then the store
closes. A SIGKILL loses nothing that was answered: see ``docs/runner.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiohttp import web

from examples.runner.flow import DEFAULT_GRACE, DEFAULT_TTL, Clock, Runner
from examples.runner.webhook import make_app
from filestore import EnvId, InvalidInputError, open_async_store
from filestore.waits import system_clock

HOST: Final = "127.0.0.1"
STORE_VARIABLE: Final = "RUNNER_STORE"


async def serve(
    target: str,
    *,
    ready: Callable[[str], None],
    stop: asyncio.Event,
    port: int = 0,
    env: str = "dev",
    ttl: datetime.timedelta = DEFAULT_TTL,
    grace: datetime.timedelta = DEFAULT_GRACE,
    clock: Clock = system_clock,
    store_options: dict[str, Any] | None = None,
) -> None:
    """Serve the runner on ``target``'s store until ``stop`` is set; ``ready(url)`` once listening.

    The store is closed on the way out, whatever ended the service.
    """
    store = await open_async_store(target, **(store_options or {}))
    try:
        runner = Runner(store, env=env, ttl=ttl, grace=grace, clock=clock)
        web_runner = web.AppRunner(make_app(runner), handle_signals=False)
        await web_runner.setup()
        try:
            await web.TCPSite(web_runner, HOST, port).start()
            _host, bound = web_runner.addresses[0][:2]
            ready(f"http://{HOST}:{bound}")
            await stop.wait()
        finally:
            await web_runner.cleanup()
    finally:
        await store.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.runner", description="A webhook flow runner on a filestore store."
    )
    parser.add_argument(
        "--store",
        default=os.environ.get(STORE_VARIABLE),
        help=f"a directory, a redis:// URL or memory: (default: ${STORE_VARIABLE})",
    )
    parser.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--env", default="dev", help="the greentic env of every session (default: dev)")
    parser.add_argument(
        "--ttl",
        type=float,
        default=DEFAULT_TTL.total_seconds(),
        help="seconds a question waits for its answer (default: %(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE.total_seconds(),
        help="seconds an expired question is remembered, to say so (default: %(default)s)",
    )
    parser.add_argument("--ready-file", help="a file or FIFO to write the URL to once listening")
    args = parser.parse_args(argv)
    if not args.store:
        parser.error(f"no store: give --store or set {STORE_VARIABLE}")
    if args.ttl <= 0 or args.grace < 0:
        parser.error("--ttl must be positive and --grace not negative")
    try:
        EnvId.parse(args.env, field="env")
    except InvalidInputError as error:
        parser.error(f"--env: {error.message}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the runner until SIGTERM or SIGINT; 0 after a clean stop."""
    args = parse_args(argv)

    def announce(url: str) -> None:
        print(f"runner listening on {url}", flush=True)
        if args.ready_file:
            with open(args.ready_file, "w", encoding="utf-8") as ready_file:
                ready_file.write(url + "\n")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop.set)
        await serve(
            args.store,
            ready=announce,
            stop=stop,
            port=args.port,
            env=args.env,
            ttl=datetime.timedelta(seconds=args.ttl),
            grace=datetime.timedelta(seconds=args.grace),
        )

    asyncio.run(run())
    return 0


if __name__ == "__main__":  # pragma: no cover - the module's entry is __main__.py
    sys.exit(main())
