"""The webmail's documents pages in a real browser against a served gateway (E1, E4, E5, F2, F4).

Debian's Chromium signs in as a patient whose space a professional wrote to, adds a file of
her own and a received attachment to her documents, finds them with the filters, hides one
from professionals — and the professional's own FHIR search over HTTP (Basic, the demo
professional's app password) no longer lists it, then lists it again once shown. Then the
limits (5 MB, E1 formats, a 50-character title), superseded and withdrawn versions, an
offered document added from the page, a parent reading a child's documents until the 18th
birthday (F3, without the ``INVISIBLE_REPRESENTANTS_LEGAUX`` ones), and the doors: another
patient's session gets 404 on every route, a POST without its CSRF token 403.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select, update

from caducee.mailboxes.access.rights import Actor, add_representative
from caducee.mailboxes.accounts.store import Account, Patient
from caducee.records.models import DocumentState, RecordDocument, VersionStatus
from caducee.records.patient_view import add_own_file
from caducee.storage.audit import AuditEvent
from tests.gateway.web.test_webmail import _focus
from tests.harness.browser import (
    WebPatient,
    activated_patient,
    base_url,
    professional_writes,
    sign_in,
)
from tests.harness.identities import valid_ins
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    """The harness's served demo home whose workers run (filing files the attachments)."""
    return working_gateway


def _ins(served: ServedGateway, address: str) -> str:
    components = served.components()
    try:
        with components.database.reading() as session:
            ins = session.scalar(
                select(Patient.ins)
                .join(Account, Account.id == Patient.account_id)
                .where(Account.address == address)
            )
        assert ins is not None
        return str(ins)
    finally:
        components.close()


