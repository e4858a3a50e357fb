"""Latency at a steady load: time to ``250`` and ``250`` → IMAP IDLE ``EXISTS`` (issue 19).

``smtp-source`` gives a throughput, not latencies. This probe sends 4 KiB messages at a fixed
rate (open loop: message ``i`` starts at ``i / rate`` whatever the server does), one per
connection, while one IMAP connection of the patient sits in ``IDLE`` on the INBOX:

* **time to 250**: from the client's last byte of data (``CRLF.CRLF``) to the ``250`` reply,
  what the server spends on the message (checks, encryption, the durable commit);
* **250 → EXISTS**: the acknowledgement times sorted, the ``j``-th one is matched with the
  moment the IDLE connection first announced ``EXISTS`` ≥ the count before the probe + ``j``
  (commits are in acknowledgement order up to a batch; a negative difference counts as 0).

Only the standard library: ``asyncio`` streams for both protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import statistics
import time
from dataclasses import dataclass

_EXISTS = re.compile(rb"^\* (\d+) EXISTS")


@dataclass
class LatencyResult:
    rate: float
    messages: int
    to_250_ms: list[float]
    to_exists_ms: list[float]
    missing_exists: int

    @staticmethod
    def p(values: list[float], q: float) -> float | None:
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]

    def summary(self) -> str:
        def fmt(values: list[float], q: int) -> str:
            value = self.p(values, q)
            return "—" if value is None else f"{value:.0f} ms"

        missing = f", {self.missing_exists} never announced" if self.missing_exists else ""
        return (
            f"{self.messages} × 4 KiB at {self.rate:.1f} msg/s: time to 250 p50 "
            f"{fmt(self.to_250_ms, 50)}, p99 {fmt(self.to_250_ms, 99)}; 250 → IDLE EXISTS "
            f"p50 {fmt(self.to_exists_ms, 50)}, p99 {fmt(self.to_exists_ms, 99)}{missing}"
        )


async def _expect(reader: asyncio.StreamReader, code: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            if not line.startswith(code):
                raise ConnectionError(f"expected {code!r}, got {line[:80]!r}")
            return line


async def _send_one(port: int, sender: str, recipient: str, index: int) -> tuple[float, float]:
    """One SMTP session; returns (seconds from end of data to 250, monotonic time of the 250)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _expect(reader, b"220")
        writer.write(b"EHLO latency.bench.example\r\n")
        await _expect(reader, b"250")
        writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
        await _expect(reader, b"250")
        writer.write(f"RCPT TO:<{recipient}>\r\n".encode())
        await _expect(reader, b"250")
        writer.write(b"DATA\r\n")
        await _expect(reader, b"354")
        stamp = time.time_ns()
        head = (
            f"From: {sender}\r\nTo: {recipient}\r\nSubject: latency {index}\r\n"
            f"Message-ID: <latency.{stamp}.{index}@bench.example>\r\n\r\n"
        ).encode()
        body = b"".join(b"%070d\r\n" % line for line in range(56))  # 4032 bytes
        writer.write(head + body + b".\r\n")
        await writer.drain()
        sent = time.monotonic()
        await _expect(reader, b"250")
        acked = time.monotonic()
        writer.write(b"QUIT\r\n")
        return acked - sent, acked
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class _Idle:
    """One IMAPS connection in IDLE on the INBOX, recording when each EXISTS count was seen."""

    def __init__(self) -> None:
        self.first_seen: dict[int, float] = {}
        self.count = 0
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, port: int, user: str, password: str) -> int:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the demo home's own certificate
        reader, self.writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        await reader.readline()
        quoted = password.replace("\\", "\\\\").replace('"', '\\"')
        self.writer.write(f'a1 LOGIN "{user}" "{quoted}"\r\n'.encode())
        await self._until(reader, b"a1 ")
        self.writer.write(b"a2 SELECT INBOX\r\n")
        await self._until(reader, b"a2 ")
        self.writer.write(b"a3 IDLE\r\n")
        await self._until(reader, b"+")
        self.task = asyncio.create_task(self._read(reader))
        return self.count

    async def _until(self, reader: asyncio.StreamReader, prefix: bytes) -> None:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("IMAP connection closed")
            self._note(line)
            if line.startswith(prefix):
                if prefix.startswith(b"a") and b" OK" not in line[:8]:
                    raise ConnectionError(f"IMAP refused: {line[:60]!r}")
                return

    def _note(self, line: bytes) -> None:
        match = _EXISTS.match(line)
        if match:
            count = int(match.group(1))
            now = time.monotonic()
            for seen in range(self.count + 1, count + 1):
                self.first_seen.setdefault(seen, now)
            self.count = max(self.count, count)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            self._note(line)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


async def _probe(
    *,
    smtp_port: int,
    imaps_port: int,
    sender: str,
    recipient: str,
    password: str,
    rate: float,
    messages: int,
    settle: float,
) -> LatencyResult:
    idle = _Idle()
    base = await idle.start(imaps_port, recipient, password)
    start = time.monotonic()

    async def scheduled(index: int) -> tuple[float, float]:
        await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
        return await _send_one(smtp_port, sender, recipient, index)

    try:
        results = await asyncio.gather(*(scheduled(i) for i in range(messages)))
        deadline = time.monotonic() + settle
        while idle.count < base + messages and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await idle.stop()
    acked = sorted(ack for _, ack in results)
    to_exists = []
    missing = 0
    for j, ack in enumerate(acked, start=1):
        seen = idle.first_seen.get(base + j)
        if seen is None:
            missing += 1
        else:
            to_exists.append(max(0.0, seen - ack) * 1000)
    return LatencyResult(
        rate=rate,
        messages=messages,
        to_250_ms=[delay * 1000 for delay, _ in results],
        to_exists_ms=to_exists,
        missing_exists=missing,
    )


def measure(
    *,
    smtp_port: int,
    imaps_port: int,
    sender: str,
    recipient: str,
    password: str,
    rate: float,
    messages: int,
    settle: float = 30.0,
) -> LatencyResult:
    """Run the probe (blocking); see the module's docstring."""
    return asyncio.run(
        _probe(
            smtp_port=smtp_port,
            imaps_port=imaps_port,
            sender=sender,
            recipient=recipient,
            password=password,
            rate=rate,
            messages=messages,
            settle=settle,
        )
    )
