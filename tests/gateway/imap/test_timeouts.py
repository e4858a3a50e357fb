"""H1: a connection that sends nothing is closed with BYE (RFC 3501 §5.4 autologout)."""

from __future__ import annotations

import asyncio

from tests.harness.served import ServedGateway, in_process_imap_listener


def test_h1_silent_connection_gets_autologout(imap_gateway: ServedGateway) -> None:
    imap = in_process_imap_listener(imap_gateway, login_timeout=0.5)
    listener, port = imap.listener, imap.port

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
        imap.close()
    assert lines[0].startswith(b"* OK ")
    assert lines[1] == b"* BYE Autologout: no command for too long.\r\n"
    assert len(lines) == 2  # then the server closed the connection