def _professional_search(served: ServedGateway, ins: str) -> set[str]:
    """The ids the demo professional's FHIR search lists (Basic, its app password)."""
    account = served.credentials["professional"]
    token = base64.b64encode(f"{account['address']}:{account['password']}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 - loopback, http
        f"{base_url(served)}/fhir/DocumentReference?patient.identifier={ins}",
        headers={"Authorization": f"Basic {token}", "Accept": "application/fhir+json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - loopback
        bundle: dict[str, Any] = json.loads(response.read())
    return {entry["resource"]["id"] for entry in bundle.get("entry", [])}


def _documents(served: ServedGateway, address: str) -> list[RecordDocument]:
    components = served.components()
    try:
        with components.database.reading() as session:
            rows = list(
                session.scalars(
                    select(RecordDocument)
                    .join(Account, Account.id == RecordDocument.account_id)
                    .where(Account.address == address)
                    .order_by(RecordDocument.id)
                )
            )
            for row in rows:
                session.expunge(row)
            return rows
    finally:
        components.close()


def _change(served: ServedGateway, public_id: str, **values: Any) -> None:
    components = served.components()
    try:
        with components.database.transaction() as session:
            session.execute(
                update(RecordDocument).where(RecordDocument.public_id == public_id).values(**values)
            )
    finally:
        components.close()


def _upload(page: Any, title: str, name: str, data: bytes, mime: str) -> None:
    """Add a file of one's own through the form (the page's origin is the served gateway)."""
    origin = re.match(r"https?://[^/]+", page.url)
    assert origin is not None
    page.goto(origin.group(0) + "/webmail/documents/add")
    page.get_by_label("Fichier", exact=True).set_input_files(
        {"name": name, "mimeType": mime, "buffer": data}
    )
    page.get_by_label("Titre", exact=True).fill(title)
    page.get_by_role("button", name="Ajouter à mes documents").click()


def _wait_for_preview(page: Any) -> None:
    """Wait until Chromium's PDF viewer has loaded in the preview: the state in which a page
    that put buttons under the preview lost their clicks (checked against that page).

    Polled with Playwright's own wait: the synchronous API learns of new frames only while
    one of its calls runs, so a plain sleep between checks would never see the frame.
    """
    deadline = time.monotonic() + 20
    while not (viewer := [f for f in page.frames if f.url.startswith("chrome-extension://")]):
        assert time.monotonic() < deadline, "the PDF preview never showed"
        page.wait_for_timeout(100)
    viewer[0].wait_for_load_state("load")
    viewer[0].wait_for_load_state("networkidle")


def _patient_page(served: ServedGateway, browser_context: Any) -> tuple[Any, WebPatient]:
    patient = activated_patient(served)
    page = browser_context.new_page()
    sign_in(page, served, patient)
    return page, patient


def _conversation_with_attachment(served: ServedGateway, page: Any, patient: WebPatient) -> None:
    professional_writes(
        served,
        patient.address,
        "Compte rendu de consultation",
        "Bonjour,\nvoici le compte rendu.\n",
        attachment=("compte-rendu.txt", b"Tension normale\n", "text/plain"),
    )
    wait_until(
        lambda: page.reload() and page.locator(".conversation").count() == 1,
        timeout=30,
        message="the professional's message never showed",
    )
    page.locator(".conversation").get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Compte rendu de consultation")


def test_e5_h4a_add_mask_and_the_professionals_fhir_search_follows(
    served: ServedGateway, browser_context: Any, n1_pdf: bytes
) -> None:
    """Own file → listed → FHIR lists it → hidden → FHIR does not → shown → FHIR does.

    The file is a real PDF (the one the ANS N1 sample carries), so the preview shows it.
    """
    page, patient = _patient_page(served, browser_context)
    _conversation_with_attachment(served, page, patient)  # the professional is now known (F2)
    ins = _ins(served, patient.address)

    # the received attachment: filed on arrival (policy auto), so "save" says it is there
    wait_until(lambda: _documents(served, patient.address), timeout=30, message="never filed (E1)")
    page.get_by_role("link", name=re.compile("Enregistrer dans mes documents de santé")).click()
    expect(page.get_by_label("Titre", exact=True)).to_have_value("compte-rendu.txt")
    page.get_by_role("button", name="Enregistrer dans mes documents de santé").click()
    expect(page.get_by_role("alert")).to_contain_text("déjà dans mes documents de santé")

    _upload(page, "Ordonnance de mars", "ordonnance.pdf", n1_pdf, "application/pdf")
    expect(page.get_by_role("status")).to_have_text("Document ajouté à mes documents santé")
    expect(page.get_by_role("heading", level=1)).to_have_text("Ordonnance de mars")
    match = re.search(r"/webmail/documents/([0-9a-f]{32})", page.url)
    assert match is not None
    public_id = match.group(1)
    frame = page.locator("iframe.document-view")
    expect(frame).to_have_attribute("src", f"/webmail/documents/{public_id}/content?inline=1")
    with page.expect_download() as download:
        page.get_by_role("link", name="Télécharger ce document").click()
    assert download.value.path() is not None
    with open(download.value.path(), "rb") as handle:
        assert handle.read() == n1_pdf

    page.get_by_role("link", name="Mes documents", exact=True).click()
    rows = page.locator(".document")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="Ordonnance de mars")).to_contain_text("Ajouté par moi")
    expect(rows.filter(has_text="compte-rendu.txt")).to_contain_text("Claire MARTIN")  # E2
    assert public_id in _professional_search(served, ins), "filed in the request (E1, F2)"

    rows.filter(has_text="Ordonnance de mars").get_by_role("link").click()
    expect(page.get_by_text("Ce document est visible par les professionnels")).to_be_visible()
    # Chromium's PDF viewer loaded first: a button placed under its frame lost its clicks
    # once the page scrolled, so the preview comes last on the page (checked with the mouse).
    _wait_for_preview(page)
    page.get_by_role("button", name="Le masquer aux professionnels de santé").click()
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    expect(page.get_by_text("Ce document est masqué aux professionnels de santé.")).to_be_visible()
    found = _professional_search(served, ins)
    assert public_id not in found, "a hidden document is not listed to a professional (E5, F2)"
    assert found, "the professional still sees the documents that are not hidden"
    page.goto(base_url(served) + "/webmail/documents")
    expect(page.locator(".document", has_text="Ordonnance de mars")).to_contain_text(
        "Masqué aux professionnels"
    )

    page.locator(".document", has_text="Ordonnance de mars").get_by_role("link").click()
    _wait_for_preview(page)
    page.get_by_role("button", name="Le rendre visible aux professionnels de santé").click()
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    assert public_id in _professional_search(served, ins)

    components = served.components()
    try:
        with components.database.reading() as session:
            events = {
                (row.action, row.rule, row.channel)
                for row in session.execute(
                    select(AuditEvent.action, AuditEvent.rule, AuditEvent.channel).where(
                        AuditEvent.object_id == public_id
                    )
                )
            }
    finally:
        components.close()
    assert ("document.file", "E1.own-file", "webmail") in events
    assert ("document.visibility", "E5.hidden-from-professionals", "webmail") in events
    assert ("document.visibility", "E5.shown-to-professionals", "webmail") in events
    assert ("document.content", None, "webmail") in events  # the patient's read (F4)


