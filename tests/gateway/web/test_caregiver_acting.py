"""Acting as a caregiver (aidant) across the webmail's pages, in Chromium (F3, F4, E5, G2).

Patient A (the aidée) invites B, B accepts (the back-end functions: the pages are
test_caregivers.py's). B switches to A's profile: A's documents are listed as a caregiver sees
them (one ``INVISIBLE_REPRESENTANTS_LEGAUX`` is not), the page says some actions are not
available, and changing a document's visibility is refused (403, "Cette action est
uniquement disponible pour <nom>."). B reads A's conversation with the professional, the
read receipt goes (G2: the message was displayed), B replies: the professional reads over
IMAP a reply from A's address ending with the signature line; deleting the conversation is
refused. A's history shows B's reads and send, B as a caregiver (F4). B's account page is
still B's. A revokes: B's next page is B's own again (the switch is judged on every request).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect
from sqlalchemy import select, update

from caducee.mailboxes.access.caregivers import Lookup, answer, invite, revoke
from caducee.mailboxes.access.rights import Actor
from caducee.mailboxes.accounts.store import Account, Patient
from caducee.records.models import RecordDocument
from caducee.records.patient_view import add_own_file
from caducee.records.readers.cda import french_time
from caducee.storage.audit import AuditEvent
from tests.harness.browser import (
    activated_patient,
    base_url,
    professional_writes,
    receipt_for,
    reply_to,
    sign_in,
)
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

REPORT = b"%PDF-1.4\n% compte rendu de test\n%%EOF\n"
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
SIGNATURE = "Ce message a été rédigé par BERNARD TEST, l'aidant de WEBMAIL TEST."


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    """The harness's served demo home whose workers run (the reply is delivered)."""
    return working_gateway


def _ids(served: ServedGateway, *addresses: str) -> list[int]:
    components = served.components()
    try:
        with components.database.reading() as session:
            return [
                int(session.scalar(select(Account.id).where(Account.address == address)) or 0)
                for address in addresses
            ]
    finally:
        components.close()


def _delegate(served: ServedGateway, helped_id: int, caregiver_id: int) -> int:
    """A invites B by INS and B accepts, as the pages would (each change audited)."""
    today = datetime.now(french_time()).date()
    components = served.components()
    try:
        with components.database.transaction() as session:
            session.execute(
                update(Patient)
                .where(Patient.account_id == caregiver_id)
                .values(given_name="BERNARD")
            )
            ins = session.scalar(select(Patient.ins).where(Patient.account_id == caregiver_id))
            assert ins is not None
            sent = invite(
                session, helped_id, Lookup(ins=str(ins)), Actor.patient(helped_id, "test"), today
            )
            answer(session, caregiver_id, sent.id, True, Actor.patient(caregiver_id, "test"), today)
            return sent.id
    finally:
        components.close()


def _revoke(served: ServedGateway, helped_id: int, delegation_id: int) -> None:
    components = served.components()
    try:
        with components.database.transaction() as session:
            revoke(session, helped_id, delegation_id, Actor.patient(helped_id, "test"))
    finally:
        components.close()


def _document(served: ServedGateway, account_id: int, title: str, data: bytes) -> str:
    components = served.components()
    try:
        with components.database.transaction() as session:
            address = session.scalar(select(Account.address).where(Account.id == account_id))
            added = add_own_file(
                session,
                components.blobs,
                account_id,
                file_name="compte-rendu.pdf",
                content_type="application/pdf",
                data=data,
                title=title,
                sender=str(address),
            )
            assert isinstance(added, RecordDocument)
            return str(added.public_id)
    finally:
        components.close()


def _hide_from_representatives(served: ServedGateway, public_id: str) -> None:
    components = served.components()
    try:
        with components.database.transaction() as session:
            session.execute(
                update(RecordDocument)
                .where(RecordDocument.public_id == public_id)
                .values(hidden_from_representatives=True)
            )
    finally:
        components.close()


def _accessible(page: Any, name: str) -> None:
    """No WCAG 2.1 A/AA violation on the page (axe-core)."""
    page.wait_for_load_state()
    violations = Axe().run(page, options=WCAG).response["violations"]
    assert [item["id"] for item in violations] == [], name


def _events(served: ServedGateway, helped_id: int) -> list[tuple[str, str, str]]:
    components = served.components()
    try:
        with components.database.reading() as session:
            rows = session.execute(
                select(AuditEvent.actor_kind, AuditEvent.actor_id, AuditEvent.action)
                .where(AuditEvent.subject_account_id == helped_id)
                .order_by(AuditEvent.position)
            ).all()
        return [(str(row.actor_kind), str(row.actor_id), str(row.action)) for row in rows]
    finally:
        components.close()


