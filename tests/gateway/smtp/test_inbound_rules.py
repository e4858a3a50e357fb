"""Inbound SMTP from the trust space: each rule as a protocol transcript, on a served demo home."""

from __future__ import annotations

import smtplib
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from caducee.directory.identifiers import ins_key
from caducee.gateway import pki
from caducee.mailboxes.accounts.store import find_account
from caducee.mailboxes.models import KnownProfessional
from tests.harness.served import ServedGateway

from .transcript import Transcript


def _ins(nir13: str) -> str:
    return nir13 + ins_key(nir13)


def _session(gateway: ServedGateway, *, client_cert: bool = True) -> Transcript:
    t = Transcript("127.0.0.1", gateway.ports["smtp"])
    assert t.reply().startswith("220 ")
    t.command("EHLO mx.labo-demo.mssante.fr", r"250-")
    t.starttls(gateway.tls_context(client_cert=client_cert))
    ehlo = t.command("EHLO mx.labo-demo.mssante.fr", r"250-")
    assert "SIZE 25000000" in ehlo
    return t


def _count(gateway: ServedGateway, address: str | None = None) -> int:
    return len(gateway.mailbox(address))


# B1 ------------------------------------------------------------------------------------


def test_b1_peer_certificate_and_listed_professional_accepted(gateway: ServedGateway) -> None:
    patient = gateway.credentials["patient"]["address"]
    before = _count(gateway)
    with gateway.smtp() as client:
        refused = client.sendmail(
            gateway.peer["professional"], [patient], gateway.message(subject="Résultats TSH")
        )
    assert refused == {}
    listed = gateway.mailbox()
    assert len(listed) == before + 1
    assert listed[-1]["subject"] == "Résultats TSH"
    assert listed[-1]["from"] == gateway.peer["professional"]


def test_b1_plaintext_session_refused_at_mail(gateway: ServedGateway) -> None:
    t = Transcript("127.0.0.1", gateway.ports["smtp"])
    t.reply()
    t.command("EHLO mx.labo-demo.mssante.fr", r"250-")
    t.command(f"MAIL FROM:<{gateway.peer['professional']}>", r"530 5\.7\.0 Must issue a STARTTLS")
    t.close()


def test_b1_no_client_certificate_refused_before_mail_is_accepted(gateway: ServedGateway) -> None:
    t = _session(gateway, client_cert=False)
    t.command(f"MAIL FROM:<{gateway.peer['professional']}>", r"530 5\.7\.0 A client certificate")
    t.command(f"RCPT TO:<{gateway.credentials['patient']['address']}>", r"503 5\.5\.1 ")
    t.close()


def _foreign_context(gateway: ServedGateway, issued: pki.Issued) -> ssl.SSLContext:
    folder = gateway.home / "foreign"
    folder.mkdir(exist_ok=True)
    pki.save(issued, folder / "c.pem", folder / "c.key")
    context = ssl.create_default_context(cafile=gateway.credentials["ca_cert"])
    context.load_cert_chain(folder / "c.pem", folder / "c.key")
    return context


def _handshake_refused(gateway: ServedGateway, context: ssl.SSLContext) -> bool:
    t = Transcript("127.0.0.1", gateway.ports["smtp"])
    t.reply()
    t.command("EHLO mx.labo-demo.mssante.fr", r"250-")
    try:
        t.starttls(context)
        # TLS 1.3 reports a refused client certificate on the first read.
        t.command("EHLO mx.labo-demo.mssante.fr", r"250-")
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    finally:
        t.close()
    return False


def test_b1_certificate_of_an_unknown_ca_fails_the_handshake(gateway: ServedGateway) -> None:
    rogue_ca = pki.create_ca("Rogue CA", "Nobody")
    cert = pki.issue(
        rogue_ca, "mx.labo-demo.mssante.fr", organisation="x", dns_names=["labo-demo.mssante.fr"]
    )
    assert _handshake_refused(gateway, _foreign_context(gateway, cert))


