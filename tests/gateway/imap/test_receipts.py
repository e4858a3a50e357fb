"""G2: the first \\Seen of a message asking for a receipt queues one ``displayed`` MDN, once."""

from __future__ import annotations

import email
import email.utils
import threading
from email import policy
from email.message import EmailMessage

from sqlalchemy import select

from caducee.mailboxes.imap_models import ReadReceipt
from caducee.storage.jobs import JobRow
from tests.harness.served import Account, ServedGateway


def _mdns(gateway: ServedGateway, original_id: str) -> list[tuple[dict[str, object], EmailMessage]]:
    """The queued MDN relay jobs about ``original_id``, with their decrypted content."""
    components = gateway.components()
    found = []
    try:
        with components.database.reading() as session:
            for job in session.scalars(select(JobRow).where(JobRow.kind == "relay")):
                if job.payload.get("purpose") != "mdn":
                    continue
                raw = components.blobs.read(session, str(job.payload["blob_id"]))
                message = email.message_from_bytes(raw, policy=policy.default)
                assert isinstance(message, EmailMessage)
                if original_id in raw.decode("utf-8", "replace"):
                    found.append((dict(job.payload), message))
    finally:
        components.close()
    return found


def _receipt_rows(gateway: ServedGateway, account: Account) -> list[tuple[str, int | None]]:
    """``(reason, job id)`` of the account's ``read_receipts`` rows."""
    components = gateway.components()
    try:
        with components.database.reading() as session:
            return [
                (row.reason, row.job_id)
                for row in session.scalars(
                    select(ReadReceipt).where(ReadReceipt.account_id == account.account_id)
                )
            ]
    finally:
        components.close()


def _deliver(gateway: ServedGateway, account: Account, *, receipt_to: str | None) -> str:
    headers = {"Disposition-Notification-To": receipt_to} if receipt_to else {}
    raw = gateway.message(to=account.address, subject="Résultats", headers=headers)
    gateway.send(raw, account.address)
    parsed = email.message_from_bytes(raw, policy=policy.default)
    return str(parsed["Message-ID"])


