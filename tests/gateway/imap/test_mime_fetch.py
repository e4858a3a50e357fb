"""H1: FETCH of every MIME part of real mail, BODYSTRUCTURE, BINARY, parts inside message/rfc822.

The expected values come from the standard ``email`` package, independently of
the server's parser; the byte-exact transcript pins the wire format.
"""

from __future__ import annotations

import base64
import email
import quopri
import re
from email import policy

import pytest

from tests.harness.served import Account, ServedGateway

from .accounts import new_professional
from .mails import CDA, HTML, TEXT, XDM, forwarded_mdn, lab_report
from .transcript import ImapTranscript


def _value(lines: list[bytes], name: bytes) -> bytes | None:
    """The literal (or NIL) following ``name`` in a FETCH response."""
    data = b"".join(lines)
    start = data.find(name + b" ")
    assert start >= 0, data[:500]
    rest = data[start + len(name) + 1 :]
    if rest.startswith(b"NIL"):
        return None
    match = re.match(rb"~?\{(\d+)\}\r\n", rest)
    assert match is not None, rest[:100]
    return rest[match.end() : match.end() + int(match.group(1))]


@pytest.fixture(scope="module")
def report_mailbox(imap_gateway: ServedGateway) -> tuple[Account, bytes]:
    """A mailbox whose INBOX holds the lab report, delivered over SMTP as a lab would.

    A professional's: the samples name other patients than any test patient, and a patient's
    copy has them withheld (E3, E5; ``tests/gateway/smtp/test_withheld_e2e.py``).
    """
    account = new_professional(imap_gateway)
    raw = imap_gateway.message(to=account.address, subject="Résultats TSH", message=lab_report())
    imap_gateway.send(raw, account.address)
    return account, raw


@pytest.fixture
def session(imap_gateway: ServedGateway, report_mailbox: tuple[Account, bytes]) -> ImapTranscript:
    account, _ = report_mailbox
    client = ImapTranscript(
        "127.0.0.1", imap_gateway.ports["imaps"], implicit_tls=imap_gateway.tls_context()
    )
    client.line()
    client.ok(f'LOGIN "{account.address}" "{account.password}"')
    client.ok("EXAMINE INBOX")
    return client


def test_h1_fetch_every_part_of_a_lab_report(
    session: ImapTranscript, report_mailbox: tuple[Account, bytes]
) -> None:
    stored = _value(session.ok("FETCH 1 BODY.PEEK[]"), b"BODY[]")
    assert stored is not None and stored.endswith(report_mailbox[1])
    parsed = email.message_from_bytes(stored, policy=policy.default)
    parts = list(parsed.iter_parts())
    plain, html = list(parts[0].iter_parts())

    text_qp = _value(session.ok("FETCH 1 BODY.PEEK[1.1]"), b"BODY[1.1]")
    assert text_qp is not None and quopri.decodestring(text_qp).decode() == TEXT.replace(
        "\n", "\r\n"
    )
    assert (
        _value(session.ok("FETCH 1 BINARY.PEEK[1.1]"), b"BINARY[1.1]")
        == TEXT.replace("\n", "\r\n").encode()
    )
    html_qp = _value(session.ok("FETCH 1 BODY.PEEK[1.2]"), b"BODY[1.2]")
    assert html_qp is not None and quopri.decodestring(html_qp).decode().strip() == HTML.strip()

    mime = _value(session.ok("FETCH 1 BODY.PEEK[2.MIME]"), b"BODY[2.MIME]")
    assert mime is not None and b'filename="IHE_XDM.zip"' in mime and mime.endswith(b"\r\n\r\n")
    zipped = _value(session.ok("FETCH 1 BODY.PEEK[2]"), b"BODY[2]")
    assert zipped is not None and base64.b64decode(zipped) == XDM.read_bytes()
    assert _value(session.ok("FETCH 1 BINARY.PEEK[2]"), b"BINARY[2]") == XDM.read_bytes()
    size = session.ok("FETCH 1 BINARY.SIZE[2]")
    assert f"BINARY.SIZE[2] {len(XDM.read_bytes())}".encode() in b"".join(size)

    assert _value(session.ok("FETCH 1 BINARY.PEEK[3]"), b"BINARY[3]") == CDA.read_bytes()
    partial = session.ok("FETCH 1 BINARY.PEEK[3]<0.5>")
    assert b"BINARY[3]<0> {5}\r\n<?xml" in b"".join(partial)

    forwarded = _value(session.ok("FETCH 1 BODY.PEEK[4]"), b"BODY[4]")
    assert forwarded == forwarded_mdn()
    header = _value(session.ok("FETCH 1 BODY.PEEK[4.HEADER]"), b"BODY[4.HEADER]")
    assert header is not None and header == forwarded_mdn().split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    inner_text = _value(session.ok("FETCH 1 BODY.PEEK[4.1]"), b"BODY[4.1]")
    assert inner_text == b"Message Delivery Notification"
    notification = _value(session.ok("FETCH 1 BODY.PEEK[4.2]"), b"BODY[4.2]")
    assert notification is not None and notification.startswith(b"Disposition:automatic-action")
    inner_mime = _value(session.ok("FETCH 1 BODY.PEEK[4.2.MIME]"), b"BODY[4.2.MIME]")
    assert inner_mime is not None and b"message/disposition-notification" in inner_mime
    fields = _value(
        session.ok("FETCH 1 BODY.PEEK[4.HEADER.FIELDS (SUBJECT MESSAGE-ID)]"),
        b"BODY[4.HEADER.FIELDS (SUBJECT MESSAGE-ID)]",
    )
    assert fields is not None and fields.startswith(b"Subject: processed:Test Subject")
    assert b"Message-ID: <cad6c4e5" in fields and fields.endswith(b"\r\n\r\n")
    body_text = _value(session.ok("FETCH 1 BODY.PEEK[4.TEXT]"), b"BODY[4.TEXT]")
    assert body_text is not None and body_text.startswith(b"This is a multi-part message")

    assert _value(session.ok("FETCH 1 BODY.PEEK[5]"), b"BODY[5]") is None
    assert _value(session.ok("FETCH 1 BODY.PEEK[2.HEADER]"), b"BODY[2.HEADER]") is None
    assert plain.get_content() and html.get_content()