def test_b1_expired_certificate_fails_the_handshake(gateway: ServedGateway) -> None:
    ca = pki.load(gateway.home / "tls" / "ca.pem", gateway.home / "tls" / "ca.key")
    expired = pki.issue(
        ca,
        "mx.labo-demo.mssante.fr",
        organisation="x",
        dns_names=["labo-demo.mssante.fr"],
        not_before=datetime.now(UTC) - timedelta(days=30),
        days=10,
    )
    assert _handshake_refused(gateway, _foreign_context(gateway, expired))


def test_b1_certificate_naming_no_trusted_domain_refused_at_mail(gateway: ServedGateway) -> None:
    ca = pki.load(gateway.home / "tls" / "ca.pem", gateway.home / "tls" / "ca.key")
    stranger = pki.issue(
        ca, "mx.elsewhere.example", organisation="x", dns_names=["elsewhere.example"]
    )
    t = Transcript("127.0.0.1", gateway.ports["smtp"])
    t.reply()
    t.command("EHLO mx.elsewhere.example", r"250-")
    t.starttls(_foreign_context(gateway, stranger))
    t.command("EHLO mx.elsewhere.example", r"250-")
    t.command(
        f"MAIL FROM:<{gateway.peer['professional']}>",
        r"550 5\.7\.1 Your certificate names no domain",
    )
    t.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_b1_tls_below_1_2_refused(gateway: ServedGateway) -> None:
    context = gateway.tls_context(client_cert=True)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)), gateway.smtp(starttls=False) as client:
        client.starttls(context=context)


# A5, B2 --------------------------------------------------------------------------------


def test_a5_sender_domain_outside_trust_space_refused(gateway: ServedGateway) -> None:
    t = _session(gateway)
    t.command(
        "MAIL FROM:<someone@not-in-trust-space.example>",
        r"550 5\.7\.1 The sender's domain is not in the trust space",
    )
    t.close()


def test_a5_null_sender_allowed_for_notifications(gateway: ServedGateway) -> None:
    t = _session(gateway)
    t.command("MAIL FROM:<>", r"250 2\.1\.0")
    t.command(f"RCPT TO:<{gateway.credentials['professional']['address']}>", r"250 2\.1\.5")
    t.close()


def test_a1_wrong_ins_key_is_a_syntax_error_553(gateway: ServedGateway) -> None:
    t = _session(gateway)
    t.command(f"MAIL FROM:<{gateway.peer['professional']}>", r"250 ")
    t.command("RCPT TO:<279035121518988@patient.mssante.fr>", r"550 5\.1\.3 Bad patient address")
    t.close()


def test_b2_unknown_patient_550_5_1_1(gateway: ServedGateway) -> None:
    t = _session(gateway)
    t.command(f"MAIL FROM:<{gateway.peer['professional']}>", r"250 ")
    t.command(f"RCPT TO:<{_ins('1800175123456')}@patient.mssante.fr>", r"550 5\.1\.1 ")
    t.close()


def test_b2_closed_patient_space_550_5_2_1(gateway: ServedGateway) -> None:
    closed = gateway.add_patient(_ins("2850275123457"), state="closed")
    t = _session(gateway)
    t.command(f"MAIL FROM:<{gateway.peer['professional']}>", r"250 ")
    t.command(f"RCPT TO:<{closed}>", r"550 5\.2\.1 This patient's space is closed")
    t.close()


def test_b2_suspended_patient_space_450_4_2_1(gateway: ServedGateway) -> None:
    suspended = gateway.add_patient(_ins("1990375123458"), state="suspended")
    t = _session(gateway)
    t.command(f"MAIL FROM:<{gateway.peer['professional']}>", r"250 ")
    t.command(f"RCPT TO:<{suspended}>", r"450 4\.2\.1 ")
    t.close()


def test_b2_recipient_not_hosted_here_refused(gateway: ServedGateway) -> None:
    t = _session(gateway)
    t.command(f"MAIL FROM:<{gateway.peer['professional']}>", r"250 ")
    t.command("RCPT TO:<someone@labo-demo.mssante.fr>", r"550 5\.7\.1 Relaying denied")
    t.command("RCPT TO:<nobody@hopital-demo.mssante.fr>", r"550 5\.1\.1 ")
    t.close()


# B3 ------------------------------------------------------------------------------------


