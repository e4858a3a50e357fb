"""E1–E6, D4: the filing job on real samples mailed to a patient and delivered by ``mailboxes``."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text

from caducee.jobs.filing import make_filing_handler
from caducee.mailboxes.delivery import FILE_DOCUMENTS_JOB
from caducee.records.filing import (
    add_offered_document,
    lock_record,
    set_hidden_from_professionals,
)
from caducee.records.models import DocumentState, RecordDocument, VersionStatus
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database, utcnow
from caducee.storage.jobs import DONE, ClaimedJob, JobQueue, JobRow
from tests.harness.reports import (
    DIRECT_XDM_SAMPLES,
    HPRIM_SAMPLE,
    IMG_SAMPLE,
    IMG_V1_UID,
    IMG_V2_UID,
    MDM_SAMPLE,
    N1_AUTHOR,
    N1_UID,
    ORU_SAMPLE,
    OTHER_INS,
    Part,
    Record,
    XdmDocument,
    add_patient,
    build_mail,
    img_v1,
    make_settings,
    make_xdm,
    n1_xdm,
    pdf_part,
    with_ins,
    without_birthplace,
    xdm_part,
)
from tests.harness.waiting import wait_until


def _states(documents: list[RecordDocument]) -> list[str]:
    return [document.state for document in documents]


# ---------------------------------------------------------------------------------------------
# E1, E2: filing and metadata


def test_e1_e2_xdm_of_real_cda_filed_with_its_metadata(
    record: Record, n1_cda: bytes, n1_pdf: bytes
) -> None:
    message_id = record.mail([xdm_part(n1_xdm(n1_cda))])
    [document] = record.documents(message_id)
    assert document.state == DocumentState.FILED
    assert document.status == VersionStatus.CURRENT
    assert document.source_format == "xdm"
    assert document.document_uid == N1_UID
    assert (document.type_code, document.type_system) == ("11502-2", "2.16.840.1.113883.6.1")
    assert document.author_national_id == N1_AUTHOR
    assert document.confidentiality == "N"
    assert document.message_id == message_id and document.entry_name is not None
    assert document.document_date.year == 2021 and document.filed_at is not None
    assert document.format_code == "urn:ihe:iti:xds-sd:pdf:2008"
    # J1/E1: the CDA as received and its PDF rendition, encrypted at rest
    assert record.blob(document.content_blob_id) == n1_cda
    assert record.blob(document.rendition_blob_id) == n1_pdf
    assert document.sha1 == hashlib.sha1(n1_cda, usedforsecurity=False).hexdigest()
    raw = record.blobs.path_of(str(document.content_blob_id)).read_bytes()
    assert b"PAT-TROIS" not in raw
    [attachment] = record.attachments(message_id)
    assert (attachment.outcome, attachment.document_count) == ("read", 1)


def test_e1_job_completed_in_the_filing_transaction(record: Record, n1_cda: bytes) -> None:
    record.mail([xdm_part(n1_xdm(n1_cda))])
    with record.database.transaction() as session:
        jobs = list(session.scalars(select(JobRow).where(JobRow.kind == "file-documents")))
    assert [job.state for job in jobs] == [DONE]


def test_e2_pdf_without_metadata_takes_the_mail_s(record: Record, n1_pdf: bytes) -> None:
    message_id = record.mail([pdf_part(n1_pdf, "resultats.pdf")], subject="Vos résultats")
    [document] = record.documents(message_id)
    assert document.state == DocumentState.FILED
    assert (document.source_format, document.mime_type) == ("pdf", "application/pdf")
    assert document.title == "resultats.pdf"
    assert document.sender == "labo@labo.mssante.fr"
    assert document.mail_subject == "Vos résultats"
    assert document.document_date.isoformat().startswith("2024-01-04T15:05:27")
    assert document.document_uid is None and document.type_code is None
    assert record.blob(document.content_blob_id) == n1_pdf


def test_e1_mssante_mail_xdm_and_its_pdf_copy_filed_once(
    record: Record, n1_cda: bytes, n1_pdf: bytes
) -> None:
    """The human copy of the report (same PDF as the CDA's rendition) is the same document."""
    message_id = record.mail([xdm_part(n1_xdm(n1_cda)), pdf_part(n1_pdf)])
    documents = record.documents(message_id)
    assert _states(documents) == [DocumentState.FILED, DocumentState.DUPLICATE]
    assert documents[1].duplicate_of_id == documents[0].id
    assert documents[1].content_blob_id is None


@pytest.mark.parametrize("sample", DIRECT_XDM_SAMPLES, ids=lambda path: path.name)
def test_e3_real_directproject_xdm_without_ins_quarantined_903(
    record: Record, sample: Path
) -> None:
    """The Direct Project archives (US CCD, no INS) are read, then kept out of the record."""
    message_id = record.mail([xdm_part(sample.read_bytes())])
    [document] = record.documents(message_id)
    assert document.state == DocumentState.QUARANTINED
    assert (document.error_code, document.identity_rule) == (903, "E3.903-no-ins")
    assert document.content_blob_id is not None  # kept for the operator
    assert "NO_INS" in json.loads(str(document.problems))


def test_e1_hl7_oru_sample_filed(database: Database, blobs: BlobStore, tmp_path: Path) -> None:
    record = _hl7_record(database, blobs, tmp_path)
    message_id = record.mail([Part("resultat.hl7", ORU_SAMPLE.read_bytes(), "text/plain")])
    [document] = record.documents(message_id)
    assert (document.state, document.source_format) == (DocumentState.FILED, "hl7v2")
    assert document.type_code == "11502-2" and document.document_uid == "1.2.250.1.213.1.1.9"
    [attachment] = record.attachments(message_id)
    assert "BAD_BASE64" in json.loads(str(attachment.problems))  # one broken OBX, noted


def test_e1_hprim_sample_filed(record: Record) -> None:
    data = HPRIM_SAMPLE.read_bytes()
    message_id = record.mail([Part("resultats.hpm", data, "text/plain")], subject="Résultats")
    [document] = record.documents(message_id)
    assert (document.state, document.source_format) == (DocumentState.FILED, "hprim-medecin")
    assert document.mime_type == "text/x-hprim" and record.blob(document.content_blob_id) == data
    assert document.organisation_id == "SOLABIO"


def test_e1_unsupported_format_stays_on_the_message_marked_not_filed(
    record: Record, n1_pdf: bytes
) -> None:
    word = Part("lettre.docx", b"PK\x03\x04" + b"\x00" * 40, "application/octet-stream")
    binary = Part("image.bmp", b"BM" + bytes(range(256)) * 4, "image/bmp")
    message_id = record.mail([word, binary, pdf_part(n1_pdf)], subject="Courrier")
    assert _states(record.documents(message_id)) == [DocumentState.FILED]
    outcomes = [(a.outcome, a.reason) for a in record.attachments(message_id)]
    assert outcomes[0] == ("not-filed", "BAD_ARCHIVE")
    assert outcomes[1] == ("not-filed", "UNSUPPORTED_FORMAT")
    assert outcomes[2] == ("read", None)


def test_e6_bad_archive_never_loses_the_message(record: Record) -> None:
    bomb = make_xdm([XdmDocument(content=b"<a/>" + b" " * 5_000_000, unique_id="1.2.3")])
    message_id = record.mail([xdm_part(bomb[: len(bomb) // 2])])
    assert record.documents(message_id) == []
    [attachment] = record.attachments(message_id)
    assert attachment.outcome == "not-filed"
    with record.database.transaction() as session:
        job = session.scalars(select(JobRow).where(JobRow.kind == "file-documents")).one()
        assert job.state == DONE
    from caducee.mailboxes.models import StoredMessage

    with record.database.transaction() as session:
        assert session.get(StoredMessage, message_id) is not None


def test_e6_compression_bomb_refused_by_the_configured_ratio(
    record: Record, tmp_path: Path
) -> None:
    bomb = make_xdm([XdmDocument(content=b"<a>" + b"0" * 3_000_000 + b"</a>", unique_id="1.2.3")])
    record.settings = make_settings(tmp_path, max_compression_ratio=10)
    message_id = record.mail([xdm_part(bomb)])
    assert record.documents(message_id) == []
    [attachment] = record.attachments(message_id)
    assert (attachment.outcome, attachment.reason) == ("not-filed", "COMPRESSION_RATIO")


def test_e6_hostile_mime_structure_never_fails_the_job(record: Record, n1_pdf: bytes) -> None:
    """Multiparts nested without end, garbage, a forwarded message: recorded, never raised."""
    depth = 200
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth)
    )
    closing = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(depth)))
    nested = (
        "From: labo@labo.mssante.fr\r\nTo: x@patient.mssante.fr\r\nSubject: n\r\n"
        "Message-ID: <nested@labo.mssante.fr>\r\nMIME-Version: 1.0\r\n"
        + opening
        + "Content-Type: application/pdf\r\n\r\n%PDF-1.4 deep\r\n"
        + closing
    ).encode()
    forwarded = Part("transfert.eml", b"Subject: old\r\n\r\nbody\r\n", "message/rfc822")
    garbage = Part("x.pdf", b"\x00\xff" * 100, "application/pdf")
    first = record.deliver(nested)
    second = record.deliver(build_mail([forwarded, garbage, pdf_part(n1_pdf)], subject="fw"))
    assert record.file() == 2
    assert record.documents(first) == []
    assert _states(record.documents(second)) == [DocumentState.FILED]
    assert [a.outcome for a in record.attachments(second)] == ["not-filed", "not-filed", "read"]


def test_e1_malformed_job_payload_is_refused_by_the_filing_handler(record: Record) -> None:
    """A row stored malformed (an older version, a hand edit) never reaches filing."""
    from caducee.jobs.filing import make_filing_handler
    from caducee.storage.jobs import MalformedPayloadError

    with record.database.transaction() as session:
        session.add(
            JobRow(
                kind="file-documents",
                payload={"message_id": "x"},
                max_attempts=3,
                next_attempt_at=utcnow(),
            )
        )
    [job] = record.queue.claim("w", kinds=["file-documents"])
    handler = make_filing_handler(record.database, record.blobs, record.queue, record.settings)
    with pytest.raises(MalformedPayloadError, match="message_id"):
        handler(job)


def test_b5_filing_rolled_back_when_the_job_lease_was_lost(record: Record, n1_pdf: bytes) -> None:
    """Filing and completing the job are one transaction: a lost lease files nothing."""
    from sqlalchemy import update

    from caducee.jobs.filing import LeaseLostError, make_filing_handler

    record.deliver(build_mail([pdf_part(n1_pdf)], subject="pdf"))
    [job] = record.queue.claim("slow-worker", kinds=["file-documents"])
    with record.database.transaction() as session:
        session.execute(update(JobRow).where(JobRow.id == job.id).values(locked_by="other"))
    handler = make_filing_handler(record.database, record.blobs, record.queue, record.settings)
    with pytest.raises(LeaseLostError):
        handler(job)
    assert record.documents() == []


def test_e1_a_second_job_for_the_same_message_files_nothing_twice(
    record: Record, n1_cda: bytes
) -> None:
    message_id = record.mail([xdm_part(n1_xdm(n1_cda))])
    with record.database.transaction() as session:
        record.queue.enqueue(
            session, "file-documents", {"message_id": message_id, "account_id": record.account_id}
        )
    assert record.file() == 1
    assert len(record.documents()) == 1


# ---------------------------------------------------------------------------------------------
# E3: identity check


def test_e3_ins_mismatch_quarantined_904(record: Record, n1_cda: bytes) -> None:
    cda = with_ins(n1_cda, OTHER_INS)
    message_id = record.mail([xdm_part(n1_xdm(cda, ins=OTHER_INS))])
    [document] = record.documents(message_id)
    assert (document.state, document.error_code) == (DocumentState.QUARANTINED, 904)
    assert document.identity_rule == "E3.904-matricule"
    assert document.filed_at is None and document.dedupe_key is None


def test_e3_no_ins_quarantined_903(record: Record, n1_cda: bytes) -> None:
    message_id = record.mail([Part("cr.xml", with_ins(n1_cda, None), "text/xml")])
    [document] = record.documents(message_id)
    assert (document.state, document.error_code) == (DocumentState.QUARANTINED, 903)


def test_e3_ins_incomplete_quarantined_905(record: Record, n1_cda: bytes) -> None:
    message_id = record.mail([Part("cr.xml", without_birthplace(n1_cda), "text/xml")])
    [document] = record.documents(message_id)
    assert (document.state, document.error_code) == (DocumentState.QUARANTINED, 905)
    assert "INS_INCOMPLETE" in json.loads(str(document.problems))


def test_e3_trait_mismatch_quarantined_904(record: Record, n1_cda: bytes) -> None:
    cda = n1_cda.replace(b'<birthTime value="19790328"/>', b'<birthTime value="19790329"/>')
    message_id = record.mail([Part("cr.xml", cda, "text/xml")])
    [document] = record.documents(message_id)
    assert (document.error_code, document.identity_rule) == (904, "E3.904-traits")


def test_e3_unknown_patient_quarantined_902(
    database: Database, blobs: BlobStore, tmp_path: Path, n1_cda: bytes
) -> None:
    """A patient account without a qualified identity cannot receive documents."""
    account_id, address, _ = add_patient(database, with_patient_row=False)
    record = Record(database, blobs, _queue(database), make_settings(tmp_path), account_id, address)
    message_id = record.mail([xdm_part(n1_xdm(n1_cda))])
    [document] = record.documents(message_id)
    assert (document.error_code, document.identity_rule) == (902, "E3.902-no-patient")


def test_a2_e3_test_oid_outside_test_mode_quarantined_902(
    record: Record, n1_cda: bytes, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    record.settings = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"test_mode": False})}
    )
    message_id = record.mail([xdm_part(n1_xdm(n1_cda))])
    [document] = record.documents(message_id)
    assert (document.error_code, document.identity_rule) == (902, "E3.902-oid-refused")


