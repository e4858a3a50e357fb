"""The e-mail sender of patient notifications: the operator's smarthost, over SMTP (G1).

Notifications leave the trust space (they go to the patient's personal address), so they
are handed to a relay the operator configures (``[notifications] smarthost_*``), never sent
straight to the patient's provider and never through the MSSanté relay. ``aiosmtplib`` does
the SMTP; the notification job handler runs in a worker thread, so each send runs its own
short event loop. TLS is verified against the system trust store or a configured CA file;
``none`` exists for a local development relay only.
"""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

TLS_MODES = ("starttls", "tls", "none")


class SmarthostSender:
    """Sends one message to the configured smarthost per call; raises on any failure."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: str = "starttls",
        username: str = "",
        password: str = "",
        ca_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        if tls not in TLS_MODES:
            raise ValueError(f"smarthost_tls must be one of {', '.join(TLS_MODES)}")
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.password = password
        self.ca_file = ca_file
        self.timeout = timeout

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    async def _send(self, message: EmailMessage, sender: str, recipient: str) -> None:
        secure = self.tls != "none"
        await aiosmtplib.send(
            message,
            sender=sender,
            recipients=[recipient],
            hostname=self.host,
            port=self.port,
            use_tls=self.tls == "tls",
            start_tls=self.tls == "starttls",
            tls_context=self._context() if secure else None,
            username=self.username or None,
            password=self.password or None,
            timeout=self.timeout,
        )

    def send(self, message: EmailMessage, sender: str, recipient: str) -> None:
        """Blocking send, for the worker thread that runs the notification job."""
        asyncio.run(self._send(message, sender, recipient))
