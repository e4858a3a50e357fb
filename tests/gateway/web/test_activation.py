"""Activating a patient space from the webmail, in a real browser (I1, C1, H2).

The operator creates the space (the lifecycle service, as ``caducee patient create`` does);
the patient then types the provisional code and the birth date, enrols an authenticator with
the secret the page shows as text, chooses a password, and is signed in. The lifecycle
service decides (code, birth date, password rules, first TOTP value); the page adds the
identity service's failure limiter and the double-submit token of the sign-in form.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from caducee.mailboxes.accounts.lifecycle import (
    Actor,
    LifecyclePolicy,
    QualifiedIdentity,
    create_space,
    show_space,
    totp_now,
)
from tests.harness.browser import BIRTH, WebPatient, base_url, sign_in
from tests.harness.identities import valid_ins
from tests.harness.served import ServedGateway

PASSWORD = "Activation-2026!"
REFUSED = (
    "L'adresse, le code provisoire ou la date de naissance est incorrect, ou le code a expiré."
)


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    """The harness's served demo home."""
    return working_gateway


def new_space(served: ServedGateway) -> tuple[str, str]:
    """A space created by the operator and awaiting activation: (address, provisional code)."""
    components = served.components()
    try:
        policy = LifecyclePolicy.from_settings(components.settings)
        identity = QualifiedIdentity(
            ins=valid_ins(),
            oid="1.2.250.1.213.1.4.10",
            birth_name="ACTIVE",
            given_name="LEA",
            birth_date=BIRTH,
            sex="F",
            birthplace="75056",
        )
        with components.database.transaction() as session:
            created = create_space(session, identity, policy, Actor.operator("test"))
        return created.address, created.code
    finally:
        components.close()


def space_status(served: ServedGateway, address: str) -> str:
    components = served.components()
    try:
        with components.database.reading() as session:
            return show_space(session, address).status
    finally:
        components.close()


def first_step(page: Any, address: str, code: str, birth: str = BIRTH.isoformat()) -> None:
    page.get_by_label("Adresse de messagerie de santé").fill(address)
    page.get_by_label("Code provisoire").fill(code)
    page.get_by_label("Date de naissance").fill(birth)
    page.get_by_role("button", name="Continuer").click()


def shown_secret(page: Any) -> bytes:
    text = page.locator("#totp-secret").inner_text().replace(" ", "")
    return base64.b32decode(text + "=" * (-len(text) % 8))


def second_step(page: Any, password: str, again: str, code: str) -> None:
    page.get_by_label("Nouveau mot de passe", exact=True).fill(password)
    page.get_by_label("Confirmer le nouveau mot de passe").fill(again)
    page.get_by_label("Code à 6 chiffres de mon application d'authentification").fill(code)
    page.get_by_role("button", name="Activer mon espace").click()


def test_I1_activate_with_code_and_birth_date_enrol_totp_and_sign_in(
    served: ServedGateway, browser_context: Any
) -> None:
    address, code = new_space(served)
    page = browser_context.new_page()
    page.goto(base_url(served) + "/webmail")
    page.get_by_role("link", name="Activer mon espace").click()
    expect(page.get_by_role("heading", name="Activer mon espace", level=1)).to_be_visible()
    first_step(page, address, code.lower().replace("-", ""))  # typed loosely: still the code
    expect(page.get_by_role("heading", name="Choisir mon mot de passe", level=1)).to_be_visible()
    secret = shown_secret(page)
    uri = page.locator("#totp-uri").get_attribute("href") or ""
    assert uri.startswith("otpauth://totp/") and "digits=6" in uri and "period=30" in uri
    assert base64.b32encode(secret).decode().rstrip("=") in uri
    assert page.locator("img, canvas, svg").count() == 0  # no QR code drawn
    assert space_status(served, address) == "created"

    second_step(page, "faiblefaible", "faiblefaible", totp_now(secret))  # no upper, digit…
    expect(page.get_by_role("alert")).to_contain_text("Ce mot de passe est refusé")
    assert shown_secret(page) == secret  # the same key, nothing to enrol again
    second_step(page, PASSWORD, PASSWORD + "x", totp_now(secret))
    expect(page.get_by_role("alert")).to_have_text("Les deux mots de passe ne sont pas identiques.")
    wrong = "000000" if totp_now(secret) != "000000" else "111111"
    second_step(page, PASSWORD, PASSWORD, wrong)
    expect(page.get_by_role("alert")).to_contain_text("Le code de l'application")
    assert space_status(served, address) == "created"

    second_step(page, PASSWORD, PASSWORD, totp_now(secret))
    expect(page).to_have_url(re.compile(r"/webmail/conversations\?activated=1$"))
    expect(page.get_by_role("status")).to_have_text("Mon espace est activé.")
    expect(page.get_by_text(address)).to_be_visible()
    assert space_status(served, address) == "active"

    # the code is spent; the password and the authenticator are what signs in now
    page.get_by_role("button", name="Me déconnecter").click()
    page.goto(base_url(served) + "/webmail/activate")
    first_step(page, address, code)
    expect(page.get_by_role("alert")).to_have_text(REFUSED)
    sign_in(page, served, WebPatient(address, PASSWORD, secret), ahead=1)