def test_h1_bodystructure_of_a_lab_report(session: ImapTranscript) -> None:
    lines = session.ok("FETCH 1 (BODYSTRUCTURE BODY.PEEK[1.1] BODY.PEEK[2] BODY.PEEK[4])")
    data = b"".join(lines)
    structure = data[data.index(b"BODYSTRUCTURE ") :]
    sizes = {
        name: len(_value(lines, name) or b"") for name in (b"BODY[1.1]", b"BODY[2]", b"BODY[4]")
    }
    assert re.search(
        rb'\(\("text" "plain" \("charset" "utf-8"\) NIL NIL "quoted-printable" %d \d+ '
        rb"NIL NIL NIL NIL\)" % sizes[b"BODY[1.1]"],
        structure,
    )
    assert b'("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable"' in structure
    assert b'"alternative"' in structure
    assert re.search(
        rb'\("application" "zip" NIL NIL NIL "base64" %d NIL \("attachment" \("filename" '
        rb'"IHE_XDM.zip"\)\) NIL NIL\)' % sizes[b"BODY[2]"],
        structure,
    )
    assert b'"text" "xml" ("charset" "us-ascii") NIL NIL "base64"' in structure
    # message/rfc822: its envelope, the encapsulated multipart/report, and its line count
    assert re.search(
        rb'\("message" "rfc822" NIL NIL NIL "7bit" %d \("Sat, 14 Oct 2017 04:02:25 -0700" '
        rb'"processed:Test Subject [0-9a-f-]+" \(\("Jean" NIL "Jean" "opsstation.lab"\)\)'
        % sizes[b"BODY[4]"],
        structure,
    )
    assert b'"report" ("boundary" "1c1983cc46bd440eaa7aebab441cf876" "report-type" ' in structure
    assert b'"mixed" ("boundary" ' in structure


def test_h1_envelope_keeps_encoded_words(session: ImapTranscript) -> None:
    data = b"".join(session.ok("FETCH 1 ENVELOPE"))
    assert b'"=?utf-8?q?R=C3=A9sultats?= TSH"' in data
    assert b'((NIL NIL "paul.bernard" "labo-demo.mssante.fr"))' in data


