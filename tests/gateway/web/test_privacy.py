"""The webmail's privacy pages in a real browser against a served gateway (F1, F2, F4).

A professional writes to a patient (D2: now a known professional) and reads her record over
FHIR; in Chromium the patient sees that access in her history, blocks the professional —
whose next FHIR search is refused —, sees the block and the refused access in the history,
authorises them again, names them médecin traitant (who then cannot be blocked: a forged
block is refused with the reason, 409, and audited), switches emergency access, and pages
and filters the history by date. The notification centre (G1) lists the new message, marks
it read and unread, deletes it; the preferences form saves what the patient API saves. The
``0021`` migration builds what the centre's model declares. Another patient's session gets
404, a POST without its CSRF token 403.
"""

from __future__ import annotations

import base64
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from playwright.sync_api import expect
from sqlalchemy import inspect, select

from caducee.mailboxes.access.rights import (
    AccessSettings,
    Actor,
    emergency_access,
    set_emergency_access,
)
from caducee.mailboxes.models import KnownProfessional
from caducee.mailboxes.notifications.centre import CentreNotification
from caducee.mailboxes.notifications.patients import NotificationSettings, preferences
from caducee.storage import schema
from caducee.storage.audit import AuditEvent
from caducee.storage.db import Base, Database
from tests.harness.browser import activated_patient, base_url, professional_writes, sign_in
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    """The harness's served demo home whose workers run."""
    return working_gateway


def _account(served: ServedGateway, address: str) -> tuple[int, str]:
    return served.patient_ids(address)


