"""Issue 12 point 3: bounded resources on every listener, tried as a hostile client would.

A served demo home with small caps (set through ``CADUCEE_<SECTION>__<KEY>``):

* 1,000 connections from 127.0.0.1 to SMTP, IMAP and HTTP: those beyond the per-IP cap
  are refused with the protocol's answer (``421 4.7.0``, ``* BYE [UNAVAILABLE]``, 503
  problem+json) while a client from 127.0.0.2 is still served; once the crowd leaves,
  127.0.0.1 is served again;
* the SMTP DATA budget: a second big DATA while a first holds the budget gets
  ``451 4.3.1``; once the first is done, a retry is accepted;
* the HTTP body limit: a huge ``Content-Length`` is answered 413 before a byte of the body
  is sent; a chunked body is cut at the limit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import imaplib
import json
import resource
import smtplib
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from caducee.gateway.limits import ConnectionLimiter, DataBudget, client_key
from caducee.gateway.smtp.protocol import CaduceeSMTP
from tests.harness.served import ServedGateway, in_process_imap_listener, prepare_demo
from tests.harness.waiting import wait_until

CROWD = 1000
PER_IP = 50
DATA_BUDGET = 1_000_000
BODY_LIMIT = 65536
OTHER_CLIENT = "127.0.0.2"

LIMITS_ENV = {
    "CADUCEE_SMTP__MAX_CONNECTIONS_PER_IP": str(PER_IP),
    "CADUCEE_IMAP__MAX_CONNECTIONS_PER_IP": str(PER_IP),
    "CADUCEE_HTTP__MAX_CONNECTIONS_PER_IP": str(PER_IP),
    "CADUCEE_SMTP__MAX_DATA_IN_FLIGHT_BYTES": str(DATA_BUDGET),
    "CADUCEE_HTTP__MAX_BODY_BYTES": str(BODY_LIMIT),
    # Keep the admitted HTTP connections open while the crowd comes in.
    "CADUCEE_HTTP__KEEP_ALIVE_SECONDS": "600",
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any) -> Iterator[ServedGateway]:
    """A served demo home with small connection caps, DATA budget and body limit."""
    home = tmp_path_factory.mktemp("limits") / "home"
    served = prepare_demo(
        home, pg_schemas.new() if pg_schemas is not None else None, extra_env=LIMITS_ENV
    )
    served.start()
    try:
        yield served
    finally:
        served.stop_all()


@pytest.fixture(scope="module", autouse=True)
def enough_file_descriptors() -> Iterator[None]:
    """Room for a crowd of sockets in this process (the soft limit may be 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = CROWD + 512
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    sock.settimeout(30)
    return sock


def first_line(sock: socket.socket) -> bytes:
    """The first line the server sends (b"" if it closes first)."""
    data = b""
    while b"\n" not in data:
        try:
            chunk = sock.recv(1024)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0] + b"\n" if b"\n" in data else data


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@contextlib.contextmanager
def crowd(port: int, opening: Any) -> Iterator[list[bytes]]:
    """``CROWD`` connections from 127.0.0.1, each until its first answer; closed at the end."""
    sockets: list[socket.socket] = []
    answers: list[bytes] = []
    try:
        for _ in range(CROWD):
            sock = connect(port)
            sockets.append(sock)
            answers.append(opening(sock))
        yield answers
    finally:
        for sock in sockets:
            sock.close()


