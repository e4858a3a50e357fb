"""Bounded resources on the HTTP listener (issue 12): connections, bodies, time.

* :func:`limited_protocol` is uvicorn's h11 protocol with connection caps per
  process and per client address (``[http] max_connections``,
  ``max_connections_per_ip``): a connection over a cap is not counted, its
  request is answered ``503`` problem+json with ``Connection: close`` (the request
  head is read first, so the client gets the answer instead of a reset); a total
  connection time (``max_connection_seconds``: closed when idle, else after the
  response in progress); and the keep-alive timeout also applies to a new
  connection that has not sent its first request (uvicorn waits for it forever).
* :class:`BodyLimitMiddleware` bounds request bodies (``[http] max_body_bytes``)
  before they are read: a larger ``Content-Length`` is answered ``413`` at once,
  not a byte of the body read; a chunked body is counted as it is read and cut
  with ``413`` at the limit (unless the application has already started its
  response). Either way the connection is closed after the answer.

With ``[listeners] http_tls`` the protocol sees a connection after the TLS handshake.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from caducee.gateway.limits import ConnectionLimiter, client_key

log = logging.getLogger("caducee.http")

PROBLEM_JSON = "application/problem+json"
_TOO_MANY = {
    "total": "the gateway serves too many connections; try again later",
    "per-ip": "too many connections from your address; try again later",
}


def problem_message(status: int, title: str, detail: str) -> tuple[Message, Message]:
    """An RFC 9457 problem as the two ASGI messages of a response that closes the connection."""
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


async def _send_problem(send: Send, status: int, title: str, detail: str) -> None:
    start, body = problem_message(status, title, detail)
    await send(start)
    await send(body)


def _unavailable(reason: str) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await _send_problem(send, 503, "Service Unavailable", _TOO_MANY[reason])

    return app


def limited_protocol(
    limiter: ConnectionLimiter, max_connection_seconds: float
) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with ``limiter`` and a total connection time."""

    class LimitedH11Protocol(H11Protocol):
        _client_key: str | None = None
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            key = client_key(transport.get_extra_info("peername"))
            refusal = limiter.admit(key)
            if refusal is not None:
                log.info("http connection refused", extra={"reason": f"connections.{refusal}"})
                self.app = _unavailable(refusal)
            else:
                self._client_key = key
                self._deadline = self.loop.call_later(max_connection_seconds, self.shutdown)
            # No first request within the keep-alive timeout: closed, as between requests.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if self._client_key is not None:
                limiter.release(self._client_key)
                self._client_key = None
            super().connection_lost(exc)

    return LimitedH11Protocol


class _BodyTooLarge(Exception):
    """A request body went over the limit while it was read."""


class BodyLimitMiddleware:
    """Request bodies of at most ``max_bytes``, enforced before they are read (module doc).

    A webmail form that sends files (``multipart/form-data`` posted under ``/webmail/``) may
    carry up to ``upload_max_bytes`` (``[http] webmail_upload_max_bytes``): a patient adds a
    5 MB document or attaches files to a message; every other body keeps the small limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = max(max_bytes, upload_max_bytes or max_bytes)

    def _limit(self, scope: Scope) -> int:
        if scope.get("method") != "POST" or not str(scope.get("path", "")).startswith("/webmail/"):
            return self.max_bytes
        headers: Any = scope.get("headers", [])
        for name, value in headers:
            if name == b"content-type" and value.lower().startswith(b"multipart/form-data"):
                return self.upload_max_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._too_large(send, limit)
            return
        received = 0
        started = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now: an application (or a mounted one's error middleware)
                    # may catch the exception below and try to answer 500 instead.
                    if not started and not refused:
                        refused = True
                        await self._too_large(send, limit)
                    raise _BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except Exception:
            if not refused:
                raise

    async def _too_large(self, send: Send, limit: int) -> None:
        log.info("http request refused", extra={"reason": "max-body-bytes"})
        await _send_problem(
            send,
            413,
            "Content Too Large",
            f"the request body is larger than {limit} bytes",
        )


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers", [])
    for name, value in headers:
        if name == b"content-length":
            text = bytes(value).strip()
            # h11 has already refused a malformed Content-Length; be safe with huge ones.
            return int(text) if text.isdigit() and len(text) <= 18 else 10**18
    return None
