"""Issue 12, J: IMAP literals are bounded before they are read.

pymap 0.36.7 reads a non-synchronising literal ``{n+}`` whole before any check,
before login and in clear before STARTTLS (100 MB each), and sends ``+`` for any
synchronising APPEND literal up to APPENDLIMIT before login. The gateway checks
every literal when it is announced: ``[imap] max_literal_before_login`` before
login, APPENDLIMIT (RFC 7889) for APPEND after. Over the limit, a synchronising
literal gets ``NO [TOOBIG]`` instead of ``+``; a non-synchronising one gets
``BAD [TOOBIG]`` and the connection is closed (RFC 7888 §4).
"""

from __future__ import annotations

import re
import select
import socket
import ssl
from pathlib import Path

from tests.gateway.imap.transcript import ImapTranscript
from tests.harness.served import Account, ServedGateway

HUNDRED_MB = 100_000_000
MAX_GROWTH_KIB = 20 * 1024
FILLER = b"LITERALFILLER-" * 4681  # ~64 KiB, recognisable in a log


def _memory_kib(gateway: ServedGateway) -> dict[str, int]:
    process = gateway.process
    assert process is not None
    status = Path(f"/proc/{process.pid}/status").read_text(encoding="ascii")
    return {
        key: int(value.split()[0])
        for key, value in re.findall(r"^(VmRSS|VmHWM):\s+(.*)$", status, re.MULTILINE)
    }


def _report(label: str, before: dict[str, int], after: dict[str, int]) -> None:
    growth = {key: after[key] - before[key] for key in before}
    print(f"{label}: growth KiB {growth} (before {before})")  # shown with pytest -s
    assert growth["VmRSS"] < MAX_GROWTH_KIB, (before, after)
    assert growth["VmHWM"] < MAX_GROWTH_KIB, (before, after)


def _stream_then_read(sock: socket.socket, header: bytes, tag: bytes) -> bytes:
    """Announce a huge literal, stream data until the server speaks, return what it said.

    The socket has a 1 s timeout: a server that reads on silently fails the test.
    """
    sock.settimeout(1.0)
    sock.sendall(header)
    sent = 0
    while sent < HUNDRED_MB:
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        readable, _, _ = select.select([sock], [], [], 0)
        if readable or pending:
            break
        try:
            sent += sock.send(FILLER)
        except (TimeoutError, OSError):
            break  # the server stopped reading (or closed): see what it answered
    received = b""
    while not re.search(rb"(^|\r\n)" + re.escape(tag) + rb" [^\r\n]*\r\n", received):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    assert sent < HUNDRED_MB, "the server read the whole literal"
    return received


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_j_issue12_nonsync_literal_before_login_is_refused_before_reading(
    imap_gateway: ServedGateway,
) -> None:
    # The STARTTLS port, in clear, never logged in: the worst case of the issue.
    before = _memory_kib(imap_gateway)
    with socket.create_connection(("127.0.0.1", imap_gateway.ports["imap"]), timeout=5) as sock:
        assert sock.recv(4096).startswith(b"* OK")
        answer = _stream_then_read(sock, b"a LOGIN {100000000+}\r\n", b"a")
        assert re.search(rb"^a BAD \[TOOBIG\] ", answer, re.MULTILINE), answer
        assert b"* BYE" in answer
        assert _closed(sock)
    _report("LOGIN {100000000+} before login", before, _memory_kib(imap_gateway))
    assert b"LITERALFILLER" not in imap_gateway.log().encode()


def test_j_issue12_sync_literal_before_login_gets_no_instead_of_continuation(
    imap_gateway: ServedGateway,
) -> None:
    client = ImapTranscript("127.0.0.1", imap_gateway.ports["imap"], timeout=1.0)
    try:
        client.line()
        # Even an APPEND (which pymap bounds by APPENDLIMIT only) gets no "+" before login.
        for text in ("LOGIN {100000000}", "APPEND INBOX {20000}", "LOGIN {9000}"):
            lines = client.command(text)
            assert len(lines) == 1 and b" NO [TOOBIG] " in lines[0], client.dump()
        # The session goes on, and small literals still work.
        client.ok("CAPABILITY")
        client.send(b"x1 ID ({4}\r\n")
        assert client.line() == b"+ Literal string\r\n"
    finally:
        client.close()


