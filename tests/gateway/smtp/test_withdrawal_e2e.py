"""E4, F4, G1, G3 end to end: initial → replacement → deletion of one document, over SMTP.

The three real ANS MDM messages of the volet "transmission de documents CDA en HL7v2"
(V2.1: ``MDM^T02``, ``MDM^T10``, ``MDM^T04`` with ``OBX-11 = D`` and ``ORC-1 = CA``) are
mailed by the demo peer operator (DKIM-signed, mutual TLS) to the demo patient; the served
gateway's job workers file them. The document ends withdrawn: kept for the operator and
the audit, nothing current in FHIR, the withdrawal in the audit trail and in the patient's
history, a ``processed`` receipt for the sender.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from caducee.mailboxes.accounts.store import Patient
from caducee.mailboxes.delivery import FILE_DOCUMENTS_JOB
from caducee.records.models import DocumentState, RecordDocument
from caducee.storage.audit import Action, history
from caducee.storage.jobs import DONE, JobRow
from tests.harness.identities import DEMO_INS
from tests.harness.paths import SAMPLES
from tests.harness.reports import Part, build_mail
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

HL7 = SAMPLES / "ansforge-hl7V2-exemples"
INITIAL = HL7 / "Trans_Doc_V2.1_MDM_Transmission_initiale/message_MDM_CR_Radio_INIT_N1_Base64.er7"
REPLACEMENT = HL7 / "Trans_Doc_V2.1_MDM_Remplacement/message_MDM_CR_Radio_RPLC_N1.er7"
DELETION = HL7 / "Trans_Doc_V2.1_MDM_Suppression/message_MDM_CR_Radio_DEL_N1.er7"
V1_UID = "1.2.250.1.71.4.2.2.120456789.71024000081"
V2_UID = "1.2.250.1.71.4.2.2.120456789.71024000082"
IMAGING = "18748-4"


def _send(gateway: ServedGateway, path: Path, *, receipt: bool = False) -> None:
    raw = build_mail(
        [Part(path.name, path.read_bytes(), "text/plain")],
        subject="CR d'imagerie médicale",
        sender=gateway.peer["professional"],
        to=gateway.credentials["patient"]["address"],
        receipt=receipt,
    )
    gateway.send(gateway.sign(raw))


def _filing_done(gateway: ServedGateway, count: int) -> bool:
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            states = session.scalars(
                select(JobRow.state).where(JobRow.kind == FILE_DOCUMENTS_JOB)
            ).all()
    finally:
        components.close()
    return len(states) >= count and all(state == DONE for state in states)


def _documents(gateway: ServedGateway) -> dict[str, RecordDocument]:
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            rows = session.scalars(select(RecordDocument)).all()
            return {str(row.document_uid): row for row in rows if row.document_uid}
    finally:
        components.close()


def _fhir(gateway: ServedGateway, query: str) -> list[dict[str, Any]]:
    bundle = gateway.http_get(f"/fhir/DocumentReference{query}", accept="application/fhir+json")
    return [entry["resource"] for entry in bundle.get("entry", [])]


@pytest.fixture(scope="module")
def hl7_patient(working_gateway: ServedGateway) -> ServedGateway:
    """The demo patient, with the birthplace the ANS HL7 v2 examples give her (63220)."""
    components = working_gateway.components()
    try:
        with components.database.transaction() as session:
            session.execute(
                update(Patient).where(Patient.ins == DEMO_INS).values(birthplace="63220")
            )
    finally:
        components.close()
    return working_gateway


def test_e4_initial_replacement_deletion_over_smtp_leaves_the_document_withdrawn(
    hl7_patient: ServedGateway,
) -> None:
    gateway = hl7_patient
    _send(gateway, INITIAL)
    wait_until(lambda: _filing_done(gateway, 1), message="initial version not filed")
    _send(gateway, REPLACEMENT)
    wait_until(lambda: _filing_done(gateway, 2), message="replacement not filed")
    current = [r for r in _fhir(gateway, "") if r["type"]["coding"][0]["code"] == IMAGING]
    assert len(current) == 1, "the replacement is listed (the initial was INVISIBLE_PATIENT)"

    _send(gateway, DELETION, receipt=True)
    wait_until(lambda: _filing_done(gateway, 3), message="deletion request not processed")

    documents = _documents(gateway)
    v1, v2 = documents[V1_UID], documents[V2_UID]
    assert v2.state == DocumentState.WITHDRAWN and v2.withdrawn_at is not None
    assert v2.content_blob_id is not None, "kept for the operator and the audit"
    assert (v1.status, v1.superseded_by_id) == ("superseded", v2.id)
    assert len(documents) == 2, "the deletion request filed nothing"

    # FHIR: nothing current for it, in any status, and no read by id.
    for query in ("", "?status=current", "?status=superseded", "?status=current,superseded"):
        assert not [r for r in _fhir(gateway, query) if r["type"]["coding"][0]["code"] == IMAGING]
    with pytest.raises(urllib.error.HTTPError) as refused:
        gateway.http_get(f"/fhir/DocumentReference/{v2.public_id}", accept="application/fhir+json")
    assert refused.value.code == 404

    # F4: the audit trail and the patient's own history show the withdrawal.
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            events = history(
                session, v2.account_id, actions=[Action.DOCUMENT_WITHDRAW.value], limit=10
            )
            assert [(e.object_id, e.result) for e in events] == [(v2.public_id, "ok")]
    finally:
        components.close()
    page = gateway.http_get("/api/patient/history?action=document.withdraw")
    assert [(e["object"]["id"], e["result"]) for e in page["events"]] == [(v2.public_id, "ok")]

    # G3: the sender asked for a receipt: processed.
    mdns = wait_until(lambda: gateway.queued_mdns(), interval=0.3, message="no receipt queued")
    assert "Error" not in str(mdns[-1]["Subject"]) and "KO" not in str(mdns[-1]["Subject"])
    assert b"; processed" in mdns[-1].as_bytes()
