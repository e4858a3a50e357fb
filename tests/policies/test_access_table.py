"""F1, F2, F3, E5: the access decision as a table of (who, relationship, settings, document
flags) → allowed or denied, with the rule that decided. Every rule of both tables appears."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caducee.policies.access import (
    ACCESS_RULES,
    MEDECIN_TRAITANT_UNBLOCKABLE,
    VISIBILITY_RULES,
    AccessFacts,
    Actor,
    Basis,
    DocumentFlag,
    EmergencySwitches,
    ProfessionalStatus,
    Purpose,
    access_verdict,
    author_spared_flags,
    decide,
    document_verdict,
    eighteenth_birthday,
    emergency_switches,
    hidden_flags,
    is_minor,
    status_change_refusal,
)

TODAY = date(2026, 11, 25)
CHILD = date(2015, 3, 2)
ADULT = date(2008, 11, 25)  # 18 today
ALMOST = date(2008, 11, 26)  # 18 tomorrow

PATIENT = AccessFacts(actor=Actor.PATIENT)
PRO = AccessFacts(actor=Actor.PROFESSIONAL, personal_mailbox=True)
ORG = replace(PRO, personal_mailbox=False)  # an organisation's mailbox (ORG, APP, CAB)
PHARMACY = replace(ORG, declared_pharmacy=True)
KNOWN = replace(PRO, known=True)
BLOCKED = replace(PRO, known=True, blocked=True)
MT = replace(PRO, known=True, medecin_traitant=True)
REP = AccessFacts(actor=Actor.REPRESENTATIVE, delegated=True, subject_birth_date=CHILD, today=TODAY)
AIDANT = AccessFacts(actor=Actor.CAREGIVER, delegated=True, subject_birth_date=ADULT, today=TODAY)

BTG_ON = EmergencySwitches(break_glass=True)
SAMU_ON = EmergencySwitches(samu=True)
ALL_ON = EmergencySwitches(samu=True, break_glass=True, masked=True)
BTG = Purpose.BTG
ETREAT = Purpose.ETREAT
SAMU = replace(PRO, samu=True)  # a person the directory places in a SAMU

HIDDEN_PRO = {DocumentFlag.HIDDEN_FROM_PROFESSIONALS}
HIDDEN_PATIENT = {DocumentFlag.HIDDEN_FROM_PATIENT}
HIDDEN_REP = {DocumentFlag.HIDDEN_FROM_REPRESENTATIVES}
NONE: set[DocumentFlag] = set()

# (case, facts, document flags, allowed, rule); the caller is not the document's author
TABLE: list[tuple[str, AccessFacts, set[DocumentFlag], bool, str]] = [
    # the patient (F2 patient side, E5)
    ("patient, plain document", PATIENT, NONE, True, "F2.own-record"),
    ("patient, hidden from pros", PATIENT, HIDDEN_PRO, True, "F2.own-record"),
    ("patient, INVISIBLE_PATIENT", PATIENT, HIDDEN_PATIENT, False, "E5.invisible-patient"),
    ("patient, invisible to reps", PATIENT, HIDDEN_REP, True, "F2.own-record"),
    ("patient, closed space", replace(PATIENT, record_open=False), NONE, True, "F2.own-record"),
    # known professionals (F1, F2)
    ("known pro", KNOWN, NONE, True, "F2.known-professional"),
    ("known pro, INVISIBLE_PATIENT", KNOWN, HIDDEN_PATIENT, True, "F2.known-professional"),
    ("known pro, hidden", KNOWN, HIDDEN_PRO, False, "E5.hidden-from-professionals"),
    ("known pro, invisible to reps", KNOWN, HIDDEN_REP, True, "F2.known-professional"),
    ("known pro, closed space", replace(KNOWN, record_open=False), NONE, False, "I2.record-closed"),
    ("blocked pro", BLOCKED, NONE, False, "F1.blocked"),
    (
        "blocked pro, break-glass",
        replace(BLOCKED, emergency=BTG_ON, purpose=BTG),
        NONE,
        False,
        "F1.blocked",
    ),
    # médecin traitant (F1)
    ("médecin traitant", MT, NONE, True, "F1.medecin-traitant"),
    ("médecin traitant, hidden", MT, HIDDEN_PRO, True, "F1.medecin-traitant"),
    ("médecin traitant, INVISIBLE_PATIENT", MT, HIDDEN_PATIENT, True, "F1.medecin-traitant"),
    (
        "médecin traitant marked blocked",
        replace(MT, blocked=True),
        HIDDEN_PRO,
        True,
        "F1.medecin-traitant",
    ),
    (
        "médecin traitant who never wrote",
        replace(PRO, medecin_traitant=True),
        NONE,
        True,
        "F1.medecin-traitant",
    ),
    (
        "médecin traitant, closed space",
        replace(MT, record_open=False),
        NONE,
        False,
        "I2.record-closed",
    ),
    # unknown professionals and emergency access (F2)
    ("unknown pro", PRO, NONE, False, "F2.unknown-professional"),
    (
        "unknown pro, emergency on, no reason",
        replace(PRO, emergency=ALL_ON),
        NONE,
        False,
        "F2.unknown-professional",
    ),
    (
        "unknown pro, reason, emergency off",
        replace(PRO, purpose=BTG),
        NONE,
        False,
        "F2.emergency-disabled",
    ),
    (
        "break-glass",
        replace(PRO, purpose=BTG, emergency=BTG_ON),
        NONE,
        True,
        "F2.emergency-access",
    ),
    (
        "break-glass, hidden",
        replace(PRO, purpose=BTG, emergency=BTG_ON),
        HIDDEN_PRO,
        False,
        "E5.hidden-from-professionals",
    ),
    (
        "known pro with a reason",
        replace(KNOWN, purpose=BTG),
        NONE,
        True,
        "F2.known-professional",
    ),
    # the three switches (F2, H2): SAMU (ETREAT), break-glass (BTG), masked documents
    (
        "break-glass, masked documents on",
        replace(PRO, purpose=BTG, emergency=replace(BTG_ON, masked=True)),
        HIDDEN_PRO,
        True,
        "F2.emergency-masked",
    ),
    (
        "break-glass, only the SAMU switch on",
        replace(PRO, purpose=BTG, emergency=SAMU_ON),
        NONE,
        False,
        "F2.emergency-disabled",
    ),
    ("SAMU", replace(SAMU, purpose=ETREAT, emergency=SAMU_ON), NONE, True, "F2.samu-access"),
    (
        "SAMU, hidden",
        replace(SAMU, purpose=ETREAT, emergency=SAMU_ON),
        HIDDEN_PRO,
        False,
        "E5.hidden-from-professionals",
    ),
    (
        "SAMU, masked documents on",
        replace(SAMU, purpose=ETREAT, emergency=ALL_ON),
        HIDDEN_PRO,
        True,
        "F2.samu-masked",
    ),
    (
        "SAMU, only break-glass on",
        replace(SAMU, purpose=ETREAT, emergency=BTG_ON),
        NONE,
        False,
        "F2.samu-disabled",
    ),
    (
        "ETREAT from a professional outside any SAMU",
        replace(PRO, purpose=ETREAT, emergency=ALL_ON),
        NONE,
        False,
        "F2.samu-unrecognised",
    ),
    (
        "SAMU from an organisation mailbox",
        replace(ORG, samu=True, purpose=ETREAT, emergency=ALL_ON),
        NONE,
        False,
        "F2.emergency-not-personal",
    ),
    (
        "SAMU, blocked",
        replace(SAMU, known=True, blocked=True, purpose=ETREAT, emergency=ALL_ON),
        NONE,
        False,
        "F1.blocked",
    ),
    (
        "SAMU with break-glass: the break-glass switch decides",
        replace(SAMU, purpose=BTG, emergency=SAMU_ON),
        NONE,
        False,
        "F2.emergency-disabled",
    ),
    (
        "a known professional stating ETREAT reads as known",
        replace(KNOWN, purpose=ETREAT, emergency=ALL_ON),
        HIDDEN_PRO,
        False,
        "E5.hidden-from-professionals",
    ),
    # declared pharmacies (C4, F2): correspondents, not known professionals
    ("declared pharmacy", PHARMACY, NONE, False, "F2.declared-pharmacy"),
    (
        "declared pharmacy, break-glass",
        replace(PHARMACY, purpose=BTG, emergency=BTG_ON),
        NONE,
        False,
        "F2.declared-pharmacy",
    ),
    (
        "pharmacist who also wrote from their own box",
        replace(PHARMACY, known=True),
        NONE,
        True,
        "F2.known-professional",
    ),
    (
        "declared pharmacy, blocked",
        replace(PHARMACY, blocked=True),
        NONE,
        False,
        "F1.blocked",
    ),
    (
        "declared pharmacy, closed space",
        replace(PHARMACY, record_open=False),
        NONE,
        False,
        "I2.record-closed",
    ),
    # break-glass for personal (PER) mailboxes only (F2)
    (
        "organisation mailbox, break-glass",
        replace(ORG, purpose=BTG, emergency=BTG_ON),
        NONE,
        False,
        "F2.emergency-not-personal",
    ),
    (
        "organisation mailbox, reason, emergency off",
        replace(ORG, purpose=BTG),
        NONE,
        False,
        "F2.emergency-not-personal",
    ),
    ("organisation mailbox, no reason", ORG, NONE, False, "F2.unknown-professional"),
    ("known organisation mailbox", replace(ORG, known=True), NONE, True, "F2.known-professional"),
    (
        "known organisation mailbox with a reason",
        replace(ORG, known=True, purpose=BTG, emergency=BTG_ON),
        NONE,
        True,
        "F2.known-professional",
    ),
    # legal representatives (F3)
    ("representative of a child", REP, NONE, True, "F3.representative"),
    ("representative, invisible to reps", REP, HIDDEN_REP, False, "E5.invisible-representatives"),
    ("representative, INVISIBLE_PATIENT", REP, HIDDEN_PATIENT, False, "E5.invisible-patient"),
    ("representative, hidden from pros", REP, HIDDEN_PRO, True, "F3.representative"),
    (
        "representative, day before 18",
        replace(REP, subject_birth_date=ALMOST),
        NONE,
        True,
        "F3.representative",
    ),
    (
        "representative, 18th birthday",
        replace(REP, subject_birth_date=ADULT),
        NONE,
        False,
        "F3.age-of-majority",
    ),
    ("no delegation", replace(REP, delegated=False), NONE, False, "F3.no-delegation"),
    ("birth date unknown", replace(REP, subject_birth_date=None), NONE, False, "F3.age-unknown"),
    ("no clock", replace(REP, today=None), NONE, False, "F3.age-unknown"),
    (
        "representative, closed space",
        replace(REP, record_open=False),
        NONE,
        False,
        "I2.record-closed",
    ),
    # caregivers (aidants, F3): an accepted delegation, between adults
    ("caregiver", AIDANT, NONE, True, "F3.caregiver"),
    ("caregiver, hidden from pros", AIDANT, HIDDEN_PRO, True, "F3.caregiver"),
    ("caregiver, INVISIBLE_PATIENT", AIDANT, HIDDEN_PATIENT, False, "E5.invisible-patient"),
    ("caregiver, invisible to reps", AIDANT, HIDDEN_REP, False, "E5.invisible-representatives"),
    (
        "caregiver, no delegation",
        replace(AIDANT, delegated=False),
        NONE,
        False,
        "F3.caregiver-no-delegation",
    ),
    (
        "caregiver of a minor",
        replace(AIDANT, subject_birth_date=ALMOST),
        NONE,
        False,
        "F3.caregiver-not-adult",
    ),
    (
        "caregiver, birth date unknown",
        replace(AIDANT, subject_birth_date=None),
        NONE,
        False,
        "F3.caregiver-not-adult",
    ),
    (
        "caregiver, closed space",
        replace(AIDANT, record_open=False),
        NONE,
        False,
        "I2.record-closed",
    ),
    # anyone else
    ("another patient", AccessFacts(actor=Actor.OTHER), NONE, False, "F2.not-authorised"),
]


@pytest.mark.parametrize(
    ("facts", "flags", "allowed", "rule"),
    [
        pytest.param(facts, flags, allowed, rule, id=case)
        for case, facts, flags, allowed, rule in TABLE
    ],
)
def test_f2_access_table(
    facts: AccessFacts, flags: set[DocumentFlag], allowed: bool, rule: str
) -> None:
    decision = decide(facts, flags)
    assert (decision.allowed, decision.rule) == (allowed, rule)


# (case, facts, document flags, allowed, rule): the caller IS the document's author
AUTHOR_TABLE: list[tuple[str, AccessFacts, set[DocumentFlag], bool, str]] = [
    ("author, known, masked", KNOWN, HIDDEN_PRO, True, "F2.known-professional"),
    (
        "author, break-glass, masked",
        replace(PRO, purpose=BTG, emergency=BTG_ON),
        HIDDEN_PRO,
        True,
        "F2.emergency-access",
    ),
    ("author, médecin traitant, masked", MT, HIDDEN_PRO, True, "F1.medecin-traitant"),
    ("author, blocked", BLOCKED, HIDDEN_PRO, False, "F1.blocked"),
    ("author, unknown", PRO, HIDDEN_PRO, False, "F2.unknown-professional"),
    ("author, declared pharmacy", PHARMACY, HIDDEN_PRO, False, "F2.declared-pharmacy"),
    (
        "author, closed space",
        replace(KNOWN, record_open=False),
        HIDDEN_PRO,
        False,
        "I2.record-closed",
    ),
    # the author flag spares only the hidden-from-professionals line
    (
        "patient as 'author', INVISIBLE_PATIENT",
        PATIENT,
        HIDDEN_PATIENT,
        False,
        "E5.invisible-patient",
    ),
    ("representative as 'author'", REP, HIDDEN_REP, False, "E5.invisible-representatives"),
]


@pytest.mark.parametrize(
    ("facts", "flags", "allowed", "rule"),
    [
        pytest.param(facts, flags, allowed, rule, id=case)
        for case, facts, flags, allowed, rule in AUTHOR_TABLE
    ],
)
def test_f2_e5_the_author_of_a_masked_document_reads_it(
    facts: AccessFacts, flags: set[DocumentFlag], allowed: bool, rule: str
) -> None:
    decision = decide(facts, flags, author=True)
    assert (decision.allowed, decision.rule) == (allowed, rule)


def test_f2_the_table_covers_every_rule() -> None:
    covered = {rule for *_, rule in TABLE}
    every = {rule.id for rule in ACCESS_RULES} | {rule.id for rule in VISIBILITY_RULES}
    assert every <= covered, sorted(every - covered)


def test_e5_hidden_flags_match_the_visibility_table() -> None:
    assert hidden_flags(Basis.MEDECIN_TRAITANT) == frozenset()
    assert hidden_flags(Basis.KNOWN_PROFESSIONAL) == {DocumentFlag.HIDDEN_FROM_PROFESSIONALS}
    assert hidden_flags(Basis.EMERGENCY) == {DocumentFlag.HIDDEN_FROM_PROFESSIONALS}
    assert hidden_flags(Basis.EMERGENCY_MASKED) == frozenset()
    assert hidden_flags(Basis.OWN_RECORD) == {DocumentFlag.HIDDEN_FROM_PATIENT}
    assert hidden_flags(Basis.REPRESENTATIVE) == {
        DocumentFlag.HIDDEN_FROM_PATIENT,
        DocumentFlag.HIDDEN_FROM_REPRESENTATIVES,
    }


@given(
    basis=st.sampled_from(list(Basis)),
    flags=st.sets(st.sampled_from(list(DocumentFlag))),
)
def test_e5_a_document_is_hidden_exactly_by_the_hidden_flags(
    basis: Basis, flags: set[DocumentFlag]
) -> None:
    verdict = document_verdict(basis, flags)
    assert verdict.visible == (not (flags & hidden_flags(basis)))
    as_author = document_verdict(basis, flags, author=True)
    assert as_author.visible == (not (flags & (hidden_flags(basis) - author_spared_flags(basis))))


def test_e5_only_hidden_from_professionals_spares_the_author() -> None:
    for basis in (Basis.KNOWN_PROFESSIONAL, Basis.EMERGENCY):
        assert author_spared_flags(basis) == {DocumentFlag.HIDDEN_FROM_PROFESSIONALS}
    for basis in (Basis.OWN_RECORD, Basis.REPRESENTATIVE, Basis.MEDECIN_TRAITANT):
        assert author_spared_flags(basis) == frozenset()


@given(
    actor=st.sampled_from(list(Actor)),
    booleans=st.lists(st.booleans(), min_size=13, max_size=13),
    purpose=st.one_of(st.none(), st.sampled_from(list(Purpose))),
    birth=st.one_of(st.none(), st.dates(min_value=date(1990, 1, 1), max_value=TODAY)),
)
def test_f1_invariants(
    actor: Actor, booleans: list[bool], purpose: Purpose | None, birth: date | None
) -> None:
    record_open, known, blocked, mt, samu_on, btg_on, masked_on, delegated = booleans[:8]
    with_today, personal, pharmacy, samu, hidden = booleans[8:]
    switches = EmergencySwitches(samu_on, btg_on, masked_on)
    facts = AccessFacts(
        actor=actor,
        record_open=record_open,
        known=known,
        blocked=blocked,
        medecin_traitant=mt,
        emergency=switches,
        purpose=purpose,
        samu=samu,
        personal_mailbox=personal,
        declared_pharmacy=pharmacy,
        delegated=delegated,
        subject_birth_date=birth,
        today=TODAY if with_today else None,
    )
    verdict = access_verdict(facts)
    assert verdict.allowed == (verdict.basis is not None)
    if actor is Actor.PROFESSIONAL and record_open:
        # the médecin traitant is never refused; a blocked one never allowed otherwise; a
        # declared pharmacy is not known; an emergency only from a personal mailbox, with the
        # switch of its purpose on, ETREAT only from the SAMU
        emergency = personal and (
            (purpose is Purpose.BTG and btg_on) or (purpose is Purpose.ETREAT and samu and samu_on)
        )
        assert verdict.allowed == (mt or (not blocked and (known or (not pharmacy and emergency))))
        # a masked document reaches an emergency reader only with the masked switch on
        flags = {DocumentFlag.HIDDEN_FROM_PROFESSIONALS} if hidden else set()
        decision = decide(facts, flags)
        if verdict.basis in (Basis.EMERGENCY, Basis.EMERGENCY_MASKED):
            assert decision.allowed == (not hidden or masked_on)
    if actor is Actor.REPRESENTATIVE and verdict.allowed:
        assert birth is not None and is_minor(birth, TODAY) and delegated
    if actor is Actor.OTHER:
        assert not verdict.allowed


@given(samu=st.booleans(), break_glass=st.booleans(), masked=st.booleans())
def test_h2_masked_documents_switch_is_off_when_samu_and_break_glass_are_off(
    samu: bool, break_glass: bool, masked: bool
) -> None:
    stored = emergency_switches(samu=samu, break_glass=break_glass, masked=masked)
    assert (stored.samu, stored.break_glass) == (samu, break_glass)
    assert stored.masked == (masked and (samu or break_glass))


def test_f3_eighteenth_birthday() -> None:
    assert eighteenth_birthday(date(2008, 11, 25)) == date(2026, 11, 25)
    assert eighteenth_birthday(date(2008, 2, 29)) == date(2026, 3, 1)
    assert is_minor(date(2008, 2, 29), date(2026, 2, 28))
    assert not is_minor(date(2008, 2, 29), date(2026, 3, 1))
    assert eighteenth_birthday(date(2012, 2, 29)) == date(2030, 3, 1)


def test_f1_the_medecin_traitant_cannot_be_blocked() -> None:
    refusal = status_change_refusal(medecin_traitant=True, new_status=ProfessionalStatus.BLOCKED)
    assert refusal == MEDECIN_TRAITANT_UNBLOCKABLE
    authorised = ProfessionalStatus.AUTHORISED
    assert status_change_refusal(medecin_traitant=True, new_status=authorised) is None
    blocked = ProfessionalStatus.BLOCKED
    assert status_change_refusal(medecin_traitant=False, new_status=blocked) is None
