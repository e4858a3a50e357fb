"""B2: the null sender reaches a patient only with a report about a message that mailbox sent.

On the served demo home: ``MAIL FROM:<>`` with an ordinary message for the demo patient is
refused ``550 5.7.1`` at DATA and leaves the mailbox as it was; a real DSN (and a real MDN)
about a message the patient sent is accepted. The report reader itself is checked on the
reports our own builders write (:mod:`caducee.mailboxes.reports.dsn`,
:mod:`caducee.mailboxes.reports.receipts`).
"""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, MIMEPart
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid

import pytest
from sqlalchemy import select

from caducee.gateway.smtp.data import NOT_A_REPORT, read_report
from caducee.mailboxes.relay.outbound import RELAY_JOB
from caducee.mailboxes.reports.dsn import Action, RecipientReport, build_dsn
from caducee.mailboxes.reports.receipts import build_displayed_mdn
from caducee.reports import header_block
from caducee.storage.jobs import JobRow
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

NOT_A_REPORT_REPLY = "The null sender is for delivery and read reports only"
NOT_OURS_REPLY = "This report is about no message the recipient sent"


def _original(sender: str, to: str, message_id: str, subject: str = "Question") -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    message.set_content("Bonjour docteur,\nune question.\n")
    return message.as_bytes(policy=policy.SMTP)


def _dsn(original: bytes, *, to: str, failed: str, reporting_mta: str) -> bytes:
    """The failure DSN the peer operator's relay would write about ``original``."""
    return build_dsn(
        original,
        recipients=[
            RecipientReport(
                failed, Action.FAILED, "5.1.1", diagnostic="550 5.1.1 No such mailbox here"
            )
        ],
        to=to,
        reporting_mta=reporting_mta,
        arrival=datetime.now(UTC),
    )


def _mdn(original: bytes, *, reader: str, to: str, reporting_host: str) -> bytes:
    """The ``displayed`` MDN a reader's user agent would send about ``original``."""
    headers = BytesHeaderParser(policy=policy.default).parsebytes(original)
    assert isinstance(headers, EmailMessage)
    return build_displayed_mdn(
        headers,
        header_block(original),
        from_address=reader,
        recipients=[to],
        reporting_host=reporting_host,
    )


# The report reader (pure) -------------------------------------------------------------------


def test_b2_our_dsn_is_a_report_about_the_original() -> None:
    original = _original("a@x.example", "b@y.example", "<orig-1@x.example>")
    report = read_report(_dsn(original, to="a@x.example", failed="b@y.example", reporting_mta="mx"))
    assert report.well_formed and "<orig-1@x.example>" in report.original_ids


def test_b2_our_mdn_is_a_report_about_the_original() -> None:
    original = _original("a@x.example", "b@y.example", "<orig-2@x.example>")
    report = read_report(_mdn(original, reader="b@y.example", to="a@x.example", reporting_host="y"))
    assert report.well_formed and "<orig-2@x.example>" in report.original_ids


def _hand_mdn(*, report_type: str, part_type: str, fields: dict[str, str]) -> bytes:
    report = EmailMessage()
    report["From"] = "b@y.example"
    report["To"] = "a@x.example"
    report["Subject"] = "Lu"
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = f"multipart/report; report-type={report_type}"
    human = MIMEPart()
    human.set_content("Lu.\n")
    block = EmailMessage()
    for name, value in fields.items():
        block[name] = value
    notification = MIMEPart()
    notification["Content-Type"] = part_type
    notification.set_payload([block])
    report.set_payload([human, notification])
    return report.as_bytes(policy=policy.SMTP)


def test_b2_original_message_id_of_the_mdn_part_alone_names_the_message() -> None:
    raw = _hand_mdn(
        report_type="disposition-notification",
        part_type="message/disposition-notification",
        fields={
            "Final-Recipient": "rfc822;b@y.example",
            "Original-Message-ID": "<orig-3@x.example>",
            "Disposition": "manual-action/MDN-sent-manually; displayed",
        },
    )
    assert read_report(raw).original_ids == ("<orig-3@x.example>",)


@pytest.mark.parametrize(
    ("label", "raw"),
    [
        ("plain text", _original("a@x.example", "b@y.example", "<o@x>")),
        (
            "report-type without its part",
            _hand_mdn(
                report_type="delivery-status",
                part_type="message/disposition-notification",
                fields={"Final-Recipient": "rfc822;b@y.example", "Disposition": "displayed"},
            ),
        ),
        (
            "unknown report-type",
            _hand_mdn(
                report_type="feedback-report",
                part_type="message/disposition-notification",
                fields={"Final-Recipient": "rfc822;b@y.example", "Disposition": "displayed"},
            ),
        ),
        (
            "MDN without Disposition",
            _hand_mdn(
                report_type="disposition-notification",
                part_type="message/disposition-notification",
                fields={
                    "Final-Recipient": "rfc822;b@y.example",
                    "Original-Message-ID": "<o@x>",
                },
            ),
        ),
        ("garbage", b"\x00\xff not a message"),
    ],
)
def test_b2_anything_else_is_not_a_report(label: str, raw: bytes) -> None:
    assert read_report(raw) == NOT_A_REPORT


