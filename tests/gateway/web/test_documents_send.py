"""H2 "sending a record document to a professional", in Chromium against a served gateway.

From a document's page the patient chooses "Envoyer à un professionnel de santé": the
new-message page opens with the national app's subject and text and the document attached;
she picks a professional who wrote to her (C4) and sends; the professional reads the message
over IMAP with the document's bytes. A document she masked from professionals may be sent
(her choice, E5). A document not in the record she is shown — another patient's, or one
invisible to legal representatives while she acts for a child (F3, E5) — is a 404, on the
page and in a forged form, and nothing leaves.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select, update

from caducee.mailboxes.access.rights import Actor, add_representative
from caducee.mailboxes.accounts.store import Account, Patient
from caducee.records.models import RecordDocument
from caducee.records.patient_view import add_own_file
from tests.harness.browser import (
    WebPatient,
    activated_patient,
    base_url,
    professional_inbox,
    professional_writes,
    sign_in,
)
from tests.harness.identities import valid_ins
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

REPORT = b"%PDF-1.4\n% compte rendu de test\n%%EOF\n"


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    return working_gateway


def _own_document(
    served: ServedGateway, address: str, title: str, data: bytes, *, masked: bool = False
) -> str:
    components = served.components()
    try:
        with components.database.transaction() as session:
            account_id = session.scalar(select(Account.id).where(Account.address == address))
            assert account_id is not None
            added = add_own_file(
                session,
                components.blobs,
                account_id,
                file_name="compte-rendu.pdf",
                content_type="application/pdf",
                data=data,
                title=title,
                sender=address,
            )
            assert isinstance(added, RecordDocument)
            added.hidden_from_professionals = masked
            return str(added.public_id)
    finally:
        components.close()


def _from_patient(served: ServedGateway, patient: WebPatient) -> list[EmailMessage]:
    return [m for m in professional_inbox(served) if patient.address in str(m.get("From", ""))]


def _files(message: EmailMessage) -> dict[str, tuple[str, bytes]]:
    found = {}
    for part in message.iter_attachments():
        assert isinstance(part, EmailMessage)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found[str(part.get_filename())] = (part.get_content_type(), payload)
    return found


def _written_to(served: ServedGateway, browser_context: Any) -> tuple[Any, WebPatient]:
    patient = activated_patient(served)
    professional_writes(served, patient.address, "Résultats", "Bonjour,\nvos résultats.\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    wait_until(
        lambda: page.reload() and page.locator(".conversation", has_text="Résultats").count(),
        timeout=30,
        message="the professional's message never showed (D2: not yet a contact)",
    )
    return page, patient


def test_h2_a_masked_record_document_is_sent_to_a_professional_who_reads_it_over_imap(
    served: ServedGateway, browser_context: Any
) -> None:
    page, patient = _written_to(served, browser_context)
    public_id = _own_document(served, patient.address, "Compte rendu", REPORT, masked=True)
    page.goto(base_url(served) + f"/webmail/documents/{public_id}")
    page.get_by_role("link", name="Envoyer à un professionnel de santé").click()
    expect(page.get_by_role("heading", name="Nouveau message", level=1)).to_be_visible()
    subject = page.get_by_label("Objet")
    expect(subject).to_have_value(re.compile(r"^Document de "))
    body = page.get_by_label("Message", exact=True)
    expect(body).to_have_value(re.compile(r"^Bonjour,\n\nJe souhaite vous partager mon document\."))
    expect(body).to_have_value(re.compile(r"Bonne réception\.\n"))
    expect(page.locator("#record-attached")).to_contain_text("compte-rendu.pdf")
    page.get_by_label("Destinataire").select_option(label="Claire MARTIN")
    page.get_by_role("button", name="Envoyer", exact=True).click()
    expect(page).to_have_url(re.compile(r"/webmail/conversations\?sent=1$"))
    [received] = wait_until(
        lambda: _from_patient(served, patient), timeout=30, message="never received"
    )
    assert str(received["Subject"]).startswith("Document de ")
    assert "Je souhaite vous partager mon document." in str(
        received.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    )
    assert _files(received) == {"compte-rendu.pdf": ("application/pdf", REPORT)}


def test_h2_f3_a_document_not_shown_cannot_be_sent(
    served: ServedGateway, browser_context: Any
) -> None:
    page, parent = _written_to(served, browser_context)
    base = base_url(served)
    other = served.add_patient(valid_ins())
    others = _own_document(served, other, "Pas le mien", REPORT)
    assert page.request.get(base + f"/webmail/documents/{others}/send").status == 404

    child_address = served.add_patient(valid_ins())
    components = served.components()
    try:
        with components.database.transaction() as session:
            parent_id = session.scalar(select(Account.id).where(Account.address == parent.address))
            child_id = session.scalar(select(Account.id).where(Account.address == child_address))
            assert parent_id is not None and child_id is not None
            ten = datetime.now(UTC).date().replace(year=datetime.now(UTC).year - 10, day=1)
            session.execute(
                update(Patient).where(Patient.account_id == child_id).values(birth_date=ten)
            )
            add_representative(session, child_id, parent_id, Actor.operator())
    finally:
        components.close()
    shown = _own_document(served, child_address, "Carnet de vaccination", REPORT + b"% a\n")
    secret = _own_document(served, child_address, "Consultation", REPORT + b"% b\n")
    components = served.components()
    try:
        with components.database.transaction() as session:
            session.execute(
                update(RecordDocument)
                .where(RecordDocument.public_id == secret)
                .values(hidden_from_representatives=True)
            )
    finally:
        components.close()

    page.goto(base + "/webmail/documents")
    page.get_by_role("link", name="Changer de profil").click()
    page.get_by_role("button", name=re.compile("Voir les documents de ce profil")).click()
    page.goto(base + f"/webmail/documents/{shown}")
    expect(page.get_by_role("link", name="Envoyer à un professionnel de santé")).to_be_visible()
    assert page.request.get(base + f"/webmail/documents/{shown}/send").status == 200
    assert page.request.get(base + f"/webmail/documents/{secret}/send").status == 404
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    martin = served.professional.address
    for record in (secret, others):
        forged = page.request.post(
            base + "/webmail/compose/new",
            multipart={
                "csrf": csrf,
                "to": martin,
                "subject": "Document",
                "body": "Bonjour.",
                "record": record,
                "action": "send",
            },
        )
        assert forged.status == 404, record
    assert _from_patient(served, parent) == []