def test_b3_sender_not_in_directory_550_5_7_1(gateway: ServedGateway) -> None:
    t = _session(gateway)
    t.command("MAIL FROM:<unlisted@labo-demo.mssante.fr>", r"250 ")
    t.command(
        f"RCPT TO:<{gateway.credentials['patient']['address']}>",
        r"550 5\.7\.1 Only a professional or organisation mailbox listed in the directory",
    )
    t.close()


def test_b3_patient_as_sender_550_5_7_1(gateway: ServedGateway) -> None:
    t = _session(gateway)
    t.command(f"MAIL FROM:<{_ins('1800175123456')}@patient.mssante.fr>", r"550 5\.7\.1 ")
    t.close()


def test_b3_unlisted_sender_may_still_write_to_a_hosted_professional(
    gateway: ServedGateway,
) -> None:
    t = _session(gateway)
    t.command("MAIL FROM:<unlisted@labo-demo.mssante.fr>", r"250 ")
    t.command(f"RCPT TO:<{gateway.credentials['professional']['address']}>", r"250 2\.1\.5")
    t.close()


# B4 ------------------------------------------------------------------------------------


def _send_raw(
    t: Transcript, gateway: ServedGateway, data: bytes, expect: str, sender: str | None = None
) -> str:
    t.command(f"MAIL FROM:<{sender or gateway.peer['professional']}>", r"250 ")
    t.command(f"RCPT TO:<{gateway.credentials['patient']['address']}>", r"250 ")
    t.command("DATA", r"354 ")
    t.send(data)
    answer = t.reply()
    assert __import__("re").match(expect, answer), answer
    return answer


def test_b4_message_over_25_mb_refused_552_5_3_4(gateway: ServedGateway) -> None:
    before = _count(gateway)
    t = _session(gateway)
    t.command(f"MAIL FROM:<{gateway.peer['professional']}> SIZE=26000000", r"552 5\.3\.4 ")
    # a client that does not declare SIZE is refused at the end of data
    body = gateway.message(body="x" * 70 + "\n")
    filler = (b"A" * 998 + b"\r\n") * 26_200
    _send_raw(t, gateway, body + filler + b".\r\n", r"552 5\.3\.4 ")
    t.command("QUIT", r"221 ")
    assert _count(gateway) == before


def test_b4_from_header_not_matching_sender_refused(gateway: ServedGateway) -> None:
    message = gateway.message(sender=gateway.peer["professional"]).replace(
        f"From: {gateway.peer['professional']}".encode(), b"From: someone.else@labo-demo.mssante.fr"
    )
    t = _session(gateway)
    _send_raw(t, gateway, message + b".\r\n", r"550 5\.7\.1 The From header does not match")
    t.close()


def test_b4_missing_dkim_signature_refused_5_7_20(gateway: ServedGateway) -> None:
    t = _session(gateway)
    _send_raw(
        t, gateway, gateway.message(sign=False) + b".\r\n", r"550 5\.7\.20 No valid DKIM signature"
    )
    t.close()


def test_b4_altered_message_fails_dkim(gateway: ServedGateway) -> None:
    altered = gateway.message(body="Résultat normal.\n").replace(b"normal", b"anormal")
    t = _session(gateway)
    _send_raw(t, gateway, altered + b".\r\n", r"550 5\.7\.20 ")
    t.close()


def test_b4_received_and_authentication_results_headers_added(gateway: ServedGateway) -> None:
    with gateway.smtp() as client:
        client.sendmail(
            gateway.peer["professional"],
            [gateway.credentials["patient"]["address"]],
            gateway.message(subject="trace"),
        )
    components = gateway.components()
    try:
        from caducee.mailboxes.listing import list_messages
        from caducee.mailboxes.models import StoredMessage

        with components.database.transaction() as session:
            newest = session.scalars(
                select(StoredMessage).order_by(StoredMessage.id.desc()).limit(1)
            ).one()
            raw = components.blobs.read(session, newest.blob_id)
            assert list_messages(
                session, components.blobs, gateway.credentials["patient"]["address"]
            )
    finally:
        components.close()
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("Received: from mx.labo-demo.mssante.fr")
    assert "with ESMTPS" in head and "client certificate labo-demo.mssante.fr" in head
    assert (
        "Authentication-Results: mx.caducee.localhost; dkim=pass header.d=labo-demo.mssante.fr"
        in head
    )