def test_g2_first_seen_queues_exactly_one_displayed_mdn(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    sender = imap_gateway.peer["professional"]
    original_id = _deliver(imap_gateway, patient, receipt_to=f"Dr Bernard <{sender}>")
    client = imap_gateway.imap(patient)
    try:
        client.select("INBOX")
        assert client.fetch("1", "(BODY.PEEK[])")[0] == "OK"
        assert _mdns(imap_gateway, original_id) == []  # a peek is not a reading
        assert client.fetch("1", "(BODY[TEXT])")[0] == "OK"  # the patient opens it
        first = _mdns(imap_gateway, original_id)
        assert len(first) == 1
        payload, mdn = first[0]
        assert payload["envelope_from"] == "" and payload["recipients"] == [sender]
        assert mdn.get_content_type() == "multipart/report"
        assert mdn.get_param("report-type") == "disposition-notification"
        assert str(mdn["From"]) == patient.address
        parts = list(mdn.iter_parts())
        fields = parts[1].get_payload()[0]
        assert (
            str(fields["Disposition"]).strip() == "manual-action/MDN-sent-automatically; displayed"
        )
        assert str(fields["Final-Recipient"]).strip() == f"rfc822;{patient.address}"
        assert str(fields["Original-Message-ID"]).strip() == original_id
        assert "Résultats" not in mdn.as_string()  # no subject, no health content

        # un-see and see again, in another session and another folder: still one
        client.store("1", "-FLAGS", "(\\Seen)")
        client.store("1", "+FLAGS", "(\\Seen)")
        client.copy("1", "Drafts")
        client.select("Drafts")
        client.store("1", "-FLAGS", "(\\Seen)")
        client.store("1", "+FLAGS", "(\\Seen)")
        other = imap_gateway.imap(patient)
        other.select("INBOX")
        other.store("1", "-FLAGS", "(\\Seen)")
        other.fetch("1", "(RFC822)")
        other.logout()
        assert len(_mdns(imap_gateway, original_id)) == 1
        rows = _receipt_rows(imap_gateway, patient)
        assert len(rows) == 1 and rows[0][0] == "sent" and rows[0][1] is not None
    finally:
        client.logout()


def test_g2_concurrent_first_reads_queue_one_mdn(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    original_id = _deliver(imap_gateway, patient, receipt_to=imap_gateway.peer["professional"])
    clients = [imap_gateway.imap(patient) for _ in range(4)]
    for client in clients:
        client.select("INBOX")
    barrier = threading.Barrier(len(clients))

    def read(client: object) -> None:
        barrier.wait()
        client.store("1", "+FLAGS", "(\\Seen)")  # type: ignore[attr-defined]

    threads = [threading.Thread(target=read, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.logout()
    assert len(_mdns(imap_gateway, original_id)) == 1


def test_g2_no_receipt_when_none_asked_or_not_allowed(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    plain = _deliver(imap_gateway, patient, receipt_to=None)
    elsewhere = _deliver(imap_gateway, patient, receipt_to="collector@example.org")
    client = imap_gateway.imap(patient)
    client.select("INBOX")
    client.store("1:2", "+FLAGS", "(\\Seen)")
    client.logout()
    assert _mdns(imap_gateway, plain) == []
    assert _mdns(imap_gateway, elsewhere) == []
    rows = _receipt_rows(imap_gateway, patient)
    assert [reason for reason, _ in rows] == ["no-allowed-recipient"]


def test_g2_receipts_are_for_patients_only(imap_gateway: ServedGateway) -> None:
    professional = imap_gateway.professional
    raw = imap_gateway.message(
        to=professional.address,
        subject="Avis",
        headers={"Disposition-Notification-To": imap_gateway.peer["professional"]},
    )
    imap_gateway.send(raw, professional.address)
    original_id = str(email.message_from_bytes(raw, policy=policy.default)["Message-ID"])
    client = imap_gateway.imap(professional)
    client.select("INBOX")
    client.uid("SEARCH", None, "ALL")
    client.store("1:*", "+FLAGS", "(\\Seen)")
    client.logout()
    assert _mdns(imap_gateway, original_id) == []


def test_g2_a_professional_hosted_here_gets_the_receipt_too(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    professional = imap_gateway.professional
    message = EmailMessage()
    message.set_content("Bonjour,\nvos résultats sont disponibles.\n")
    message["From"] = professional.address
    message["To"] = patient.address
    message["Subject"] = "Résultats"
    message["Message-ID"] = original_id = email.utils.make_msgid(domain="hopital-demo.test")
    message["Disposition-Notification-To"] = professional.address
    with imap_gateway.submit("professional") as client:
        assert not client.send_message(message)
    client = imap_gateway.imap(patient)
    try:
        client.select("INBOX")
        typ, data = client.uid("SEARCH", None, "ALL")
        assert typ == "OK" and data[0]
        last = data[0].split()[-1]
        assert client.uid("FETCH", last, "(BODY[TEXT])")[0] == "OK"  # the patient opens it
    finally:
        client.logout()
    [(payload, mdn)] = _mdns(imap_gateway, original_id)
    assert payload["recipients"] == [professional.address]
    assert mdn.get_param("report-type") == "disposition-notification"


def test_g2_no_receipt_about_what_the_patient_sent(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = imap_gateway.imap(patient)
    try:
        raw = (
            f"From: {patient.address}\r\nTo: {imap_gateway.professional.address}\r\n"
            f"Subject: Question\r\nMessage-ID: <self-read@patient.test>\r\n"
            f"Disposition-Notification-To: {patient.address}\r\n\r\nBonjour\r\n"
        ).encode()
        assert client.append("Sent", None, None, raw)[0] == "OK"
        client.select("Sent")
        assert client.fetch("1:*", "(BODY[TEXT])")[0] == "OK"
    finally:
        client.logout()
    assert _mdns(imap_gateway, "<self-read@patient.test>") == []
