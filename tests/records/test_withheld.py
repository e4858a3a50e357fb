"""E5, E3: the patient's copy of a message is held until filed; what the rules hide is withheld.

Delivery holds the patient's copy of a message with attachments (no mailbox entry, no
notification); the filing job then appends the copy with the parts the patient may not see
replaced by a notice, or keeps a message about another patient from them altogether.
"""

from __future__ import annotations

import base64
import importlib
from email import message_from_bytes, policy
from email.message import EmailMessage

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from caducee.mailboxes.delivery import NOTIFY_PATIENT_JOB, carries_no_document
from caducee.mailboxes.listing import list_messages
from caducee.mailboxes.models import (
    INBOX,
    Folder,
    HeldDelivery,
    HeldState,
    MailboxEntry,
    StoredMessage,
)
from caducee.records.models import DocumentState
from caducee.records.withheld import NOTICE, withhold_parts
from caducee.storage import schema
from caducee.storage.db import Base, Database
from caducee.storage.jobs import JobRow
from tests.harness.reports import (
    N1_UID,
    OTHER_INS,
    Part,
    Record,
    XdmDocument,
    build_mail,
    make_xdm,
    n1_xdm,
    pdf_part,
    with_ins,
    xdm_part,
)


def _inbox(record: Record) -> list[tuple[int, int, bytes]]:
    """(uid, message row, bytes) of each message in the patient's INBOX."""
    with record.database.transaction() as session:
        rows = session.execute(
            select(MailboxEntry.uid, StoredMessage.id, StoredMessage.blob_id)
            .join(Folder, Folder.id == MailboxEntry.folder_id)
            .join(StoredMessage, StoredMessage.id == MailboxEntry.message_id)
            .where(Folder.account_id == record.account_id, Folder.name == INBOX)
            .order_by(MailboxEntry.uid)
        ).all()
        return [(uid, row, record.blobs.read(session, blob)) for uid, row, blob in rows]


def _held(record: Record, message_id: int) -> HeldDelivery:
    with record.database.transaction() as session:
        held = session.scalar(
            select(HeldDelivery).where(
                HeldDelivery.account_id == record.account_id,
                HeldDelivery.message_id == message_id,
            )
        )
        assert held is not None
        session.expunge(held)
        return held


def _new_message_jobs(record: Record) -> list[dict[str, object]]:
    with record.database.transaction() as session:
        jobs = session.scalars(
            select(JobRow).where(JobRow.kind == NOTIFY_PATIENT_JOB).order_by(JobRow.id)
        ).all()
        return [job.payload for job in jobs if job.payload.get("event") == "new-message"]


def _parts(raw: bytes) -> list[EmailMessage]:
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return [p for p in parsed.walk() if not p.is_multipart() and isinstance(p, EmailMessage)]


def _invisible_xdm(n1_cda: bytes) -> bytes:
    return n1_xdm(n1_cda, visibility=["INVISIBLE_PATIENT"])


def test_e5_patient_copy_held_until_filed(record: Record, n1_cda: bytes) -> None:
    message_id = record.deliver(build_mail([xdm_part(n1_xdm(n1_cda))]))
    assert _inbox(record) == []
    assert _new_message_jobs(record) == [], "no notification for a copy the patient cannot see"
    assert _held(record, message_id).state == HeldState.HELD
    with record.database.transaction() as session:
        assert list_messages(session, record.blobs, record.address) == []

    record.file()
    [(uid, row, raw)] = _inbox(record)
    assert row == message_id, "nothing withheld: the patient's copy is the message itself"
    assert any(part.get_filename() == "IHE_XDM.zip" for part in _parts(raw))
    held = _held(record, message_id)
    assert (held.state, held.uid, held.withheld_parts) == (HeldState.RELEASED, uid, 0)
    assert _new_message_jobs(record) == [
        {"event": "new-message", "account_id": record.account_id, "message_id": message_id}
    ]


def test_e5_invisible_patient_part_withheld_from_the_patient_copy(
    record: Record, n1_cda: bytes
) -> None:
    message_id = record.mail([xdm_part(_invisible_xdm(n1_cda))])
    [document] = record.documents(message_id)
    assert document.state == DocumentState.FILED and document.hidden_from_patient

    [(_, row, raw)] = _inbox(record)
    assert row != message_id, "the patient reads a copy"
    parts = _parts(raw)
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/plain"]
    assert all(p.get_filename() is None for p in parts)
    assert parts[1].get_content() == NOTICE
    assert b"IHE_XDM" not in raw and base64.b64encode(n1_cda)[:60] not in raw

    [attachment] = record.attachments(message_id)
    assert attachment.withheld and attachment.withheld_reason == "E5.invisible-patient"
    with record.database.transaction() as session:
        original = session.get(StoredMessage, message_id)
        assert original is not None
        kept = record.blobs.read(session, original.blob_id)
    assert any(p.get_filename() == "IHE_XDM.zip" for p in _parts(kept)), "kept for the operator"
    assert _held(record, message_id).withheld_parts == 1
    assert len(_new_message_jobs(record)) == 1


