"""Open the SMTP sockets and stop them gracefully.

One asyncio server per port (SO_REUSEPORT when ``[smtp] processes`` is above 1, so
that this gateway's processes share it, and only then); each connection gets a fresh
protocol object. The operators' port asks for client certificates verified against the
current trust anchors and CRL (its TLS context is rebuilt when either changes); the
submission ports authenticate users (AUTH only over TLS: after STARTTLS on one, implicit
TLS on the other) and ask for an optional client certificate verified the same way, for
APP mailboxes' ``AUTH EXTERNAL`` (C1); persons without one keep using passwords. On
shutdown a socket stops accepting, sessions in the middle of storing a message
finish and get their reply, then the remaining sessions are closed.

Every port of a process shares one connection limiter (``[smtp] max_connections``,
``max_connections_per_ip``) and one DATA budget (``max_data_in_flight_bytes``). On the
implicit-TLS port the protocol only sees a connection after the TLS handshake, so an
over-cap client there gets its ``421 4.7.0`` over TLS; elsewhere it gets it at once, in clear.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import warnings
from collections.abc import Callable
from typing import Any

from caducee.gateway.smtp.auth import Authenticator
from caducee.gateway.smtp.connection import operator_tls_context
from caducee.gateway.smtp.context import SmtpContext
from caducee.gateway.smtp.inbound import InboundHandler
from caducee.gateway.smtp.protocol import CaduceeSMTP
from caducee.gateway.smtp.submission import SubmissionHandler

log = logging.getLogger("caducee.smtp")

# aiosmtpd cannot see TLS that wraps the transport from the first byte, so on the
# implicit-TLS port it warns that AUTH is allowed "without TLS". It is not.
warnings.filterwarnings(
    "ignore", message="Requiring AUTH while not requiring TLS", category=UserWarning
)

IDENT = "Caducée ESMTP"


def tls_material_key(context: SmtpContext) -> str:
    """What a port's TLS context is built from: the anchors, the CRL file and its version.

    Checked on every connection, so new anchors, a renewed CRL file or another CRL path
    (after a reload) give new connections a new context, with no restart.
    """
    crl = context.settings.smtp.crl_file
    stamp = ""
    if crl:
        try:
            info = context.settings.path_of(crl).stat()
            stamp = f"{info.st_mtime_ns}:{info.st_size}"
        except OSError:
            stamp = "unreadable"
    material = "\0".join((context.trust.anchors_pem, crl, stamp))
    return hashlib.sha256(material.encode()).hexdigest()


class SmtpListener:
    """One SMTP port: a protocol factory, a socket, graceful stop."""

    def __init__(self, context: SmtpContext, host: str, port: int, name: str) -> None:
        self.context = context
        self.host = host
        self.port = port
        self.name = name
        self.server: asyncio.Server | None = None
        self._sessions: set[CaduceeSMTP] = set()

    def protocol_options(self) -> dict[str, Any]:
        """aiosmtpd options of this port (TLS context, authentication)."""
        raise NotImplementedError

    def handler(self) -> Any:
        """The aiosmtpd handler of this port."""
        raise NotImplementedError

    def implicit_tls(self) -> ssl.SSLContext | None:
        """The TLS context wrapping every connection, for implicit-TLS ports."""
        return None

    def _protocol(self) -> CaduceeSMTP:
        settings = self.context.settings
        protocol = CaduceeSMTP(
            self._handler,
            max_message_bytes=settings.smtp.max_message_bytes,
            hostname=settings.gateway.hostname,
            ident=IDENT,
            timeout=settings.smtp.timeout_seconds,
            connections=self.context.connections,
            data_budget=self.context.data_budget,
            max_session_seconds=settings.smtp.max_session_seconds,
            enable_SMTPUTF8=True,
            loop=asyncio.get_running_loop(),
            **self.protocol_options(),
        )
        protocol.listener = self.name
        protocol.on_close = self._sessions.discard
        self._sessions.add(protocol)
        return protocol

    async def start(self) -> None:
        """Load the trust space and start accepting connections."""
        await self.context.trust.fresh()
        self._handler = self.handler()
        factory: Callable[[], CaduceeSMTP] = self._protocol
        self.server = await asyncio.get_running_loop().create_server(
            factory,
            self.host,
            self.port,
            ssl=self.implicit_tls(),
            reuse_address=True,
            # Shared only when this gateway runs several SMTP processes: otherwise a second
            # gateway started by mistake on the same port (same user) would silently take
            # part of the mail instead of failing to start.
            reuse_port=self.context.settings.smtp.processes > 1,
        )
        log.info("smtp listening", extra={"port": self.port, "listener": self.name})

    async def stop(self, grace: float = 30.0) -> None:
        """Stop accepting; let messages being stored finish; close the rest."""
        if self.server is None:
            return
        self.server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.context.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await asyncio.sleep(0)
        self.server = None


class OperatorListener(SmtpListener):
    """The operators' port (25 in production): mutual TLS, no AUTH."""

    def __init__(self, context: SmtpContext, host: str, port: int) -> None:
        super().__init__(context, host, port, "operators")
        self._tls: tuple[str, ssl.SSLContext] | None = None

    def handler(self) -> Any:
        return InboundHandler(self.context)

    def _tls_context(self) -> ssl.SSLContext:
        anchors = self.context.trust.anchors_pem
        digest = tls_material_key(self.context)
        if self._tls is None or self._tls[0] != digest:
            self._tls = (digest, operator_tls_context(self.context.settings, anchors))
        return self._tls[1]

    def protocol_options(self) -> dict[str, Any]:
        return {"tls_context": self._tls_context()}


class SubmissionListener(SmtpListener):
    """A submission port: STARTTLS (587-style) or implicit TLS (465-style); AUTH required."""

    def __init__(
        self,
        context: SmtpContext,
        host: str,
        port: int,
        authenticator: Authenticator,
        *,
        implicit: bool,
    ) -> None:
        super().__init__(context, host, port, "submissions" if implicit else "submission")
        self.authenticator = authenticator
        self.implicit = implicit
        self._tls: tuple[str, ssl.SSLContext] | None = None

    def handler(self) -> Any:
        self._tls_context()  # built at start: an unreadable certificate fails here, not later
        return SubmissionHandler(self.context, self.authenticator)

    def _tls_context(self) -> ssl.SSLContext:
        """Our certificate; a client certificate asked for (optional), verified like a peer's."""
        anchors = self.context.trust.anchors_pem
        digest = tls_material_key(self.context)
        if self._tls is None or self._tls[0] != digest:
            context = operator_tls_context(self.context.settings, anchors)
            if self.implicit:
                context.sni_callback = self._current
            self._tls = (digest, context)
        return self._tls[1]

    def _current(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        """Implicit TLS: a handshake started with an older context continues with the current
        one (trust anchors changed since the socket was opened)."""
        current = self._tls_context()
        if current is not context:
            ssl_object.context = current

    def implicit_tls(self) -> ssl.SSLContext | None:
        return self._tls_context() if self.implicit else None

    def protocol_options(self) -> dict[str, Any]:
        return {
            # STARTTLS port: AUTH only after STARTTLS. Implicit TLS: the transport is TLS
            # from the first byte (aiosmtpd cannot see it, hence require_tls off there).
            "tls_context": None if self.implicit else self._tls_context(),
            "auth_required": True,
            "auth_require_tls": not self.implicit,
        }