def test_e3_pdf_beside_a_wrong_patient_cda_shares_its_quarantine(
    record: Record, n1_cda: bytes, n1_pdf: bytes
) -> None:
    cda = with_ins(n1_cda, OTHER_INS)
    other_pdf = n1_pdf + b"\n% another copy\n"
    message_id = record.mail([xdm_part(n1_xdm(cda, ins=OTHER_INS)), pdf_part(other_pdf)])
    documents = record.documents(message_id)
    assert _states(documents) == [DocumentState.QUARANTINED, DocumentState.QUARANTINED]
    assert [d.error_code for d in documents] == [904, 904]
    assert documents[1].identity_rule == "E3.same-message"


# ---------------------------------------------------------------------------------------------
# E4: versions and duplicates


def test_e4_same_report_mailed_twice_filed_once(record: Record, n1_cda: bytes) -> None:
    first = record.mail([xdm_part(n1_xdm(n1_cda))])
    second = record.mail([xdm_part(n1_xdm(n1_cda))])
    [original] = record.documents(first)
    [again] = record.documents(second)
    assert (original.state, again.state) == (DocumentState.FILED, DocumentState.DUPLICATE)
    assert again.duplicate_of_id == original.id
    assert record.attachments(second)[0].outcome == "read"


def test_e4_same_pdf_mailed_twice_filed_once_by_content_hash(record: Record, n1_pdf: bytes) -> None:
    record.mail([pdf_part(n1_pdf, "a.pdf")], subject="Un")
    record.mail([pdf_part(n1_pdf, "b.pdf")], subject="Deux")
    assert _states(record.documents()) == [DocumentState.FILED, DocumentState.DUPLICATE]