def test_e5_only_the_part_carrying_the_hidden_document_is_withheld(
    record: Record, n1_cda: bytes, n1_pdf: bytes
) -> None:
    visible_pdf = n1_pdf + b"\n% a letter\n"
    message_id = record.mail([xdm_part(_invisible_xdm(n1_cda)), pdf_part(visible_pdf)])
    [(_, _, raw)] = _inbox(record)
    parts = _parts(raw)
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/plain", "application/pdf"]
    assert parts[2].get_content() == visible_pdf
    assert [a.withheld for a in record.attachments(message_id)] == [True, False]


def test_e3_report_about_another_patient_never_reaches_the_patient(
    record: Record, n1_cda: bytes
) -> None:
    other = with_ins(n1_cda, OTHER_INS)
    message_id = record.mail([xdm_part(n1_xdm(other, ins=OTHER_INS))], receipt=True)
    [document] = record.documents(message_id)
    assert (document.state, document.error_code) == (DocumentState.QUARANTINED, 904)
    assert _inbox(record) == []
    assert _new_message_jobs(record) == []
    held = _held(record, message_id)
    assert (held.state, held.uid, held.withheld_parts) == (HeldState.WITHHELD, None, 1)
    [attachment] = record.attachments(message_id)
    assert attachment.withheld and attachment.withheld_reason == "E3.904"
    [(_, mdn)] = record.relayed()
    assert "904" in mdn.as_string(), "the sender gets the 904 MDN as before"


def test_e3_other_patient_document_beside_own_one_is_withheld_alone(
    record: Record, n1_cda: bytes
) -> None:
    own = make_xdm([XdmDocument(content=n1_cda, unique_id=N1_UID)])
    other_cda = with_ins(n1_cda, OTHER_INS).replace(N1_UID.encode(), b"1.2.250.1.999.1.2")
    other = Part("autre.xml", other_cda, "text/xml")
    message_id = record.mail([xdm_part(own), other])
    states = sorted(d.state for d in record.documents(message_id))
    assert states == [DocumentState.FILED, DocumentState.QUARANTINED]
    [(_, _, raw)] = _inbox(record)
    names = [p.get_filename() for p in _parts(raw)]
    assert names == [None, "IHE_XDM.zip", None]
    assert b"autre.xml" not in raw
    assert [a.withheld for a in record.attachments(message_id)] == [False, True]


def test_e5_withhold_parts_keeps_the_other_bytes() -> None:
    raw = build_mail([Part("a.pdf", b"%PDF-1.4 a"), Part("b.pdf", b"%PDF-1.4 b")])
    copy = withhold_parts(raw, {1: "E5.invisible-patient"})
    parts = _parts(copy)
    assert [p.get_filename() for p in parts] == [None, "a.pdf", None]
    assert parts[1].get_content() == b"%PDF-1.4 a"
    original = message_from_bytes(raw, policy=policy.default)
    kept = message_from_bytes(copy, policy=policy.default)
    assert [(k, str(v)) for k, v in kept.items()] == [(k, str(v)) for k, v in original.items()]
    assert b"b.pdf" not in copy and base64.b64encode(b"%PDF-1.4 b") not in copy
    assert base64.b64encode(b"%PDF-1.4 b") in raw


def test_b2_delivery_reports_are_not_held() -> None:
    report = (
        b"From: <>\r\nTo: x@patient.mssante.fr\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; a@b\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: x\r\n\r\n--b--\r\n"
    )
    assert carries_no_document(report)
    smuggled = report.replace(
        b"--b--",
        b"--b\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; "
        b'filename="IHE_XDM.zip"\r\n\r\nPK\r\n--b--',
    )
    assert not carries_no_document(smuggled), "a report carrying a document waits for filing"
    assert not carries_no_document(build_mail([pdf_part(b"%PDF-1.4")]))


# ---------------------------------------------------------------------------------------------
# K2: the 0011 migration, and the mail columns the record reaches through its table clauses

WITHHELD_TABLES = {"held_deliveries"}


def test_k2_withheld_migration_matches_the_models(database: Database) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    flat = [d for item in differences for d in (item if isinstance(item, list) else [item])]
    mine = [
        d
        for d in flat
        if any(name in repr(d) for name in ("held_deliveries", "withheld", "conversation_messages"))
    ]
    assert mine == []


def test_k2_withheld_migration_steps_down_and_up(fresh_database_url: str) -> None:
    database = Database(fresh_database_url)
    try:
        schema.upgrade(database)
        assert "held_deliveries" in inspect(database.engine).get_table_names()
        migration = importlib.import_module("caducee.storage.migrations.versions.0011_withheld")
        schema.downgrade(database, migration.down_revision)
        assert "held_deliveries" not in inspect(database.engine).get_table_names()
        columns = {c["name"] for c in inspect(database.engine).get_columns("record_attachments")}
        assert "withheld" not in columns
        schema.upgrade(database)
        assert "held_deliveries" in inspect(database.engine).get_table_names()
    finally:
        database.dispose()
