"""The HTTP application: liveness, readiness, Prometheus metrics and the APIs (K3).

Errors are ``application/problem+json`` (RFC 9457) so that every client gets
the same shape of refusal. Request bodies are bounded before they are read
(``[http] max_body_bytes``, :mod:`caducee.gateway.http.limits`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from caducee import __version__
from caducee.gateway.http.limits import BodyLimitMiddleware
from caducee.gateway.metrics import QueueBacklogCollector
from caducee.gateway.runtime import Gateway
from caducee.storage import schema
from caducee.storage.jobs import DEAD, DONE, READY, RUNNING

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str | None = None) -> JSONResponse:
    """An RFC 9457 problem response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


class QueueCollector(Collector):
    """Exposes job counts per state at scrape time (no content, only numbers)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "caducee_jobs", "Jobs in the durable queue by state", labels=["state"]
        )
        counts = self.gateway.queue.counts()
        for state in (READY, RUNNING, DONE, DEAD):
            family.add_metric([state], counts.get(state, 0))
        yield family


def build_http_app(gateway: Gateway, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    """The Starlette application served on the HTTP listener."""
    registry = CollectorRegistry()
    registry.register(QueueCollector(gateway))
    registry.register(QueueBacklogCollector(gateway.queue))
    registry.register(gateway.metrics)  # listeners, SMTP, jobs, blobs, database

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": "caducee", "version": __version__})

    def _ready() -> tuple[bool, str]:
        try:
            with gateway.database.read_engine.connect() as connection:  # never a write lock
                connection.execute(text("SELECT 1"))
            current = schema.current_revision(gateway.database)
        except Exception as error:  # any database failure means not ready
            return False, f"database unreachable ({type(error).__name__})"
        if current != schema.head_revision():
            return False, "database schema is not at the current revision"
        return True, "ready"

    async def readyz(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        ready, detail = await run_in_threadpool(_ready)
        if not ready:
            return problem(503, "Not ready", detail)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type="text/plain; version=0.0.4")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem(exc.status_code, str(exc.detail))

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        *(extra_routes or []),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error},
        middleware=[
            Middleware(
                BodyLimitMiddleware,
                max_bytes=gateway.settings.http.max_body_bytes,
                upload_max_bytes=gateway.settings.http.webmail_upload_max_bytes,
            )
        ],
    )