def test_e1_h4a_filters_search_sort_and_the_limits(
    served: ServedGateway, browser_context: Any
) -> None:
    page, patient = _patient_page(served, browser_context)
    _upload(page, "Bilan sanguin", "bilan.txt", b"Glycemie 5,1 mmol/l\n", "text/plain")
    expect(page.get_by_role("heading", name="Texte du document")).to_be_visible()
    expect(page.locator(".document-text")).to_have_text("Glycemie 5,1 mmol/l\n")
    _upload(page, "Analyse urinaire", "urine.pdf", PDF.replace(b"1.4", b"1.5"), "application/pdf")
    expect(page.get_by_role("status")).to_have_text("Document ajouté à mes documents santé")
    [older, _newer] = _documents(served, patient.address)
    _change(served, older.public_id, document_date=older.document_date.replace(year=2020))

    base = base_url(served)
    page.goto(base + "/webmail/documents")
    titles = page.locator(".document .title")
    expect(titles).to_have_text(["Analyse urinaire", "Bilan sanguin"])
    page.locator("summary", has_text="Filtrer mes documents").click()  # a closed <details>
    page.get_by_label("Trier").select_option("date-asc")
    page.get_by_role("button", name="Afficher").click()
    expect(titles).to_have_text(["Bilan sanguin", "Analyse urinaire"])
    page.get_by_label("Le titre contient").fill("bilan")
    page.get_by_role("button", name="Afficher").click()
    expect(titles).to_have_text(["Bilan sanguin"])
    page.get_by_role("link", name="Voir tous mes documents").click()
    page.locator("summary", has_text="Filtrer mes documents").click()
    page.get_by_label("Du (date)").fill("2021-01-01")
    page.get_by_role("button", name="Afficher").click()
    expect(titles).to_have_text(["Analyse urinaire"])
    page.goto(base + "/webmail/documents?to=2020-12-31")
    expect(titles).to_have_text(["Bilan sanguin"])
    page.goto(base + "/webmail/documents?q=%25_")
    expect(page.get_by_text("Aucun document ne correspond à ces filtres.")).to_be_visible()

    # 5 MB at most (what Mon espace santé allows; the listener lets a webmail form carry
    # [http] webmail_upload_max_bytes): in the browser, a larger file is refused before it is
    # sent (the page's script)
    _upload(page, "Trop gros", "gros.pdf", PDF + b"0" * (5 * 1024 * 1024), "application/pdf")
    expect(page.get_by_role("alert")).to_contain_text(
        "La taille du ou des documents dépasse la limite autorisée."
    )
    expect(page.get_by_label("Fichier", exact=True)).to_have_attribute("aria-invalid", "true")
    # and without the script, the server refuses a file over the limit and says why (413)
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    refused = page.request.post(
        base + "/webmail/documents/add",
        multipart={
            "csrf": csrf,
            "title": "Trop gros",
            "file": {
                "name": "gros.pdf",
                "mimeType": "application/pdf",
                "buffer": PDF + b"0" * (5 * 1024 * 1024 + 100 * 1024 - len(PDF)),
            },
        },
    )
    assert refused.status == 413
    assert "La taille du ou des documents dépasse la limite autorisée." in refused.text()
    _upload(page, "Un tableur", "notes.xlsx", b"PK\x03\x04 not a document", "application/zip")
    expect(page.get_by_role("alert")).to_have_text(re.compile("Type de fichier non supporté"))
    assert page.get_by_label("Titre", exact=True).get_attribute("maxlength") == "50"
    assert len(_documents(served, patient.address)) == 2


def test_e4_h4a_superseded_and_withdrawn_versions_are_shown_as_such(
    served: ServedGateway, browser_context: Any
) -> None:
    page, patient = _patient_page(served, browser_context)
    _upload(page, "Version 1", "v1.txt", b"premiere version\n", "text/plain")
    _upload(page, "Version 2", "v2.txt", b"seconde version\n", "text/plain")
    _upload(page, "Retire", "r.txt", b"document retire\n", "text/plain")
    first, second, third = _documents(served, patient.address)
    _change(
        served,
        first.public_id,
        status=VersionStatus.SUPERSEDED.value,
        superseded_by_id=second.id,
    )
    _change(served, third.public_id, state=DocumentState.WITHDRAWN.value)
    page.goto(base_url(served) + "/webmail/documents")
    expect(page.locator(".document", has_text="Version 1")).to_contain_text(
        "Remplacé par une version plus récente"
    )
    withdrawn = page.locator(".document", has_text="Retire")
    expect(withdrawn).to_contain_text("Supprimé par son auteur")
    assert withdrawn.get_by_role("link").count() == 0
    page.locator(".document", has_text="Version 1").get_by_role("link").click()
    page.get_by_role("link", name="Voir la version plus récente").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Version 2")
    response = page.request.get(base_url(served) + f"/webmail/documents/{third.public_id}/content")
    assert response.status == 404, "a withdrawn document's content is no one's (E4)"
    page.goto(base_url(served) + f"/webmail/documents/{third.public_id}")
    expect(page.get_by_text("Ce document a été supprimé par le professionnel")).to_be_visible()


