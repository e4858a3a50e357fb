"""``caducee serve --home DIR``: run every configured listener and the workers.

SIGTERM or SIGINT stops accepting new work, lets in-flight requests and jobs
finish, and exits 0 (K3). SIGHUP reloads ``caducee.toml`` and applies what can
change live (:mod:`caducee.gateway.reload`), in this process and its SMTP workers.

With ``[smtp] processes = N`` above 1, ``serve`` starts N - 1 SMTP worker processes and
leaves the operators' port to them (the submission ports are served by all): the main process
keeps the job workers, IMAP and HTTP, which had left it no CPU for a share of the SMTP
sessions (issue 19). On SQLite the workers hand their operators' port deliveries to the main
process, the file's one writer, which commits them and replies
(:mod:`caducee.gateway.commit_relay`). Whatever they commit themselves (submission; every
delivery on PostgreSQL) they announce after the commit (account ids on the worker's stdout
pipe), so IMAP IDLE in the main process wakes at once rather than at its next folder poll.
A worker whose main process is gone stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import uvicorn

from caducee.config import Settings, load_settings
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.commit_relay import FRAME_OVERHEAD_BYTES, RelayedDeliveries
from caducee.gateway.http.admin_api import admin_routes
from caducee.gateway.http.app import build_http_app
from caducee.gateway.http.directory_api import directory_routes
from caducee.gateway.http.limits import limited_protocol
from caducee.gateway.http.patient_api import access_routes
from caducee.gateway.imap.server import ImapListeners
from caducee.gateway.lifecycle import ensure_sweep
from caducee.gateway.limits import ConnectionLimiter
from caducee.gateway.logs import configure_logging
from caducee.gateway.notify import new_message_collector, notify_handler
from caducee.gateway.relay import make_relay_handler
from caducee.gateway.reload import Reloader
from caducee.gateway.runtime import Gateway, build_gateway
from caducee.gateway.smtp.auth import Authenticator
from caducee.gateway.smtp.context import SmtpContext, TrustCache
from caducee.gateway.smtp.listener import OperatorListener, SubmissionListener
from caducee.gateway.smtp_workers import ROLE_SMTP_WORKER, SmtpWorkers
from caducee.gateway.tls import TLS12_CIPHERS
from caducee.gateway.web import webmail_routes
from caducee.gateway.worker_wakeups import WakeSender
from caducee.mailboxes.delivery import NOTIFY_PATIENT_JOB, MailDelivery
from caducee.mailboxes.relay.outbound import RELAY_JOB
from caducee.storage import schema
from caducee.storage.group_commit import GroupCommitter
from caducee.storage.worker import WorkerPool

log = logging.getLogger("caducee.serve")


ROLE_MAIN = "main"

GIL_SWITCH_SECONDS = 0.001
"""How long a thread of ``serve`` may hold the GIL while another waits (CPython: 5 ms).

The main process's event loop, group committer, job workers and IMAP reads take turns on
the GIL; each handoff on a commit's path waited up to the interval behind a busy job worker.
With SMTP worker processes (4 KiB, SQLite, three alternating pairs) 1 ms gave 289 / 285 /
339 msg/s against 236 / 247 / 262, and less CPU per message (5.5 / 5.7 / 4.8 ms against
6.7 / 6.4 / 6.0); with one process it changed nothing measurable (issue 19)."""


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("serve", help="run the gateway's listeners and workers")
    add_home_argument(parser)
    parser.add_argument(
        "--role", choices=(ROLE_MAIN, ROLE_SMTP_WORKER), default=ROLE_MAIN, help=argparse.SUPPRESS
    )
    parser.add_argument("--commit-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` owns the signals."""

    limiter: ConnectionLimiter | None = None
    """The listener's connection caps (changed in place by a reload)."""

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
    routes = [*directory_routes(gateway.database), *access_routes(gateway)]
    if settings.admin.enabled:
        routes += admin_routes(gateway)
    routes += webmail_routes(gateway)  # "/" and "/webmail": the patient's webmail (H2)
    limits = settings.http
    limiter = ConnectionLimiter(total=limits.max_connections, per_ip=limits.max_connections_per_ip)
    gateway.metrics.watch_connections("http", limiter)
    config = uvicorn.Config(
        build_http_app(gateway, extra_routes=routes),
        host=settings.listeners.host,
        port=settings.listeners.http,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
        # Connection caps answer 503 problem+json (uvicorn's limit_concurrency would
        # answer in text/plain, and counts no client address): ours, in the protocol.
        http=limited_protocol(limiter, limits.max_connection_seconds),
        timeout_keep_alive=limits.keep_alive_seconds,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        **ssl_options,  # type: ignore[arg-type]
    )
    server = _HttpServer(config)
    server.limiter = limiter
    return server


