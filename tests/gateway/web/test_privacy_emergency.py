"""H2, F2: the webmail's three emergency access switches in Chromium against a served gateway.

The patient sees the SAMU, break-glass ("Autres professionnels de santé") and masked documents
switches with the app's texts; the masked one is greyed out while both others are off (in the
page as served, and as she ticks and unticks); what she saves is what the FHIR API then
decides for a professional who does not know her; a forged form cannot keep masked documents
open with both others off; the history names the switch changed and the emergency read.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import expect

from caducee.mailboxes.access.rights import AccessSettings, emergency_settings
from caducee.policies.access import EmergencySwitches
from tests.harness.browser import activated_patient, base_url, sign_in
from tests.harness.served import ServedGateway

SAVE = "Enregistrer mes choix d'accès en cas d'urgence"


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    return working_gateway


def _patient(served: ServedGateway, address: str) -> tuple[int, str]:
    return served.patient_ids(address)


def _switches(served: ServedGateway, patient_id: int) -> EmergencySwitches:
    components = served.components()
    try:
        with components.database.reading() as session:
            return emergency_settings(session, patient_id, AccessSettings())
    finally:
        components.close()


def _fhir(served: ServedGateway, ins: str, headers: dict[str, str]) -> tuple[int, Any]:
    """The demo professional (a PER mailbox, not in a SAMU, who never wrote to this patient)
    searches the record: status and body."""
    account = served.credentials["professional"]
    token = base64.b64encode(f"{account['address']}:{account['password']}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 - loopback, http
        f"{base_url(served)}/fhir/DocumentReference?patient.identifier={ins}",
        headers={"Authorization": f"Basic {token}", "Accept": "application/fhir+json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - loopback
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())


def _rule(body: Any) -> str:
    return str(body["issue"][0]["details"]["coding"][0]["code"])


def test_h2_f2_emergency_switches_in_the_webmail_decide_fhir_reads(
    served: ServedGateway, browser_context: Any
) -> None:
    page = browser_context.new_page()
    patient = activated_patient(served)
    sign_in(page, served, patient)
    patient_id, ins = _patient(served, patient.address)
    base = base_url(served)
    reason = {"X-Break-Glass-Reason": "patient inconscient aux urgences"}
    etreat = {"X-Purpose-Of-Use": "ETREAT"}

    status, body = _fhir(served, ins, reason)
    assert (status, _rule(body)) == (403, "F2.emergency-disabled")

    page.goto(base + "/webmail/privacy")
    samu = page.get_by_label("SAMU", exact=True)
    break_glass = page.get_by_label("Autres professionnels de santé")
    masked = page.get_by_label("Documents masqués")
    expect(page.get_by_text("J'autorise les professionnels de santé du SAMU")).to_be_visible()
    expect(samu).not_to_be_checked()
    expect(break_glass).not_to_be_checked()
    expect(masked).to_be_disabled()
    samu.check()
    expect(masked).to_be_enabled()
    masked.check()
    samu.uncheck()
    expect(masked).to_be_disabled()
    expect(masked).not_to_be_checked()

    break_glass.check()
    masked.check()
    page.get_by_role("button", name=SAVE).click()
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    expect(break_glass).to_be_checked()
    expect(masked).to_be_checked()
    expect(samu).not_to_be_checked()
    assert _switches(served, patient_id) == EmergencySwitches(break_glass=True, masked=True)

    status, body = _fhir(served, ins, reason)
    assert status == 200 and body["resourceType"] == "Bundle"
    status, body = _fhir(served, ins, etreat)
    assert (status, _rule(body)) == (403, "F2.samu-unrecognised")

    # a forged form: masked documents alone cannot stay open
    csrf = page.locator("form.emergency-switches input[name=csrf]").get_attribute("value")
    assert csrf
    forged = page.request.post(
        base + "/webmail/privacy/emergency", form={"csrf": csrf, "masked": "1"}
    )
    assert forged.ok
    assert _switches(served, patient_id) == EmergencySwitches()
    page.goto(base + "/webmail/privacy")
    expect(masked).to_be_disabled()
    expect(masked).not_to_be_checked()
    status, body = _fhir(served, ins, reason)
    assert (status, _rule(body)) == (403, "F2.emergency-disabled")

    page.goto(base + "/webmail/privacy/history")
    expect(
        page.locator(".event", has_text="Accès en cas d'urgence activé — Documents masqués")
    ).to_have_count(1)
    expect(
        page.locator(
            ".event", has_text="Accès en cas d'urgence désactivé — Autres professionnels de santé"
        )
    ).to_have_count(1)
    expect(
        page.locator(".event", has_text="en cas d'urgence (bris de glace)").first
    ).to_contain_text("Claire MARTIN")