# D1, D2, D3 ----------------------------------------------------------------------------


def _contact(gateway: ServedGateway) -> KnownProfessional:
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            account = find_account(session, gateway.credentials["patient"]["address"])
            assert account is not None
            contact = session.scalars(
                select(KnownProfessional).where(
                    KnownProfessional.patient_account_id == account.id,
                    KnownProfessional.professional_address == gateway.peer["professional"],
                )
            ).one()
            session.expunge(contact)
            return contact
    finally:
        components.close()


def test_d2_d3_contact_end_of_exchange_and_restore(gateway: ServedGateway) -> None:
    patient = gateway.credentials["patient"]["address"]
    sender = gateway.peer["professional"]
    with gateway.smtp() as client:
        client.sendmail(
            sender,
            [patient],
            gateway.message(headers={"Reply-To": "secretariat@labo-demo.mssante.fr"}),
        )
    contact = _contact(gateway)
    assert contact.can_reply and contact.reply_address == "secretariat@labo-demo.mssante.fr"
    with gateway.smtp() as client:
        client.sendmail(sender, [patient], gateway.message(subject="[FIN]"))
    assert not _contact(gateway).can_reply
    with gateway.smtp() as client:
        client.sendmail(sender, [patient], gateway.message(subject="Suite"))
    assert _contact(gateway).can_reply
    before = _count(gateway)
    with gateway.smtp() as client:
        client.sendmail(
            sender, [patient], gateway.message(subject="Au revoir", headers={"X-MSS-MES": "FIN"})
        )
    assert not _contact(gateway).can_reply
    assert _count(gateway) == before + 1, "the X-MSS-MES: FIN message itself is delivered"


def test_d1_reply_joins_the_conversation(gateway: ServedGateway) -> None:
    from caducee.mailboxes.models import Conversation, ConversationMessage

    patient = gateway.credentials["patient"]["address"]
    sender = gateway.peer["professional"]
    first = gateway.message(subject="Premier")
    first_id = next(
        line.split(b" ", 1)[1].decode()
        for line in first.split(b"\r\n")
        if line.startswith(b"Message-ID:")
    )
    with gateway.smtp() as client:
        client.sendmail(sender, [patient], first)
        client.sendmail(
            sender,
            [patient],
            gateway.message(
                subject="Suite", headers={"In-Reply-To": first_id, "References": first_id}
            ),
        )
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            conversation_id = session.scalar(
                select(ConversationMessage.conversation_id).where(
                    ConversationMessage.message_id_header == first_id
                )
            )
            members = session.scalars(
                select(ConversationMessage).where(
                    ConversationMessage.conversation_id == conversation_id
                )
            ).all()
            assert len(members) == 2
            assert session.get(Conversation, conversation_id) is not None
    finally:
        components.close()


def test_b5_same_message_sent_twice_is_stored_once(gateway: ServedGateway) -> None:
    message = gateway.message(subject="resent")
    before = _count(gateway)
    for _ in range(2):
        with gateway.smtp() as client:
            assert (
                client.sendmail(
                    gateway.peer["professional"],
                    [gateway.credentials["patient"]["address"]],
                    message,
                )
                == {}
            )
    assert _count(gateway) == before + 1


def test_j3_unknown_command_and_bad_sequence_have_enhanced_codes(gateway: ServedGateway) -> None:
    t = _session(gateway)
    t.command("FROBNICATE", r"500 5\.5\.2 ")
    t.command(f"RCPT TO:<{gateway.credentials['patient']['address']}>", r"503 5\.5\.1 ")
    t.command("DATA", r"503 5\.5\.1 ")
    t.command("QUIT", r"221 2\.0\.0 ")
    t.close()


def test_b1_smtplib_rejects_without_starttls(gateway: ServedGateway) -> None:
    with (
        gateway.smtp(starttls=False) as client,
        pytest.raises(smtplib.SMTPSenderRefused) as refused,
    ):
        client.sendmail(
            gateway.peer["professional"],
            [gateway.credentials["patient"]["address"]],
            gateway.message(),
        )
    assert refused.value.smtp_code == 530
