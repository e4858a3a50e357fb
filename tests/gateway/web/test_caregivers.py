"""The webmail's caregivers pages in a real browser against a served gateway (F3, issue 17).

Two patients activated the way patients are: the first ("aidée") invites the second by INS
— an unknown INS first, refused with the reason (409) —, the invitation shows its expiry; the
second finds it in the notification centre and on "Les personnes que j'aide", accepts; both
lists show the delegation, and the access table allows it; the first revokes it and the
second is told. A third patient's session gets 404 on every change of that delegation, a POST
without its CSRF token 403. axe-core finds no WCAG 2.1 A/AA violation on the page (French and
English, desktop and phone width, empty and full) and nothing scrolls sideways at 360 px.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect
from sqlalchemy import select

from caducee.mailboxes.access.caregivers import CaregivingDelegation, caregiver_verdict
from caducee.records.readers.cda import french_time
from caducee.storage.audit import AuditEvent
from tests.harness.browser import activated_patient, base_url, sign_in
from tests.harness.served import ServedGateway

WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
AXE = Axe()


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    """The harness's served demo home whose workers run."""
    return working_gateway


def _account(served: ServedGateway, address: str) -> tuple[int, str]:
    return served.patient_ids(address)


def _delegation(served: ServedGateway, helped: int) -> tuple[int, str] | None:
    components = served.components()
    try:
        with components.database.reading() as session:
            row = session.execute(
                select(CaregivingDelegation.id, CaregivingDelegation.state).where(
                    CaregivingDelegation.helped_account_id == helped
                )
            ).first()
        return (int(row.id), str(row.state)) if row is not None else None
    finally:
        components.close()


def _verdict(served: ServedGateway, helped: int, caregiver: int) -> str:
    components = served.components()
    try:
        with components.database.reading() as session:
            today = datetime.now(french_time()).date()
            return caregiver_verdict(session, helped, caregiver, today).rule
    finally:
        components.close()


def _actions(served: ServedGateway, helped: int) -> list[tuple[str, str, str | None]]:
    components = served.components()
    try:
        with components.database.reading() as session:
            rows = session.execute(
                select(AuditEvent.action, AuditEvent.result, AuditEvent.channel)
                .where(
                    AuditEvent.subject_account_id == helped,
                    AuditEvent.action.like("caregiver.%"),
                )
                .order_by(AuditEvent.position)
            ).all()
        return [(str(row.action), str(row.result), row.channel) for row in rows]
    finally:
        components.close()


def _accessible(page: Any, name: str) -> None:
    """No WCAG 2.1 A/AA violation, and nothing scrolls sideways."""
    page.wait_for_load_state()
    results = AXE.run(page, options=WCAG)
    found = [
        f"{item['id']}: {item['help']} {[node['target'] for node in item['nodes']][:3]}"
        for item in results.response["violations"]
    ]
    assert found == [], name
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{name}: scrolls sideways by {overflow} px"