def _fhir_status(served: ServedGateway, ins: str) -> int:
    """The demo professional's FHIR search of the patient's record: its HTTP status."""
    account = served.credentials["professional"]
    token = base64.b64encode(f"{account['address']}:{account['password']}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 - loopback, http
        f"{base_url(served)}/fhir/DocumentReference?patient.identifier={ins}",
        headers={"Authorization": f"Basic {token}", "Accept": "application/fhir+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _events(served: ServedGateway, patient_id: int) -> list[tuple[str, str, str | None]]:
    components = served.components()
    try:
        with components.database.reading() as session:
            rows = session.execute(
                select(AuditEvent.action, AuditEvent.result, AuditEvent.channel)
                .where(AuditEvent.subject_account_id == patient_id)
                .order_by(AuditEvent.position)
            ).all()
        return [(str(row.action), str(row.result), row.channel) for row in rows]
    finally:
        components.close()


def _written_to(served: ServedGateway, page: Any) -> tuple[Any, int, str]:
    patient = activated_patient(served)
    sign_in(page, served, patient)
    professional_writes(served, patient.address, "Bonjour", "Bonjour.\n")
    patient_id, ins = _account(served, patient.address)

    def known() -> bool:
        components = served.components()
        try:
            with components.database.reading() as session:
                return (
                    session.scalar(
                        select(KnownProfessional.id).where(
                            KnownProfessional.patient_account_id == patient_id
                        )
                    )
                    is not None
                )
        finally:
            components.close()

    wait_until(known, timeout=30, message="the professional never became known (D2)")
    return patient, patient_id, ins


def test_f1_f4_h4a_block_history_medecin_traitant_and_emergency(
    served: ServedGateway, browser_context: Any
) -> None:
    page = browser_context.new_page()
    _patient, patient_id, ins = _written_to(served, page)
    base = base_url(served)
    assert _fhir_status(served, ins) == 200, "a known professional reads the record (F2)"

    page.get_by_role("link", name="Gestion des accès").click()
    expect(page.get_by_role("heading", name="Gestion des accès", level=1)).to_be_visible()
    authorised = page.locator("ul[aria-labelledby=authorised-title] .person")
    expect(authorised).to_have_count(1)
    expect(authorised).to_contain_text("Claire MARTIN")
    expect(authorised).to_contain_text("Depuis le")

    page.get_by_role("link", name="Voir l'historique des accès").click()
    access = page.locator(".event", has_text="Recherche dans mes documents")
    expect(access.first).to_contain_text("Claire MARTIN")

    page.get_by_role("link", name="Retour à la gestion des accès").click()
    page.get_by_role("button", name=re.compile("Bloquer l'accès")).click()
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    expect(page.locator("ul[aria-labelledby=blocked-title] .person")).to_contain_text(
        "Claire MARTIN"
    )
    assert _fhir_status(served, ins) == 403, "a blocked professional is refused (F1, F2)"
    page.goto(base + "/webmail/privacy/history")
    expect(page.locator(".event").first).to_contain_text("Refusé")
    expect(page.locator(".event", has_text="Professionnel bloqué")).to_contain_text("Moi")

    page.goto(base + "/webmail/privacy")
    page.get_by_role("button", name=re.compile("Débloquer l'accès")).click()
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    page.get_by_role("button", name=re.compile("C'est mon médecin traitant")).click()
    person = page.locator("ul[aria-labelledby=authorised-title] .person")
    expect(person).to_contain_text("Mon médecin traitant")
    expect(person).to_contain_text("ne peut pas être bloqué")
    assert person.get_by_role("button", name=re.compile("Bloquer")).count() == 0

    # a forged block of the médecin traitant: refused with the rule's reason, and audited
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    components = served.components()
    try:
        with components.database.reading() as session:
            known_id = session.scalar(
                select(KnownProfessional.id).where(
                    KnownProfessional.patient_account_id == patient_id
                )
            )
    finally:
        components.close()
    refused = page.request.post(
        base + f"/webmail/privacy/professionals/{known_id}/block", form={"csrf": csrf}
    )
    assert refused.status == 409
    assert "Mon médecin traitant ne peut pas être bloqué" in refused.text()
    assert ("professional.block", "denied", "webmail") in _events(served, patient_id)
    assert _fhir_status(served, ins) == 200

    page.goto(base + "/webmail/privacy")
    samu = page.get_by_label("SAMU", exact=True)
    page.get_by_label("Autres professionnels de santé").check()
    expect(samu).not_to_be_checked()
    page.get_by_role("button", name="Enregistrer mes choix d'accès en cas d'urgence").click()
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    expect(page.get_by_label("Autres professionnels de santé")).to_be_checked()
    page.get_by_label("Autres professionnels de santé").uncheck()
    page.get_by_role("button", name="Enregistrer mes choix d'accès en cas d'urgence").click()
    expect(page.get_by_label("Autres professionnels de santé")).not_to_be_checked()
    events = _events(served, patient_id)
    for expected in (
        ("professional.block", "ok", "webmail"),
        ("professional.authorise", "ok", "webmail"),
        ("medecin-traitant.set", "ok", "webmail"),
        ("emergency-access.enable", "ok", "webmail"),
        ("emergency-access.disable", "ok", "webmail"),
    ):
        assert expected in events, expected


def test_f4_h4a_history_is_paged_and_filtered_by_date(
    served: ServedGateway, browser_context: Any
) -> None:
    page = browser_context.new_page()
    patient = activated_patient(served)
    sign_in(page, served, patient)
    patient_id, _ins = _account(served, patient.address)
    components = served.components()
    try:
        with components.database.transaction() as session:
            for turn in range(60):
                set_emergency_access(session, patient_id, turn % 2 == 0, Actor.operator())
            assert not emergency_access(session, patient_id, AccessSettings())
    finally:
        components.close()
    total = len(_events(served, patient_id))
    assert total > 60
    base = base_url(served)
    page.goto(base + "/webmail/privacy/history")
    expect(page.get_by_role("status")).to_have_text(f"{total} événements")
    expect(page.locator(".event")).to_have_count(50)
    expect(page.locator(".event").first).to_contain_text("L'opérateur de ma messagerie de santé")
    page.get_by_role("link", name="Page suivante").click()
    expect(page.locator(".event")).to_have_count(total - 50)
    expect(page.get_by_text("Page 2 sur 2")).to_be_visible()

    page.get_by_label("Afficher").select_option("access")
    page.get_by_role("button", name="Filtrer").click()
    expect(page.locator(".event")).to_have_count(1)  # the sign-in (F4)
    expect(page.locator(".event")).to_contain_text("Connexion")

    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    page.goto(base + "/webmail/privacy/history")
    page.get_by_label("Date de début").fill(tomorrow)
    page.get_by_role("button", name="Filtrer").click()
    expect(page.get_by_text("Rien dans l'historique pour ces dates.")).to_be_visible()
    page.get_by_role("link", name="Réinitialiser les filtres").click()
    yesterday = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    page.get_by_label("Date de fin").fill(yesterday)
    page.get_by_role("button", name="Filtrer").click()
    expect(page.get_by_text("Rien dans l'historique pour ces dates.")).to_be_visible()


def test_h4a_privacy_another_patients_session_gets_404_and_no_csrf_gets_403(
    served: ServedGateway, browser_context: Any, chromium: Any
) -> None:
    page = browser_context.new_page()
    _patient, patient_id, _ins = _written_to(served, page)
    components = served.components()
    try:
        with components.database.reading() as session:
            known_id = session.scalar(
                select(KnownProfessional.id).where(
                    KnownProfessional.patient_account_id == patient_id
                )
            )
    finally:
        components.close()
    base = base_url(served)
    page.goto(base + "/webmail/privacy")
    for path in (
        f"/webmail/privacy/professionals/{known_id}/block",
        f"/webmail/privacy/professionals/{known_id}/medecin-traitant",
        "/webmail/privacy/emergency",
    ):
        refused = page.request.post(base + path, form={"enabled": "1"})
        assert refused.status == 403, path

    other_context = chromium.new_context(locale="fr-FR")
    try:
        other = other_context.new_page()
        sign_in(other, served, activated_patient(served))
        other.goto(base + "/webmail/privacy")
        expect(other.locator(".person")).to_have_count(0)
        csrf = other.locator("input[name=csrf]").first.get_attribute("value")
        assert csrf
        for action in ("block", "authorise", "medecin-traitant"):
            response = other.request.post(
                base + f"/webmail/privacy/professionals/{known_id}/{action}", form={"csrf": csrf}
            )
            assert response.status == 404, action
            assert "Page introuvable" in response.text()
    finally:
        other_context.close()
    actions = [event[0] for event in _events(served, patient_id)]
    assert "professional.block" not in actions and "emergency-access.enable" not in actions
    assert _fhir_status(served, _ins) == 200


def test_g1_h4a_notification_centre_read_unread_delete(
    served: ServedGateway, browser_context: Any, chromium: Any
) -> None:
    page = browser_context.new_page()
    _patient, _patient_id, _ins = _written_to(served, page)
    base = base_url(served)

    def listed() -> int:
        page.goto(base + "/webmail/notifications")
        return int(page.locator(".notification").count())

    wait_until(listed, timeout=30, message="the new message never reached the centre (G1)")
    item = page.locator(".notification", has_text="J'ai reçu un nouveau message.")
    expect(item).to_contain_text("Non lu")
    expect(page.get_by_role("status")).to_have_text("1 notification non lue")
    item.get_by_role("button", name=re.compile("Marquer comme lu")).click()
    expect(item).not_to_contain_text("Non lu")
    expect(page.get_by_role("status")).to_have_text("0 notification non lue")
    item.get_by_role("button", name=re.compile("Marquer comme non lu")).click()
    expect(item).to_contain_text("Non lu")
    page.get_by_role("button", name="Tout marquer comme lu").click()
    expect(item).not_to_contain_text("Non lu")
    item.get_by_role("link", name="Voir mes messages").click()
    expect(page.get_by_role("heading", name="Messagerie de santé", level=1)).to_be_visible()

    page.goto(base + "/webmail/notifications")
    notification_id = (
        page.locator("form[action$='/delete']").first.get_attribute("action") or ""
    ).split("/")[3]
    refused = page.request.post(base + f"/webmail/notifications/{notification_id}/delete")
    assert refused.status == 403
    other_context = chromium.new_context(locale="fr-FR")
    try:
        other = other_context.new_page()
        sign_in(other, served, activated_patient(served))
        other.goto(base + "/webmail/notifications")
        csrf = other.locator("input[name=csrf]").first.get_attribute("value")
        assert csrf and other.locator(".notification").count() == 0
        for action in ("read", "unread", "delete"):
            response = other.request.post(
                base + f"/webmail/notifications/{notification_id}/{action}", form={"csrf": csrf}
            )
            assert response.status == 404, action
    finally:
        other_context.close()
    expect(page.locator(".notification")).to_have_count(1)
    page.locator(".notification").get_by_role("button", name=re.compile("Supprimer")).click()
    expect(page.get_by_text("Je n'ai aucune notification.")).to_be_visible()


def test_g1_h4a_notification_preferences(served: ServedGateway, browser_context: Any) -> None:
    page = browser_context.new_page()
    patient = activated_patient(served)
    sign_in(page, served, patient)
    patient_id, _ins = _account(served, patient.address)
    page.get_by_role("link", name="Notifications", exact=True).click()
    page.get_by_role("link", name="Mes préférences de notification").click()
    document_type = page.get_by_label("À chaque fois qu'un document est ajouté")
    expect(document_type).to_be_checked()
    document_type.uncheck()
    page.get_by_label("Adresse e-mail personnelle").fill("moi@example.org")
    page.get_by_label("Téléphone mobile").fill("06 12")
    page.get_by_role("button", name="Enregistrer").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Le numéro de téléphone doit être au format international, par exemple +33612345678."
    )
    page.get_by_label("Téléphone mobile").fill("+33612345678")
    page.get_by_role("button", name="Enregistrer").click()
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    expect(page.get_by_label("Adresse e-mail personnelle")).to_have_value("moi@example.org")
    expect(page.get_by_label("À chaque fois qu'un document est ajouté")).not_to_be_checked()
    expect(page.get_by_label("Pour chaque message reçu")).to_be_checked()
    components = served.components()
    try:
        with components.database.reading() as session:
            prefs = preferences(
                session, patient_id, NotificationSettings.from_settings(components.settings)
            )
    finally:
        components.close()
    assert (prefs.email, prefs.phone, prefs.new_document, prefs.new_message) == (
        "moi@example.org",
        "+33612345678",
        False,
        True,
    )
    assert ("notifications.update", "ok", "webmail") in _events(served, patient_id)


def test_k2_h4a_notification_centre_migration(database: Database, fresh_database_url: str) -> None:
    assert CentreNotification.__tablename__ == "webmail_notifications"
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    flat = [d for item in differences for d in (item if isinstance(item, list) else [item])]
    assert [d for d in flat if "webmail_notifications" in repr(d)] == []
    fresh = Database(fresh_database_url)
    try:
        schema.upgrade(fresh, "0021_webmail_more")
        assert "webmail_notifications" in inspect(fresh.engine).get_table_names()
        schema.downgrade(fresh, "0020_rule_ids")
        assert "webmail_notifications" not in inspect(fresh.engine).get_table_names()
        schema.upgrade(fresh)
    finally:
        fresh.dispose()
