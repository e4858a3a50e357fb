"""B1/B4 with Debian's swaks: a real third-party SMTP client, mutual TLS, a DKIM-signed file."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.harness.served import ServedGateway

pytestmark = pytest.mark.skipif(
    shutil.which("swaks") is None, reason="swaks is installed by make test"
)


def _swaks(gateway: ServedGateway, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(gateway.ports["smtp"]),
            "--ehlo",
            "mx.labo-demo.mssante.fr",
            "--from",
            gateway.peer["professional"],
            "--to",
            gateway.credentials["patient"]["address"],
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_b1_swaks_with_the_peer_certificate_delivers(
    gateway: ServedGateway, tmp_path: object
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    before = len(gateway.mailbox())
    message = tmp_path / "signed.eml"
    message.write_bytes(gateway.message(subject="Envoyé avec swaks"))
    result = _swaks(
        gateway,
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        gateway.credentials["ca_cert"],
        "--tls-cert",
        gateway.peer["cert"],
        "--tls-key",
        gateway.peer["key"],
        "--data",
        str(message),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<~  250 2.0.0 Ok: queued as" in result.stdout
    listed = gateway.mailbox()
    assert len(listed) == before + 1 and listed[-1]["subject"] == "Envoyé avec swaks"


def test_b1_swaks_without_client_certificate_is_refused_at_mail(gateway: ServedGateway) -> None:
    result = _swaks(
        gateway, "--tls", "--tls-ca-path", gateway.credentials["ca_cert"], "--quit-after", "MAIL"
    )
    assert "<~* 530 5.7.0 A client certificate of the trust space is required" in result.stdout