def _waiting_on_record_lock(database: Database, account_id: int) -> int:
    """How many transactions wait for this patient's record lock (in this schema)."""
    with database.reading() as session:
        return int(
            session.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND objsubid = 2 AND objid::text::bigint = :account "
                    "AND classid::text::bigint = hashtext(current_schema())::bigint & 4294967295"
                ),
                {"account": account_id},
            )
            or 0
        )


def test_e4_two_workers_filing_one_report_at_once_file_it_once(
    record: Record, n1_pdf: bytes
) -> None:
    """Two job workers file the same report for one patient at the same moment (two mails,
    two jobs): one is filed, the other is its duplicate, and neither attempt fails."""
    if record.database.dialect != "postgresql":
        pytest.skip("SQLite runs one writer at a time: there is no race to show")
    first = record.deliver(build_mail([pdf_part(n1_pdf, "a.pdf")], subject="Un"))
    second = record.deliver(build_mail([pdf_part(n1_pdf, "b.pdf")], subject="Deux"))
    jobs = record.queue.claim("test-worker", limit=10, kinds=[FILE_DOCUMENTS_JOB])
    assert len(jobs) == 2
    handler = make_filing_handler(
        record.database, record.blobs, record.queue, record.settings, follow_up=False
    )
    failures: list[BaseException] = []

    def run(job: ClaimedJob) -> None:
        try:
            handler(job)
        except BaseException as error:  # reported by the assertion below
            failures.append(error)

    workers = [threading.Thread(target=run, args=(job,)) for job in jobs]
    # Something else filing for this patient (a transaction holding its record) makes both
    # workers reach the record at the same time, as two workers of a burst do.
    with record.database.transaction() as session:
        lock_record(session, record.account_id)
        for worker in workers:
            worker.start()
        wait_until(
            lambda: _waiting_on_record_lock(record.database, record.account_id) == 2,
            timeout=30,
            message="the two filings did not wait for the patient's record",
        )
    for worker in workers:
        worker.join(timeout=30)
    assert failures == []
    states = sorted(d.state for m in (first, second) for d in record.documents(m))
    assert states == sorted([DocumentState.FILED.value, DocumentState.DUPLICATE.value])
    with record.database.reading() as session:
        done = session.scalars(select(JobRow.state).where(JobRow.id.in_([j.id for j in jobs])))
        assert set(done) == {DONE}


