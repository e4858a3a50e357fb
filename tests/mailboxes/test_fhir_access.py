"""F1-F4 over HTTP: professionals and representatives reading a patient's record through the FHIR
API, the patient managing their professionals, and the history that records both."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
from sqlalchemy import select, update
from starlette.applications import Starlette
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Mount, Route

from caducee.directory.service import NewEntry, add_entry
from caducee.mailboxes.access.contacts import declare_pharmacy, patient_may_write
from caducee.mailboxes.access.rights import Actor, add_representative, set_medecin_traitant
from caducee.mailboxes.accounts.store import (
    Account,
    AccountKind,
    add_app_password,
    create_account,
)
from caducee.mailboxes.delivery import NOTIFY_PATIENT_JOB
from caducee.mailboxes.models import KnownProfessional
from caducee.records.models import RecordDocument
from caducee.storage.audit import AuditEvent, verify_chain

from .conftest import (
    DOCTOR,
    DOCTOR_ID,
    FHIR_JSON,
    LABO_ID,
    MINOR_BIRTH,
    MINOR_INS,
    STRANGER_ID,
    World,
    denied_rule,
    rpps_national_id,
)


def _history(world: World, **params: Any) -> list[dict[str, Any]]:
    response = world.client.get("/api/patient/history", params=params, auth=world.patient)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def _accesses(world: World) -> list[dict[str, Any]]:
    """The record reads of others, oldest first."""
    events = _history(world, action=["record.search", "document.read", "document.content"])
    return [event for event in reversed(events) if not event["actor"].get("self")]


def test_f2_acceptance_known_professional_then_blocked_then_medecin_traitant(
    world: World,
) -> None:
    """The issue's acceptance: a professional who wrote reads; blocked, 403; history shows both;
    the médecin traitant still reads, hidden documents included."""
    ids = world.ids
    visible = {ids["n1"], ids["invisible"], ids["pdf"]}  # INVISIBLE_PATIENT is for pros to see

    # 1. the laboratory wrote to the patient (D2): it reads the record, hidden documents excluded
    assert world.found(world.search(auth=world.labo)) == visible
    response = world.client.get(f"/fhir/DocumentReference/{ids['n1']}", auth=world.labo)
    assert response.status_code == 200 and response.json()["id"] == ids["n1"]
    masked = world.client.get(f"/fhir/DocumentReference/{ids['masked']}", auth=world.labo)
    assert masked.status_code == 404

    # 2. the patient blocks it (F1)
    labo_known = world.known_id("labo@labo.mssante.fr")
    blocked = world.client.post(
        f"/api/patient/professionals/{labo_known}/block", auth=world.patient
    )
    assert blocked.status_code == 200, blocked.text
    [line] = [p for p in blocked.json()["professionals"] if p["id"] == labo_known]
    assert line["status"] == "blocked" and line["name"] == "Camille LABORATOIRE"
    assert "address" not in line  # the patient never sees a professional's raw address

    # 3. the laboratory now gets 403 naming the rule, on search and on read
    assert denied_rule(world.search(auth=world.labo)) == "F1.blocked"
    read = world.client.get(f"/fhir/Binary/{ids['n1']}", auth=world.labo)
    assert denied_rule(read) == "F1.blocked"

    # 4. the patient's history shows the allowed and the denied accesses, with who
    accesses = _accesses(world)
    searches = [event for event in accesses if event["action"] == "record.search"]
    assert [(e["result"], e["rule"]) for e in searches] == [
        ("allowed", "F2.known-professional"),
        ("denied", "F1.blocked"),
    ]
    for event in searches:
        assert event["actor"]["kind"] == "professional"
        assert event["actor"]["name"] == "Camille LABORATOIRE"
    changes = _history(world, action="professional.block")
    assert changes[0]["actor"]["self"] is True and changes[0]["result"] == "ok"

    # 5. the médecin traitant (who never wrote) reads, hidden documents included
    with world.database.transaction() as session:
        set_medecin_traitant(
            session, world.record.account_id, DOCTOR, Actor.operator(), create=True
        )
    doctor = world.bearer(DOCTOR_ID)
    assert world.found(world.search(headers=doctor)) == visible | {ids["masked"]}
    masked = world.client.get(f"/fhir/DocumentReference/{ids['masked']}", headers=doctor)
    assert masked.status_code == 200
    binary = world.client.get(f"/fhir/Binary/{ids['masked']}", headers=doctor)
    assert binary.status_code == 200 and binary.content.startswith(b"<?xml")

    # 6. the médecin traitant cannot be blocked
    doctor_known = world.known_id(DOCTOR)
    refused = world.client.post(
        f"/api/patient/professionals/{doctor_known}/block", auth=world.patient
    )
    assert refused.status_code == 409
    assert refused.json()["rule"] == "F1.medecin-traitant-unblockable"
    assert world.found(world.search(headers=doctor)) == visible | {ids["masked"]}

    with world.database.reading() as session:
        assert verify_chain(session).intact
        events = list(session.scalars(select(AuditEvent)))
    # never content: no name, INS, address, subject or title in any event (F4, J2)
    text = " ".join(
        " ".join(str(value) for value in vars(event).values() if value is not None)
        for event in events
    ).lower()
    for word in ("pat-trois", "dominique", "279035121518989", "@", "laboratoire", "durand"):
        assert word not in text, word


def test_f2_unknown_professional_and_emergency_access(world: World) -> None:
    stranger = world.bearer(STRANGER_ID)
    assert denied_rule(world.search(headers=stranger)) == "F2.unknown-professional"
    reason = {**stranger, "X-Break-Glass-Reason": "patient unconscious in the ER"}
    assert denied_rule(world.search(headers=reason)) == "F2.emergency-disabled"
    short = world.search(headers={**stranger, "X-Break-Glass-Reason": "urgent"})
    assert short.status_code == 400

    enabled = world.client.put(
        "/api/patient/emergency-access", json={"enabled": True}, auth=world.patient
    )
    assert enabled.status_code == 200
    assert enabled.json() == {"enabled": True, "samu": True, "break_glass": True, "masked": False}
    ids = world.ids
    found = world.found(world.search(headers=reason))
    assert found == {ids["n1"], ids["invisible"], ids["pdf"]}  # hidden ones stay hidden
    by_param = world.client.get(
        f"/fhir/DocumentReference/{ids['pdf']}",
        params={"_reason": "arrêt cardiaque, patiente inconsciente"},
        headers=stranger,
    )
    assert by_param.status_code == 200

    accesses = _accesses(world)
    assert [(e["result"], e["rule"]) for e in accesses] == [
        ("denied", "F2.unknown-professional"),
        ("denied", "F2.emergency-disabled"),
        ("allowed", "F2.emergency-access"),
        ("allowed", "F2.emergency-access"),
    ]
    assert accesses[2]["reason"] == "patient unconscious in the ER"
    assert accesses[3]["reason"] == "arrêt cardiaque, patiente inconsciente"
    assert accesses[3]["object"] == {"type": "document", "id": ids["pdf"]}

    # each allowed professional access queued a record-access notification (G1)
    events = [job["event"] for job in world.jobs(NOTIFY_PATIENT_JOB)]
    assert events.count("record-access") == 2


def test_f2_hosted_professional_with_an_oidc_token_and_basic_is_the_same_person(
    world: World,
) -> None:
    """The laboratory known by its address is recognised from a token by its national id."""
    ids = world.ids
    by_token = world.found(world.search(headers=world.bearer(LABO_ID)))
    by_password = world.found(world.search(auth=world.labo))
    assert by_token == by_password == {ids["n1"], ids["invisible"], ids["pdf"]}


def test_f2_bad_tokens_and_missing_patient(world: World) -> None:
    expired = world.token(DOCTOR_ID, exp=1)
    response = world.search(headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]
    assert response.json()["resourceType"] == "OperationOutcome"
    labo = world.labo
    no_patient = world.client.get("/fhir/DocumentReference", auth=labo)
    assert no_patient.status_code == 400
    unknown = world.search("279035121518989".replace("279", "179"), auth=labo)
    assert unknown.status_code in (400, 404)
    bad = world.client.get("/fhir/DocumentReference?patient.identifier=123", auth=labo)
    assert bad.status_code == 400
    metadata = world.client.get("/fhir/metadata", auth=labo)
    assert metadata.status_code == 200


def test_f2_patient_reads_are_unchanged_and_audited(world: World) -> None:
    ids = world.ids
    own = world.client.get("/fhir/DocumentReference", auth=world.patient)
    assert own.status_code == 200 and own.headers["content-type"].startswith(FHIR_JSON)
    assert world.found(own) == {ids["n1"], ids["masked"], ids["pdf"]}
    read = world.client.get(f"/fhir/DocumentReference/{ids['pdf']}", auth=world.patient)
    assert read.status_code == 200
    hidden = world.client.get(f"/fhir/DocumentReference/{ids['invisible']}", auth=world.patient)
    assert hidden.status_code == 404
    events = list(reversed(_history(world)))
    logins = [e for e in events if e["action"] == "login"]
    assert len(logins) == 1 and logins[0]["result"] == "ok"  # one argon2 check, then cached
    reads = [
        (e["action"], e["result"], e["object"]["id"]) for e in events if e["actor"].get("self")
    ]
    assert ("record.search", "allowed", str(world.record.account_id)) in reads
    assert ("document.read", "allowed", ids["pdf"]) in reads
    assert ("document.read", "failed", ids["invisible"]) in reads


def test_f4_failed_login_is_audited_for_the_account(world: World) -> None:
    wrong = httpx.BasicAuth(world.record.address, "not-the-password")
    assert world.client.get("/fhir/DocumentReference", auth=wrong).status_code == 401
    assert world.client.get("/api/patient/history", auth=wrong).status_code == 401
    events = _history(world, action="login")
    assert [e["result"] for e in events][-2:] == ["failed", "failed"]
    assert all(e["actor"]["kind"] == "unknown" for e in events if e["result"] == "failed")


def test_f3_legal_representative_until_the_18th_birthday(world: World) -> None:
    ids = world.ids
    parent = world.parent

    def search() -> httpx.Response:
        return world.search(MINOR_INS, auth=parent)

    assert denied_rule(search()) == "F3.no-delegation"
    with world.database.transaction() as session:
        add_representative(session, world.minor_id, world.parent_id, Actor.operator())
    world.today[0] = date(2026, 1, 10)
    assert world.found(search()) == {ids["minor"]}  # INVISIBLE_REPRESENTANTS_LEGAUX excluded
    secret = world.client.get(
        f"/fhir/DocumentReference/{ids['minor_secret']}",
        params={"patient.identifier": MINOR_INS},
        auth=parent,
    )
    assert secret.status_code == 404
    content = world.client.get(
        f"/fhir/Binary/{ids['minor']}", params={"patient.identifier": MINOR_INS}, auth=parent
    )
    assert content.status_code == 200 and content.content.startswith(b"%PDF-")
    # without naming the minor, the parent reads their own (empty) record
    own = world.client.get("/fhir/DocumentReference", auth=parent)
    assert world.found(own) == set()

    listed = world.client.get("/api/patient/representatives", auth=parent).json()
    assert listed["represents"][0]["active"] is True

    world.today[0] = MINOR_BIRTH.replace(year=MINOR_BIRTH.year + 18)
    assert denied_rule(search()) == "F3.age-of-majority"
    listed = world.client.get("/api/patient/representatives", auth=parent).json()
    assert listed["represents"][0]["active"] is False


def test_f1_patient_api_lists_sets_and_refuses(world: World) -> None:
    patient = world.patient
    listing = world.client.get("/api/patient/professionals", auth=patient)
    assert listing.status_code == 200
    body = listing.json()
    assert body["emergency_access"] is False
    [labo] = body["professionals"]
    assert labo["status"] == "authorised" and labo["profession"] == "Médecin"
    made = world.client.put(
        "/api/patient/medecin-traitant", json={"professional": labo["id"]}, auth=patient
    )
    assert made.status_code == 200 and made.json()["professionals"][0]["medecin_traitant"]
    missing = world.client.post("/api/patient/professionals/999999/block", auth=patient)
    assert missing.status_code == 404 and missing.json()["rule"] == "F1.not-known"
    bad = world.client.put("/api/patient/emergency-access", json={"enabled": "yes"}, auth=patient)
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    pro = world.client.get("/api/patient/professionals", auth=world.labo)
    assert pro.status_code == 403
    nobody = world.client.get("/api/patient/professionals")
    assert nobody.status_code == 401


def test_f2_the_patient_api_sets_each_emergency_switch(world: World) -> None:
    """The three switches of the "Accès en cas d'urgence" screen, one at a time."""
    url, patient = "/api/patient/emergency-access", world.patient

    def put(body: dict[str, Any]) -> dict[str, Any]:
        response = world.client.put(url, json=body, auth=patient)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        assert world.client.get(url, auth=patient).json() == answer
        return answer

    off = {"enabled": False, "samu": False, "break_glass": False, "masked": False}
    assert world.client.get(url, auth=patient).json() == off
    assert put({"masked": True}) == off, "masked documents open only to an emergency access"
    assert put({"samu": True}) == {**off, "enabled": True, "samu": True}
    assert put({"masked": True}) == {**off, "enabled": True, "samu": True, "masked": True}
    assert put({"break_glass": True, "samu": False}) == {
        **off,
        "enabled": True,
        "break_glass": True,
        "masked": True,
    }
    assert put({"break_glass": False}) == off, "no emergency access left: masked closes too"
    for bad in ({"enabled": True, "samu": True}, {"samu": "yes"}, {"other": True}, {}):
        refused = world.client.put(url, json=bad, auth=patient)
        assert refused.status_code == 400, bad
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert world.client.put(url, json={"samu": True}, auth=world.labo).status_code == 403
    with world.database.reading() as session:
        changes = [
            (row.action, row.object_id)
            for row in session.execute(
                select(AuditEvent.action, AuditEvent.object_id)
                .where(AuditEvent.subject_account_id == world.record.account_id)
                .where(AuditEvent.object_type == "emergency")
                .order_by(AuditEvent.position)
            )
        ]
    assert changes == [
        ("emergency-access.enable", "samu"),
        ("emergency-access.enable", "masked"),
        ("emergency-access.disable", "samu"),
        ("emergency-access.enable", "break-glass"),
        ("emergency-access.disable", "break-glass"),
        ("emergency-access.disable", "masked"),
    ]


def test_e5_patient_hides_a_document_from_professionals(world: World) -> None:
    ids = world.ids
    hide = world.client.put(
        f"/api/patient/documents/{ids['pdf']}/visibility",
        json={"hidden_from_professionals": True},
        auth=world.patient,
    )
    assert hide.status_code == 200
    assert world.found(world.search(auth=world.labo)) == {ids["n1"], ids["invisible"]}
    show = world.client.put(
        f"/api/patient/documents/{ids['pdf']}/visibility",
        json={"hidden_from_professionals": False},
        auth=world.patient,
    )
    assert show.status_code == 200
    assert ids["pdf"] in world.found(world.search(auth=world.labo))
    other = world.client.put(
        f"/api/patient/documents/{ids['minor']}/visibility",
        json={"hidden_from_professionals": True},
        auth=world.patient,
    )
    assert other.status_code == 404
    changes = _history(world, action="document.visibility")
    assert [e["rule"] for e in changes] == [
        "E5.shown-to-professionals",
        "E5.hidden-from-professionals",
    ]


def test_g1_notification_preferences_api(world: World) -> None:
    patient = world.patient
    initial = world.client.get("/api/patient/notifications", auth=patient).json()
    assert initial["types"] == {"new-message": True, "new-document": True, "record-access": True}
    changed = world.client.patch(
        "/api/patient/notifications",
        json={
            "email": "dominique@example.org",
            "phone": "+33612345678",
            "language": "en",
            "types": {"record-access": False},
        },
        auth=patient,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["email"] == "dominique@example.org" and body["language"] == "en"
    assert body["types"]["record-access"] is False and body["types"]["new-message"] is True
    for bad in ({"email": "not an address"}, {"phone": "0612"}, {"types": {"x": True}}):
        response = world.client.put("/api/patient/notifications", json=bad, auth=patient)
        assert response.status_code == 400, bad
    [event] = _history(world, action="notifications.update")
    assert "dominique" not in str(event)


# F2: a declared pharmacy, break-glass for persons only, the author of a masked document -----

PHARMACY = "pharmacie@pharmacie-du-port.mssante.fr"
CLINIC_DESK = "secretariat@clinique.mssante.fr"
AUTHOR = "dr.auteur@hopital.mssante.fr"
AUTHOR_ID = rpps_national_id("1009990004")
"""The author of the CDA documents of ``world`` (the PDF has none): the ANS sample's own
author id fails its Luhn check, so the test names a listed professional in its place."""


def _hosted_organisation(world: World, address: str, *, pharmacy: bool) -> httpx.BasicAuth:
    """An ORG mailbox of the directory, hosted here, with an app password."""
    with world.database.transaction() as session:
        add_entry(
            session,
            NewEntry(
                address=address,
                bal_type="ORG",
                national_id="1" + ("750000001" if pharmacy else "750000002"),
                organisation_name="Pharmacie du port" if pharmacy else "Clinique",
                hosted=True,
                pharmacy=pharmacy,
            ),
        )
        account = create_account(session, address, AccountKind.ORGANISATION)
        return httpx.BasicAuth(address, add_app_password(session, account, "tests"))


def _enable_emergency_access(world: World) -> None:
    enabled = world.client.put(
        "/api/patient/emergency-access", json={"enabled": True}, auth=world.patient
    )
    assert enabled.status_code == 200


def test_f2_declared_pharmacy_exchanges_messages_but_does_not_read_the_record(
    world: World,
) -> None:
    pharmacy = _hosted_organisation(world, PHARMACY, pharmacy=True)
    patient_id = world.record.account_id
    with world.database.transaction() as session:
        declare_pharmacy(session, patient_id, PHARMACY)
    with world.database.reading() as session:
        assert patient_may_write(session, patient_id, PHARMACY)  # C4 is unchanged

    assert denied_rule(world.search(auth=pharmacy)) == "F2.declared-pharmacy"
    read = world.client.get(f"/fhir/DocumentReference/{world.ids['n1']}", auth=pharmacy)
    assert denied_rule(read) == "F2.declared-pharmacy"
    binary = world.client.get(f"/fhir/Binary/{world.ids['pdf']}", auth=pharmacy)
    assert denied_rule(binary) == "F2.declared-pharmacy"
    _enable_emergency_access(world)
    reason = {"X-Break-Glass-Reason": "ordonnance urgente a delivrer"}
    assert denied_rule(world.search(auth=pharmacy, headers=reason)) == "F2.declared-pharmacy"

    accesses = _accesses(world)
    assert {(e["result"], e["rule"]) for e in accesses} == {("denied", "F2.declared-pharmacy")}
    assert "record-access" not in [job["event"] for job in world.jobs(NOTIFY_PATIENT_JOB)]


def test_f2_break_glass_only_for_personal_mailboxes(world: World) -> None:
    desk = _hosted_organisation(world, CLINIC_DESK, pharmacy=False)
    _enable_emergency_access(world)
    reason = {"X-Break-Glass-Reason": "patient unconscious in the ER"}
    assert denied_rule(world.search(auth=desk, headers=reason)) == "F2.emergency-not-personal"
    read = world.client.get(f"/fhir/DocumentReference/{world.ids['n1']}", auth=desk, headers=reason)
    assert denied_rule(read) == "F2.emergency-not-personal"
    assert denied_rule(world.search(auth=desk)) == "F2.unknown-professional"
    # a person (PER mailbox, Pro Santé Connect) still breaks the glass
    person = {**world.bearer(STRANGER_ID), **reason}
    assert world.found(world.search(headers=person)) == {
        world.ids["n1"],
        world.ids["invisible"],
        world.ids["pdf"],
    }


def test_e5_masked_document_stays_readable_by_its_author_and_the_medecin_traitant(
    world: World,
) -> None:
    """The patient masks a document: its author and the médecin traitant still read it; the
    laboratory, known but not its author, gets 404."""
    ids = world.ids
    patient_id = world.record.account_id
    with world.database.transaction() as session:
        add_entry(
            session,
            NewEntry(address=AUTHOR, bal_type="PER", national_id=AUTHOR_ID, family_name="AUTEUR"),
        )
        # the author wrote to the patient (D2)
        session.add(
            KnownProfessional(
                patient_account_id=patient_id,
                professional_address=AUTHOR,
                reply_address=AUTHOR,
                can_reply=True,
                status="authorised",
                medecin_traitant=False,
            )
        )
        session.execute(
            update(RecordDocument)
            .where(
                RecordDocument.account_id == patient_id,
                RecordDocument.author_national_id.is_not(None),
            )
            .values(author_national_id=AUTHOR_ID)
        )
        authors = dict(
            session.execute(
                select(RecordDocument.public_id, RecordDocument.author_national_id).where(
                    RecordDocument.account_id == patient_id
                )
            ).all()
        )
        set_medecin_traitant(session, patient_id, DOCTOR, Actor.operator(), create=True)
    assert authors[ids["n1"]] == AUTHOR_ID and authors[ids["masked"]] == AUTHOR_ID
    assert authors[ids["pdf"]] != AUTHOR_ID

    hide = world.client.put(
        f"/api/patient/documents/{ids['n1']}/visibility",
        json={"hidden_from_professionals": True},
        auth=world.patient,
    )
    assert hide.status_code == 200
    masked_by_patient, masked_by_author = ids["n1"], ids["masked"]
    everything = {ids["n1"], ids["masked"], ids["invisible"], ids["pdf"]}

    author = world.bearer(AUTHOR_ID)
    assert world.found(world.search(headers=author)) == everything
    for public_id in (masked_by_patient, masked_by_author):
        read = world.client.get(f"/fhir/DocumentReference/{public_id}", headers=author)
        assert read.status_code == 200 and read.json()["id"] == public_id
        binary = world.client.get(f"/fhir/Binary/{public_id}", headers=author)
        assert binary.status_code == 200 and binary.content.startswith(b"<?xml")

    doctor = world.bearer(DOCTOR_ID)
    assert world.found(world.search(headers=doctor)) == everything
    read = world.client.get(f"/fhir/DocumentReference/{masked_by_patient}", headers=doctor)
    assert read.status_code == 200

    # another known professional: the masked documents are absent, a read is "not found"
    assert world.found(world.search(auth=world.labo)) == {ids["invisible"], ids["pdf"]}
    for public_id in (masked_by_patient, masked_by_author):
        read = world.client.get(f"/fhir/DocumentReference/{public_id}", auth=world.labo)
        assert read.status_code == 404
        binary = world.client.get(f"/fhir/Binary/{public_id}", auth=world.labo)
        assert binary.status_code == 404


# One API: the same routes, the same handlers, every caller ------------------------------------


def test_f2_f3_one_request_path_serves_the_patient_a_professional_and_a_representative(
    world: World,
) -> None:
    """The minor's report, fetched at the same URL by the minor, by the laboratory that sent it
    and by the parent acting for the minor: one ``/fhir`` mount, one route per resource, one
    handler; the access table decides each answer and the audit names each actor."""
    app = world.client.app
    assert isinstance(app, Starlette)
    [fhir] = [route for route in app.routes if isinstance(route, Mount) and route.path == "/fhir"]
    inner = fhir.app
    assert isinstance(inner, Starlette)
    paths = [route.path for route in inner.routes if isinstance(route, Route)]
    assert sorted(paths) == sorted(set(paths))  # no second route set behind a gate
    assert {"/DocumentReference", "/DocumentReference/{id}", "/Binary/{id}"} <= set(paths)
    assert any(middleware.cls is AuthenticationMiddleware for middleware in inner.user_middleware)

    with world.database.transaction() as session:
        minor_account = session.get(Account, world.minor_id)
        assert minor_account is not None
        minor = httpx.BasicAuth(
            minor_account.address, add_app_password(session, minor_account, "t")
        )
        add_representative(session, world.minor_id, world.parent_id, Actor.operator())
    world.today[0] = date(2026, 1, 10)
    document = world.ids["minor"]
    url = f"/fhir/Binary/{document}"
    named = {"patient.identifier": MINOR_INS}

    as_patient = world.client.get(url, auth=minor)
    as_professional = world.client.get(url, auth=world.labo)
    as_representative = world.client.get(url, params=named, auth=world.parent)
    for response in (as_patient, as_professional, as_representative):
        assert response.status_code == 200, response.text
        assert response.content.startswith(b"%PDF-")
    assert as_patient.content == as_professional.content == as_representative.content

    # the same search route: each caller's view of the minor's record, per the E5 table
    own = world.client.get("/fhir/DocumentReference", auth=minor)
    by_labo = world.search(MINOR_INS, auth=world.labo)
    by_parent = world.search(MINOR_INS, auth=world.parent)
    secret = world.ids["minor_secret"]
    assert world.found(own) == world.found(by_labo) == {document, secret}
    assert world.found(by_parent) == {document}  # INVISIBLE_REPRESENTANTS_LEGAUX

    with world.database.reading() as session:
        events = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "document.content", AuditEvent.object_id == document
            )
        ).all()
        assert sorted((event.actor_kind, event.result, event.rule) for event in events) == sorted(
            [
                ("patient", "allowed", "F2.own-record"),
                ("professional", "allowed", "F2.known-professional"),
                ("representative", "allowed", "F3.representative"),
            ]
        )
        assert {event.subject_account_id for event in events} == {world.minor_id}