# Served end to end ---------------------------------------------------------------------------


def _ordinary(gateway: ServedGateway, sender: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = gateway.credentials["patient"]["address"]
    message["Subject"] = "Achetez nos produits"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="spam.example")
    message.set_content("Promotion exceptionnelle.\n")
    return message.as_bytes(policy=policy.SMTP)


def _refused_at_data(gateway: ServedGateway, raw: bytes, to: str) -> tuple[int, str]:
    with gateway.smtp() as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("", [to], raw)
    return refused.value.smtp_code, refused.value.smtp_error.decode()


@pytest.mark.parametrize(
    "header_from",
    ["dr.martin@labo-demo.mssante.fr", "promo@outside-trust-space.example"],
    ids=["trust-space-from", "outside-from"],
)
def test_b2_null_sender_ordinary_message_to_patient_550_and_mailbox_unchanged(
    gateway: ServedGateway, header_from: str
) -> None:
    patient = gateway.credentials["patient"]["address"]
    before = gateway.mailbox(patient)
    code, text = _refused_at_data(gateway, _ordinary(gateway, header_from), patient)
    assert code == 550 and text.startswith("5.7.1 " + NOT_A_REPORT_REPLY)
    assert gateway.mailbox(patient) == before
    assert "B2.null-sender-not-a-report" in gateway.log()


def _patient_writes_to_peer(gateway: ServedGateway) -> tuple[bytes, str]:
    """The peer professional writes to the patient, who answers (C4); the answer's bytes."""
    patient = gateway.credentials["patient"]["address"]
    professional = gateway.peer["professional"]
    gateway.send(gateway.message(subject="Resultats"))
    message_id = make_msgid(domain="patient.example")
    original = _original(patient, professional, message_id, subject="Merci docteur")
    with gateway.submit("patient") as client:
        assert client.sendmail(patient, [professional], original) == {}
    return original, message_id


def _relayed_with(gateway: ServedGateway, message_id: str) -> bool:
    components = gateway.components()
    try:
        with components.database.reading() as session:
            jobs = session.scalars(select(JobRow).where(JobRow.kind == RELAY_JOB)).all()
            return any(job.payload.get("message_id") == message_id for job in jobs)
    finally:
        components.close()


def test_b2_real_dsn_about_a_message_the_patient_sent_is_accepted(gateway: ServedGateway) -> None:
    patient = gateway.credentials["patient"]["address"]
    original, message_id = _patient_writes_to_peer(gateway)
    before = len(gateway.mailbox(patient))
    dsn = _dsn(
        original,
        to=patient,
        failed=gateway.peer["professional"],
        reporting_mta="mx." + gateway.peer["domain"],
    )
    assert message_id in read_report(dsn).original_ids
    assert _relayed_with(gateway, message_id), "the relay job keeps the Message-ID"
    with gateway.smtp() as client:
        assert client.sendmail("", [patient], dsn) == {}
    wait_until(
        lambda: len(gateway.mailbox(patient)) == before + 1,
        timeout=10,
        message="the DSN reached the patient's INBOX",
    )
    assert gateway.mailbox(patient)[-1]["subject"] == "Message non distribué / Undelivered message"


def test_b2_real_mdn_about_a_message_the_patient_sent_is_accepted(gateway: ServedGateway) -> None:
    patient = gateway.credentials["patient"]["address"]
    original, _ = _patient_writes_to_peer(gateway)
    before = len(gateway.mailbox(patient))
    mdn = _mdn(
        original,
        reader=gateway.peer["professional"],
        to=patient,
        reporting_host="mx." + gateway.peer["domain"],
    )
    with gateway.smtp() as client:
        assert client.sendmail("", [patient], mdn) == {}
    wait_until(
        lambda: len(gateway.mailbox(patient)) == before + 1,
        timeout=10,
        message="the MDN reached the patient's INBOX",
    )


def test_b2_dsn_about_a_message_the_patient_never_sent_550(gateway: ServedGateway) -> None:
    patient = gateway.credentials["patient"]["address"]
    before = gateway.mailbox(patient)
    forged = _original(patient, gateway.peer["professional"], make_msgid(domain="forged.example"))
    dsn = _dsn(
        forged,
        to=patient,
        failed=gateway.peer["professional"],
        reporting_mta="mx." + gateway.peer["domain"],
    )
    code, text = _refused_at_data(gateway, dsn, patient)
    assert code == 550 and text.startswith("5.7.1 " + NOT_OURS_REPLY)
    assert gateway.mailbox(patient) == before
    assert "B2.null-sender-report-not-ours" in gateway.log()


def test_b2_null_sender_report_to_a_professional_still_accepted(gateway: ServedGateway) -> None:
    """Reports to professionals (the 904 MDN, DSNs of their relayed mail) are unchanged."""
    professional = gateway.credentials["professional"]["address"]
    original = _original(professional, gateway.peer["professional"], make_msgid(domain="pro.x"))
    dsn = _dsn(
        original,
        to=professional,
        failed=gateway.peer["professional"],
        reporting_mta="mx." + gateway.peer["domain"],
    )
    with gateway.smtp() as client:
        assert client.sendmail("", [professional], dsn) == {}
