"""The accept path at speed (issue 19): what it changed that a client or IMAP can see.

* a multi-line reply (EHLO) leaves in one write, not one per line;
* MAIL and RCPT paths parse as aiosmtpd parses them (the accept path has its own copy of
  aiosmtpd's parser, without the class aiosmtpd defines at every call);
* after the commit, the operators' port tells the hook ``on_delivered`` which accounts got an
  INBOX entry — ``serve`` wires it to the IMAP server's IDLE wake-ups (H1), so IDLE sees the
  message at once instead of at its next poll. The listener here runs in the test's process
  on the served home (its own event loop in a thread), with a hook that records its calls.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket

from aiosmtpd.smtp import SMTP

from caducee.gateway.smtp.inbound import InboundHandler
from caducee.gateway.smtp.protocol import CaduceeSMTP
from caducee.gateway.smtp.submission import SubmissionHandler
from caducee.mailboxes.accounts.store import find_account
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

from .in_process import InProcessOperators


def _recv_reply(sock: socket.socket) -> bytes:
    """Bytes up to the end of one complete reply (a line whose code is followed by a space)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
        last = data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
        if data.endswith(b"\r\n") and last[3:4] == b" ":
            return data


def test_j3_multiline_ehlo_reply_arrives_in_one_read(gateway: ServedGateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.ports["smtp"]), timeout=30) as sock:
        assert _recv_reply(sock).startswith(b"220 ")
        sock.sendall(b"EHLO mx.labo-demo.mssante.fr\r\n")
        # One write on the loopback: the first read after the reply starts holds all of it.
        first = sock.recv(65536)
        lines = first.rstrip(b"\r\n").split(b"\r\n")
        assert len(lines) > 3, first
        assert all(line.startswith(b"250-") for line in lines[:-1]), first
        assert lines[-1].startswith(b"250 "), first
        sock.sendall(b"QUIT\r\n")
        assert _recv_reply(sock).startswith(b"221 ")


def _send(gateway: ServedGateway, port: int, to: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.starttls(context=gateway.tls_context(client_cert=True))
        refused = client.sendmail(gateway.peer["professional"], [to], raw)
    assert refused == {}


def test_h1_delivery_names_the_accounts_with_a_new_inbox_entry_after_commit(
    gateway: ServedGateway, operators: InProcessOperators
) -> None:
    patient = gateway.credentials["patient"]["address"]
    with operators.components.database.reading() as db:
        account = find_account(db, patient)
        assert account is not None
        account_id = account.id
    before = len(gateway.mailbox())
    _send(gateway, operators.port, patient, gateway.message(subject="Résultat de TSH"))
    # the 250 came back, so the commit happened: the entry is listed and the hook was told
    assert len(gateway.mailbox()) == before + 1
    wait_until(lambda: operators.told == [[account_id]], timeout=10)


def test_h1_a_held_copy_wakes_nobody(gateway: ServedGateway, operators: InProcessOperators) -> None:
    """E3: a patient's copy of a message with a document waits for filing: no entry yet."""
    patient = gateway.credentials["patient"]["address"]
    raw = gateway.message(
        subject="Compte rendu", attachment=("cr.pdf", b"%PDF-1.4\n%%EOF\n", "application/pdf")
    )
    _send(gateway, operators.port, patient, raw)
    wait_until(lambda: operators.told == [[]], timeout=10)


PATHS = [
    "<pro@labo-demo.mssante.fr> SIZE=4096",
    "<>",
    "pro@labo-demo.mssante.fr",
    '<"quoted local"@labo-demo.mssante.fr> BODY=8BITMIME',
    "<@relay.example:pro@labo-demo.mssante.fr>",
    "<a@[127.0.0.1]>",
    "  <pro@labo-demo.mssante.fr>",
    "<é@hôpital.fr> SMTPUTF8",
    "<" + "a" * 70 + "@labo-demo.mssante.fr>",
    "<unclosed@labo-demo.mssante.fr",
    "<a@b@c>",
    "garbage <x@y.fr>",
    "",
]


def test_b1_mail_and_rcpt_paths_parse_as_aiosmtpd_parses_them() -> None:
    """The accept path's own path parser (issue 19) keeps aiosmtpd's answers, limits included."""
    loop = asyncio.new_event_loop()
    try:
        ours = CaduceeSMTP(object(), max_message_bytes=1024, hostname="mx.test", loop=loop)
        theirs = SMTP(object(), hostname="mx.test", loop=loop)
        for limit in (0, 64):
            ours.local_part_limit = theirs.local_part_limit = limit
            for path in PATHS:
                assert ours._getaddr(path) == theirs._getaddr(path), (limit, path)
        # Both outcomes are exercised: a path over the local-part limit is refused.
        assert ours._getaddr(PATHS[8]) == (None, None)
        assert ours._getaddr(PATHS[0]) == ("pro@labo-demo.mssante.fr", "SIZE=4096")
    finally:
        loop.close()


def _found_by_a_full_scan(obj: object, prefix: str) -> set[str]:
    """The names aiosmtpd would find on ``obj`` without our short ``dir()`` (every class)."""
    return {name for name in object.__dir__(obj) if name.startswith(prefix)}


def test_c1_the_cheap_set_up_finds_every_command_mechanism_and_hook() -> None:
    """aiosmtpd's set-up per connection, made cheap (issue 19), still finds all it looked for:
    every SMTP command, every AUTH mechanism of the submission ports (C1), every hook."""
    loop = asyncio.new_event_loop()
    try:
        for handler_class in (InboundHandler, SubmissionHandler):
            handler = object.__new__(handler_class)
            ours = CaduceeSMTP(handler, max_message_bytes=1024, hostname="mx.test", loop=loop)
            assert {f"smtp_{name}" for name in ours._smtp_methods} == _found_by_a_full_scan(
                ours, "smtp_"
            )
            assert {f"handle_{name}" for name in ours._handle_hooks} == _found_by_a_full_scan(
                handler, "handle_"
            )
            mechanisms = _found_by_a_full_scan(ours, "auth_") | _found_by_a_full_scan(
                handler, "auth_"
            )
            assert {f"auth_{name}" for name in ours._auth_methods} == mechanisms
            assert ours._ehlo_hook_ver == "new"
        assert {"PLAIN", "LOGIN", "EXTERNAL"} <= set(ours._auth_methods)  # submission's last
    finally:
        loop.close()