def test_e4_rplc_replacement_supersedes_version_1(record: Record) -> None:
    v2 = IMG_SAMPLE.read_bytes()
    record.mail([Part("cr-img-v1.xml", img_v1(v2), "text/xml")], subject="v1")
    record.mail([Part("cr-img-v2.xml", v2, "text/xml")], subject="v2")
    old, new = record.documents()
    assert (old.document_uid, new.document_uid) == (IMG_V1_UID, IMG_V2_UID)
    assert old.set_id == new.set_id and (old.version, new.version) == (1, 2)
    assert (old.state, old.status) == (DocumentState.FILED, VersionStatus.SUPERSEDED)
    assert old.superseded_by_id == new.id and old.content_blob_id is not None
    assert (new.state, new.status) == (DocumentState.FILED, VersionStatus.CURRENT)
    assert new.replaces_uid == IMG_V1_UID


def test_e4_version_1_arriving_after_its_replacement_is_filed_superseded(
    record: Record,
) -> None:
    v2 = IMG_SAMPLE.read_bytes()
    record.mail([Part("cr-img-v2.xml", v2, "text/xml")], subject="v2")
    record.mail([Part("cr-img-v1.xml", img_v1(v2), "text/xml")], subject="v1")
    new, old = record.documents()
    assert (new.status, old.status) == (VersionStatus.CURRENT, VersionStatus.SUPERSEDED)
    assert old.superseded_by_id == new.id