def test_e1_h4a_an_offered_document_is_added_from_the_page(
    served: ServedGateway, browser_context: Any
) -> None:
    page, patient = _patient_page(served, browser_context)
    _upload(page, "Proposé", "p.txt", b"document propose\n", "text/plain")
    [offered] = _documents(served, patient.address)
    _change(served, offered.public_id, state=DocumentState.OFFERED.value, filed_at=None)
    page.goto(base_url(served) + "/webmail/documents")
    expect(page.get_by_text("1 document attend d'être ajouté")).to_be_visible()
    expect(page.locator(".document")).to_have_count(0)
    page.get_by_role("link", name="Ajouter un document").click()
    page.get_by_role("button", name=re.compile("Enregistrer dans mes documents de santé")).click()
    expect(page.get_by_role("status")).to_have_text("Document ajouté à mes documents santé")
    [added] = _documents(served, patient.address)
    assert added.state == DocumentState.FILED.value


def test_h4a_another_patients_session_gets_404_and_no_csrf_gets_403(
    served: ServedGateway, browser_context: Any, chromium: Any
) -> None:
    page, patient = _patient_page(served, browser_context)
    _conversation_with_attachment(served, page, patient)
    entry = re.search(r"/webmail/conversations/(\d+)", page.url)
    assert entry is not None
    save_href = page.get_by_role(
        "link", name=re.compile("Enregistrer dans mes documents de santé")
    ).get_attribute("href")
    assert save_href is not None
    _upload(page, "Secret", "secret.txt", b"secret\n", "text/plain")
    own = next(row for row in _documents(served, patient.address) if row.title == "Secret")
    base = base_url(served)

    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    refused = page.request.post(
        base + f"/webmail/documents/{own.public_id}/visibility", form={"hidden": "1"}
    )
    assert refused.status == 403
    refused = page.request.post(base + save_href, form={"title": "x"})
    assert refused.status == 403
    refused = page.request.post(
        base + "/webmail/documents/add",
        multipart={
            "title": "x",
            "file": {"name": "a.txt", "mimeType": "text/plain", "buffer": b"a"},
        },
    )
    assert refused.status == 403
    assert not _documents(served, patient.address)[0].hidden_from_professionals

    other_context = chromium.new_context(locale="fr-FR")
    try:
        other = other_context.new_page()
        stranger = activated_patient(served)
        sign_in(other, served, stranger)
        other_csrf = other.locator("input[name=csrf]").first.get_attribute("value")
        assert other_csrf and other_csrf != csrf
        for path in (
            f"/webmail/documents/{own.public_id}",
            f"/webmail/documents/{own.public_id}/content",
            f"/webmail/documents/{own.public_id}/content?inline=1",
            save_href,
            "/webmail/documents/" + "0" * 32,
        ):
            response = other.request.get(base + path)
            assert response.status == 404, path
            assert "Page introuvable" in response.text(), path
        for path, form in (
            (f"/webmail/documents/{own.public_id}/visibility", {"hidden": "1"}),
            (f"/webmail/documents/offered/{own.public_id}/add", {}),
            (save_href, {"title": "Volé"}),
        ):
            response = other.request.post(base + path, form={"csrf": other_csrf, **form})
            assert response.status == 404, path
    finally:
        other_context.close()
    [still] = [row for row in _documents(served, patient.address) if row.title == "Secret"]
    assert not still.hidden_from_professionals
    assert not _documents(served, stranger.address)


