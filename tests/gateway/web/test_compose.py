"""Writing with attached files, and drafts, from the webmail in a real browser (H2, C4, D1).

Files go through the same accept path as SMTP submission (the rule table judges the
recipient, ``prepare_submission`` delivers): the professional receives them over IMAP. Only
the national app's types are accepted, the remaining quota is shown before sending, and
over it nothing leaves ("La taille du ou des documents dépasse la limite autorisée.").
Drafts are messages of the patient's IMAP ``Drafts`` folder, so a mail client sees them.
"""

from __future__ import annotations

import re
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any

import pytest
from playwright.sync_api import expect

from caducee.gateway.accounts_admin import new_app_password, set_account_state
from caducee.gateway.web.compose import attachment_quota
from caducee.mailboxes.accounts.lifecycle import Actor
from caducee.mailboxes.accounts.store import AccountState
from tests.harness.browser import (
    WebPatient,
    activated_patient,
    base_url,
    professional_inbox,
    professional_writes,
    reply_to,
    sign_in,
)
from tests.harness.served import Account, ServedGateway
from tests.harness.waiting import wait_until

TOO_BIG = "La taille du ou des documents dépasse la limite autorisée."
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    """The harness's served demo home whose workers run (filing releases the patient's copy)."""
    return working_gateway


def _listed(page: Any, subject: str) -> None:
    wait_until(
        lambda: page.reload() and page.locator(".conversation", has_text=subject).count() == 1,
        timeout=30,
        message=f"{subject!r} never showed in the list",
    )


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


def _quota(served: ServedGateway) -> int:
    components = served.components()
    try:
        settings = components.settings
        return attachment_quota(
            settings.smtp.max_message_bytes, settings.http.webmail_upload_max_bytes
        )
    finally:
        components.close()


def _new_message(page: Any, served: ServedGateway, subject: str, body: str) -> None:
    page.goto(base_url(served) + "/webmail/new")
    page.get_by_label("Destinataire").select_option(label="Claire MARTIN")
    page.get_by_label("Objet").fill(subject)
    page.get_by_label("Message", exact=True).fill(body)