def test_h1_fetch_transcript_byte_exact(imap_gateway: ServedGateway, patient: Account) -> None:
    """A small mail with an attached message: the exact bytes of every answer."""
    message = (
        b"From: Lab <lab@labo-demo.mssante.fr>\r\n"
        b"To: patient@patient.mssante.fr\r\n"
        b"Subject: Test\r\n"
        b"Date: Mon, 02 Jun 2025 10:00:00 +0200\r\n"
        b"Message-ID: <t1@labo>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n'
        b"\r\n"
        b"preamble\r\n"
        b"--B\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"Hello\r\n"
        b"--B\r\n"
        b"Content-Type: message/rfc822\r\n"
        b"\r\n"
        b"Subject: Inner\r\n"
        b"From: x@y.fr\r\n"
        b"\r\n"
        b"Inner body\r\n"
        b"--B--\r\n"
    )
    client = ImapTranscript(
        "127.0.0.1", imap_gateway.ports["imaps"], implicit_tls=imap_gateway.tls_context()
    )
    try:
        client.line()
        client.ok(f'LOGIN "{patient.address}" "{patient.password}"')
        client.send(b"a APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
        assert client.line().startswith(b"a OK [APPENDUID ")
        client.ok("SELECT INBOX")
        assert client.ok("FETCH 1 BODYSTRUCTURE")[0] == (
            b'* 1 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 5 1 '
            b'NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 42 (NIL "Inner" '
            b'((NIL NIL "x" "y.fr")) ((NIL NIL "x" "y.fr")) ((NIL NIL "x" "y.fr")) NIL NIL NIL '
            b'NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 1 NIL NIL NIL '
            b'NIL) 4 NIL NIL NIL NIL) "mixed" ("boundary" "B") NIL NIL NIL))\r\n'
        )
        assert client.ok("FETCH 1 BODY")[0] == (
            b'* 1 FETCH (BODY (("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 5 1)'
            b'("message" "rfc822" NIL NIL NIL "7bit" 42 (NIL "Inner" ((NIL NIL "x" "y.fr")) '
            b'((NIL NIL "x" "y.fr")) ((NIL NIL "x" "y.fr")) NIL NIL NIL NIL NIL) ("text" "plain" '
            b'("charset" "us-ascii") NIL NIL "7bit" 10 1) 4) "mixed"))\r\n'
        )
        assert client.ok("FETCH 1 ENVELOPE")[0] == (
            b'* 1 FETCH (ENVELOPE ("Mon, 02 Jun 2025 10:00:00 +0200" "Test" (("Lab" NIL "lab" '
            b'"labo-demo.mssante.fr")) (("Lab" NIL "lab" "labo-demo.mssante.fr")) (("Lab" NIL '
            b'"lab" "labo-demo.mssante.fr")) ((NIL NIL "patient" "patient.mssante.fr")) NIL NIL '
            b'NIL "<t1@labo>"))\r\n'
        )
        # The CRLF before a boundary belongs to the boundary (RFC 2046 §5.1.1).
        assert client.ok("FETCH 1 BODY.PEEK[1]")[0] == b"* 1 FETCH (BODY[1] {5}\r\nHello)\r\n"
        assert client.ok("FETCH 1 BODY.PEEK[1.MIME]")[0] == (
            b"* 1 FETCH (BODY[1.MIME] {43}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n)\r\n"
        )
        assert client.ok("FETCH 1 BODY.PEEK[2]")[0] == (
            b"* 1 FETCH (BODY[2] {42}\r\nSubject: Inner\r\nFrom: x@y.fr\r\n\r\nInner body)\r\n"
        )
        assert client.ok("FETCH 1 BODY.PEEK[2.1]")[0] == (
            b"* 1 FETCH (BODY[2.1] {10}\r\nInner body)\r\n"
        )
        assert client.ok("FETCH 1 BODY.PEEK[2.HEADER]")[0] == (
            b"* 1 FETCH (BODY[2.HEADER] {32}\r\nSubject: Inner\r\nFrom: x@y.fr\r\n\r\n)\r\n"
        )
        assert client.ok("FETCH 1 BODY.PEEK[TEXT]<0.8>")[0] == (
            b"* 1 FETCH (BODY[TEXT]<0> {8}\r\npreamble)\r\n"
        )
        assert client.ok("FETCH 1 BINARY.PEEK[2.1]")[0] == (
            b"* 1 FETCH (BINARY[2.1] {10}\r\nInner body)\r\n"
        )
        assert client.ok("FETCH 1 RFC822.SIZE")[0] == b"* 1 FETCH (RFC822.SIZE %d)\r\n" % len(
            message
        )
        seen = client.ok("FETCH 1 BODY[1]")
        assert b"FLAGS (\\Recent \\Seen)" in b"".join(seen)
    finally:
        client.close()


def test_h1_binary_of_an_unknown_encoding_is_refused(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = imap_gateway.imap(patient)
    client.append(
        "INBOX",
        None,
        None,
        b"Subject: x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n"
        b"\r\nbegin 644 x\r\n",
    )
    client.select("INBOX")
    status, data = client.fetch("1", "(BINARY.PEEK[1])")
    assert status == "NO" and b"[UNKNOWN-CTE]" in data[0]
    status, data = client.fetch("1", "(BODY.PEEK[1])")
    assert status == "OK" and data[0][1] == b"begin 644 x\r\n"
    client.logout()
