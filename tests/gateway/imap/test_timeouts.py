"""H1: a connection that sends nothing is closed with BYE (RFC 3501 §5.4 autologout)."""

from __future__ import annotations

import asyncio

from caducee.gateway.imap.config import CaduceeImapConfig
from caducee.gateway.imap.events import MailboxEvents
from caducee.gateway.imap.server import ImapListener
from caducee.gateway.imap.session import ImapBackend, Login
from caducee.gateway.tls import server_context
from caducee.mailboxes.imap_store import ImapStore
from tests.harness.served import ServedGateway, free_port


def test_h1_silent_connection_gets_autologout(imap_gateway: ServedGateway) -> None:
    components = imap_gateway.components()
    store = ImapStore(
        components.database, components.blobs, components.queue, reporting_host="test"
    )
    backend = ImapBackend(store, MailboxEvents(), components.identity, workers=1)
    tls = server_context(components.settings)
    port = free_port()
    config = CaduceeImapConfig(
        host="127.0.0.1", port=port, hostname="test", ssl_context=tls, max_append_len=1000
    )
    listener = ImapListener(
        host="127.0.0.1",
        port=port,
        implicit_tls=False,
        config=config,
        login=Login(backend),
        tls=tls,
        login_timeout=0.5,
    )

    async def scenario() -> list[bytes]:
        await listener.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            lines = [await reader.readline()]
            while line := await asyncio.wait_for(reader.readline(), 5):
                lines.append(line)
            writer.close()
            return lines
        finally:
            await listener.stop(grace=1)

    try:
        lines = asyncio.run(scenario())
    finally:
        backend.close()
        components.close()
    assert lines[0].startswith(b"* OK ")
    assert lines[1] == b"* BYE Autologout: no command for too long.\r\n"
    assert len(lines) == 2  # then the server closed the connection
