"""The patient's webmail in a real browser against a served gateway (H2, C1, C4, D3, G2, F4).

Debian's Chromium (Playwright, headless) signs in with the patient's password and TOTP,
reads what the demo professional sent over SMTP submission, and replies; the professional's
side is checked with a real IMAP client: the read receipt (G2) and the reply arrive. The
same journey is done with the keyboard alone. Then the doors: the failure limiter (C1),
revoking a session, another patient's session (404, no existence oracle), a POST without
its CSRF token (403).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from caducee.storage.audit import AuditEvent
from tests.harness.browser import (
    activated_patient,
    base_url,
    demo_patient,
    professional_writes,
    receipt_for,
    reply_to,
    sign_in,
)
from tests.harness.served import ServedGateway, serve_demo
from tests.harness.waiting import wait_until


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    """The harness's served demo home whose workers run (filing releases the patient's copy)."""
    return working_gateway


def test_H2_G2_C4_journey_in_french(served: ServedGateway, browser_context: Any) -> None:
    """Sign in (password + TOTP) → list → open (receipt goes out) → file → reply → received."""
    patient = demo_patient(served)
    message_id = professional_writes(
        served,
        patient.address,
        "Résultats de votre bilan",
        "Bonjour,\nvos résultats <b>sont</b> normaux.\n",
        attachment=("note.txt", b"Glycemie normale\n", "text/plain"),
    )
    page = browser_context.new_page()
    sign_in(page, served, patient)
    row = page.locator(".conversation", has_text="Résultats de votre bilan")
    expect(row).to_contain_text("Claire MARTIN")
    expect(row).to_contain_text("Non lu")
    expect(row).to_contain_text("Pièce jointe")
    assert receipt_for(served, message_id) is None, "no receipt before the patient reads it"

    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Résultats de votre bilan", level=1)).to_be_visible()
    body = page.locator(".message .body")
    expect(body).to_contain_text("vos résultats <b>sont</b> normaux.")  # text, not markup
    assert page.locator(".message .body b").count() == 0
    with page.expect_download() as download:
        page.get_by_role("link", name="Télécharger note.txt").click()
    assert download.value.suggested_filename == "note.txt"
    assert Path(download.value.path()).read_bytes() == b"Glycemie normale\n"

    receipt = wait_until(
        lambda: receipt_for(served, message_id), timeout=30, message="no read receipt (G2)"
    )
    assert receipt["To"] and "claire.martin" in str(receipt["To"])

    page.get_by_label("Ma réponse à Claire MARTIN").fill("Merci docteur, à bientôt.")
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("status")).to_have_text("Message envoyé")
    mine = page.locator("article.message", has=page.get_by_role("heading", name="Mon message"))
    expect(mine).to_contain_text("Merci docteur, à bientôt.")  # kept in Sent, in the thread
    answer = wait_until(lambda: reply_to(served, message_id), timeout=30, message="no reply")
    assert str(answer["From"]).endswith(f"<{patient.address}>") or patient.address in str(
        answer["From"]
    )
    assert str(answer["Subject"]) == "Re: Résultats de votre bilan"
    assert "Merci docteur, à bientôt." in answer.get_content()

    page.goto(base_url(served) + "/webmail/conversations")
    row = page.locator(".conversation", has_text="Résultats de votre bilan")
    expect(row).not_to_contain_text("Non lu")
    assert ("login", "ok") in _webmail_events(served) and ("message.read", "allowed") in (
        _webmail_events(served)
    ), "the sign-in and the read are in the audit trail (F4)"


def _webmail_events(served: ServedGateway) -> set[tuple[str, str]]:
    components = served.components()
    try:
        with components.database.reading() as session:
            rows = session.execute(
                select(AuditEvent.action, AuditEvent.result).where(AuditEvent.channel == "webmail")
            ).all()
        return {(str(row.action), str(row.result)) for row in rows}
    finally:
        components.close()


def _focus(page: Any, selector: str, limit: int = 40) -> None:
    """Press Tab until the element matching ``selector`` has the focus (keyboard only)."""
    for _ in range(limit):
        if page.evaluate(
            "(selector) => document.activeElement && document.activeElement.matches(selector)",
            selector,
        ):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def test_H2_the_same_journey_with_the_keyboard_alone(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    message_id = professional_writes(
        served, patient.address, "Compte rendu clavier", "Bonjour,\nvoici le compte rendu.\n"
    )
    page = browser_context.new_page()
    page.goto(base_url(served) + "/webmail/sign-in")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Aller au contenu principal")).to_be_focused()
    _focus(page, "#address")
    page.keyboard.type(patient.address)
    page.keyboard.press("Tab")
    page.keyboard.type(patient.password)
    page.keyboard.press("Tab")
    page.keyboard.type(patient.code())
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Messagerie de santé", level=1)).to_be_visible()

    _focus(page, ".conversation a")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Compte rendu clavier", level=1)).to_be_visible()
    wait_until(lambda: receipt_for(served, message_id), timeout=30, message="no receipt")
    _focus(page, "#body")
    page.keyboard.type("Bien reçu, merci.")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Joindre des documents")).to_be_focused()  # no file: on to send
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Envoyer")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Message envoyé")
    answer = wait_until(lambda: reply_to(served, message_id), timeout=30, message="no reply")
    assert "Bien reçu, merci." in answer.get_content()


def test_D3_no_reply_once_the_professional_ended_the_exchange(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    message_id = professional_writes(
        served, patient.address, "Fin de suivi", "Bonjour,\nfin.\n", end_exchange=True
    )
    page = browser_context.new_page()
    sign_in(page, served, patient)
    page.locator(".conversation", has_text="Fin de suivi").get_by_role("link").click()
    expect(page.get_by_role("note")).to_have_text("Claire MARTIN a mis fin à vos échanges.")
    assert page.get_by_role("button", name="Envoyer").count() == 0
    # a hand-made POST (with the session's CSRF token) meets the same rule table (C4)
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    forged = page.request.post(
        page.url.replace("/webmail/", "/webmail/compose/") + "/reply",
        form={"csrf": token or "", "body": "Je réponds quand même."},
    )
    assert forged.status == 403
    assert "Claire MARTIN a mis fin à vos échanges." in forged.text()
    assert reply_to(served, message_id) is None


def test_H2_english_is_one_link_away(served: ServedGateway, browser_context: Any) -> None:
    patient = activated_patient(served)
    professional_writes(served, patient.address, "Langue", "Bonjour.\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Health messaging")
    assert page.evaluate("document.documentElement.lang") == "en"
    page.locator(".conversation", has_text="Langue").get_by_role("link").click()
    expect(page.get_by_label("My reply to Claire MARTIN")).to_be_visible()  # the cookie holds
    page.get_by_role("link", name="Français").click()
    expect(page.get_by_label("Ma réponse à Claire MARTIN")).to_be_visible()


@pytest.fixture(scope="module")
def strict_served(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any
) -> Iterator[ServedGateway]:
    """A served demo whose sign-in delays start at 60 s after 3 failures: the right code tried
    just after the limiter spoke is still inside the delay, however slow the machine."""
    home = tmp_path_factory.mktemp("strict-web") / "home"
    url = pg_schemas.new() if pg_schemas is not None else None
    yield from serve_demo(
        home,
        url,
        extra_env={
            "CADUCEE_IDENTITY__FREE_FAILURES_PER_ACCOUNT_IP": "3",
            "CADUCEE_IDENTITY__FAILURE_DELAY_SECONDS": "60",
        },
    )


def test_C1_sign_in_failures_are_limited(
    strict_served: ServedGateway, browser_context: Any
) -> None:
    """Wrong codes are counted by the identity service's limiter; then even the right ones wait."""
    served = strict_served
    patient = activated_patient(served)
    page = browser_context.new_page()
    page.goto(base_url(served) + "/webmail/sign-in")
    throttled = False
    for _ in range(30):
        page.get_by_label("Adresse de messagerie de santé").fill(patient.address)
        page.get_by_label("Mot de passe").fill(patient.password)
        page.get_by_label("Code à 6 chiffres de mon application d'authentification").fill(
            "000000" if patient.code() != "000000" else "111111"
        )
        page.get_by_role("button", name="Me connecter").click()
        alert = page.get_by_role("alert")
        expect(alert).to_be_visible()
        if "Trop de tentatives" in alert.inner_text():
            throttled = True
            break
        expect(alert).to_have_text("L'adresse, le mot de passe ou le code est incorrect.")
    assert throttled, "the failure limiter never delayed the attempts (C1)"
    page.get_by_label("Adresse de messagerie de santé").fill(patient.address)
    page.get_by_label("Mot de passe").fill(patient.password)
    page.get_by_label("Code à 6 chiffres de mon application d'authentification").fill(
        patient.code()
    )
    page.get_by_role("button", name="Me connecter").click()
    expect(page.get_by_role("alert")).to_contain_text("Trop de tentatives")
    # another account from the same address is not locked out
    other = browser_context.browser.new_context(locale="fr-FR")
    try:
        sign_in(other.new_page(), served, activated_patient(served))
    finally:
        other.close()


