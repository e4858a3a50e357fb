"""``caducee serve --home DIR``: run every configured listener and the workers.

SIGTERM or SIGINT stops accepting new work, lets in-flight requests and jobs
finish, and exits 0 (K3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from caducee.config import load_settings
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.http.app import build_http_app
from caducee.gateway.logs import configure_logging
from caducee.gateway.runtime import Gateway, build_gateway
from caducee.gateway.tls import TLS12_CIPHERS
from caducee.storage import schema

log = logging.getLogger("caducee.serve")


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("serve", help="run the gateway's listeners and workers")
    add_home_argument(parser)
    parser.set_defaults(handler=run)


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _http_server(gateway: Gateway) -> _HttpServer | None:
    settings = gateway.settings
    if not settings.listeners.http:
        return None
    ssl_options: dict[str, object] = {}
    if settings.listeners.http_tls:
        ssl_options = {
            "ssl_certfile": str(settings.path(settings.tls.cert)),
            "ssl_keyfile": str(settings.path(settings.tls.key)),
            "ssl_ciphers": TLS12_CIPHERS,
        }
    config = uvicorn.Config(
        build_http_app(gateway),
        host=settings.listeners.host,
        port=settings.listeners.http,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
        **ssl_options,  # type: ignore[arg-type]
    )
    return _HttpServer(config)


async def serve(gateway: Gateway) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    settings = gateway.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    workers = gateway.worker_pool()
    workers.start()
    http = _http_server(gateway)
    tasks: list[asyncio.Task[None]] = []
    if http is not None:
        tasks.append(asyncio.create_task(http.serve(), name="http"))
    scheme = "https" if settings.listeners.http_tls else "http"
    host = settings.listeners.host
    print(f"Caducée gateway running (home {settings.home})", flush=True)
    if http is not None:
        print(f"  HTTP        {scheme}://{host}:{settings.listeners.http}/healthz", flush=True)
    log.info(
        "gateway started", extra={"home": str(settings.home), "workers": settings.queue.workers}
    )
    stop_waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [task for task in done if task is not stop_waiter and task.exception() is not None]
    log.info("gateway stopping")
    if http is not None:
        http.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(workers.stop)
    stop_waiter.cancel()
    log.info("gateway stopped")
    if failed:
        raise CommandError(f"a listener failed: {failed[0].exception()}")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.home))
    configure_logging(settings.logging.level)
    gateway = build_gateway(settings)
    try:
        current = schema.current_revision(gateway.database)
        if current != schema.head_revision():
            raise CommandError(
                f"database schema is at {current or 'nothing'}, not {schema.head_revision()}: "
                f"run 'caducee init --home {settings.home}'"
            )
        asyncio.run(serve(gateway))
    finally:
        gateway.close()
    return 0
