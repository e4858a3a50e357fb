"""Inbound SMTP as operators really send it: STARTTLS, client certificates, DKIM (issue 19).

Run as root from the repository root::

    .venv/bin/python bench/smtp_inbound/tls.py [--messages-small 2000] [--messages-large 150]
        [--sessions 20] [--no-append]

The second profile of bench/smtp_inbound. ``run.py`` drives both servers in plaintext with
``smtp-source``, which speaks no TLS; here a load generator of this script does what an
operator's MTA does for every message: connect, ``EHLO``, ``STARTTLS`` with its client
certificate (a full TLS 1.2+ handshake per connection, no session resumption, on either
side), ``EHLO``, one message, ``QUIT``. Every message is DKIM-signed by the demo peer
operator and carries its own Message-ID.

* **Postfix** is the instance of ``run.py`` with TLS required (``smtpd_tls_security_level =
  encrypt``), the client certificate asked for and checked against the same CA, the same
  server certificate as Caducée; it does not verify DKIM (that takes a milter Debian's
  Postfix does not ship). Its figure is messages **delivered into the Maildir** per second.
* **Caducée** is a fresh ``caducee init --demo`` home with its defaults: mutual TLS on the
  operators' listener, the trust space checked, DKIM verified and required, job workers on.
  Its figure is messages **acknowledged** per second (``250`` after the durable commit).

The load generator shares the 2 CPUs with the server it drives: its CPU time is printed
for each run, so the servers' shares can be read off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import dkim
from run import (  # bench/smtp_inbound/run.py, beside this script
    POSTFIX_RECIPIENT,
    RESULTS_FILE,
    BenchError,
    Caducee,
    Postfix,
    caducee_binary,
    find_tool,
    free_ports,
    git_commit,
    large_message,
    log,
    machine,
    minimal_pdf,
    postfix_version,
)

SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]
SMALL_BODY = 4096
PDF_RAW_BYTES = 750 * 1024
LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "http")

TLS_MAIN_CF = """\
# TLS as an MSSanté operator's MTA is met: required, client certificate asked and checked.
smtpd_tls_security_level = encrypt
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_CAfile = {ca}
smtpd_tls_ask_ccert = yes
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_session_cache_database =
smtpd_tls_loglevel = 0
"""
TLS_MASTER_CF = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"


@dataclass
class TlsPostfix(Postfix):
    """``run.py``'s Postfix with TLS required and client certificates asked for."""

    cert: Path = Path()
    key: Path = Path()
    ca: Path = Path()

    def write_config(self) -> None:
        super().write_config()
        main = self.config / "main.cf"  # run.py's settings, with TLS in place of none
        main.write_text(
            main.read_text().replace("smtpd_tls_security_level = none\n", "")
            + TLS_MAIN_CF.format(cert=self.cert, key=self.key, ca=self.ca)
        )
        master = self.config / "master.cf"
        master.write_text(master.read_text() + TLS_MASTER_CF)


class SecureCaducee(Caducee):
    """``run.py``'s Caducée with the product's defaults: TLS and DKIM required."""

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env.pop("CADUCEE_SMTP__ALLOW_PLAINTEXT", None)
        env.pop("CADUCEE_SMTP__REQUIRE_DKIM", None)
        return env


@dataclass(frozen=True)
class Peer:
    """The demo peer operator: its professional, certificate and DKIM key."""

    sender: str
    domain: str
    selector: str
    dkim_key: bytes
    cert: Path
    key: Path


def peer_of(home: Path) -> Peer:
    credentials = json.loads((home / "demo" / "credentials.json").read_text())
    peer = credentials["peer"]
    return Peer(
        peer["professional"],
        peer["domain"],
        peer["dkim_selector"],
        Path(peer["dkim_key"]).read_bytes(),
        Path(peer["cert"]),
        Path(peer["key"]),
    )


def signed(peer: Peer, raw: bytes) -> bytes:
    """``raw`` (CRLF) with the peer's DKIM signature in front, as its MTA would send it."""
    signature = dkim.sign(
        raw,
        peer.selector.encode(),
        peer.domain.encode(),
        peer.dkim_key,
        include_headers=SIGNED_HEADERS,
    )
    return bytes(signature).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + raw