def test_C4_a_new_message_carries_files_and_shows_the_quota_first(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    professional_writes(served, patient.address, "Ordonnance", "Envoyez-moi vos examens.\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    _listed(page, "Ordonnance")
    _new_message(page, served, "Mes examens", "Bonjour,\nvoici mes examens.\n")
    quota = page.locator(".quota")
    expect(quota).to_contain_text("Je peux encore joindre")
    expect(quota).to_contain_text("Mo")  # 7.75 MiB with the default 8 MiB form bound
    assert page.locator("#files").get_attribute("accept") == (
        ".jpg,.jpeg,.tiff,.png,.txt,.pdf,.rtf,.doc"
    )
    page.get_by_label("Joindre des documents").set_input_files(
        [
            {"name": "analyse.pdf", "mimeType": "application/pdf", "buffer": PDF},
            {"name": "photo.PNG", "mimeType": "application/octet-stream", "buffer": PNG},
        ]
    )
    page.get_by_role("button", name="Envoyer").click()
    expect(page).to_have_url(re.compile(r"/webmail/conversations\?sent=1$"))
    received = wait_until(
        lambda: _from_patient(served, patient), timeout=30, message="never received"
    )
    assert len(received) == 1
    assert str(received[0]["Subject"]) == "Mes examens"
    assert _files(received[0]) == {
        "analyse.pdf": ("application/pdf", PDF),
        "photo.PNG": ("image/png", PNG),  # typed by its extension, not by the browser
    }


def test_C4_refused_types_and_files_over_the_quota_send_nothing(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    professional_writes(served, patient.address, "Quota", "Bonjour.\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    _listed(page, "Quota")
    _new_message(page, served, "Refusé", "Bonjour.")
    page.get_by_label("Joindre des documents").set_input_files(
        [{"name": "outil.exe", "mimeType": "application/pdf", "buffer": b"MZ"}]
    )
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("alert")).to_contain_text("Type de fichier non supporté")
    expect(page.get_by_label("Objet")).to_have_value("Refusé")  # what was typed is kept
    quota = _quota(served)
    over = [
        {"name": "a.pdf", "mimeType": "application/pdf", "buffer": b"a" * (quota // 2)},
        {"name": "b.pdf", "mimeType": "application/pdf", "buffer": b"b" * (quota // 2 + 2)},
    ]
    page.get_by_label("Joindre des documents").set_input_files(over)
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("alert")).to_have_text(TOO_BIG)
    page.get_by_label("Joindre des documents").set_input_files(over)
    page.get_by_role("button", name="Enregistrer le brouillon").click()  # no draft either
    expect(page.get_by_role("alert")).to_have_text(TOO_BIG)
    page.goto(base_url(served) + "/webmail/drafts")
    expect(page.get_by_text("Je n'ai aucun brouillon.")).to_be_visible()
    assert _from_patient(served, patient) == []


def test_D1_a_reply_carries_a_file_into_the_conversation(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    message_id = professional_writes(served, patient.address, "Bilan", "Un document ?\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    _listed(page, "Bilan")
    page.locator(".conversation", has_text="Bilan").get_by_role("link").click()
    expect(page.locator(".quota")).to_contain_text("Je peux encore joindre")
    page.get_by_label("Ma réponse à Claire MARTIN").fill("Le voici.")
    page.get_by_label("Joindre des documents").set_input_files(
        [{"name": "note.txt", "mimeType": "text/plain", "buffer": b"glycemie 0,9\n"}]
    )
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("status")).to_have_text("Message envoyé")
    expect(page.locator("article.mine")).to_contain_text("note.txt")  # kept in Sent, shown
    reply = wait_until(lambda: reply_to(served, message_id), timeout=30, message="no reply")
    assert reply is not None
    assert _files(reply) == {"note.txt": ("text/plain", b"glycemie 0,9\n")}


def _patient_imap_drafts(served: ServedGateway, patient: WebPatient) -> list[tuple[bytes, str]]:
    """(flags, subject) of each message in the patient's IMAP Drafts, with an app password."""
    return _patient_imap(served, patient, "Drafts")


def _patient_imap(
    served: ServedGateway, patient: WebPatient, folder: str
) -> list[tuple[bytes, str]]:
    """(flags, subject) of each message in one of the patient's IMAP folders."""
    components = served.components()
    try:
        with components.database.transaction() as session:
            _id, password = new_app_password(
                session, patient.address, "test", Actor.operator("test")
            )
    finally:
        components.close()
    found = []
    with served.imap(Account(patient.address, password)) as client:
        status, _ = client.select(folder, readonly=True)
        assert status == "OK"
        _, data = client.uid("SEARCH", "ALL")
        for uid in data[0].split():
            _, fetched = client.uid("FETCH", uid, "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            head = fetched[0][0]
            body = fetched[0][1]
            assert isinstance(head, bytes) and isinstance(body, bytes)
            found.append((head, str(make_header(decode_header(body.decode().strip())))))
    return found


def test_H2_a_draft_is_saved_seen_over_imap_resumed_with_its_file_and_sent(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    professional_writes(served, patient.address, "Brouillon", "Bonjour.\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    _listed(page, "Brouillon")
    _new_message(page, served, "À finir", "Première ligne")
    page.get_by_label("Joindre des documents").set_input_files(
        [{"name": "scan.pdf", "mimeType": "application/pdf", "buffer": PDF}]
    )
    page.get_by_role("button", name="Enregistrer le brouillon").click()
    expect(page).to_have_url(re.compile(r"/webmail/drafts\?saved=1$"))
    expect(page.get_by_role("status")).to_have_text("Brouillon enregistré")
    row = page.locator(".draft", has_text="À finir")
    expect(row).to_contain_text("Claire MARTIN")
    expect(row).to_contain_text("1 pièce jointe")
    drafts = _patient_imap_drafts(served, patient)
    assert len(drafts) == 1
    assert b"\\Draft" in drafts[0][0] and "À finir" in drafts[0][1]

    row.get_by_role("link").click()
    expect(page.get_by_label("Objet")).to_have_value("À finir")
    expect(page.get_by_label("Message", exact=True)).to_have_value("Première ligne")
    expect(page.get_by_label("Garder scan.pdf")).to_be_checked()
    page.get_by_label("Message", exact=True).fill("Première ligne\nDeuxième ligne")
    page.get_by_role("button", name="Envoyer").click()
    expect(page).to_have_url(re.compile(r"/webmail/conversations\?sent=1$"))
    received = wait_until(
        lambda: _from_patient(served, patient), timeout=30, message="never received"
    )
    text = received[0].get_body(preferencelist=("plain",))
    assert text is not None and "Deuxième ligne" in text.get_content()
    assert _files(received[0]) == {"scan.pdf": ("application/pdf", PDF)}
    page.goto(base_url(served) + "/webmail/drafts")
    expect(page.get_by_text("Je n'ai aucun brouillon.")).to_be_visible()  # sent: gone
    assert _patient_imap_drafts(served, patient) == []


def test_H2_a_reply_draft_is_deleted(served: ServedGateway, browser_context: Any) -> None:
    patient = activated_patient(served)
    professional_writes(served, patient.address, "Question", "Une question ?\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    _listed(page, "Question")
    page.locator(".conversation", has_text="Question").get_by_role("link").click()
    page.get_by_label("Ma réponse à Claire MARTIN").fill("Je réfléchis")
    page.get_by_role("button", name="Enregistrer le brouillon").click()
    row = page.locator(".draft", has_text="Re: Question")
    expect(row).to_be_visible()
    row.get_by_role("button", name=re.compile("Supprimer le brouillon")).click()
    expect(page.get_by_role("status")).to_have_text("Brouillon supprimé")
    expect(page.get_by_text("Je n'ai aucun brouillon.")).to_be_visible()


def test_H2_drafts_and_compose_routes_404_for_another_patient_and_403_without_csrf(
    served: ServedGateway, chromium: Any
) -> None:
    owner, stranger = activated_patient(served), activated_patient(served)
    message_id = professional_writes(served, owner.address, "Privé", "Bonjour.\n")
    own = chromium.new_context(locale="fr-FR")
    other = chromium.new_context(locale="fr-FR")
    try:
        page = own.new_page()
        sign_in(page, served, owner)
        _listed(page, "Privé")
        page.locator(".conversation", has_text="Privé").get_by_role("link").click()
        conversation = page.url.removeprefix(base_url(served))
        page.get_by_label("Ma réponse à Claire MARTIN").fill("Secret du brouillon")
        page.get_by_role("button", name="Enregistrer le brouillon").click()
        href = page.locator(".draft a").first.get_attribute("href")
        assert href is not None and re.fullmatch(r"/webmail/drafts/\d+", href)
        reply = conversation.replace("/webmail/", "/webmail/compose/") + "/reply"
        own_token = page.locator("input[name=csrf]").first.get_attribute("value") or ""

        intruder = other.new_page()
        sign_in(intruder, served, stranger)
        response = intruder.goto(base_url(served) + href)
        assert response is not None and response.status == 404
        expect(intruder.locator("main")).not_to_contain_text("Secret")
        token = intruder.locator("input[name=csrf]").first.get_attribute("value") or ""
        for path, form in (
            (href + "/delete", {"csrf": token}),
            (reply, {"csrf": token, "body": "intrus", "action": "send"}),
            (reply, {"csrf": token, "body": "intrus", "action": "draft"}),
            ("/webmail/compose/new", {"csrf": token, "draft": href.rsplit("/", 1)[1]}),
        ):
            posted = intruder.request.post(base_url(served) + path, multipart=form)
            assert posted.status == 404, path
        for path, form in (
            (href + "/delete", {}),
            (reply, {"body": "sans jeton", "action": "send"}),
            ("/webmail/compose/new", {"to": "x", "subject": "s", "body": "b"}),
        ):
            refused = page.request.post(base_url(served) + path, multipart=form)
            assert refused.status == 403, path
        wrong = page.request.post(
            base_url(served) + href + "/delete", form={"csrf": own_token[::-1]}
        )
        assert wrong.status == 403
        page.goto(base_url(served) + "/webmail/drafts")
        expect(page.locator(".draft")).to_have_count(1)  # still there
        assert reply_to(served, message_id) is None
    finally:
        own.close()
        other.close()


def test_H2_delete_a_conversation_moves_it_to_trash(served: ServedGateway, chromium: Any) -> None:
    owner, stranger = activated_patient(served), activated_patient(served)
    professional_writes(served, owner.address, "A effacer", "Bonjour.\n")
    own = chromium.new_context(locale="fr-FR")
    other = chromium.new_context(locale="fr-FR")
    try:
        page = own.new_page()
        sign_in(page, served, owner)
        _listed(page, "A effacer")
        page.locator(".conversation", has_text="A effacer").get_by_role("link").click()
        conversation = page.url.removeprefix(base_url(served))
        page.get_by_role("link", name="Supprimer cette conversation").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Supprimer cette conversation ?")
        expect(page.locator("main")).to_contain_text(
            "Une fois supprimée, vous ne pourrez plus accéder aux messages de cette "
            "conversation et aux documents associés."
        )
        token = page.locator("input[name=csrf]").first.get_attribute("value") or ""

        intruder = other.new_page()
        sign_in(intruder, served, stranger)
        response = intruder.goto(base_url(served) + conversation + "/delete")
        assert response is not None and response.status == 404
        intruder_token = intruder.locator("input[name=csrf]").first.get_attribute("value")
        posted = intruder.request.post(
            base_url(served) + conversation + "/delete", form={"csrf": intruder_token or ""}
        )
        assert posted.status == 404
        for form in ({}, {"csrf": token[::-1]}):
            refused = page.request.post(base_url(served) + conversation + "/delete", form=form)
            assert refused.status == 403
        assert _patient_imap(served, owner, "Trash") == []

        page.get_by_role("button", name="Supprimer la conversation").click()
        expect(page).to_have_url(re.compile(r"/webmail/conversations\?deleted=1$"))
        expect(page.get_by_role("status")).to_have_text("Conversation supprimée")
        expect(page.locator(".conversation", has_text="A effacer")).to_have_count(0)
        response = page.goto(base_url(served) + conversation)
        assert response is not None and response.status == 404
        trash = _patient_imap(served, owner, "Trash")
        assert [subject for _flags, subject in trash] == ["Subject: A effacer"]
    finally:
        own.close()
        other.close()


def test_C4_a_pharmacy_found_by_structure_becomes_a_contact(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    page = browser_context.new_page()
    sign_in(page, served, patient)
    page.goto(base_url(served) + "/webmail/new")
    page.get_by_role("link", name="Trouver une pharmacie à qui écrire").click()
    expect(page.get_by_role("note")).to_contain_text(
        "Je peux uniquement contacter les pharmacies disposant d'une messagerie sécurisée"
    )
    page.get_by_label("Nom de la pharmacie, ville ou code postal").fill("zzzz")
    page.get_by_role("button", name="Rechercher").click()
    expect(page.get_by_role("status")).to_have_text(
        "Aucune pharmacie n'a été trouvée. Modifiez votre saisie."
    )
    page.get_by_label("Nom de la pharmacie, ville ou code postal").fill("PHARMACIE de l")
    page.get_by_role("button", name="Rechercher").click()
    results = page.locator(".pharmacy")
    expect(results).to_have_count(1)
    expect(results).to_contain_text("Pharmacie de l'hôpital démo")
    # a forged address that is no pharmacy of the directory: not found, nothing declared
    token = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    forged = page.request.post(
        base_url(served) + "/webmail/pharmacies",
        form={"csrf": token, "address": served.credentials["professional"]["address"]},
    )
    assert forged.status == 404
    page.get_by_role("button", name=re.compile("Écrire à cette pharmacie")).click()
    expect(page.get_by_role("heading", name="Nouveau message", level=1)).to_be_visible()
    recipient = page.get_by_label("Destinataire")
    expect(recipient.locator("option")).to_have_count(1)  # the pharmacy only
    recipient.select_option(label="Pharmacie de l'hôpital démo")
    page.get_by_label("Objet").fill("Mon ordonnance")
    page.get_by_label("Message", exact=True).fill("Bonjour, est-elle prête ?")
    page.get_by_role("button", name="Envoyer").click()
    expect(page).to_have_url(re.compile(r"/webmail/conversations\?sent=1$"))
    pharmacy = served.credentials["pharmacy"]

    def received() -> bool:
        with served.imap(Account(pharmacy["address"], pharmacy["password"])) as client:
            status, _ = client.select("INBOX", readonly=True)
            if status != "OK":
                return False
            _, data = client.uid("SEARCH", "FROM", patient.address)
            return bool(data[0].split())

    wait_until(received, timeout=30, message="the pharmacy never received it")


def test_H2_an_inactive_professional_is_named_and_offers_no_reply(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    professional_writes(served, patient.address, "Dernier message", "Je pars.\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    _listed(page, "Dernier message")
    professional = served.credentials["professional"]["address"]
    components = served.components()
    try:
        with components.database.transaction() as session:
            set_account_state(session, professional, AccountState.SUSPENDED, Actor.operator("test"))
        page.locator(".conversation", has_text="Dernier message").get_by_role("link").click()
        note = page.get_by_role("note")
        expect(note).to_contain_text("Claire MARTIN n'est plus en activité")
        expect(note).to_contain_text("susceptible de ne plus répondre aux messages")
        expect(page.locator("#body")).to_have_count(0)  # no reply form
        page.goto(base_url(served) + "/webmail/new")
        expect(page.locator("select#to")).to_have_count(0)  # not offered as a contact
    finally:
        with components.database.transaction() as session:
            set_account_state(session, professional, AccountState.ACTIVE, Actor.operator("test"))
        components.close()
    page.goto(base_url(served) + "/webmail/conversations")
    page.locator(".conversation", has_text="Dernier message").get_by_role("link").click()
    expect(page.locator("#body")).to_have_count(1)  # in activity again: reply offered