def http_status(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: caducee\r\n\r\n")
    return first_line(sock)


def parse_http(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def is_problem(raw: bytes, status: int) -> bool:
    code, headers, body = parse_http(raw)
    if code != status or headers.get("content-type") != "application/problem+json":
        return False
    problem = json.loads(body)
    return bool(
        problem["status"] == status and problem["type"] and problem["title"] and problem["detail"]
    )


# -- connection caps ---------------------------------------------------------------------------


def test_smtp_caps_connections_per_ip(limited: ServedGateway) -> None:
    port = limited.ports["smtp"]
    with crowd(port, first_line) as answers:
        served = [a for a in answers if a.startswith(b"220 ")]
        refused = [a for a in answers if a.startswith(b"421 4.7.0 ")]
        assert len(served) == PER_IP
        assert len(refused) == CROWD - PER_IP, {a[:40] for a in answers}

        # The implicit-TLS submission port shares the cap: 421 4.7.0 right after the handshake.
        context = limited.tls_context()
        with (
            connect(limited.ports["submissions"]) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert first_line(tls).startswith(b"421 4.7.0 ")

        # Another address is served as usual: mutual TLS, a message accepted.
        client = smtplib.SMTP(
            "127.0.0.1",
            port,
            local_hostname="mx." + limited.peer["domain"],
            timeout=30,
            source_address=(OTHER_CLIENT, 0),
        )
        with client:
            client.starttls(context=limited.tls_context(client_cert=True))
            client.ehlo()
            refused_rcpt = client.sendmail(
                limited.peer["professional"],
                [limited.credentials["patient"]["address"]],
                limited.message(subject="Pendant la foule"),
            )
            assert not refused_rcpt

    # The crowd gone, 127.0.0.1 is served again.
    def greeted() -> bool:
        with connect(port) as sock:
            return first_line(sock).startswith(b"220 ")

    wait_until(greeted, timeout=30, message="127.0.0.1 not served again after the crowd left")


class _ImapFrom(imaplib.IMAP4):
    """imaplib's client, its socket bound to another loopback address."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(OTHER_CLIENT, 0)
        )


def test_imap_caps_connections_per_ip(limited: ServedGateway) -> None:
    port = limited.ports["imap"]
    with crowd(port, first_line) as answers:
        served = [a for a in answers if a.startswith(b"* OK")]
        refused = [a for a in answers if a.startswith(b"* BYE [UNAVAILABLE]")]
        assert len(served) == PER_IP
        assert len(refused) == CROWD - PER_IP, {a[:40] for a in answers}

        # Both IMAP ports share the cap: BYE over TLS right after the handshake on imaps.
        context = limited.tls_context()
        with (
            connect(limited.ports["imaps"]) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert first_line(tls).startswith(b"* BYE [UNAVAILABLE]")

        patient = limited.credentials["patient"]
        client = _ImapFrom("127.0.0.1", port, timeout=30)
        try:
            client.starttls(ssl_context=limited.tls_context())
            client.login(patient["address"], patient["password"])
            status, _ = client.select("INBOX", readonly=True)
            assert status == "OK"
        finally:
            client.logout()

    def greeted() -> bool:
        with connect(port) as sock:
            return first_line(sock).startswith(b"* OK")

    wait_until(greeted, timeout=30, message="127.0.0.1 not served again after the crowd left")


def test_http_caps_connections_per_ip(limited: ServedGateway) -> None:
    port = limited.ports["http"]
    with crowd(port, http_status) as answers:
        served = [a for a in answers if a.startswith(b"HTTP/1.1 200")]
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        assert len(served) == PER_IP
        assert len(refused) == CROWD - PER_IP, {a[:40] for a in answers}

        # The whole answer of one more: problem+json, and the connection closed.
        with connect(port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: caducee\r\n\r\n")
            assert is_problem(read_all(sock), 503)

        with connect(port, OTHER_CLIENT) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: caducee\r\nConnection: close\r\n\r\n")
            status, _, body = parse_http(read_all(sock))
            assert status == 200 and json.loads(body)["status"] == "ok"

    def answered() -> bool:
        with connect(port) as sock:
            return http_status(sock).startswith(b"HTTP/1.1 200")

    wait_until(answered, timeout=30, message="127.0.0.1 not served again after the crowd left")


# -- SMTP DATA in flight -----------------------------------------------------------------------


def _open_transaction(served: ServedGateway, size: int | None) -> smtplib.SMTP:
    client = served.smtp()
    options = [f"SIZE={size}"] if size is not None else []
    code, _ = client.mail(served.peer["professional"], options)
    assert code == 250
    code, _ = client.rcpt(served.credentials["patient"]["address"])
    assert code == 250
    return client


def _send_data(client: smtplib.SMTP, raw: bytes) -> tuple[int, bytes]:
    """The message after a 354, dot-stuffed and terminated; the server's reply."""
    client.send(smtplib.quotedata(raw.decode("latin-1")).encode("latin-1") + b"\r\n.\r\n")
    return client.getreply()


def test_data_in_flight_budget_declared_size(limited: ServedGateway) -> None:
    big = DATA_BUDGET * 8 // 10
    first = _open_transaction(limited, big)
    second = _open_transaction(limited, big)
    try:
        code, _ = first.docmd("DATA")
        assert code == 354  # the first holds 80% of the budget

        # The second would go over: 451 4.3.1 before a byte of its message is read.
        code, reply = second.docmd("DATA")
        assert code == 451 and reply.startswith(b"4.3.1 "), reply

        code, reply = _send_data(first, limited.message(subject="Premier"))
        assert code == 250, reply

        # The first is done: the retry (a new transaction) is accepted.
        refused = second.sendmail(
            limited.peer["professional"],
            [limited.credentials["patient"]["address"]],
            limited.message(subject="Second, réessayé"),
            mail_options=[f"SIZE={big}"],
        )
        assert not refused
    finally:
        first.close()
        second.close()


def test_data_in_flight_budget_counted_as_read(limited: ServedGateway) -> None:
    holder = _open_transaction(limited, DATA_BUDGET * 9 // 10)
    sender = _open_transaction(limited, None)  # no SIZE: counted as its bytes arrive
    try:
        code, _ = holder.docmd("DATA")
        assert code == 354
        code, _ = sender.docmd("DATA")
        assert code == 354
        attachment = ("compte-rendu.pdf", b"%PDF-1.4\n" + b"x" * 300_000, "application/pdf")
        code, reply = _send_data(sender, limited.message(attachment=attachment))
        assert code == 451 and reply.startswith(b"4.3.1 "), reply

        code, reply = _send_data(holder, limited.message(subject="Le détenteur"))
        assert code == 250, reply
        refused = sender.sendmail(
            limited.peer["professional"],
            [limited.credentials["patient"]["address"]],
            limited.message(attachment=attachment),
        )
        assert not refused
    finally:
        holder.close()
        sender.close()


# -- HTTP body limit ---------------------------------------------------------------------------


def _basic(served: ServedGateway) -> str:
    patient = served.credentials["patient"]
    return base64.b64encode(f"{patient['address']}:{patient['password']}".encode()).decode()


def test_http_body_limit_before_reading(limited: ServedGateway) -> None:
    with connect(limited.ports["http"]) as sock:
        sock.sendall(
            b"PUT /api/patient/notifications HTTP/1.1\r\nHost: caducee\r\n"
            b"Authorization: Basic " + _basic(limited).encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
        )
        # Not a byte of the announced 10 GB is sent: the answer comes, and the connection closes.
        assert is_problem(read_all(sock), 413)


def test_http_chunked_body_cut_at_limit(limited: ServedGateway) -> None:
    chunk = b" " * 16384
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)) + b"0\r\n\r\n"
    with connect(limited.ports["http"]) as sock:
        sock.sendall(
            b"PUT /api/patient/notifications HTTP/1.1\r\nHost: caducee\r\n"
            b"Authorization: Basic " + _basic(limited).encode() + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + body
        )
        assert is_problem(read_all(sock), 413)
    # Under the limit, the same route reads its body as usual.
    with connect(limited.ports["http"]) as sock:
        small = b"{}"
        sock.sendall(
            b"PUT /api/patient/notifications HTTP/1.1\r\nHost: caducee\r\nConnection: close\r\n"
            b"Authorization: Basic " + _basic(limited).encode() + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small)
        )
        status, _, _ = parse_http(read_all(sock))
        assert status != 413


def test_data_budget_released_when_the_client_leaves_during_data(limited: ServedGateway) -> None:
    big = DATA_BUDGET * 8 // 10
    leaver = _open_transaction(limited, big)
    code, _ = leaver.docmd("DATA")
    assert code == 354
    leaver.sock.sendall(b"Subject: partial\r\n\r\nnot finished")
    leaver.close()  # gone in the middle of the data

    def accepted() -> bool:
        client = _open_transaction(limited, big)
        try:
            code, _ = client.docmd("DATA")
            if code != 354:
                return False
            code, reply = _send_data(client, limited.message(subject="Après le départ"))
            assert code == 250, reply
            return True
        finally:
            client.close()

    wait_until(accepted, timeout=30, message="the DATA budget was not given back")


# -- total session time ------------------------------------------------------------------------


class _Quiet:
    """An aiosmtpd handler with no hooks (nothing is accepted past the greeting here)."""


def test_smtp_session_time_limit() -> None:
    async def scenario() -> list[bytes]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: CaduceeSMTP(
                _Quiet(),
                max_message_bytes=1024,
                max_session_seconds=0.5,
                hostname="mx.test",
                loop=loop,
            ),
            "127.0.0.1",
            0,
        )
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            lines = [await reader.readline()]
            writer.write(b"NOOP\r\n")  # an active client: only the total time ends it
            lines.append(await reader.readline())
            while line := await asyncio.wait_for(reader.readline(), 10):
                lines.append(line)
            writer.close()
            return lines
        finally:
            server.close()

    lines = asyncio.run(scenario())
    assert lines[0].startswith(b"220 ")
    assert lines[1].startswith(b"250 ")
    assert lines[-1] == b"421 4.4.2 mx.test Session time limit reached, closing\r\n"


