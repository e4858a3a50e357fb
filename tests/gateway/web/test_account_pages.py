"""The account pages in a real browser: app passwords, export, closure, reopening (C1, I2, I3).

The pages call the services the CLI and the admin API call (app passwords of
``accounts_admin``, the lifecycle's export, closure and reopening), with the patient as actor;
what they do is checked from outside: an app password made here opens an IMAP session and
stops doing so once revoked, the export is the lifecycle's zip, a closed space cannot sign in
and reopening gives everything back.
"""

from __future__ import annotations

import imaplib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from caducee.mailboxes.accounts.lifecycle import show_space
from tests.harness.browser import (
    activated_patient,
    base_url,
    professional_writes,
    sign_in,
)
from tests.harness.served import Account, ServedGateway
from tests.harness.waiting import wait_until


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    """The harness's served demo home whose workers run (filing releases the patient's copy)."""
    return working_gateway


def _imap_login(served: ServedGateway, address: str, password: str) -> bool:
    try:
        with served.imap(Account(address, password)) as client:
            return client.select("INBOX", readonly=True)[0] == "OK"
    except imaplib.IMAP4.error:
        return False


def _space(served: ServedGateway, address: str) -> Any:
    components = served.components()
    try:
        with components.database.reading() as session:
            return show_space(session, address)
    finally:
        components.close()


def test_C1_an_app_password_is_shown_once_opens_imap_and_is_revoked(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    page = browser_context.new_page()
    sign_in(page, served, patient)
    page.get_by_role("link", name="Mon compte").click()
    expect(page.get_by_role("heading", name="Mon compte", level=1)).to_be_visible()
    expect(page.get_by_text("Aucun mot de passe de logiciel de messagerie")).to_be_visible()
    page.get_by_label("Nom du nouveau mot de passe").fill("Thunderbird")
    page.get_by_role("button", name="Créer un mot de passe").click()
    expect(page.get_by_role("status")).to_contain_text("affiché une seule fois")
    password = page.locator("#new-app-password").inner_text()
    assert re.fullmatch(r"[a-z2-9]{5}(-[a-z2-9]{5}){3}", password)
    assert _imap_login(served, patient.address, password)
    page.goto(base_url(served) + "/webmail/account")
    assert password not in page.content()  # shown once
    row = page.locator(".session", has_text="Thunderbird")
    expect(row).to_be_visible()
    row.get_by_role("button", name=re.compile("Révoquer")).click()
    expect(page.get_by_role("status")).to_have_text("Le mot de passe a été révoqué.")
    expect(page.locator(".session", has_text="Thunderbird")).to_have_count(0)
    assert not _imap_login(served, patient.address, password)


def test_I3_the_export_is_the_lifecycle_zip(served: ServedGateway, browser_context: Any) -> None:
    patient = activated_patient(served)
    professional_writes(served, patient.address, "Pour l'export", "Bonjour.\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    wait_until(
        lambda: page.reload() and page.locator(".conversation").count() == 1,
        timeout=30,
        message="the message never showed",
    )
    page.goto(base_url(served) + "/webmail/account")
    with page.expect_download() as info:
        page.get_by_role("button", name="Télécharger mes données").click()
    download = info.value
    assert download.suggested_filename == "mon-espace-sante.zip"
    data = Path(download.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["format"] == "caducee-export/1"
        assert manifest["address"] == patient.address
        assert b"Subject: Pour l'export" in archive.read("mail/INBOX.mbox")
        assert "fhir/bundle.json" in archive.namelist()


def test_I2_close_with_the_export_offered_first_then_reopen(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    page = browser_context.new_page()
    sign_in(page, served, patient)
    page.goto(base_url(served) + "/webmail/account")
    page.get_by_role("link", name="Clôturer mon espace").click()
    headings = page.get_by_role("heading", level=2)
    expect(headings.first).to_have_text("1. D'abord, télécharger mes données")
    expect(page.get_by_role("button", name="Télécharger mes données")).to_be_visible()
    page.get_by_label("Mon mot de passe, pour confirmer").fill("pas-le-bon-Mot2passe!")
    page.get_by_role("button", name="Clôturer mon espace").click()
    expect(page.get_by_role("alert")).to_have_text("Le mot de passe est incorrect.")
    assert _space(served, patient.address).status == "active"

    page.get_by_label("Je demande aussi la suppression de mes données personnelles").check()
    page.get_by_label("Mon mot de passe, pour confirmer").fill(patient.password)
    page.get_by_role("button", name="Clôturer mon espace").click()
    expect(page).to_have_url(re.compile(r"/webmail/closed\?deletion=1$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Mon espace est clôturé")
    space = _space(served, patient.address)
    assert space.status == "closed" and space.deletion_requested_at is not None
    page.goto(base_url(served) + "/webmail/conversations")
    expect(page).to_have_url(re.compile(r"/webmail/sign-in$"))  # the session ended

    page.goto(base_url(served) + "/webmail/reopen")
    page.get_by_label("Adresse de messagerie de santé").fill(patient.address)
    page.get_by_label("Mot de passe").fill(patient.password)
    page.get_by_label("Code à 6 chiffres de mon application d'authentification").fill("000000")
    page.get_by_role("button", name="Rouvrir mon espace").click()
    expect(page.get_by_role("alert")).to_contain_text("ou cet espace n'est pas clôturé")
    page.get_by_label("Adresse de messagerie de santé").fill(patient.address)
    page.get_by_label("Mot de passe").fill(patient.password)
    page.get_by_label("Code à 6 chiffres de mon application d'authentification").fill(
        patient.code(ahead=1)
    )
    page.get_by_role("button", name="Rouvrir mon espace").click()
    expect(page.get_by_role("heading", name="Messagerie de santé", level=1)).to_be_visible()
    space = _space(served, patient.address)
    assert space.status == "active" and space.deletion_requested_at is None


def test_H2_account_routes_404_for_another_patient_and_403_without_csrf(
    served: ServedGateway, chromium: Any
) -> None:
    owner, stranger = activated_patient(served), activated_patient(served)
    own = chromium.new_context(locale="fr-FR")
    other = chromium.new_context(locale="fr-FR")
    try:
        page = own.new_page()
        sign_in(page, served, owner)
        page.goto(base_url(served) + "/webmail/account")
        page.get_by_label("Nom du nouveau mot de passe").fill("Client mail")
        page.get_by_role("button", name="Créer un mot de passe").click()
        password = page.locator("#new-app-password").inner_text()
        action = page.locator("form[action$='/revoke']").get_attribute("action")
        assert action is not None

        intruder = other.new_page()
        sign_in(intruder, served, stranger)
        intruder.goto(base_url(served) + "/webmail/account")
        token = intruder.locator("input[name=csrf]").first.get_attribute("value") or ""
        posted = intruder.request.post(base_url(served) + action, form={"csrf": token})
        assert posted.status == 404
        assert "Page introuvable" in posted.text()
        for path, form in (
            (action, {}),
            ("/webmail/account/app-passwords", {"label": "forcé"}),
            ("/webmail/account/export", {}),
            ("/webmail/account/close", {"password": owner.password}),
        ):
            refused = page.request.post(base_url(served) + path, form=form)
            assert refused.status == 403, path
        refused = page.request.post(
            base_url(served) + "/webmail/reopen",
            form={"address": owner.address, "password": owner.password, "code": "123456"},
        )
        assert refused.status == 403
        assert _imap_login(served, owner.address, password)  # not revoked
        assert _space(served, owner.address).status == "active"  # not closed
    finally:
        own.close()
        other.close()