def test_H2_the_conversation_list_is_paged(served: ServedGateway, browser_context: Any) -> None:
    patient = activated_patient(served)
    for number in range(21):
        served.send(
            served.message(to=patient.address, subject=f"Bilan {number:02d}"), to=patient.address
        )
    page = browser_context.new_page()
    sign_in(page, served, patient)
    expect(page.locator(".conversation")).to_have_count(20)
    expect(page.locator(".conversation").first).to_contain_text("Bilan 20")  # newest first
    expect(page.get_by_text("Page 1 sur 2")).to_be_visible()
    page.get_by_role("link", name="Plus anciens").click()
    expect(page.locator(".conversation")).to_have_count(1)
    expect(page.locator(".conversation")).to_contain_text("Bilan 00")
    expect(page.locator(".conversation")).to_contain_text("Paul BERNARD")


def test_H2_a_revoked_session_is_signed_out(served: ServedGateway, chromium: Any) -> None:
    patient = activated_patient(served)
    first = chromium.new_context(locale="fr-FR")
    second = chromium.new_context(locale="fr-FR")
    try:
        page_one, page_two = first.new_page(), second.new_page()
        used = patient.code()
        sign_in(page_one, served, patient)
        page_two.goto(base_url(served) + "/webmail/sign-in")
        page_two.get_by_label("Adresse de messagerie de santé").fill(patient.address)
        page_two.get_by_label("Mot de passe").fill(patient.password)
        page_two.get_by_label("Code à 6 chiffres de mon application d'authentification").fill(used)
        page_two.get_by_role("button", name="Me connecter").click()
        expect(page_two.get_by_role("alert")).to_have_text(
            "L'adresse, le mot de passe ou le code est incorrect."
        )  # a code is good once (RFC 6238 §5.2), even with the right password
        sign_in(page_two, served, patient, ahead=1)
        page_one.get_by_role("link", name="Mes sessions").click()
        rows = page_one.locator("li.session")
        expect(rows).to_have_count(2)
        other = rows.filter(has_not_text="ce navigateur")
        other.get_by_role("button", name=re.compile("Fermer cette session")).click()
        expect(page_one.get_by_role("status")).to_have_text("La session a été fermée.")
        expect(page_one.locator("li.session")).to_have_count(1)
        page_two.goto(base_url(served) + "/webmail/conversations")
        expect(page_two).to_have_url(re.compile(r"/webmail/sign-in$"))
        page_one.goto(base_url(served) + "/webmail/conversations")
        expect(page_one).to_have_url(re.compile(r"/webmail/conversations$"))
        page_one.get_by_role("navigation").get_by_role("button", name="Me déconnecter").click()
        expect(page_one).to_have_url(re.compile(r"/webmail/sign-in\?signed-out=1$"))
        expect(page_one.get_by_role("status")).to_have_text("Vous êtes déconnecté.")
        page_one.goto(base_url(served) + "/webmail/conversations")
        expect(page_one).to_have_url(re.compile(r"/webmail/sign-in$"))
    finally:
        first.close()
        second.close()


