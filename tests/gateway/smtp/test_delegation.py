"""C2: after an ordinary login, MAIL FROM (and header From) may name a mailbox delegated to
the account (``caducee account delegate``); any other address is refused with 553 5.7.1."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

from tests.harness.served import ServedGateway


def _message(sender: str, to: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Renouvellement"
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    message.set_content("Bonjour,\nle renouvellement est prêt.\n")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def test_c2_mail_from_a_delegated_mailbox_after_a_plain_login(gateway: ServedGateway) -> None:
    pharmacy = gateway.credentials["pharmacy"]["address"]
    professional = gateway.credentials["professional"]["address"]
    remote = gateway.peer["professional"]

    with gateway.submit("professional") as client:  # AUTH without an authorization identity
        code, reply = client.mail(pharmacy)
        assert code == 553, reply
        assert b"5.7.1" in reply

    assert "may send as" in gateway.cli("account", "delegate", pharmacy, "--to", professional)
    try:
        with gateway.submit("professional") as client:
            assert client.mail(pharmacy)[0] == 250
            assert client.rcpt(remote)[0] == 250
            code, reply = client.data(_message(pharmacy, remote))
            assert code == 250, reply

        with gateway.submit("professional") as client:  # the account's own address still works
            assert client.mail(professional)[0] == 250
    finally:
        gateway.cli("account", "delegate", pharmacy, "--to", professional, "--revoke")

    with gateway.submit("professional") as client:  # revoked: refused again
        code, reply = client.mail(pharmacy)
        assert code == 553, reply


def test_c2_header_from_must_be_owned_or_delegated(gateway: ServedGateway) -> None:
    pharmacy = gateway.credentials["pharmacy"]["address"]
    professional = gateway.credentials["professional"]["address"]
    remote = gateway.peer["professional"]

    with gateway.submit("professional") as client:
        assert client.mail(professional)[0] == 250
        assert client.rcpt(remote)[0] == 250
        code, reply = client.data(_message(pharmacy, remote))
        assert code == 553, reply
        assert b"5.7.1" in reply


def test_c2_a_patient_cannot_send_as_a_delegated_professional(gateway: ServedGateway) -> None:
    professional = gateway.credentials["professional"]["address"]
    with gateway.submit("patient") as client:
        code, _reply = client.mail(professional)
        assert code == 553
