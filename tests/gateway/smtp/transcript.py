"""Byte-level SMTP dialogues for protocol tests (pymap's transcript style, over real TLS)."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl


class Transcript:
    """A raw client: send exact bytes, read whole replies, assert on them."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout
        )
        self.buffer = b""
        self.log: list[str] = []

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def reply(self) -> str:
        """One complete (possibly multi-line) reply."""
        lines = []
        while True:
            line = self._line().decode("utf-8", "replace")
            lines.append(line)
            self.log.append(f"S: {line}")
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def send(self, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.log.append(f"C: {raw!r}")
        self.sock.sendall(raw)

    def command(self, line: str, expect: str) -> str:
        """Send one command line and check its reply against the regex ``expect``."""
        self.send(line + "\r\n")
        answer = self.reply()
        assert re.match(expect, answer), f"{line!r} -> {answer!r}; transcript:\n" + "\n".join(
            self.log
        )
        return answer

    def starttls(self, context: ssl.SSLContext, server_hostname: str = "127.0.0.1") -> None:
        self.command("STARTTLS", r"220 ")
        assert not self.buffer
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def closed_by_server(self) -> bool:
        """True when the server has closed the connection."""
        try:
            self.sock.settimeout(5)
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError, OSError):
            return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