def small_messages(peer: Peer, recipient: str, count: int) -> list[bytes]:
    """``count`` 4 KiB reports, each with its own Message-ID, DKIM-signed."""
    line = "Compte rendu de biologie : valeurs dans les normes. "
    body = (line * (SMALL_BODY // len(line) + 1))[:SMALL_BODY]
    body = "\n".join(body[i : i + 76] for i in range(0, len(body), 76)) + "\n"
    messages = []
    for _ in range(count):
        message = EmailMessage()
        message.set_content(body)
        message["From"] = peer.sender
        message["To"] = recipient
        message["Subject"] = "Compte rendu (benchmark)"
        message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
        message["Message-ID"] = make_msgid(domain=peer.domain)
        raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        messages.append(signed(peer, raw))
    return messages


def large_messages(peer: Peer, recipient: str, count: int) -> list[bytes]:
    """``count`` ~1 MiB reports with a PDF (run.py's message), each with its own Message-ID."""
    template = large_message(peer.sender, recipient, minimal_pdf(PDF_RAW_BYTES))
    template = template.replace(b"\n", b"\r\n")
    messages = []
    for _ in range(count):
        header = f"Message-ID: {make_msgid(domain=peer.domain)}\r\n".encode()
        messages.append(signed(peer, header + template))
    return messages


# Load generation ------------------------------------------------------------------------------


class Refused(Exception):
    """A reply other than the one the dialogue expects."""


async def _reply(reader: asyncio.StreamReader, expected: int) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise Refused(f"connection closed, {expected} expected")
        if line[3:4] != b"-":
            break
    if int(line[:3]) != expected:
        raise Refused(line.decode(errors="replace").strip())


@dataclass(frozen=True)
class Target:
    """Where and how the load goes: a server's port, the client's TLS, the envelope."""

    port: int
    tls: ssl.SSLContext
    sender: str
    recipient: str


async def _send_one(target: Target, data: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    try:
        await _reply(reader, 220)
        writer.write(b"EHLO mta.labo-demo.mssante.fr\r\n")
        await _reply(reader, 250)
        writer.write(b"STARTTLS\r\n")
        await _reply(reader, 220)
        await writer.start_tls(target.tls, server_hostname="localhost")
        writer.write(b"EHLO mta.labo-demo.mssante.fr\r\n")
        await _reply(reader, 250)
        writer.write(f"MAIL FROM:<{target.sender}> SIZE={len(data)}\r\n".encode())
        await _reply(reader, 250)
        writer.write(f"RCPT TO:<{target.recipient}>\r\n".encode())
        await _reply(reader, 250)
        writer.write(b"DATA\r\n")
        await _reply(reader, 354)
        writer.write(data)
        writer.write(b".\r\n")
        await _reply(reader, 250)
        writer.write(b"QUIT\r\n")
        await _reply(reader, 221)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()  # the server may close first after 221


def _dot_stuffed(message: bytes) -> bytes:
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"


@dataclass
class Load:
    messages: int
    seconds: float
    generator_cpu: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


async def _drive(target: Target, messages: list[bytes], sessions: int) -> None:
    queue = iter(_dot_stuffed(m) for m in messages)

    async def worker() -> None:
        for data in queue:
            await _send_one(target, data)

    await asyncio.gather(*(worker() for _ in range(sessions)))


def drive(
    target: Target,
    messages: list[bytes],
    sessions: int,
    done: Callable[[], bool] | None = None,
    timeout: float = 600,
) -> Load:
    """Send every message over ``sessions`` parallel connections, one message each; the
    clock stops when all are answered and, with ``done``, when ``done()`` holds."""
    cpu = time.process_time()
    start = time.monotonic()
    asyncio.run(asyncio.wait_for(_drive(target, messages, sessions), timeout))
    if done is not None:
        while not done():
            if time.monotonic() - start > timeout:
                raise BenchError(f"not delivered after {timeout:.0f} s")
            time.sleep(0.02)
    return Load(len(messages), time.monotonic() - start, time.process_time() - cpu)


def client_context(ca: Path, peer: Peer) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # the dev CA's server certificate names the demo host
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(peer.cert), str(peer.key))
    return context


# The run ------------------------------------------------------------------------------------


@dataclass
class Line:
    label: str
    messages: int
    postfix: Load | None = None
    caducee: Load | None = None
    caducee_cpu_ms: float | None = None


def report(lines: list[Line], sessions: int, commit: str) -> str:
    host = machine()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    out = [
        "## SMTP inbound with TLS, client certificates and DKIM "
        f"(bench/smtp_inbound/tls.py) — {now}",
        "",
        f"- Machine: {host['cpus']} CPUs ({host['cpu']}), {host['memory']} RAM, {host['os']}, "
        f"Python {host['python']}; load average at the end {load[0]:.2f}",
        f"- Postfix {postfix_version()} (TLS required, client certificate asked, no DKIM check); "
        f"Caducée commit {commit} (demo home, defaults: mutual TLS, DKIM required, workers on)",
        f"- Load: this script's asyncio client, {sessions} sessions, one message per connection, "
        "STARTTLS + client certificate (full handshake each time), DKIM-signed messages",
        "",
        "| size | messages | Postfix msg/s (delivered) | Caducée msg/s (acknowledged) "
        "| Caducée/Postfix | load generator CPU (Postfix / Caducée run) "
        "| Caducée CPU per message |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for line in lines:
        postfix, caducee = line.postfix, line.caducee
        ratio = caducee.rate / postfix.rate if postfix and caducee and postfix.rate else 0.0
        out.append(
            f"| {line.label} | {line.messages} | {postfix.rate if postfix else 0:.1f} "
            f"| {caducee.rate if caducee else 0:.1f} | {ratio:.2f} "
            f"| {postfix.generator_cpu if postfix else 0:.1f} s / "
            f"{caducee.generator_cpu if caducee else 0:.1f} s "
            f"| {line.caducee_cpu_ms or 0:.1f} ms |"
        )
    return "\n".join(out) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages-small", type=int, default=2000)
    parser.add_argument("--messages-large", type=int, default=150)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--caducee", default=None, help="the caducee command")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    postfix_command = find_tool("postfix")
    with tempfile.TemporaryDirectory(prefix="caducee-bench-tls-") as folder:
        root = Path(folder)
        root.chmod(0o755)  # Postfix's unprivileged processes must traverse it
        ports = dict(zip(LISTENERS, free_ports(len(LISTENERS)), strict=True))
        caducee = SecureCaducee(caducee_binary(args.caducee), root / "caducee", ports)
        caducee.init()
        peer = peer_of(caducee.home)
        tls = client_context(caducee.home / "tls" / "ca.pem", peer)
        postfix_port = free_ports(1)[0]
        postfix = TlsPostfix(
            postfix_command,
            root / "postfix",
            postfix_port,
            cert=caducee.home / "tls" / "server.pem",
            key=caducee.home / "tls" / "server.key",
            ca=caducee.home / "tls" / "ca.pem",
        )
        lines = []
        log("signing the messages (DKIM) before the clock starts")
        sets = []
        for label, count, make in (
            ("4 KiB", args.messages_small, small_messages),
            ("1 MiB + PDF", args.messages_large, large_messages),
        ):
            if count <= 0:
                continue
            lines.append(Line(label, count))
            sets.append(
                (make(peer, POSTFIX_RECIPIENT, count + 1), make(peer, caducee.patient, count + 1))
            )
        try:
            postfix.start()
            to_postfix = Target(postfix_port, tls, peer.sender, POSTFIX_RECIPIENT)
            for line, (for_postfix, _) in zip(lines, sets, strict=True):
                probe = postfix.holds(postfix.delivered() + 1)
                drive(to_postfix, for_postfix[:1], 1, probe, 60)  # proves the set-up, warms up
                all_in = postfix.holds(postfix.delivered() + line.messages)
                line.postfix = drive(to_postfix, for_postfix[1:], args.sessions, all_in)
                log(f"Postfix {line.label}: {line.postfix.rate:.1f} msg/s delivered")
        finally:
            postfix.stop()
        try:
            caducee.start()
            to_caducee = Target(ports["smtp"], tls, peer.sender, caducee.patient)
            for line, (_, for_caducee) in zip(lines, sets, strict=True):
                drive(to_caducee, for_caducee[:1], 1)
                cpu = caducee.cpu_seconds()
                line.caducee = drive(to_caducee, for_caducee[1:], args.sessions)
                line.caducee_cpu_ms = (caducee.cpu_seconds() - cpu) * 1000 / line.messages
                log(f"Caducée {line.label}: {line.caducee.rate:.1f} msg/s acknowledged")
            stored = caducee.stored()
            expected = sum(line.messages + 1 for line in lines)
            if stored != expected:
                raise BenchError(f"Caducée stored {stored} messages, {expected} acknowledged")
        finally:
            caducee.stop()
    section = report(lines, args.sessions, git_commit())
    print(section)
    if not args.no_append:
        with RESULTS_FILE.open("a", encoding="utf-8") as results:
            results.write("\n" + section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