def test_imap_session_time_limit(limited: ServedGateway) -> None:
    imap = in_process_imap_listener(limited, max_session_seconds=0.5)
    listener, port = imap.listener, imap.port

    async def scenario() -> list[bytes]:
        await listener.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            lines = [await reader.readline()]
            writer.write(b"a NOOP\r\n")  # active, well within the idle timeout
            lines.append(await reader.readline())
            while line := await asyncio.wait_for(reader.readline(), 10):
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
    assert lines[1].startswith(b"a OK")
    assert lines[-1] == b"* BYE Session time limit reached.\r\n"


# -- the counters --------------------------------------------------------------------------------


def test_client_keys() -> None:
    assert client_key(("127.0.0.1", 25)) == "127.0.0.1"
    assert client_key(("::ffff:192.0.2.7", 25, 0, 0)) == "192.0.2.7"
    assert client_key(("2001:db8::1", 25, 0, 0)) == client_key(("2001:db8::ffff", 2, 0, 0))
    assert client_key(("2001:db8::1", 25, 0, 0)) != client_key(("2001:db8:0:1::1", 25, 0, 0))
    assert client_key(None) == "unknown"


def test_connection_limiter_counts_and_releases() -> None:
    limiter = ConnectionLimiter(total=3, per_ip=2)
    assert limiter.admit("a") is None and limiter.admit("a") is None
    assert limiter.admit("a") == "per-ip"
    assert limiter.admit("b") is None
    assert limiter.admit("c") == "total"
    limiter.release("a")
    assert limiter.admit("c") is None
    assert limiter.open == 3 and limiter.per_client == {"a": 1, "b": 1, "c": 1}


def test_data_budget_lone_session_always_fits() -> None:
    budget = DataBudget(100)
    alone = budget.hold()
    assert alone.take(60) and alone.grow_to(500)  # alone: over the budget, still served
    other = budget.hold()
    assert not other.take(1)
    alone.release()
    assert other.take(80) and not budget.hold().take(30)
    other.release()
    assert budget.held == 0