def test_j_issue12_login_with_small_literals_still_works(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = ImapTranscript(
        "127.0.0.1", imap_gateway.ports["imaps"], implicit_tls=imap_gateway.tls_context()
    )
    try:
        client.line()
        user, password = patient.address.encode(), patient.password.encode()
        client.send(b"a LOGIN {%d+}\r\n%s {%d}\r\n" % (len(user), user, len(password)))
        assert client.line().startswith(b"+ ")
        client.send(password + b"\r\n")
        assert client.line().startswith(b"a OK "), client.dump()
        capability = b"".join(client.ok("CAPABILITY"))
        assert re.search(rb"APPENDLIMIT=\d+", capability)
        # After login, a literal over the pre-login limit is fine below APPENDLIMIT.
        message = b"Subject: ok\r\n\r\n" + b"x" * 20_000 + b"\r\n"
        lines = client.command(b"APPEND INBOX {%d+}\r\n%s" % (len(message), message))
        assert lines[-1].startswith(b"t2 OK"), client.dump()
    finally:
        client.close()


def _logged_in(gateway: ServedGateway, patient: Account) -> tuple[ImapTranscript, int]:
    client = ImapTranscript(
        "127.0.0.1", gateway.ports["imaps"], implicit_tls=gateway.tls_context(), timeout=5
    )
    client.line()
    lines = client.ok(f'LOGIN "{patient.address}" "{patient.password}"')
    capability = b"".join(lines) + b"".join(client.ok("CAPABILITY"))
    match = re.search(rb"APPENDLIMIT=(\d+)", capability)
    assert match, capability
    return client, int(match.group(1))


def test_j_rfc7889_append_over_appendlimit_is_refused_before_reading(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client, limit = _logged_in(imap_gateway, patient)
    try:
        assert limit < HUNDRED_MB
        client.sock.settimeout(1.0)
        # Synchronising: NO [TOOBIG] instead of "+", and the session goes on.
        lines = client.command(b"APPEND INBOX {%d}" % (limit + 1))
        assert len(lines) == 1 and b" NO [TOOBIG] " in lines[0], client.dump()
        client.ok("NOOP")
        # Non-synchronising, 100 MB streamed: BAD [TOOBIG] and closed, memory unchanged.
        before = _memory_kib(imap_gateway)
        answer = client.buffer + _stream_then_read(
            client.sock, b"big APPEND INBOX (\\Seen) {100000000+}\r\n", b"big"
        )
        assert re.search(rb"^big BAD \[TOOBIG\] ", answer, re.MULTILINE), answer
        assert _closed(client.sock)
        _report("APPEND {100000000+} after login", before, _memory_kib(imap_gateway))
    finally:
        client.close()
    assert b"LITERALFILLER" not in imap_gateway.log().encode()


def test_j_issue12_oversize_literal_outside_append_is_refused(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client, _ = _logged_in(imap_gateway, patient)
    try:
        client.sock.settimeout(1.0)
        client.ok("SELECT INBOX")
        # pymap's parser takes at most 4096 octets per string outside APPEND.
        lines = client.command(b"SEARCH TEXT {5000}")
        assert len(lines) == 1 and b" NO [TOOBIG] " in lines[0], client.dump()
        lines = client.command(b"SEARCH TEXT {4+}\r\nabcd")
        assert lines[-1].split(b" ", 2)[1] == b"OK", client.dump()
        answer = client.buffer + _stream_then_read(
            client.sock, b"s SEARCH TEXT {100000000+}\r\n", b"s"
        )
        assert re.search(rb"^s BAD \[TOOBIG\] ", answer, re.MULTILINE), answer
    finally:
        client.close()


def test_j_issue12_endless_line_is_refused(imap_gateway: ServedGateway) -> None:
    before = _memory_kib(imap_gateway)
    with socket.create_connection(("127.0.0.1", imap_gateway.ports["imap"]), timeout=5) as sock:
        assert sock.recv(4096).startswith(b"* OK")
        answer = _stream_then_read(sock, b"a LOGIN ", b"*")
        assert b"BAD [TOOBIG]" in answer or b"* BYE" in answer, answer
    _report("endless line before login", before, _memory_kib(imap_gateway))