def test_f3_f4_e5_g2_a_caregiver_reads_and_replies_for_the_helped_person(
    served: ServedGateway, browser_context: Any, chromium: Any
) -> None:
    base = base_url(served)
    helped, caregiver = activated_patient(served), activated_patient(served)
    helped_id, caregiver_id = _ids(served, helped.address, caregiver.address)
    delegation_id = _delegate(served, helped_id, caregiver_id)
    shown = _document(served, helped_id, "Bilan sanguin", REPORT + b"% a\n")
    secret = _document(served, helped_id, "Consultation confidentielle", REPORT + b"% b\n")
    _hide_from_representatives(served, secret)
    message_id = professional_writes(
        served, helped.address, "Résultats de votre bilan", "Bonjour,\nvos résultats.\n"
    )

    page = browser_context.new_page()
    sign_in(page, served, caregiver)
    page.goto(base + "/webmail/profiles")
    helped_profile = page.locator(".helped-profile")
    expect(helped_profile).to_have_count(1)
    expect(helped_profile).to_contain_text("WEBMAIL TEST")
    _accessible(page, "profiles with a person helped")
    helped_profile.get_by_role("button", name=re.compile("^Agir pour cette personne")).click()

    # documents: the caregiver's view (E5 from the table), the notice, no visibility change
    expect(page).to_have_url(re.compile(r"/webmail/documents$"))
    expect(
        page.get_by_role("heading", name="Documents de santé de WEBMAIL TEST", level=1)
    ).to_be_visible()
    expect(page.get_by_role("note")).to_contain_text(
        "En tant qu'aidant, certaines actions ne sont pas disponibles."
    )
    expect(page.get_by_text("Bilan sanguin")).to_be_visible()
    expect(page.get_by_text("Consultation confidentielle")).to_have_count(0)
    _accessible(page, "documents as a caregiver")
    assert page.request.get(base + f"/webmail/documents/{secret}").status == 404
    page.goto(base + f"/webmail/documents/{shown}")
    expect(page.get_by_role("note")).to_contain_text("En tant qu'aidant")
    hide = page.get_by_role("button", name="Le masquer aux professionnels de santé")
    expect(hide).to_have_count(0)
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    refused = page.request.post(
        base + f"/webmail/documents/{shown}/visibility", form={"csrf": csrf, "hidden": "1"}
    )
    assert refused.status == 403
    assert "Cette action est uniquement disponible pour WEBMAIL TEST." in refused.text()

    # messaging: A's mailbox, said as such, with the caregiver's notice
    page.goto(base + "/webmail/conversations")
    expect(page.get_by_role("heading", level=1)).to_have_text("Messages de WEBMAIL TEST")
    expect(page.locator(".address")).to_have_text(helped.address)
    expect(page.get_by_role("note")).to_contain_text(
        "En tant qu'aidant, certaines actions ne sont pas disponibles."
    )
    row = page.locator(".conversation", has_text="Résultats de votre bilan")
    wait_until(
        lambda: page.reload() and row.count(),
        timeout=30,
        message="the professional's message never showed in the helped person's list",
    )
    assert receipt_for(served, message_id) is None
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Résultats de votre bilan", level=1)).to_be_visible()
    expect(page.locator(".message .body")).to_contain_text("vos résultats.")
    wait_until(lambda: receipt_for(served, message_id), timeout=30, message="no read receipt (G2)")
    expect(page.get_by_role("note").first).to_contain_text("En tant qu'aidant")
    expect(page.get_by_role("link", name="Supprimer cette conversation")).to_have_count(0)
    conversation = page.url
    deleting = page.request.get(conversation + "/delete")
    assert deleting.status == 403
    assert "Cette action est uniquement disponible pour WEBMAIL TEST." in deleting.text()
    assert page.request.post(conversation + "/delete", form={"csrf": csrf}).status == 403, (
        "a caregiver cannot delete a conversation"
    )

    page.get_by_label(re.compile("^Ma réponse à")).fill("Merci docteur.")
    page.get_by_role("button", name="Envoyer", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Message envoyé")
    reply = wait_until(lambda: reply_to(served, message_id), timeout=30, message="no reply")
    assert helped.address in str(reply["From"])
    text = reply.get_content()
    assert "Merci docteur." in text
    assert text.rstrip().endswith(SIGNATURE)

    # F4: the caregiver is the actor, the helped person the subject
    events = _events(served, helped_id)
    mine = f"account:{caregiver_id}"
    assert ("caregiver", mine, "message.read") in events
    assert ("caregiver", mine, "message.send") in events
    assert ("caregiver", mine, "document.content") in events  # the PDF the page framed
    assert not any(kind == "caregiver" and actor != mine for kind, actor, _ in events)

    # B's own pages stay B's
    page.goto(base + "/webmail/account")
    expect(page.locator(".address")).to_have_text(caregiver.address)

    # A's history names B as caregiver
    other_context = chromium.new_context(locale="fr-FR")
    try:
        other = other_context.new_page()
        sign_in(other, served, helped)
        other.goto(base + "/webmail/privacy/history")
        by_caregiver = other.locator("tr.event", has_text="(mon aidant)")
        expect(by_caregiver.filter(has_text="Lecture d'un message").first).to_contain_text(
            caregiver.address
        )
        expect(by_caregiver.filter(has_text="Message envoyé")).to_have_count(1)
        expect(by_caregiver.filter(has_text="Consultation d'un document").first).to_be_visible()
    finally:
        other_context.close()

    # revoked: the switch no longer holds, on the very next request
    _revoke(served, helped_id, delegation_id)
    page.goto(base + "/webmail/documents")
    expect(page.get_by_role("heading", name="Mes documents de santé", level=1)).to_be_visible()
    page.goto(base + "/webmail/conversations")
    expect(page.locator(".conversation", has_text="Résultats de votre bilan")).to_have_count(0)
    assert page.request.get(conversation).status == 404