def test_f3_h4a_a_parent_reads_a_childs_documents_until_the_18th_birthday(
    served: ServedGateway, browser_context: Any
) -> None:
    page, parent = _patient_page(served, browser_context)
    child_address = served.add_patient(valid_ins())
    components = served.components()
    try:
        with components.database.transaction() as session:
            parent_id = session.scalar(select(Account.id).where(Account.address == parent.address))
            child_id = session.scalar(select(Account.id).where(Account.address == child_address))
            assert parent_id is not None and child_id is not None
            ten = datetime.now(UTC).date().replace(year=datetime.now(UTC).year - 10, day=1)
            session.execute(
                update(Patient).where(Patient.account_id == child_id).values(birth_date=ten)
            )
            add_representative(session, child_id, parent_id, Actor.operator())
            shown = add_own_file(
                session,
                components.blobs,
                child_id,
                file_name="vaccins.txt",
                content_type="text/plain",
                data=b"Vaccins a jour\n",
                title="Carnet de vaccination",
                sender=child_address,
            )
            kept = add_own_file(
                session,
                components.blobs,
                child_id,
                file_name="secret.txt",
                content_type="text/plain",
                data=b"Consultation confidentielle\n",
                title="Consultation confidentielle",
                sender=child_address,
            )
            assert isinstance(shown, RecordDocument) and isinstance(kept, RecordDocument)
            kept.hidden_from_representatives = True  # INVISIBLE_REPRESENTANTS_LEGAUX (E5)
            shown_id, kept_id = shown.public_id, kept.public_id
    finally:
        components.close()
    base = base_url(served)

    page.goto(base + "/webmail/documents")
    page.get_by_role("link", name="Changer de profil").click()
    page.get_by_role("button", name=re.compile("Voir les documents de ce profil")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Documents de santé de PATIENT TEST")
    expect(page.locator(".document .title")).to_have_text(["Carnet de vaccination"])
    page.locator(".document a").click()
    expect(page.locator(".document-text")).to_have_text("Vaccins a jour\n")
    expect(
        page.get_by_text("Je consulte ce document en tant que représentant légal.")
    ).to_be_visible()
    assert page.get_by_role("button", name=re.compile("masquer", re.I)).count() == 0
    for path in (f"/webmail/documents/{kept_id}", f"/webmail/documents/{kept_id}/content"):
        assert page.request.get(base + path).status == 404, path
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    stranger = served.add_patient(valid_ins())
    components = served.components()
    try:
        with components.database.reading() as session:
            stranger_id = session.scalar(select(Account.id).where(Account.address == stranger))
            events = session.execute(
                select(AuditEvent.actor_kind, AuditEvent.actor_id, AuditEvent.channel).where(
                    AuditEvent.subject_account_id == child_id,
                    AuditEvent.action == "document.content",
                    AuditEvent.object_id == shown_id,
                )
            ).all()
    finally:
        components.close()
    assert [tuple(row) for row in events] == [
        ("representative", f"account:{parent_id}", "webmail")
    ], "the representative's read is in the child's history (F4)"
    forged = page.request.post(
        base + "/webmail/profiles/switch", form={"csrf": csrf, "profile": str(stranger_id)}
    )
    assert forged.status == 404, "no profile of someone the patient does not represent"

    # the 18th birthday: the profile ends on the next request, without anyone touching it
    components = served.components()
    try:
        with components.database.transaction() as session:
            today = datetime.now(UTC).date()
            session.execute(
                update(Patient)
                .where(Patient.account_id == child_id)
                .values(birth_date=today.replace(year=today.year - 18) - timedelta(days=2))
            )
    finally:
        components.close()
    page.goto(base + "/webmail/documents")
    expect(page.get_by_role("heading", level=1)).to_have_text("Mes documents de santé")
    assert page.request.get(base + f"/webmail/documents/{shown_id}").status == 404
    page.goto(base + "/webmail/profiles")
    expect(page.get_by_text("Cette personne a 18 ans ou plus")).to_be_visible()


def test_e5_h4a_with_the_keyboard_alone_a_received_attachment_is_masked(
    served: ServedGateway, browser_context: Any
) -> None:
    """The acceptance's documents steps, keyboard only: the professional's own attachment,
    filed on arrival, is hidden from professionals — their FHIR search no longer lists it."""
    page, patient = _patient_page(served, browser_context)
    _conversation_with_attachment(served, page, patient)
    ins = _ins(served, patient.address)
    [received] = wait_until(
        lambda: _documents(served, patient.address), timeout=30, message="never filed"
    )
    assert received.public_id in _professional_search(served, ins)

    _focus(page, "a[href='/webmail/documents']")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Mes documents de santé")
    _focus(page, ".document a")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("compte-rendu.txt")
    _focus(page, "#visibility button")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    assert received.public_id not in _professional_search(served, ins)
    _focus(page, "a[href='/webmail/privacy']")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Gestion des accès")
    _focus(page, "#professionals button")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Modification prise en compte")
    expect(page.locator("ul[aria-labelledby=blocked-title] .person")).to_contain_text(
        "Claire MARTIN"
    )