def test_H2_another_patients_session_gets_404(served: ServedGateway, chromium: Any) -> None:
    owner, stranger = activated_patient(served), activated_patient(served)
    professional_writes(
        served,
        owner.address,
        "Privé",
        "Bonjour,\nceci est privé.\n",
        attachment=("prive.txt", b"secret\n", "text/plain"),
    )
    own = chromium.new_context(locale="fr-FR")
    other = chromium.new_context(locale="fr-FR")
    try:
        page = own.new_page()
        sign_in(page, served, owner)
        page.locator(".conversation", has_text="Privé").get_by_role("link").click()
        conversation_url = page.url
        download = page.get_by_role("link", name="Télécharger prive.txt").get_attribute("href")
        assert download is not None
        entry = download.split("/")[3]
        intruder = other.new_page()
        sign_in(intruder, served, stranger)
        for path in (
            conversation_url.removeprefix(base_url(served)),
            f"/webmail/messages/{entry}",
            f"/webmail/messages/{entry}/html",
            download,
            "/webmail/conversations/999999999",  # does not exist: the same answer
        ):
            response = intruder.goto(base_url(served) + path)
            assert response is not None and response.status == 404, path
            expect(intruder.get_by_role("heading", level=1)).to_have_text("Page introuvable")
            expect(intruder.locator("main")).not_to_contain_text("Privé")
        posted = intruder.request.post(
            conversation_url.replace("/webmail/", "/webmail/compose/") + "/reply",
            form={"body": "intrus", "csrf": "x"},
        )
        assert posted.status in (403, 404)
    finally:
        own.close()
        other.close()