def test_e4_duplicates_are_per_patient(
    database: Database, blobs: BlobStore, tmp_path: Path, n1_cda: bytes
) -> None:
    """The same report to two patients' mailboxes is filed in each record (E3 aside)."""
    record = Record(database, blobs, _queue(database), make_settings(tmp_path))
    first = add_patient(database)
    second = add_patient(database, ins=OTHER_INS)
    record.account_id, record.address = first[0], first[1]
    content = build_mail([xdm_part(n1_xdm(n1_cda))])
    record.deliver(content, recipients=[(first[0], first[1]), (second[0], second[1])])
    record.file()
    states = {(d.account_id, d.state) for d in record.documents()}
    assert states == {(first[0], "filed"), (second[0], "quarantined")}


# ---------------------------------------------------------------------------------------------
# E5: visibility


def test_e5_author_flags_from_xdm_metadata(record: Record, n1_cda: bytes) -> None:
    archive = n1_xdm(n1_cda, visibility=("MASQUE_PS", "INVISIBLE_REPRESENTANTS_LEGAUX"))
    [document] = record.documents(record.mail([xdm_part(archive)]))
    assert document.state == DocumentState.FILED
    assert document.hidden_from_professionals and document.hidden_from_representatives
    assert not document.hidden_from_patient
    assert set(document.author_flags.split(",")) == {"MASQUE_PS", "INVISIBLE_REPRESENTANTS_LEGAUX"}


