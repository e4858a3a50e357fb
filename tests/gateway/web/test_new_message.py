"""Writing a new message from the webmail, in a real browser (H2, C4, D2, D3).

The patient may start a conversation only with a professional who wrote to them and did not
end the exchange (C4, D3), at the address that professional gave (D2). The page lists those
contacts; the submission rule table — the SMTP port's — judges the recipient again when the
message is sent, so a hand-made POST to anyone else is refused and nothing leaves.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from caducee.mailboxes.accounts.store import Account
from caducee.mailboxes.models import Folder, MailboxEntry, StoredMessage
from caducee.storage.jobs import JobRow
from tests.harness.browser import (
    WebPatient,
    activated_patient,
    base_url,
    professional_inbox,
    professional_writes,
    sign_in,
)
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

NOBODY = (
    "Je peux uniquement contacter les professionnels qui m'ont déjà écrit et qui n'ont pas "
    "mis fin aux échanges."
)


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    """The harness's served demo home whose workers run (filing releases the patient's copy)."""
    return working_gateway


def _listed(page: Any, subject: str) -> None:
    """Wait until the conversation list shows ``subject`` (delivered and filed)."""
    wait_until(
        lambda: page.reload() and page.locator(".conversation", has_text=subject).count() == 1,
        timeout=30,
        message=f"{subject!r} never showed in the list",
    )


def _from_patient(served: ServedGateway, patient: WebPatient) -> list[EmailMessage]:
    return [m for m in professional_inbox(served) if patient.address in str(m.get("From", ""))]


def test_C4_D2_a_new_message_reaches_a_professional_who_wrote(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    professional_writes(served, patient.address, "Suivi", "Bonjour,\nécrivez-moi au besoin.\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    _listed(page, "Suivi")
    page.get_by_role("link", name="Nouveau message").click()
    expect(page.get_by_role("heading", name="Nouveau message", level=1)).to_be_visible()
    recipient = page.get_by_label("Destinataire")
    expect(recipient.locator("option")).to_have_count(1)
    recipient.select_option(label="Claire MARTIN")
    page.get_by_label("Objet").fill("Question sur mon traitement")
    page.get_by_label("Message", exact=True).fill("Bonjour docteur,\ndois-je continuer ?\n")
    page.get_by_role("button", name="Envoyer").click()
    expect(page).to_have_url(re.compile(r"/webmail/conversations\?sent=1$"))
    expect(page.get_by_role("status")).to_have_text("Message envoyé")
    received = wait_until(
        lambda: _from_patient(served, patient), timeout=30, message="never received"
    )
    assert len(received) == 1
    assert str(received[0]["Subject"]) == "Question sur mon traitement"
    assert "dois-je continuer ?" in received[0].get_content()


def test_C4_D3_nobody_to_write_to_shows_the_national_text_and_no_form(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    page = browser_context.new_page()
    sign_in(page, served, patient)
    page.get_by_role("link", name="Nouveau message").click()
    expect(page.get_by_role("note")).to_have_text(NOBODY)
    assert page.locator("form[action='/webmail/compose/new']").count() == 0
    # the only professional who wrote ended the exchange (D3): still nobody to write to
    professional_writes(served, patient.address, "Fin", "Bonjour.\n", end_exchange=True)
    page.goto(base_url(served) + "/webmail/conversations")
    _listed(page, "Fin")
    page.get_by_role("link", name="Nouveau message").click()
    expect(page.get_by_role("note")).to_have_text(NOBODY)
    assert page.locator("form[action='/webmail/compose/new']").count() == 0


def _traces(served: ServedGateway, patient: WebPatient) -> tuple[int, int, int]:
    """What a sent message leaves: stored copies, Sent entries, queued jobs naming the sender."""
    components = served.components()
    try:
        with components.database.reading() as session:
            stored = session.scalar(
                select(func.count())
                .select_from(StoredMessage)
                .where(StoredMessage.envelope_from == patient.address)
            )
            sent = session.scalar(
                select(func.count())
                .select_from(MailboxEntry)
                .join(Folder, Folder.id == MailboxEntry.folder_id)
                .join(Account, Account.id == Folder.account_id)
                .where(Account.address == patient.address, Folder.name == "Sent")
            )
            payloads: list[object] = list(session.scalars(select(JobRow.payload)))
        jobs = [str(payload) for payload in payloads]
        return int(stored or 0), int(sent or 0), sum(patient.address in job for job in jobs)
    finally:
        components.close()


def test_C4_a_forged_recipient_is_refused_and_nothing_is_delivered(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    professional_writes(served, patient.address, "Contact", "Bonjour.\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    _listed(page, "Contact")
    page.goto(base_url(served) + "/webmail/new")
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    before = _traces(served, patient)
    stranger = served.peer["professional"]  # in the trust space, never wrote to this patient
    forged = page.request.post(
        base_url(served) + "/webmail/compose/new",
        form={"csrf": token or "", "to": stranger, "subject": "Bonjour", "body": "Forcé."},
    )
    assert forged.status == 403
    assert NOBODY in forged.text().replace("&#39;", "'")
    assert _traces(served, patient) == before
    assert _from_patient(served, patient) == []
