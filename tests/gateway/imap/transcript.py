"""Byte-level IMAP dialogues for protocol tests (pymap's transcript style, over real TLS)."""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import ssl

_LITERAL = re.compile(rb"~?\{(\d+)\}\r\n$")


class ImapTranscript:
    """A raw IMAP client: send exact lines, read whole responses (literals included)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        timeout: float = 30.0,
    ) -> None:
        sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout
        )
        if implicit_tls is not None:
            sock = implicit_tls.wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock = sock
        self.buffer = b""
        self.log: list[bytes] = []
        self._tags = (f"t{n}" for n in itertools.count(1))

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk

    def line(self) -> bytes:
        """One response line, with any literal it announces appended to it."""
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        line += b"\r\n"
        while (match := _LITERAL.search(line)) is not None:
            size = int(match.group(1))
            while len(self.buffer) < size:
                self._fill()
            line += self.buffer[:size]
            self.buffer = self.buffer[size:]
            while b"\r\n" not in self.buffer:
                self._fill()
            rest, _, self.buffer = self.buffer.partition(b"\r\n")
            line += rest + b"\r\n"
        self.log.append(b"S: " + line)
        return line

    def send(self, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.log.append(b"C: " + raw)
        self.sock.sendall(raw)

    def command(self, text: bytes | str) -> list[bytes]:
        """Send ``<tag> text`` and return every line up to and including the tagged one."""
        tag = next(self._tags).encode()
        body = text.encode() if isinstance(text, str) else text
        self.send(tag + b" " + body + b"\r\n")
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def ok(self, text: bytes | str) -> list[bytes]:
        """Like :meth:`command`, asserting a tagged OK."""
        lines = self.command(text)
        assert lines[-1].split(b" ", 2)[1] == b"OK", self.dump()
        return lines

    def starttls(self, context: ssl.SSLContext) -> None:
        self.ok("STARTTLS")
        assert not self.buffer
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def dump(self) -> str:
        return b"".join(self.log).decode("utf-8", "replace")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
