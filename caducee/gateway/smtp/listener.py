"""Open the SMTP sockets and stop them gracefully.

One asyncio server per port; each connection gets a fresh protocol object with
the TLS context of the current trust anchors (rebuilt when they change). On
shutdown the socket stops accepting, sessions in the middle of storing a
message finish and get their reply, then the remaining sessions are closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl

from caducee.gateway.smtp.connection import operator_tls_context
from caducee.gateway.smtp.context import SmtpContext
from caducee.gateway.smtp.inbound import InboundHandler
from caducee.gateway.smtp.protocol import CaduceeSMTP

log = logging.getLogger("caducee.smtp")

IDENT = "Caducée ESMTP"


class OperatorListener:
    """The operators' SMTP port (25 in production, 2525 in development)."""

    def __init__(self, context: SmtpContext, host: str, port: int) -> None:
        self.context = context
        self.host = host
        self.port = port
        self.server: asyncio.Server | None = None
        self.handler = InboundHandler(context)
        self._tls: tuple[str, ssl.SSLContext] | None = None
        self._sessions: set[CaduceeSMTP] = set()

    def _tls_context(self) -> ssl.SSLContext:
        anchors = self.context.trust.anchors_pem
        digest = hashlib.sha256(anchors.encode()).hexdigest()
        if self._tls is None or self._tls[0] != digest:
            self._tls = (digest, operator_tls_context(self.context.settings, anchors))
        return self._tls[1]

    def _protocol(self) -> CaduceeSMTP:
        settings = self.context.settings
        protocol = CaduceeSMTP(
            self.handler,
            max_message_bytes=settings.smtp.max_message_bytes,
            hostname=settings.gateway.hostname,
            ident=IDENT,
            tls_context=self._tls_context(),
            timeout=settings.smtp.timeout_seconds,
            enable_SMTPUTF8=True,
            loop=asyncio.get_running_loop(),
        )
        protocol.on_close = self._sessions.discard
        self._sessions.add(protocol)
        return protocol

    async def start(self) -> None:
        """Load the trust space and start accepting connections."""
        await self.context.trust.fresh()
        self.server = await asyncio.get_running_loop().create_server(
            self._protocol, self.host, self.port, reuse_address=True, reuse_port=True
        )
        log.info("smtp listening", extra={"port": self.port, "listener": "operators"})

    async def refresh_trust(self) -> None:
        """Reload the trust space if stale (new connections then use it)."""
        await self.context.trust.fresh()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop accepting; let messages being stored finish; close the rest."""
        if self.server is None:
            return
        self.server.close()
        deadline = asyncio.get_running_loop().time() + grace
        while self.context.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await asyncio.sleep(0)
        self.server = None
