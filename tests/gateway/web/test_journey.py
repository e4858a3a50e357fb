"""Issue 17's acceptance: the patient's whole journey in the webmail, in French, and by keyboard.

One patient, one real browser, one served gateway: activate the space → sign in with the
password and the authenticator → read the professional's message (the read receipt reaches
the professional, G2) → reply → the professional ends the exchange (D3: no reply button, the
page says why) → save the attachment in the health documents (E1) → hide it from
professionals, whose own FHIR search over HTTP stops listing it (E5, F2) → block the
professional (F1, F2) → the history shows the professional's earlier search (F4) → download
the export (I3) → close the space (I2), after which mail to it is refused. The second test
does the same with the keyboard alone (Tab, Enter, typing): no click anywhere.

The served gateway files under the ``patient-choice`` policy: the professional's attachment is
then *offered*, not filed on arrival, so "Enregistrer dans mes documents de santé" is what puts
it in the record (under ``auto`` it would already be there and the page would say so). The
attachment is a text report, shown as text on the document's page: a PDF is previewed in a
frame by Chromium's viewer, and headless Chromium drops a navigation (a form sent, a link
followed) started while that viewer loads, which would make the journey flaky.
"""

from __future__ import annotations

import io
import json
import re
import smtplib
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from caducee.mailboxes.accounts.store import Account
from caducee.mailboxes.models import KnownProfessional
from caducee.records.models import DocumentState, RecordDocument
from tests.gateway.web.test_account_pages import _space
from tests.gateway.web.test_activation import (
    first_step,
    new_space,
    second_step,
    shown_secret,
)
from tests.gateway.web.test_documents import _documents, _ins, _professional_search
from tests.gateway.web.test_privacy import _fhir_status
from tests.gateway.web.test_webmail import _focus
from tests.harness.browser import (
    WebPatient,
    base_url,
    professional_writes,
    receipt_for,
    reply_to,
    sign_in,
)
from tests.harness.served import ServedGateway, serve_demo
from tests.harness.waiting import wait_until

SUBJECT = "Compte rendu de votre consultation"
FILE_NAME = "compte-rendu.txt"
REPORT = b"Compte rendu : tension 12/8, examen normal.\n"
PASSWORD = "Parcours-2026!"
ENDED = "Claire MARTIN a mis fin à vos échanges."


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any) -> Iterator[ServedGateway]:
    """A served demo home whose workers run, filing under the ``patient-choice`` policy (E1)."""
    home = tmp_path_factory.mktemp("journey") / "home"
    url = pg_schemas.new() if pg_schemas is not None else None
    yield from serve_demo(
        home, url, workers=2, extra_env={"CADUCEE_RECORDS__FILING_POLICY": "patient-choice"}
    )


def _professional_ends(served: ServedGateway, to: str, in_reply_to: str) -> None:
    """The demo professional answers the patient's reply and ends the exchange (X-MSS-MES: FIN)."""
    message = EmailMessage()
    message["From"] = served.credentials["professional"]["address"]
    message["To"] = to
    message["Subject"] = f"Re: {SUBJECT}"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="hopital-demo.mssante.fr")
    message["In-Reply-To"] = in_reply_to
    message["References"] = in_reply_to
    message["X-MSS-MES"] = "FIN"
    message.set_content("Bonjour,\nnous clôturons ce suivi.\n")
    with served.submit("professional") as client:
        assert not client.send_message(message)


def _can_reply(served: ServedGateway, address: str) -> bool:
    """Whether the patient may still answer the demo professional (D3, as the database says)."""
    components = served.components()
    try:
        with components.database.reading() as session:
            allowed = session.scalar(
                select(KnownProfessional.can_reply)
                .join(Account, Account.id == KnownProfessional.patient_account_id)
                .where(Account.address == address)
            )
        return bool(allowed)
    finally:
        components.close()


def _offered(served: ServedGateway, address: str) -> RecordDocument:
    """The professional's attachment, offered to the patient by the filing job (E1)."""
    [offered] = wait_until(
        lambda: _documents(served, address), timeout=60, message="never offered (E1)"
    )
    assert offered.state == DocumentState.OFFERED.value
    return offered


def _professional_writes_with_report(served: ServedGateway, address: str) -> str:
    return professional_writes(
        served,
        address,
        SUBJECT,
        "Bonjour,\nvoici le compte rendu de votre consultation.\n",
        attachment=(FILE_NAME, REPORT, "text/plain"),
    )


