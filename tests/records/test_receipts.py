"""G3: integration receipts (RFC 8098 MDN) queued after filing, for each outcome 902–905."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from caducee.policies.identity import ERROR_CODES
from caducee.records.receipts import build_mdn, receipt_recipients
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue
from tests.harness.reports import (
    OTHER_INS,
    PATIENT_ADDRESS,
    SENDER,
    Part,
    Record,
    add_patient,
    build_mail,
    make_settings,
    n1_xdm,
    pdf_part,
    with_ins,
    without_birthplace,
    xdm_part,
)

SUBJECT = "XDM/1.0/DDM+CR d'examens biologiques PAT-TROIS DOMINIQUE 28/03/1979"
PROCESSED = "automatic-action/MDN-sent-automatically; processed"


def _only_receipt(record: Record) -> tuple[dict[str, object], EmailMessage]:
    [(payload, mdn)] = record.relayed()
    return payload, mdn


def _parts(mdn: EmailMessage) -> list[EmailMessage]:
    assert mdn.get_content_type() == "multipart/report"
    assert mdn.get_param("report-type") == "disposition-notification"
    parts = [part for part in mdn.iter_parts() if isinstance(part, EmailMessage)]
    assert [part.get_content_type() for part in parts] == [
        "text/plain",
        "message/disposition-notification",
        "text/rfc822-headers",
    ]
    return parts


def _fields(mdn: EmailMessage) -> EmailMessage:
    notification = _parts(mdn)[1]
    payload = notification.get_payload()
    assert isinstance(payload, list)
    [fields] = payload
    assert isinstance(fields, EmailMessage)
    return fields


def _assert_receipt(record: Record, disposition: str, subject: str) -> EmailMessage:
    payload, mdn = _only_receipt(record)
    assert payload["envelope_from"] == "" and payload["purpose"] == "mdn"
    assert payload["recipients"] == [SENDER]
    assert mdn["To"] == SENDER and mdn["Subject"] == subject
    assert mdn["Auto-Submitted"] == "auto-replied"
    fields = _fields(mdn)
    assert fields["Disposition"] == disposition
    assert fields["Final-Recipient"] == f"rfc822;{PATIENT_ADDRESS}"
    assert fields["Original-Recipient"] == f"rfc822;{PATIENT_ADDRESS}"
    assert fields["Original-Message-ID"] == "<report-1@labo.mssante.fr>"
    assert mdn["In-Reply-To"] == "<report-1@labo.mssante.fr>"
    return mdn


def _mail(record: Record, parts: list[Part], **options: object) -> int:
    return record.mail(parts, receipt=True, message_id="<report-1@labo.mssante.fr>", **options)


def test_g3_processed_mdn(record: Record, n1_cda: bytes) -> None:
    _mail(record, [xdm_part(n1_xdm(n1_cda))])
    mdn = _assert_receipt(record, PROCESSED, SUBJECT)
    text = _parts(mdn)[0].get_content()
    assert "intégré" in text
    assert "279035121518989" not in text and "PAT-TROIS" not in text


def test_g3_processed_mdn_for_a_duplicate(record: Record, n1_cda: bytes) -> None:
    record.mail([xdm_part(n1_xdm(n1_cda))])
    _mail(record, [xdm_part(n1_xdm(n1_cda))])
    _assert_receipt(record, PROCESSED, SUBJECT)


@pytest.mark.parametrize(
    ("code", "label"),
    [
        (904, "INS ne correspondant pas a l'identite du patient"),
        (903, "INS non present dans le document"),
        (905, "INS incomplet (traits d'identite manquants)"),
    ],
)
def test_g3_e3_error_mdn(record: Record, n1_cda: bytes, code: int, label: str) -> None:
    variants = {
        904: (with_ins(n1_cda, OTHER_INS), OTHER_INS),
        903: (with_ins(n1_cda, None), "279035121518989"),
        905: (without_birthplace(n1_cda), "279035121518989"),
    }
    cda, ins = variants[code]
    _mail(record, [xdm_part(n1_xdm(cda, ins=ins))])
    mdn = _assert_receipt(
        record,
        f"{PROCESSED}/Error: {code}^{label}",
        f"[KO Intégration système !][{code}] {SUBJECT}",
    )
    text = _parts(mdn)[0].get_content()
    assert f"erreur {code}^" in text
    assert OTHER_INS not in text and "PAT-TROIS" not in text


def test_g3_e3_unknown_patient_mdn_902(
    database: Database, blobs: BlobStore, tmp_path: Path, n1_cda: bytes
) -> None:
    account_id, address, _ = add_patient(database, with_patient_row=False)
    record = Record(database, blobs, JobQueue(database), make_settings(tmp_path), account_id)
    record.address = address
    _mail(record, [xdm_part(n1_xdm(n1_cda))])
    _assert_receipt(
        record,
        f"{PROCESSED}/Error: 902^Identifiant de patient inconnu",
        f"[KO Intégration système !][902] {SUBJECT}",
    )


def test_g3_unreadable_xdm_gets_906(record: Record) -> None:
    _mail(record, [Part("IHE_XDM.zip", b"PK\x03\x04 not really a zip", "application/zip")])
    _assert_receipt(
        record, f"{PROCESSED}/Error: 906^Autre erreur", f"[KO Intégration système !][906] {SUBJECT}"
    )


def test_g3_no_receipt_when_not_asked(record: Record, n1_cda: bytes) -> None:
    record.mail([xdm_part(n1_xdm(n1_cda))])
    assert record.relayed() == []


def test_g3_no_integration_receipt_for_a_plain_pdf(record: Record, n1_pdf: bytes) -> None:
    """G3 is for XDM reports; a read receipt (G2) is another job's business."""
    _mail(record, [pdf_part(n1_pdf)], subject="Vos résultats")
    assert record.relayed() == []


