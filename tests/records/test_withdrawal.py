"""E4, E3, E5, G3, F4, G1: filing reads the national formats the way their authors mean them (#14).

Real ANS examples (volet "transmission de documents CDA en HL7v2" V2.1) mailed to the patient
and filed by the real job: initial → replacement → deletion withdraws the document; a
deletion of an unknown document, or by someone else, or about another patient, changes
nothing and the receipt says why; a PID naming another INS than the CDA quarantines (904);
visibility flags in older or ambiguous forms hide the document from the patient; an
auto-presentable CDA is filed through its ClinicalDocument with its rendition.
"""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import select, update

from caducee.jobs.filing import make_filing_handler
from caducee.mailboxes.delivery import FILE_DOCUMENTS_JOB
from caducee.mailboxes.notifications.patients import NOTIFY_PATIENT_JOB
from caducee.records.models import DocumentState, RecordDocument, VersionStatus
from caducee.records.service import DocumentQuery, Viewer, get_document, search_documents
from caducee.storage.audit import Action, history
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue, JobRow
from tests.harness.identities import OTHER_INS, add_patient
from tests.harness.reports import ORU_SAMPLE, SAMPLES, Part, Record, build_mail, make_settings

HL7 = SAMPLES / "ansforge-hl7V2-exemples"
INITIAL = HL7 / "Trans_Doc_V2.1_MDM_Transmission_initiale/message_MDM_CR_Radio_INIT_N1_Base64.er7"
REPLACEMENT = HL7 / "Trans_Doc_V2.1_MDM_Remplacement/message_MDM_CR_Radio_RPLC_N1.er7"
DELETION = HL7 / "Trans_Doc_V2.1_MDM_Suppression/message_MDM_CR_Radio_DEL_N1.er7"
ORU_DELETION = HL7 / "Trans_Doc_V2.1_ORU_Suppression/message_ORU_CR_Bio_DEL_N3_SEGUR.hl7"
AUTO_PRESENTABLE = (
    SAMPLES / "ansforge-TestContenuCDA-3-0/ExemplesCDA/BIO-CR-BIO_2021.01_Auto-Presentable.xml"
)
V1_UID = "1.2.250.1.71.4.2.2.120456789.71024000081"
V2_UID = "1.2.250.1.71.4.2.2.120456789.71024000082"
PROCESSED = "automatic-action/MDN-sent-automatically; processed"


def _hl7_record(database: Database, blobs: BlobStore, tmp_path: Path) -> Record:
    """The demo patient with the birthplace the ANS HL7 v2 examples give her (63220)."""
    account_id, address, password = add_patient(database, birthplace="63220")
    queue = JobQueue(database)
    return Record(database, blobs, queue, make_settings(tmp_path), account_id, address, password)


def _hl7(record: Record, path: Path, *, receipt: bool = False, data: bytes | None = None) -> int:
    content = data if data is not None else path.read_bytes()
    return record.mail(
        [Part(path.name, content, "text/plain")], subject="Compte rendu", receipt=receipt
    )


def _dispositions(record: Record) -> list[str]:
    found = []
    for _payload, mdn in record.relayed():
        parts = [p for p in mdn.iter_parts() if isinstance(p, EmailMessage)]
        payload = parts[1].get_payload()
        assert isinstance(payload, list)
        found.append(str(payload[0]["Disposition"]))
    return found


def _chain(record: Record) -> tuple[int, int, int]:
    return (
        _hl7(record, INITIAL),
        _hl7(record, REPLACEMENT),
        _hl7(record, DELETION, receipt=True),
    )


# ---------------------------------------------------------------------------------------------
# E4: withdrawal


