"""Issue 12, J2: a failed TLS handshake on the operators' port is logged once, with the
client's address and the reason (unknown CA, expired...), not as a bare "session error"."""

from __future__ import annotations

import contextlib
import imaplib
import json
import smtplib
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from caducee.gateway import pki
from caducee.gateway.tls import handshake_failure
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until


def _client_context(gateway: ServedGateway, issued: pki.Issued, folder: Path) -> ssl.SSLContext:
    cert, key = folder / "client.pem", folder / "client.key"
    pki.save(issued, cert, key)
    context = gateway.tls_context()
    context.load_cert_chain(str(cert), str(key))
    return context


def _try_starttls(gateway: ServedGateway, context: ssl.SSLContext) -> None:
    """STARTTLS with ``context``; the gateway is expected to end the handshake."""
    client = smtplib.SMTP(
        "127.0.0.1", gateway.ports["smtp"], local_hostname="mx." + gateway.peer["domain"]
    )
    try:
        client.ehlo()
        with pytest.raises((ssl.SSLError, smtplib.SMTPException, ConnectionError, OSError)):
            client.starttls(context=context)
            client.ehlo()  # TLS 1.3: the client may learn only at its next read
    finally:
        client.close()


def _tls_failures(gateway: ServedGateway) -> list[dict[str, Any]]:
    lines = []
    for line in gateway.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("message") == "tls handshake failed":
                lines.append(entry)
    return lines


def _failure_with(gateway: ServedGateway, reason: str) -> list[dict[str, Any]]:
    return [entry for entry in _tls_failures(gateway) if entry.get("reason") == reason]


def test_j2_unknown_ca_handshake_failure_is_logged_with_client_and_reason(
    gateway: ServedGateway, tmp_path: Path
) -> None:
    stranger = pki.create_ca("Stranger CA", "Stranger")
    leaf = pki.issue(
        stranger, "mx.stranger.example", organisation="Stranger", dns_names=["stranger.example"]
    )
    _try_starttls(gateway, _client_context(gateway, leaf, tmp_path))

    found = wait_until(
        lambda: _failure_with(gateway, "unknown-ca"),
        timeout=15,
        message=lambda: "no tls failure line: " + gateway.log()[-3000:],
    )
    assert len(found) == 1
    assert found[0]["client"] == "127.0.0.1"
    assert found[0]["port"] == gateway.ports["smtp"]
    assert found[0]["level"] == "warning"
    assert "session error" not in gateway.log()


def test_j2_expired_client_certificate_is_logged_with_client_and_reason(
    gateway: ServedGateway, tmp_path: Path
) -> None:
    home_ca = pki.load(gateway.home / "tls" / "ca.pem", gateway.home / "tls" / "ca.key")
    expired = pki.issue(
        home_ca,
        "mx." + gateway.peer["domain"],
        organisation="Expired",
        dns_names=[gateway.peer["domain"]],
        days=1,
        not_before=datetime.now(UTC) - timedelta(days=10),
    )
    _try_starttls(gateway, _client_context(gateway, expired, tmp_path))

    found = wait_until(
        lambda: _failure_with(gateway, "expired"),
        timeout=15,
        message=lambda: "no tls failure line: " + gateway.log()[-3000:],
    )
    assert len(found) == 1
    assert found[0]["client"] == "127.0.0.1"
    assert "expired" in found[0]["detail"]
    assert "session error" not in gateway.log()


def _no_shared_cipher(gateway: ServedGateway) -> ssl.SSLContext:
    """A client offering only suites the gateway does not accept (B1: no ChaCha20 in TLS 1.2)."""
    context = gateway.tls_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
    return context


def test_j2_submission_starttls_failure_is_logged(gateway: ServedGateway) -> None:
    before = len(_failure_with(gateway, "no-shared-cipher"))
    client = smtplib.SMTP("127.0.0.1", gateway.ports["submission"])
    try:
        client.ehlo()
        with pytest.raises((ssl.SSLError, smtplib.SMTPException, ConnectionError, OSError)):
            client.starttls(context=_no_shared_cipher(gateway))
    finally:
        client.close()

    found = wait_until(
        lambda: [
            e
            for e in _failure_with(gateway, "no-shared-cipher")[before:]
            if e["port"] == gateway.ports["submission"]
        ],
        timeout=15,
        message=lambda: "no tls failure line: " + gateway.log()[-3000:],
    )
    assert len(found) == 1 and found[0]["client"] == "127.0.0.1"


def test_j2_imap_starttls_failure_is_logged(gateway: ServedGateway) -> None:
    client = imaplib.IMAP4("127.0.0.1", gateway.ports["imap"], timeout=30)
    try:
        with pytest.raises((ssl.SSLError, imaplib.IMAP4.error, ConnectionError, OSError)):
            client.starttls(ssl_context=_no_shared_cipher(gateway))
    finally:
        with contextlib.suppress(OSError):  # the failed wrap may have closed the socket
            client.shutdown()

    found = wait_until(
        lambda: [
            e
            for e in _failure_with(gateway, "no-shared-cipher")
            if e["port"] == gateway.ports["imap"]
        ],
        timeout=15,
        message=lambda: "no tls failure line: " + gateway.log()[-3000:],
    )
    assert len(found) == 1 and found[0]["client"] == "127.0.0.1"
    assert found[0]["logger"].startswith("caducee.imap")


def test_j2_handshake_failure_reasons() -> None:
    unknown = ssl.SSLCertVerificationError(1, "certificate verify failed")
    unknown.verify_code = 20
    unknown.verify_message = "unable to get local issuer certificate"
    assert handshake_failure(unknown)["reason"] == "unknown-ca"
    revoked = ssl.SSLCertVerificationError(1, "certificate verify failed")
    revoked.verify_code = 23
    revoked.verify_message = "certificate revoked"
    assert handshake_failure(revoked)["reason"] == "revoked"
    old = ssl.SSLError(1, "unsupported protocol")
    old.reason = "UNSUPPORTED_PROTOCOL"
    assert handshake_failure(old) == {
        "reason": "protocol-too-old",
        "detail": "UNSUPPORTED_PROTOCOL",
    }
    assert handshake_failure(ConnectionResetError())["reason"] == "connection-closed"