def test_g3_receipt_goes_only_to_the_sender_s_domain(record: Record, n1_cda: bytes) -> None:
    content = build_mail(
        [xdm_part(n1_xdm(n1_cda))],
        headers={"Disposition-Notification-To": "victim@elsewhere.example, " + SENDER},
        message_id="<report-1@labo.mssante.fr>",
    )
    record.deliver(content)
    record.file()
    payload, _ = _only_receipt(record)
    assert payload["recipients"] == [SENDER]


def test_g3_original_recipient_kept_from_the_message(record: Record, n1_cda: bytes) -> None:
    _mail(
        record,
        [xdm_part(n1_xdm(n1_cda))],
        headers={"Original-Recipient": "rfc822;alias@patient.mssante.fr"},
    )
    _, mdn = _only_receipt(record)
    assert _fields(mdn)["Original-Recipient"] == "rfc822;alias@patient.mssante.fr"


def test_g3_mdn_built_alone_parses_back_and_never_answers_a_report() -> None:
    original_bytes = build_mail([], receipt=True, message_id="<m@labo.mssante.fr>")
    original = message_from_bytes(original_bytes, policy=policy.default)
    assert isinstance(original, EmailMessage)
    content = build_mdn(
        original,
        original_bytes,
        from_address=PATIENT_ADDRESS,
        recipients=[SENDER],
        final_recipient=PATIENT_ADDRESS,
        reporting_host="mx.caducee.test",
        error=ERROR_CODES[904],
    )
    assert b"\r\n" in content and b"\n" not in content.replace(b"\r\n", b"")
    mdn = message_from_bytes(content, policy=policy.default)
    assert isinstance(mdn, EmailMessage)
    fields = _fields(mdn)
    assert fields["Reporting-UA"] == "mx.caducee.test; Caducee"
    assert fields["Disposition"].endswith("904^INS ne correspondant pas a l'identite du patient")
    # an MDN asks for nothing and is never answered
    assert receipt_recipients(mdn, SENDER) == []
    assert receipt_recipients(original, "") == []