def test_I1_a_wrong_code_or_birth_date_gets_one_answer_then_the_limiter_delays(
    served: ServedGateway, browser_context: Any
) -> None:
    address, code = new_space(served)
    page = browser_context.new_page()
    page.goto(base_url(served) + "/webmail/activate")
    first_step(page, address, code, birth="1990-01-01")
    expect(page.get_by_role("alert")).to_have_text(REFUSED)
    first_step(page, "personne@patient.mssante.fr", code)
    expect(page.get_by_role("alert")).to_have_text(REFUSED)
    throttled = False
    for _ in range(30):
        first_step(page, address, "AAAA-AAAA-AAAA")
        alert = page.get_by_role("alert")
        if "Trop de tentatives" in alert.inner_text():
            throttled = True
            break
        expect(alert).to_have_text(REFUSED)
    assert throttled, "the failure limiter never delayed the attempts (C1)"
    first_step(page, address, code)  # even the right code waits now
    expect(page.get_by_role("alert")).to_contain_text("Trop de tentatives")
    assert space_status(served, address) == "created"


def test_I1_activation_posts_need_the_form_token(
    served: ServedGateway, browser_context: Any
) -> None:
    address, code = new_space(served)
    page = browser_context.new_page()
    page.goto(base_url(served) + "/webmail/activate")
    form = {"address": address, "code": code, "birth_date": BIRTH.isoformat()}
    for path in ("/webmail/activate", "/webmail/activate/complete"):
        refused = page.request.post(base_url(served) + path, form=form)
        assert refused.status == 403, path
        assert "Action refusée" in refused.text()
    assert space_status(served, address) == "created"


def _tab_to(page: Any, selector: str, limit: int = 40) -> None:
    """Press Tab until the element matching ``selector`` has the focus (keyboard only)."""
    for _ in range(limit):
        if page.evaluate(
            "(selector) => document.activeElement && document.activeElement.matches(selector)",
            selector,
        ):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def test_I1_activation_with_the_keyboard_alone(served: ServedGateway, browser_context: Any) -> None:
    address, code = new_space(served)
    page = browser_context.new_page()
    page.goto(base_url(served) + "/webmail/sign-in")
    _tab_to(page, "a[href='/webmail/activate']")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Activer mon espace", level=1)).to_be_visible()
    _tab_to(page, "#address")
    page.keyboard.type(address)
    page.keyboard.press("Tab")
    page.keyboard.type(code)
    page.keyboard.press("Tab")
    expect(page.locator("#birth_date")).to_be_focused()
    page.keyboard.type(f"{BIRTH:%d/%m/%Y}")  # as the national app asks it
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Choisir mon mot de passe", level=1)).to_be_visible()
    secret = shown_secret(page)
    _tab_to(page, "#password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    page.keyboard.type(totp_now(secret))
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Mon espace est activé.")
    assert space_status(served, address) == "active"