def test_f3_h2_invite_accept_both_lists_then_revoke(
    served: ServedGateway, browser_context: Any, chromium: Any
) -> None:
    base = base_url(served)
    helped_patient, caregiver_patient = activated_patient(served), activated_patient(served)
    helped_id, _ = _account(served, helped_patient.address)
    caregiver_id, caregiver_ins = _account(served, caregiver_patient.address)

    page = browser_context.new_page()
    sign_in(page, served, helped_patient)
    page.get_by_role("link", name="Mes aidants").click()
    expect(page.get_by_role("heading", name="Mes aidants", level=1)).to_be_visible()
    expect(page.get_by_text("Je n'ai pas d'aidant.")).to_be_visible()
    expect(page.get_by_text("Je n'aide personne.")).to_be_visible()
    _accessible(page, "empty, fr, desktop")

    # an INS nobody has: refused with the reason, the form keeps what was typed
    unknown = "1" + caregiver_ins[1:-2] + "00"
    page.get_by_label("INS de la personne (15 chiffres)").fill(unknown)
    page.get_by_role("button", name="Envoyer l'invitation").click()
    expect(page.get_by_role("alert")).to_contain_text("Aucun profil ne correspond")
    expect(page.get_by_label("INS de la personne (15 chiffres)")).to_have_value(unknown)
    _accessible(page, "refusal, fr, desktop")

    page.get_by_label("INS de la personne (15 chiffres)").fill(caregiver_ins)
    page.get_by_role("button", name="Envoyer l'invitation").click()
    expect(page.get_by_role("status")).to_have_text("Invitation envoyée")
    pending = page.locator(".caregiver")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text("Invitation en attente")
    expect(pending).to_contain_text(re.compile(r"Demande valable jusqu'au \d{1,2} \S+ \d{4}"))
    found = _delegation(served, helped_id)
    assert found is not None and found[1] == "pending"
    delegation_id = found[0]
    assert _verdict(served, helped_id, caregiver_id) == "F3.caregiver-no-delegation"

    # no CSRF token: 403, nothing changes
    for action in ("accept", "refuse", "revoke"):
        refused = page.request.post(base + f"/webmail/caregivers/{delegation_id}/{action}")
        assert refused.status == 403, action

    other_context = chromium.new_context(locale="fr-FR")
    try:
        other = other_context.new_page()
        sign_in(other, served, caregiver_patient)
        other.goto(base + "/webmail/notifications")
        invited = other.locator(".notification", has_text="Une personne m'a invité")
        expect(invited).to_have_count(1)
        invited.get_by_role("link", name="Voir mes aidants").click()
        invitation = other.locator(".invitation")
        expect(invitation).to_have_count(1)
        expect(invitation).to_contain_text("Demande valable jusqu'au")
        _accessible(other, "invitation received, fr, desktop")
        invitation.get_by_role("button", name=re.compile("^Accepter")).click()
        expect(other.get_by_role("status")).to_have_text("Invitation acceptée")
        expect(other.locator(".invitation")).to_have_count(0)
        expect(other.locator(".helped")).to_have_count(1)
        expect(other.locator(".helped")).to_contain_text("Depuis le")
        assert _delegation(served, helped_id) == (delegation_id, "active")
        assert _verdict(served, helped_id, caregiver_id) == "F3.caregiver"

        # a third patient: every change of that delegation is 404 (no oracle)
        third_context = chromium.new_context(locale="fr-FR")
        try:
            third = third_context.new_page()
            sign_in(third, served, activated_patient(served))
            third.goto(base + "/webmail/caregivers")
            csrf = third.locator("input[name=csrf]").first.get_attribute("value")
            assert csrf
            for action in ("accept", "refuse", "revoke"):
                response = third.request.post(
                    base + f"/webmail/caregivers/{delegation_id}/{action}", form={"csrf": csrf}
                )
                assert response.status == 404, action
                assert "Page introuvable" in response.text()
        finally:
            third_context.close()

        # the helped patient sees an active caregiver
        page.goto(base + "/webmail/caregivers")
        expect(pending).to_contain_text("Aidant")
        expect(pending).not_to_contain_text("Invitation en attente")
        _accessible(page, "active caregiver, fr, desktop")
        page.context.add_cookies([{"name": "caducee-lang", "value": "en", "url": base}])
        page.set_viewport_size({"width": 360, "height": 800})
        page.reload()
        expect(page.get_by_role("heading", name="My caregivers", level=1)).to_be_visible()
        _accessible(page, "active caregiver, en, phone")
        other.set_viewport_size({"width": 360, "height": 800})
        other.reload()
        _accessible(other, "people I help, fr, phone")
        page.context.add_cookies([{"name": "caducee-lang", "value": "fr", "url": base}])
        page.set_viewport_size({"width": 1280, "height": 800})

        # revoke: both lists empty, the caregiver is told
        page.goto(base + "/webmail/caregivers")
        pending.get_by_role("button", name=re.compile("^Retirer cet aidant")).click()
        expect(page.get_by_role("status")).to_have_text("Accès retiré")
        expect(page.locator(".caregiver")).to_have_count(0)
        other.goto(base + "/webmail/caregivers")
        expect(other.locator(".helped")).to_have_count(0)
        expect(other.get_by_text("Je n'aide personne.")).to_be_visible()
        other.goto(base + "/webmail/notifications")
        expect(
            other.locator(".notification", has_text="Un accès d'aidant a pris fin.")
        ).to_have_count(1)
    finally:
        other_context.close()
    assert _delegation(served, helped_id) is None
    assert _verdict(served, helped_id, caregiver_id) == "F3.caregiver-no-delegation"
    assert _actions(served, helped_id) == [
        ("caregiver.invite", "denied", "webmail"),
        ("caregiver.invite", "ok", "webmail"),
        ("caregiver.accept", "ok", "webmail"),
        ("caregiver.revoke", "ok", "webmail"),
    ]
    # the helped patient's history names the changes
    page.goto(base + "/webmail/privacy/history")
    expect(page.get_by_text("Aidant invité").first).to_be_visible()
    expect(page.get_by_text("Accès d'aidant retiré")).to_be_visible()