class Service(Protocol):
    """A listener ``serve`` starts and stops."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _caps(limiter: ConnectionLimiter | None, total: int, per_ip: int) -> None:
    if limiter is not None:
        limiter.total, limiter.per_ip = total, per_ip


def _wire_reload(
    gateway: Gateway,
    smtp_context: SmtpContext,
    workers: WorkerPool | None,
    imap: ImapListeners | None,
    http: _HttpServer | None,
) -> Reloader:
    """Who takes which live change of a reload (see :data:`caducee.gateway.reload.LIVE`)."""
    reloader = Reloader(gateway)

    def apply(settings: Settings, sections: frozenset[str]) -> None:
        smtp_context.apply(settings)
        gateway.identity.apply(settings)
        logging.getLogger().setLevel(settings.logging.level)
        _caps(
            imap.limiter if imap else None,
            settings.imap.max_connections,
            settings.imap.max_connections_per_ip,
        )
        _caps(
            http.limiter if http else None,
            settings.http.max_connections,
            settings.http.max_connections_per_ip,
        )
        # New handlers for new jobs; a job already running finishes with the old one. Every
        # process's deliveries collect new-message events with the notify-patient handler.
        if "notifications" in sections:
            gateway.handlers[NOTIFY_PATIENT_JOB] = notify_handler(gateway)
        if workers is None:
            return
        if sections & {"relay", "smtp"}:  # routes, timing, the CRL checked when relaying
            workers.handlers[RELAY_JOB] = gateway.handlers[RELAY_JOB] = make_relay_handler(gateway)
        if "notifications" in sections:
            workers.handlers[NOTIFY_PATIENT_JOB] = gateway.handlers[NOTIFY_PATIENT_JOB]

    reloader.on_reload(apply)
    return reloader


def _on_hangup(reloader: Reloader, smtp_workers: SmtpWorkers | None) -> None:
    reloader.reload()
    if smtp_workers is not None:
        smtp_workers.hang_up()


async def serve(gateway: Gateway, role: str = ROLE_MAIN, commit_fd: int | None = None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully.

    The main role runs every listener, the job workers and the HTTP server;
    an SMTP worker role (started by the main process when ``[smtp] processes``
    is above 1) runs only the SMTP listeners, on the same ports, and with
    ``commit_fd`` hands its operators' port deliveries to the main process.
    """
    settings = gateway.settings
    main = role == ROLE_MAIN
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    workers = gateway.worker_pool() if main else None
    if workers is not None:
        ensure_sweep(gateway)  # the periodic lifecycle sweep (I1, I2, I4)
        workers.start()
    committer = GroupCommitter(gateway.database)
    committer.start()
    smtp_context = SmtpContext(
        settings=settings,
        database=gateway.database,
        blobs=gateway.blobs,
        queue=gateway.queue,
        trust=TrustCache(gateway.database),
        committer=committer,
        delivery=MailDelivery(gateway.blobs, gateway.queue, new_message_collector(gateway)),
        on_commit=workers.wake if workers is not None else (lambda: None),
    )
    host = settings.listeners.host
    services: list[Service] = []
    banner: list[str] = []
    listeners = settings.listeners
    # With SMTP worker processes, the main process leaves the operators' port to them: it
    # commits for them on SQLite and runs the job workers, IMAP and HTTP (issue 19).
    operators_port_here = not main or settings.smtp.processes == 1
    if listeners.smtp:
        if operators_port_here:
            services.append(OperatorListener(smtp_context, host, listeners.smtp))
        banner.append(
            f"  SMTP from operators (STARTTLS + client certificate)  {host}:{listeners.smtp}"
            + ("" if operators_port_here else f" ({settings.smtp.processes - 1} worker processes)")
        )
    authenticator = Authenticator(gateway.database, gateway.identity)
    if listeners.submission:
        services.append(
            SubmissionListener(
                smtp_context, host, listeners.submission, authenticator, implicit=False
            )
        )
        banner.append(
            f"  Submission (STARTTLS, AUTH)                          {host}:{listeners.submission}"
        )
    if listeners.submissions:
        services.append(
            SubmissionListener(
                smtp_context, host, listeners.submissions, authenticator, implicit=True
            )
        )
        banner.append(
            f"  Submission (implicit TLS, AUTH)                      {host}:{listeners.submissions}"
        )
    imap: ImapListeners | None = None
    if main and (listeners.imap or listeners.imaps):
        imap = ImapListeners(gateway)
        smtp_context.on_delivered = imap.notify_new_mail  # IDLE sees SMTP mail at commit
        services.append(imap)
        if listeners.imap:
            banner.append(
                f"  IMAP (STARTTLS)                                      {host}:{listeners.imap}"
            )
        if listeners.imaps:
            banner.append(
                f"  IMAP (implicit TLS)                                  {host}:{listeners.imaps}"
            )
    # A worker's deliveries wake the main process's IDLE sessions at commit too. Also on
    # PostgreSQL, where NOTIFY would wake them some 60-80 ms later: one code path, and the
    # duplicate wake-up costs what the main process's own deliveries already cost (hook + NOTIFY).
    wake_sender = None if main else await WakeSender.open(on_lost=stop.set)
    if wake_sender is not None:
        smtp_context.on_delivered = wake_sender.send
    relayed = None if commit_fd is None else await RelayedDeliveries.connect(commit_fd, stop.set)
    if relayed is not None:
        smtp_context.relay = relayed.deliver
    for service in services:
        await service.start()
    smtp_workers = None
    if main and settings.smtp.processes > 1:

        def max_frame() -> int:
            return 2 * smtp_context.settings.smtp.max_message_bytes + FRAME_OVERHEAD_BYTES

        one_writer = gateway.database.dialect == "sqlite"  # SQLite: this process commits
        smtp_workers = SmtpWorkers(
            settings.home,
            settings.smtp.processes - 1,
            imap,
            smtp_context.deliver if one_writer else None,
            max_frame,
        )
        smtp_workers.start()
    http = _http_server(gateway) if main else None
    reloader = _wire_reload(gateway, smtp_context, workers, imap, http)
    loop.add_signal_handler(signal.SIGHUP, _on_hangup, reloader, smtp_workers)
    tasks: list[asyncio.Task[None]] = []
    if http is not None:
        tasks.append(asyncio.create_task(http.serve(), name="http"))
        scheme = "https" if settings.listeners.http_tls else "http"
        banner.append(f"  HTTP        {scheme}://{host}:{settings.listeners.http}/healthz")
        banner.append(f"  Webmail     {scheme}://{host}:{settings.listeners.http}/webmail")
    if main:
        print(f"Caducée gateway running (home {settings.home})", flush=True)
        for line in banner:
            print(line, flush=True)
    # Everything built so far (modules, mappers, caches' classes) lives as long as the process:
    # out of the collector's sight, a full collection scans only what serving allocates.
    gc.freeze()
    log.info("gateway started", extra={"home": str(settings.home), "role": role})
    stop_waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [task for task in done if task is not stop_waiter and task.exception() is not None]
    log.info("gateway stopping", extra={"role": role})
    await asyncio.gather(*(service.stop() for service in services))
    if wake_sender is not None:
        wake_sender.close()
    if relayed is not None:
        await relayed.close()
    if smtp_workers is not None:
        await smtp_workers.stop()
    if http is not None:
        http.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(committer.stop)
    if workers is not None:
        await asyncio.to_thread(workers.stop)
    stop_waiter.cancel()
    log.info("gateway stopped", extra={"role": role})
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
        asyncio.run(serve(gateway, args.role, args.commit_fd))
    finally:
        gateway.close()
    return 0
