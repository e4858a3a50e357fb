"""H1, C1, J2: credentials only over TLS, app passwords, STARTTLS hygiene, clean logs."""

from __future__ import annotations

import imaplib

import pytest

from tests.harness.served import Account, ServedGateway

from .transcript import ImapTranscript


def test_h1_logindisabled_before_starttls(imap_gateway: ServedGateway, patient: Account) -> None:
    client = ImapTranscript("127.0.0.1", imap_gateway.ports["imap"])
    try:
        greeting = client.line()
        assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
        assert b"LOGINDISABLED" in greeting and b"STARTTLS" in greeting
        assert b"AUTH=" not in greeting
        login = client.command(f'LOGIN "{patient.address}" "{patient.password}"')
        assert login[-1].split(b" ")[1] == b"NO"
        assert b"LOGIN is disabled" in login[-1]
        auth = client.command("AUTHENTICATE PLAIN")
        assert auth[-1].split(b" ")[1] == b"NO"
        assert client.command("SELECT INBOX")[-1].split(b" ")[1] == b"BAD"
        client.starttls(imap_gateway.tls_context())
        capability = client.ok("CAPABILITY")[0]
        assert b"LOGINDISABLED" not in capability and b"STARTTLS" not in capability
        assert b"AUTH=PLAIN" in capability and b"AUTH=LOGIN" in capability
        assert b"AUTH=CRAM-MD5" not in capability
        client.ok(f'LOGIN "{patient.address}" "{patient.password}"')
        capability = client.ok("CAPABILITY")[0]
        for extension in (
            b"IMAP4rev1",
            b"IDLE",
            b"UIDPLUS",
            b"MOVE",
            b"SPECIAL-USE",
            b"NAMESPACE",
            b"ENABLE",
            b"CONDSTORE",
            b"BINARY",
        ):
            assert b" " + extension in capability
    finally:
        client.close()


def test_h1_implicit_tls_port_offers_login_at_once(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = ImapTranscript(
        "127.0.0.1", imap_gateway.ports["imaps"], implicit_tls=imap_gateway.tls_context()
    )
    try:
        greeting = client.line()
        assert b"AUTH=PLAIN" in greeting
        assert b"STARTTLS" not in greeting and b"LOGINDISABLED" not in greeting
        assert client.command("STARTTLS")[-1].split(b" ")[1] == b"NO"
        client.ok(f'LOGIN "{patient.address}" "{patient.password}"')
    finally:
        client.close()


def test_c1_app_password_required(imap_gateway: ServedGateway, patient: Account) -> None:
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", imap_gateway.ports["imaps"], ssl_context=imap_gateway.tls_context()
    )
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(patient.address, patient.password + "x")
    client.login(patient.address.upper(), patient.password)
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_h1_authenticate_plain_after_starttls(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = imaplib.IMAP4("127.0.0.1", imap_gateway.ports["imap"])
    client.starttls(imap_gateway.tls_context())
    client.authenticate("PLAIN", lambda _: f"\0{patient.address}\0{patient.password}".encode())
    assert client.state == "AUTH"
    client.logout()


def test_h1_starttls_refuses_commands_pipelined_in_clear(imap_gateway: ServedGateway) -> None:
    """STARTTLS command injection: what follows STARTTLS in the same packet never runs."""
    client = ImapTranscript("127.0.0.1", imap_gateway.ports["imap"])
    try:
        client.line()
        client.send(b"a STARTTLS\r\nb CAPABILITY\r\n")
        answer = client.line()
        assert answer.startswith(b"a OK")
        with pytest.raises((ConnectionError, OSError)):
            for _ in range(3):
                client.line()
    finally:
        client.close()


def test_j2_protocol_lines_and_passwords_never_logged(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = imap_gateway.imap(patient)
    client.append("INBOX", None, None, b"Subject: Secret diagnosis\r\n\r\nConfidential body\r\n")
    client.select("INBOX")
    client.fetch("1", "(BODY[])")
    client.logout()
    for log in imap_gateway.home.glob("*.log"):
        text = log.read_text(errors="replace")
        assert patient.password not in text
        assert "Secret diagnosis" not in text and "Confidential body" not in text
