"""F2, H2: the three emergency access switches (SAMU, break-glass, masked documents) decide
professionals' FHIR reads over HTTP; each read is audited with its rule and notified (F4, G1);
the migration keeps the meaning of the former single switch."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect, text

from caducee.directory.service import NewEntry, add_entry
from caducee.mailboxes.access.rights import (
    AccessSettings,
    Actor,
    emergency_access,
    emergency_settings,
    set_emergency_access,
    set_emergency_switches,
)
from caducee.mailboxes.delivery import NOTIFY_PATIENT_JOB
from caducee.policies.access import EmergencySwitches
from caducee.storage import schema
from caducee.storage.audit import AuditEvent
from caducee.storage.db import Database

from .conftest import STRANGER_ID, World, denied_rule, rpps_national_id

SAMU_DOCTOR = "dr.regulateur@chu-exemple.mssante.fr"
SAMU_ID = rpps_national_id("1009990005")
REASON = "patient unconscious in the ER"


def _samu_directory(world: World) -> None:
    with world.database.transaction() as session:
        add_entry(
            session,
            NewEntry(
                address=SAMU_DOCTOR,
                bal_type="PER",
                national_id=SAMU_ID,
                family_name="REGULATEUR",
                given_name="Alex",
                profession_code="10",
                profession_label="Médecin",
                organisation_name="CHU Exemple",
                service="SAMU - Centre 15",
            ),
        )


def _switches(world: World, **values: bool) -> EmergencySwitches:
    with world.database.transaction() as session:
        return set_emergency_switches(
            session,
            world.record.account_id,
            Actor.patient(world.record.account_id, "webmail"),
            samu=values.get("samu", False),
            break_glass=values.get("break_glass", False),
            masked=values.get("masked", False),
        )


def _samu(world: World) -> dict[str, str]:
    return {**world.bearer(SAMU_ID), "X-Purpose-Of-Use": "ETREAT"}


def _btg(world: World, national_id: str = STRANGER_ID) -> dict[str, str]:
    return {**world.bearer(national_id), "X-Break-Glass-Reason": REASON}


def _rules(world: World) -> list[tuple[str, str | None]]:
    with world.database.reading() as session:
        events = session.query(AuditEvent).order_by(AuditEvent.position).all()
        return [
            (event.result, event.rule)
            for event in events
            if event.action in ("record.search", "document.read", "document.content")
            and event.actor_kind == "professional"
        ]


def test_f2_samu_switch_lets_a_samu_professional_read_with_etreat(world: World) -> None:
    _samu_directory(world)
    ids = world.ids
    plain = {ids["n1"], ids["invisible"], ids["pdf"]}
    assert denied_rule(world.search(headers=_samu(world))) == "F2.samu-disabled"
    _switches(world, samu=True)
    assert world.found(world.search(headers=_samu(world))) == plain  # masked ones stay hidden
    masked = world.client.get(f"/fhir/DocumentReference/{ids['masked']}", headers=_samu(world))
    assert masked.status_code == 404
    # the purpose as a search parameter, with its HL7 system
    by_param = world.client.get(
        "/fhir/DocumentReference",
        params={
            "patient.identifier": world.record_ins,
            "_purposeOfUse": "http://terminology.hl7.org/CodeSystem/v3-ActReason|ETREAT",
        },
        headers=world.bearer(SAMU_ID),
    )
    assert world.found(by_param) == plain
    # ETREAT is the SAMU's: another professional is refused, even with the switch on
    stranger = {**world.bearer(STRANGER_ID), "X-Purpose-Of-Use": "ETREAT"}
    assert denied_rule(world.search(headers=stranger)) == "F2.samu-unrecognised"
    # the SAMU switch does not open break-glass
    assert denied_rule(world.search(headers=_btg(world))) == "F2.emergency-disabled"
    assert _rules(world) == [
        ("denied", "F2.samu-disabled"),
        ("allowed", "F2.samu-access"),
        ("denied", "E5.hidden-from-professionals"),
        ("allowed", "F2.samu-access"),
        ("denied", "F2.samu-unrecognised"),
        ("denied", "F2.emergency-disabled"),
    ]
    events = [job["event"] for job in world.jobs(NOTIFY_PATIENT_JOB)]
    assert events.count("record-access") == 2


def test_f2_masked_documents_switch_opens_hidden_documents_to_an_emergency_read(
    world: World,
) -> None:
    _samu_directory(world)
    ids = world.ids
    everything = {ids["n1"], ids["invisible"], ids["pdf"], ids["masked"]}
    _switches(world, samu=True, masked=True)
    assert world.found(world.search(headers=_samu(world))) == everything
    binary = world.client.get(f"/fhir/Binary/{ids['masked']}", headers=_samu(world))
    assert binary.status_code == 200 and binary.content.startswith(b"<?xml")
    assert denied_rule(world.search(headers=_btg(world))) == "F2.emergency-disabled"

    _switches(world, break_glass=True, masked=True)
    assert denied_rule(world.search(headers=_samu(world))) == "F2.samu-disabled"
    assert world.found(world.search(headers=_btg(world))) == everything
    # a known professional stays a known professional: masked documents stay hidden from it
    labo = world.client.get(
        f"/fhir/DocumentReference/{ids['masked']}",
        auth=world.labo,
        headers={"X-Break-Glass-Reason": REASON},
    )
    assert labo.status_code == 404

    _switches(world, break_glass=True)
    assert world.found(world.search(headers=_btg(world))) == everything - {ids["masked"]}
    rules = [rule for result, rule in _rules(world) if result == "allowed"]
    assert rules == [
        "F2.samu-masked",
        "F2.samu-masked",
        "F2.emergency-masked",
        "F2.emergency-access",
    ]


def test_f2_purpose_of_use_is_checked(world: World) -> None:
    _switches(world, samu=True, break_glass=True)
    btg_without_reason = {**world.bearer(STRANGER_ID), "X-Purpose-Of-Use": "BTG"}
    assert world.search(headers=btg_without_reason).status_code == 400
    unknown = {**world.bearer(STRANGER_ID), "X-Purpose-Of-Use": "TREAT"}
    assert world.search(headers=unknown).status_code == 400
    other_system = {**_btg(world), "X-Purpose-Of-Use": "urn:example|BTG"}
    assert world.search(headers=other_system).status_code == 400
    explicit = {**_btg(world), "X-Purpose-Of-Use": "BTG"}
    assert world.search(headers=explicit).status_code == 200
    # with both switches off the masked switch cannot stay on
    after = _switches(world, masked=True)
    assert after == EmergencySwitches()
    assert denied_rule(world.search(headers=_btg(world))) == "F2.emergency-disabled"


def test_f2_the_single_switch_of_the_api_and_cli_sets_samu_and_break_glass(
    world: World,
) -> None:
    patient_id = world.record.account_id
    settings = AccessSettings()
    _switches(world, samu=True, masked=True)
    with world.database.transaction() as session:
        set_emergency_access(session, patient_id, False, Actor.operator())
        assert emergency_settings(session, patient_id, settings) == EmergencySwitches()
        set_emergency_access(session, patient_id, True, Actor.operator())
        assert emergency_settings(session, patient_id, settings) == EmergencySwitches(
            samu=True, break_glass=True
        )
        assert emergency_access(session, patient_id, settings)
    with world.database.reading() as session:
        default_on = emergency_settings(session, -1, AccessSettings(emergency_access_default=True))
    assert default_on == EmergencySwitches(samu=True, break_glass=True, masked=False)


@pytest.mark.parametrize("enabled", [True, False])
def test_h2_migration_0024_keeps_the_meaning_of_the_single_switch(
    fresh_database_url: str, enabled: bool
) -> None:
    database = Database(fresh_database_url)
    try:
        schema.upgrade(database, "0023_webmail_indexes")
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO accounts (address, kind, state, created_at) "
                    "VALUES ('p@patient.test', 'patient', 'active', :now)"
                ),
                {"now": "2026-12-07 00:00:00"},
            )
            account_id = int(connection.execute(text("SELECT id FROM accounts")).scalar_one())
            connection.execute(
                text(
                    "INSERT INTO patient_access (account_id, emergency_access, updated_at) "
                    "VALUES (:id, :on, :now)"
                ),
                {"id": account_id, "on": enabled, "now": "2026-12-07 00:00:00"},
            )
        schema.upgrade(database)
        columns = {c["name"] for c in inspect(database.engine).get_columns("patient_access")}
        assert {"samu", "break_glass", "masked"} <= columns
        assert "emergency_access" not in columns
        with database.reading() as session:
            switches = emergency_settings(session, account_id, AccessSettings())
        assert switches == EmergencySwitches(samu=enabled, break_glass=enabled, masked=False)
        schema.downgrade(database, "0023_webmail_indexes")
        with database.engine.begin() as connection:
            value: Any = connection.execute(
                text("SELECT emergency_access FROM patient_access")
            ).scalar_one()
        assert bool(value) is enabled
    finally:
        database.engine.dispose()