def test_e4_initial_replacement_deletion_withdraws_the_document(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    record = _hl7_record(database, blobs, tmp_path)
    _initial, _replacement, deletion = _chain(record)
    v1, v2 = record.documents()
    assert (v1.document_uid, v2.document_uid) == (V1_UID, V2_UID)
    assert record.documents(deletion) == [], "a deletion request is not a document"
    assert (v1.state, v1.status, v1.superseded_by_id) == ("filed", "superseded", v2.id)
    assert v1.hidden_from_patient, "the initial version was INVISIBLE_PATIENT"
    assert v2.state == DocumentState.WITHDRAWN
    assert v2.withdrawn_by_message_id == deletion and v2.withdrawn_at is not None
    assert record.blob(v2.content_blob_id).startswith(b"<ClinicalDocument"), "kept"
    [attachment] = record.attachments(deletion)
    assert (attachment.outcome, attachment.reason, attachment.document_count) == (
        "withdrawal",
        None,
        1,
    )
    assert _dispositions(record) == [PROCESSED]
    with database.transaction() as session:
        for viewer in Viewer:
            for statuses in (("current",), ("current", "superseded")):
                query = DocumentQuery(statuses=statuses)
                assert search_documents(session, record.account_id, query, viewer).total == 0
            assert get_document(session, record.account_id, v2.public_id, viewer) is None


def test_e4_deletion_request_mailed_twice_is_processed_once(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    """A sender that lost the receipt sends the request again: processed, nothing changes."""
    record = _hl7_record(database, blobs, tmp_path)
    _chain(record)
    [withdrawn_at] = [d.withdrawn_at for d in record.documents() if d.withdrawn_at]
    again = _hl7(record, DELETION, receipt=True)
    [attachment] = record.attachments(again)
    assert (attachment.outcome, attachment.document_count) == ("withdrawal", 0)
    assert [d.state for d in record.documents()] == ["filed", "withdrawn"]
    assert [d.withdrawn_at for d in record.documents() if d.withdrawn_at] == [withdrawn_at]
    assert _dispositions(record) == [PROCESSED, PROCESSED]


def test_e4_deletion_of_an_unknown_document_error_900_and_nothing_filed(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    record = _hl7_record(database, blobs, tmp_path)
    message_id = _hl7(record, DELETION, receipt=True)
    assert record.documents() == []
    [attachment] = record.attachments(message_id)
    assert (attachment.outcome, attachment.reason) == ("not-filed", "WITHDRAWAL_REFUSED_900")
    [disposition] = _dispositions(record)
    assert disposition.startswith(f"{PROCESSED}/Error: 900^")
    [(_payload, mdn)] = record.relayed()
    assert str(mdn["Subject"]).startswith("[KO Intégration système !][900]")


def test_e4_deletion_by_someone_else_than_sender_or_author_error_901(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    record = _hl7_record(database, blobs, tmp_path)
    _hl7(record, INITIAL)
    _hl7(record, REPLACEMENT)
    with database.transaction() as session:  # as if another professional had sent v2
        session.execute(
            update(RecordDocument)
            .where(RecordDocument.document_uid == V2_UID)
            .values(sender="autre@hopital.mssante.fr", author_national_id="810000000000")
        )
    _hl7(record, DELETION, receipt=True)
    assert [d.state for d in record.documents()] == ["filed", "filed"]
    [disposition] = _dispositions(record)
    assert disposition.startswith(f"{PROCESSED}/Error: 901^")


def test_e3_deletion_about_another_patient_withdraws_nothing(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    """The ANS ORU deletion example carries a CDA about another INS than its PID's (E3, 904)."""
    record = _hl7_record(database, blobs, tmp_path)
    _hl7(record, ORU_SAMPLE)
    _hl7(record, ORU_DELETION, receipt=True)
    [document] = record.documents()
    assert (document.state, document.status) == ("filed", VersionStatus.CURRENT)
    [disposition] = _dispositions(record)
    assert disposition.startswith(f"{PROCESSED}/Error: 904^")


def test_f4_g1_withdrawal_audited_and_patient_notified(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    record = _hl7_record(database, blobs, tmp_path)
    handler = make_filing_handler(database, blobs, record.queue, record.settings)
    for path in (INITIAL, REPLACEMENT, DELETION):
        record.deliver(_raw(path))
        while jobs := record.queue.claim("test", limit=10, kinds=[FILE_DOCUMENTS_JOB]):
            for job in jobs:
                handler(job)
    withdrawn = record.documents()[-1]
    assert withdrawn.state == DocumentState.WITHDRAWN
    with database.transaction() as session:
        events = history(session, record.account_id, actions=[Action.DOCUMENT_WITHDRAW.value])
        notifications = session.scalars(
            select(JobRow.payload).where(JobRow.kind == NOTIFY_PATIENT_JOB)
        ).all()
    [event] = events
    assert (event.object_id, event.result, event.rule) == (
        withdrawn.public_id,
        "ok",
        "E4.withdrawn",
    )
    told = [n for n in notifications if n["event"] == "new-document"]
    # The initial version was INVISIBLE_PATIENT: not told (E5); the replacement and its
    # withdrawal are.
    assert [n["message_id"] for n in told] == record.delivered[1:]
    assert "PAT-TROIS" not in json.dumps(notifications)


def _raw(path: Path) -> bytes:
    return build_mail([Part(path.name, path.read_bytes(), "text/plain")], subject="CR")


# ---------------------------------------------------------------------------------------------
# E3: PID and CDA identities


def test_e3_pid_naming_another_ins_than_the_cda_quarantined_904(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    record = _hl7_record(database, blobs, tmp_path)
    sample = ORU_SAMPLE.read_bytes()
    pid_ins = b"PID|||279035121518989^^^"
    assert sample.count(pid_ins) == 1
    altered = sample.replace(pid_ins, f"PID|||{OTHER_INS}^^^".encode())
    message_id = _hl7(record, ORU_SAMPLE, data=altered)
    [document] = record.documents(message_id)
    assert (document.state, document.error_code, document.identity_rule) == (
        DocumentState.QUARANTINED,
        904,
        "E3.904-envelope",
    )
    assert "METADATA_MISMATCH" in json.loads(str(document.problems))


def test_e3_pid_and_cda_agreeing_is_filed(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    record = _hl7_record(database, blobs, tmp_path)
    [document] = record.documents(_hl7(record, ORU_SAMPLE))
    assert (document.state, document.identity_rule) == (DocumentState.FILED, None)


# ---------------------------------------------------------------------------------------------
# E5: visibility flags in older and ambiguous forms


FLAG_LINE = (
    b"OBX|3|CE|INVISIBLE_PATIENT^Document Non Visible par le patient^MetaDMPMSS||"
    b"N^^expandedYes-NoIndicator||||||F|"
)


def _with_flag(line: bytes) -> bytes:
    sample = ORU_SAMPLE.read_bytes()
    assert sample.count(FLAG_LINE) == 1
    return sample.replace(FLAG_LINE, line)


def test_e5_flag_without_coding_system_hides_from_patient(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    record = _hl7_record(database, blobs, tmp_path)
    v1_2 = b"OBX|3|CE|INVISIBLE_PATIENT^Document Non Visible par le patient||Y||||||F|"
    [document] = record.documents(_hl7(record, ORU_SAMPLE, data=_with_flag(v1_2)))
    assert document.state == DocumentState.FILED and document.hidden_from_patient
    assert document.author_flags == "INVISIBLE_PATIENT"
    with database.transaction() as session:
        page = search_documents(session, record.account_id, DocumentQuery())
        assert page.total == 0


def test_e5_ambiguous_flag_fails_safe_and_records_why(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    record = _hl7_record(database, blobs, tmp_path)
    unclear = (
        b"OBX|3|CE|INVISIBLE_PATIENT^Document Non Visible par le patient^MetaDMPMSS||?||||||F|"
    )
    [document] = record.documents(_hl7(record, ORU_SAMPLE, data=_with_flag(unclear)))
    assert document.hidden_from_patient
    assert "AMBIGUOUS_VISIBILITY" in json.loads(str(document.problems))


# ---------------------------------------------------------------------------------------------
# E1: auto-presentable CDA


def test_e1_auto_presentable_cda_filed_with_its_rendition(record: Record) -> None:
    data = AUTO_PRESENTABLE.read_bytes()
    message_id = record.mail([Part("CR-BIO.xml", data, "text/xml")], subject="CR")
    [document] = record.documents(message_id)
    assert (document.state, document.source_format) == (DocumentState.FILED, "cda")
    assert document.document_uid == "1.2.250.1.213.1.1.1.55.2021.1.1"
    assert (document.type_code, document.author_national_id) == ("11502-2", "801234534765")
    content = record.blob(document.content_blob_id)
    assert b"ClinicalDocument" in content.split(b">", 2)[1]
    assert record.blob(document.rendition_blob_id) == data
    assert document.rendition_mime_type == "text/xml"
    [attachment] = record.attachments(message_id)
    assert attachment.outcome == "read"
