"""H2: the patient pins documents of their record, as in the national app ("Épingle
ajoutée" / "Épingle retirée", "Voir mes documents épinglés"), in a real browser against a
served gateway; another patient cannot pin them (404) and a POST without its CSRF token is
refused (403)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from caducee.mailboxes.accounts.store import Account
from caducee.records.models import RecordDocument
from caducee.records.patient_view import add_own_file
from tests.harness.browser import activated_patient, base_url, sign_in
from tests.harness.served import ServedGateway


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    return working_gateway


def _own_files(served: ServedGateway, address: str, titles: list[str]) -> dict[str, str]:
    """Files of the patient's own, added as the documents page adds them: title → public id."""
    components = served.components()
    try:
        with components.database.transaction() as session:
            account_id = session.scalar(select(Account.id).where(Account.address == address))
            assert account_id is not None
            ids: dict[str, str] = {}
            for title in titles:
                added = add_own_file(
                    session,
                    components.blobs,
                    account_id,
                    file_name=f"{title.lower()}.txt",
                    content_type="text/plain",
                    data=f"{title}\n".encode(),
                    title=title,
                    sender=address,
                )
                assert isinstance(added, RecordDocument)
                ids[title] = added.public_id
            return ids
    finally:
        components.close()


def test_h2_pin_a_document_filter_the_pinned_ones_and_unpin(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    ids = _own_files(served, patient.address, ["Ordonnance", "Radiographie"])
    page = browser_context.new_page()
    sign_in(page, served, patient)
    base = base_url(served)

    page.goto(f"{base}/webmail/documents/{ids['Radiographie']}")
    page.get_by_role("button", name="Épingler ce document").click()
    expect(page.get_by_role("status").filter(has_text="Épingle ajoutée")).to_be_visible()
    expect(page.get_by_role("button", name="Retirer l'épingle")).to_be_visible()

    page.goto(f"{base}/webmail/documents")
    pinned_row = page.locator("li.document", has_text="Radiographie")
    expect(pinned_row).to_contain_text("Épinglé")
    expect(page.locator("li.document", has_text="Ordonnance")).not_to_contain_text("Épinglé")
    page.get_by_role("link", name="Voir mes documents épinglés").click()
    expect(page.locator("li.document")).to_have_count(1)
    expect(page.locator("li.document")).to_contain_text("Radiographie")

    # Another patient: the same POST with their own session and token finds nothing.
    other_context = browser_context.browser.new_context(locale="fr-FR")
    try:
        other = other_context.new_page()
        sign_in(other, served, activated_patient(served))
        other_csrf = other.locator("input[name=csrf]").first.get_attribute("value")
        response = other.request.post(
            f"{base}/webmail/documents/{ids['Ordonnance']}/pin",
            form={"csrf": other_csrf or "", "pinned": "1"},
        )
        assert response.status == 404
    finally:
        other_context.close()
    response = page.request.post(
        f"{base}/webmail/documents/{ids['Ordonnance']}/pin", form={"pinned": "1"}
    )
    assert response.status == 403

    page.goto(f"{base}/webmail/documents/{ids['Radiographie']}")
    page.get_by_role("button", name="Retirer l'épingle").click()
    expect(page.get_by_role("status").filter(has_text="Épingle retirée")).to_be_visible()
    page.goto(f"{base}/webmail/documents?pinned=1")
    expect(page.locator("li.document")).to_have_count(0)
    expect(page.get_by_text("Aucun document ne correspond à ces filtres.")).to_be_visible()