def test_H2_a_post_without_its_csrf_token_is_refused(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    message_id = professional_writes(served, patient.address, "Jeton", "Bonjour.\n")
    page = browser_context.new_page()
    sign_in(page, served, patient)
    page.locator(".conversation", has_text="Jeton").get_by_role("link").click()
    action = page.locator("form[action$='/reply']").get_attribute("action")
    assert action is not None
    refused = page.request.post(base_url(served) + action, form={"body": "sans jeton"})
    assert refused.status == 403
    assert "Action refusée" in refused.text()
    wrong = page.request.post(
        base_url(served) + action, form={"body": "mauvais jeton", "csrf": "not-the-token"}
    )
    assert wrong.status == 403
    signed_out = page.request.post(base_url(served) + "/webmail/sign-out", form={})
    assert signed_out.status == 403
    page.goto(base_url(served) + "/webmail/conversations")
    expect(page).to_have_url(re.compile(r"/webmail/conversations$"))  # still signed in
    assert reply_to(served, message_id) is None


def test_H2_security_headers(served: ServedGateway, browser_context: Any) -> None:
    patient = activated_patient(served)
    page = browser_context.new_page()
    response = page.goto(base_url(served) + "/webmail/sign-in")
    assert response is not None
    headers = response.headers
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    cookies = {c["name"]: c for c in browser_context.cookies()}
    assert (
        cookies["__Host-caducee-signin"]["httpOnly"] and cookies["__Host-caducee-signin"]["secure"]
    )
    sign_in(page, served, patient)
    session = {c["name"]: c for c in browser_context.cookies()}["__Host-caducee-session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"


def _send_html(served: ServedGateway, to: str) -> None:
    message = EmailMessage()
    message.set_content(
        "<p>Bonjour <script>document.title='x'</script><b>HTML</b></p>", subtype="html"
    )
    raw = served.message(to=to, subject="Message HTML", message=message)
    served.send(raw, to=to)


def test_H2_an_html_body_is_shown_only_in_a_sandboxed_frame(
    served: ServedGateway, browser_context: Any
) -> None:
    patient = activated_patient(served)
    _send_html(served, patient.address)
    page = browser_context.new_page()
    sign_in(page, served, patient)
    page.locator(".conversation", has_text="Message HTML").get_by_role("link").click()
    frame = page.locator("iframe.html-body")
    expect(frame).to_have_attribute("sandbox", "")
    src = frame.get_attribute("src")
    assert src is not None
    assert page.locator("main script").count() == 0
    response = page.request.get(base_url(served) + src)
    assert response.status == 200
    policy = response.headers["content-security-policy"]
    assert policy.startswith("sandbox; default-src 'none'")
    expect(page.frame_locator("iframe.html-body").locator("b")).to_have_text("HTML")
    assert page.title() != "x"