def _check_export(data: bytes, patient: WebPatient, public_id: str) -> None:
    """The zip holds the mailbox (the thread, both ways) and the saved document (I3)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["format"] == "caducee-export/1"
        assert manifest["address"] == patient.address
        inbox = archive.read("mail/INBOX.mbox")
        assert f"Subject: {SUBJECT}".encode() in inbox
        assert b"X-MSS-MES: FIN" in inbox
        [saved] = [n for n in archive.namelist() if n.startswith(f"documents/{public_id}")]
        assert archive.read(saved) == REPORT
        assert public_id in archive.read("fhir/bundle.json").decode()


def _mail_is_refused_after_closure(served: ServedGateway, address: str) -> None:
    """A closed space receives nothing: the professional's next message is refused (I2, B2)."""
    message = EmailMessage()
    message["From"] = served.credentials["professional"]["address"]
    message["To"] = address
    message["Subject"] = "Après la clôture"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="hopital-demo.mssante.fr")
    message.set_content("Bonjour.\n")
    with (
        served.submit("professional") as client,
        pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
    ):
        client.send_message(message)
    code, text = refused.value.recipients[address]
    assert code == 550 and text.startswith(b"5.2.1"), (code, text)


def test_H2_I1_G2_D3_E1_E5_F2_F4_I3_I2_journey_in_french(
    served: ServedGateway, browser_context: Any
) -> None:
    base = base_url(served)
    page = browser_context.new_page()

    # I1: the operator created the space; the patient activates it and enrols an authenticator
    address, code = new_space(served)
    page.goto(base + "/webmail")
    page.get_by_role("link", name="Activer mon espace").click()
    expect(page.get_by_role("heading", name="Activer mon espace", level=1)).to_be_visible()
    first_step(page, address, code)
    expect(page.get_by_role("heading", name="Choisir mon mot de passe", level=1)).to_be_visible()
    secret = shown_secret(page)
    patient = WebPatient(address, PASSWORD, secret)
    second_step(page, PASSWORD, PASSWORD, patient.code())
    expect(page.get_by_role("status")).to_have_text("Mon espace est activé.")
    page.get_by_role("button", name="Me déconnecter").click()
    expect(page.get_by_role("status")).to_have_text("Vous êtes déconnecté.")

    # the professional writes, with a report the record offers (E1 patient-choice)
    message_id = _professional_writes_with_report(served, address)
    offered = _offered(served, address)
    ins = _ins(served, address)
    assert offered.public_id not in _professional_search(served, ins), "offered, not filed"

    # H2: sign in with the password and the authenticator's next value (a code is good once)
    sign_in(page, served, patient, ahead=1)
    row = page.locator(".conversation", has_text=SUBJECT)
    expect(row).to_contain_text("Claire MARTIN")
    expect(row).to_contain_text("Non lu")
    assert receipt_for(served, message_id) is None, "no receipt before the patient reads it"

    # G2: reading it sends the read receipt the professional asked for
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name=SUBJECT, level=1)).to_be_visible()
    expect(page.locator(".message .body")).to_contain_text("voici le compte rendu")
    conversation_url = page.url
    receipt = wait_until(
        lambda: receipt_for(served, message_id), timeout=30, message="no read receipt (G2)"
    )
    assert receipt is not None and "claire.martin" in str(receipt["To"])

    # H2: the reply reaches the professional
    page.get_by_label("Ma réponse à Claire MARTIN").fill("Merci docteur, bien reçu.")
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("status")).to_have_text("Message envoyé")
    answer = wait_until(lambda: reply_to(served, message_id), timeout=30, message="no reply")
    assert answer is not None
    assert "Merci docteur, bien reçu." in answer.get_content()

    # D3: the professional ends the exchange; the page says so and offers no reply
    _professional_ends(served, address, str(answer["Message-ID"]))
    wait_until(lambda: not _can_reply(served, address), timeout=30, message="never ended (D3)")
    page.goto(conversation_url)
    expect(page.get_by_role("note")).to_have_text(ENDED)
    expect(page.locator(".message .body").last).to_contain_text("nous clôturons ce suivi")
    expect(page.get_by_role("button", name="Envoyer")).to_have_count(0)
    expect(page.get_by_label("Ma réponse à Claire MARTIN")).to_have_count(0)

    # E1: the attachment is saved in the health documents
    page.get_by_role("link", name=re.compile("Enregistrer dans mes documents de santé")).click()
    expect(
        page.get_by_role("heading", name="Enregistrer dans mes documents de santé", level=1)
    ).to_be_visible()
    expect(page.get_by_label("Titre", exact=True)).to_have_value(FILE_NAME)
    page.get_by_role("button", name="Enregistrer dans mes documents de santé").click()
    expect(page.get_by_role("status")).to_have_text("Document ajouté à mes documents santé")
    expect(page).to_have_url(re.compile(rf"/webmail/documents/{offered.public_id}\b"))
    expect(page.locator(".document-text")).to_have_text(REPORT.decode())
    [saved] = _documents(served, address)
    assert (saved.public_id, saved.state) == (offered.public_id, DocumentState.FILED.value)
    assert saved.public_id in _professional_search(served, ins), "filed: listed (E1, F2)"

    # E5, F2: hidden from professionals, their FHIR search no longer lists it
    expect(page.get_by_text("Ce document est visible par les professionnels")).to_be_visible()
    page.get_by_role("button", name="Le masquer aux professionnels de santé").click()
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    expect(page.get_by_text("Ce document est masqué aux professionnels de santé.")).to_be_visible()
    assert saved.public_id not in _professional_search(served, ins), "hidden (E5, F2)"

    # F1, F2: the professional is blocked, and refused
    page.get_by_role("link", name="Gestion des accès").click()
    expect(page.get_by_role("heading", name="Gestion des accès", level=1)).to_be_visible()
    page.get_by_role("button", name=re.compile("Bloquer l'accès")).click()
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    blocked = page.locator("ul[aria-labelledby=blocked-title] .person")
    expect(blocked).to_contain_text("Claire MARTIN")
    assert _fhir_status(served, ins) == 403, "a blocked professional is refused (F1, F2)"

    # F4: the history shows the professional's earlier searches, the refusal and the block
    page.get_by_role("link", name="Voir l'historique des accès").click()
    expect(page.locator(".event", has_text="Recherche dans mes documents").first).to_contain_text(
        "Claire MARTIN"
    )
    expect(page.locator(".event").first).to_contain_text("Refusé")
    expect(page.locator(".event", has_text="Professionnel bloqué")).to_contain_text("Moi")

    # I3: the export
    page.get_by_role("link", name="Mon compte").click()
    expect(page.get_by_role("heading", name="Mon compte", level=1)).to_be_visible()
    with page.expect_download() as info:
        page.get_by_role("button", name="Télécharger mes données").click()
    assert info.value.suggested_filename == "mon-espace-sante.zip"
    _check_export(Path(info.value.path()).read_bytes(), patient, saved.public_id)

    # I2: closing the space ends the session; mail to it is refused
    page.get_by_role("link", name="Clôturer mon espace").click()
    expect(page.get_by_role("heading", name="Clôturer mon espace", level=1)).to_be_visible()
    page.get_by_label("Mon mot de passe, pour confirmer").fill(PASSWORD)
    page.get_by_role("button", name="Clôturer mon espace").click()
    expect(page).to_have_url(re.compile(r"/webmail/closed$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Mon espace est clôturé")
    expect(page.get_by_role("status")).to_contain_text("ne reçoit plus de messages")
    assert _space(served, address).status == "closed"
    page.goto(base + "/webmail/conversations")
    expect(page).to_have_url(re.compile(r"/webmail/sign-in$"))
    _mail_is_refused_after_closure(served, address)


def _enter_on(page: Any, selector: str) -> None:
    """Tab to the element matching ``selector`` and press Enter (keyboard only)."""
    _focus(page, selector, limit=60)
    page.keyboard.press("Enter")


def test_H2_I1_G2_D3_E1_E5_F2_F4_I3_I2_journey_by_keyboard_alone(
    served: ServedGateway, browser_context: Any
) -> None:
    base = base_url(served)
    page = browser_context.new_page()

    # I1
    address, code = new_space(served)
    page.goto(base + "/webmail/sign-in")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Aller au contenu principal")).to_be_focused()
    _enter_on(page, "a[href='/webmail/activate']")
    expect(page.get_by_role("heading", name="Activer mon espace", level=1)).to_be_visible()
    _focus(page, "#address")
    page.keyboard.type(address)
    page.keyboard.press("Tab")
    page.keyboard.type(code)
    page.keyboard.press("Tab")
    expect(page.locator("#birth_date")).to_be_focused()
    page.keyboard.type("14/06/1985")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Choisir mon mot de passe", level=1)).to_be_visible()
    patient = WebPatient(address, PASSWORD, shown_secret(page))
    _focus(page, "#password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    page.keyboard.type(patient.code())
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Mon espace est activé.")
    _enter_on(page, "form[action='/webmail/sign-out'] button")
    expect(page.get_by_role("status")).to_have_text("Vous êtes déconnecté.")

    message_id = _professional_writes_with_report(served, address)
    offered = _offered(served, address)
    ins = _ins(served, address)

    # H2: sign in
    _focus(page, "#address")
    page.keyboard.type(address)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    page.keyboard.type(patient.code(ahead=1))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Messagerie de santé", level=1)).to_be_visible()
    expect(page.locator(".conversation")).to_contain_text("Non lu")

    # G2, H2: read (receipt), reply
    _enter_on(page, ".conversation a")
    expect(page.get_by_role("heading", name=SUBJECT, level=1)).to_be_visible()
    wait_until(lambda: receipt_for(served, message_id), timeout=30, message="no receipt (G2)")
    _focus(page, "#body")
    page.keyboard.type("Bien reçu, merci.")
    _enter_on(page, "button[value=send]")
    expect(page.get_by_role("status")).to_have_text("Message envoyé")
    answer = wait_until(lambda: reply_to(served, message_id), timeout=30, message="no reply")
    assert answer is not None
    assert "Bien reçu, merci." in answer.get_content()

    # D3: ended; back to the list and into the conversation again, by keyboard
    _professional_ends(served, address, str(answer["Message-ID"]))
    wait_until(lambda: not _can_reply(served, address), timeout=30, message="never ended (D3)")
    _enter_on(page, "main a[href='/webmail/conversations']")
    expect(page.get_by_role("heading", name="Messagerie de santé", level=1)).to_be_visible()
    expect(page.locator(".conversation")).to_have_count(1)  # the FIN joined the thread
    _enter_on(page, ".conversation a")
    expect(page.get_by_role("note")).to_have_text(ENDED)
    expect(page.get_by_role("button", name="Envoyer")).to_have_count(0)

    # E1: save the attachment
    _enter_on(page, "a[href^='/webmail/documents/from-message/']")
    expect(
        page.get_by_role("heading", name="Enregistrer dans mes documents de santé", level=1)
    ).to_be_visible()
    _focus(page, "#title")
    expect(page.locator("#title")).to_have_value(FILE_NAME)
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Document ajouté à mes documents santé")
    [saved] = _documents(served, address)
    assert (saved.public_id, saved.state) == (offered.public_id, DocumentState.FILED.value)
    assert saved.public_id in _professional_search(served, ins)

    # E5, F2: hide it
    _enter_on(page, "#visibility button")
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    expect(page.get_by_text("Ce document est masqué aux professionnels de santé.")).to_be_visible()
    assert saved.public_id not in _professional_search(served, ins)

    # F1, F2: block
    _enter_on(page, "a[href='/webmail/privacy']")
    expect(page.get_by_role("heading", name="Gestion des accès", level=1)).to_be_visible()
    _enter_on(page, "#professionals button")
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    expect(page.locator("ul[aria-labelledby=blocked-title] .person")).to_contain_text(
        "Claire MARTIN"
    )
    assert _fhir_status(served, ins) == 403

    # F4: history
    _enter_on(page, "a[href='/webmail/privacy/history']")
    expect(page.locator(".event", has_text="Recherche dans mes documents").first).to_contain_text(
        "Claire MARTIN"
    )
    expect(page.locator(".event", has_text="Professionnel bloqué")).to_contain_text("Moi")

    # I3: export
    _enter_on(page, "a[href='/webmail/account']")
    expect(page.get_by_role("heading", name="Mon compte", level=1)).to_be_visible()
    _focus(page, "form[action='/webmail/account/export'] button", limit=60)
    with page.expect_download() as info:
        page.keyboard.press("Enter")
    assert info.value.suggested_filename == "mon-espace-sante.zip"
    _check_export(Path(info.value.path()).read_bytes(), patient, saved.public_id)

    # I2: close
    _enter_on(page, "main a[href='/webmail/account/close']")
    expect(page.get_by_role("heading", name="Clôturer mon espace", level=1)).to_be_visible()
    _focus(page, "#password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Mon espace est clôturé")
    assert _space(served, address).status == "closed"
    _mail_is_refused_after_closure(served, address)