def test_e5_invisible_patient_flags_from_real_hl7_mdm(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    record = _hl7_record(database, blobs, tmp_path)
    message_id = record.mail([Part("cr.er7", MDM_SAMPLE.read_bytes(), "text/plain")])
    [document] = record.documents(message_id)
    assert document.state == DocumentState.FILED
    assert document.hidden_from_patient and document.hidden_from_representatives
    assert not document.hidden_from_professionals


def test_e5_patient_hides_a_document_from_professionals(record: Record, n1_pdf: bytes) -> None:
    [document] = record.documents(record.mail([pdf_part(n1_pdf)]))
    with record.database.transaction() as session:
        assert set_hidden_from_professionals(session, record.account_id, document.public_id, True)
        assert not set_hidden_from_professionals(
            session, record.account_id + 99, document.public_id, True
        )
    [document] = record.documents()
    assert document.hidden_from_professionals
    with record.database.transaction() as session:
        assert set_hidden_from_professionals(session, record.account_id, document.public_id, False)
    assert not record.documents()[0].hidden_from_professionals


# ---------------------------------------------------------------------------------------------
# E1: policy patient-choice


def test_e1_patient_choice_offers_until_the_patient_adds(record: Record, tmp_path: Path) -> None:
    record.settings = make_settings(tmp_path, filing_policy="patient-choice")
    v2 = IMG_SAMPLE.read_bytes()
    record.mail([Part("v1.xml", img_v1(v2), "text/xml")], subject="v1")
    record.mail([Part("v2.xml", v2, "text/xml")], subject="v2")
    old, new = record.documents()
    assert (old.state, new.state) == (DocumentState.OFFERED, DocumentState.OFFERED)
    assert old.filed_at is None and old.status == VersionStatus.CURRENT
    with record.database.transaction() as session:
        added = add_offered_document(session, record.account_id, old.public_id)
        assert added is not None and added.state == DocumentState.FILED
        assert add_offered_document(session, record.account_id, old.public_id) is None
    with record.database.transaction() as session:
        assert add_offered_document(session, record.account_id, new.public_id) is not None
    old, new = record.documents()
    assert (old.state, old.status) == (DocumentState.FILED, VersionStatus.SUPERSEDED)
    assert (new.state, new.status) == (DocumentState.FILED, VersionStatus.CURRENT)


def test_e1_e5_patient_choice_files_what_the_patient_may_not_see(
    record: Record, tmp_path: Path, n1_cda: bytes
) -> None:
    record.settings = make_settings(tmp_path, filing_policy="patient-choice")
    archive = n1_xdm(n1_cda, visibility=("INVISIBLE_PATIENT",))
    [document] = record.documents(record.mail([xdm_part(archive)]))
    assert (document.state, document.hidden_from_patient) == (DocumentState.FILED, True)


def test_e1_patient_choice_duplicate_of_an_offered_document(
    record: Record, tmp_path: Path, n1_pdf: bytes
) -> None:
    record.settings = make_settings(tmp_path, filing_policy="patient-choice")
    record.mail([pdf_part(n1_pdf)], subject="Un")
    record.mail([pdf_part(n1_pdf)], subject="Deux")
    assert _states(record.documents()) == [DocumentState.OFFERED, DocumentState.DUPLICATE]


# ---------------------------------------------------------------------------------------------
# D4: MSSanté headers


def test_d4_mss_headers_matching_record_nothing(record: Record, n1_cda: bytes) -> None:
    headers = {"X-MSS-CODECDA": "11502-2", "X-MSS-INS": "O", "X-MSS-NIL": "LPS-TEST-1.0"}
    message_id = record.mail([xdm_part(n1_xdm(n1_cda))], headers=headers)
    assert record.mss_problems(message_id) is None


def test_d4_codecda_and_ins_mismatch_recorded_not_blocking(record: Record, n1_cda: bytes) -> None:
    cda = without_birthplace(n1_cda)
    headers = {"X-MSS-CODECDA": "34112-3", "X-MSS-INS": "O"}
    message_id = record.mail([xdm_part(n1_xdm(cda))], headers=headers)
    assert record.mss_problems(message_id) == ["X-MSS-CODECDA:mismatch", "X-MSS-INS:mismatch"]
    assert len(record.documents(message_id)) == 1


def test_d4_missing_headers_and_unexpected_ones(
    record: Record, n1_cda: bytes, n1_pdf: bytes
) -> None:
    first = record.mail([xdm_part(n1_xdm(n1_cda))])
    assert record.mss_problems(first) == ["X-MSS-CODECDA:missing", "X-MSS-INS:missing"]
    headers = {"X-MSS-CODECDA": "11502-2", "X-MSS-INS": "maybe"}
    second = record.mail([pdf_part(n1_pdf)], headers=headers, subject="pdf")
    assert record.mss_problems(second) == ["X-MSS-CODECDA:unexpected", "X-MSS-INS:invalid"]


def test_d4_codes_hold_no_health_content(record: Record, n1_cda: bytes) -> None:
    headers = {"X-MSS-CODECDA": "34112-3", "X-MSS-INS": "N"}
    message_id = record.mail([xdm_part(n1_xdm(n1_cda))], headers=headers)
    problems = record.mss_problems(message_id)
    assert problems is not None
    text = json.dumps(problems)
    assert "PAT-TROIS" not in text and "279035121518989" not in text and "11502" not in text


# ---------------------------------------------------------------------------------------------
# Helpers


def _queue(database: Database) -> JobQueue:
    return JobQueue(database)


def _hl7_record(database: Database, blobs: BlobStore, tmp_path: Path) -> Record:
    account_id, address, password = add_patient(database, birthplace="63220")
    return Record(
        database,
        blobs,
        _queue(database),
        make_settings(tmp_path),
        account_id,
        address,
        password,
    )
