"""E3 and A2 as a table: facts in, code out (``caducee.policies.identity`` is pure)."""

from __future__ import annotations

from datetime import date

import pytest

from caducee.policies.identity import (
    ERROR_CODES,
    MESSAGE_RULE,
    IdentityFacts,
    IdentityVerdict,
    Traits,
    differing_traits,
    identity_verdict,
    ins_oid_allowed,
    message_verdicts,
    receipt_error,
)

GOOD = IdentityFacts(
    mailbox_is_patient=True,
    structured=True,
    has_ins=True,
    ins_key_valid=True,
    ins_oid_allowed=True,
    matricule_matches=True,
    oid_matches=True,
)


def _with(**changes: object) -> IdentityFacts:
    values = {name: getattr(GOOD, name) for name in GOOD.__dataclass_fields__}
    values.update(changes)
    return IdentityFacts(**values)


# (facts, (rule, code) or None): every row of MAILBOX_RULES and DOCUMENT_RULES decides once
IDENTITY_TABLE: list[tuple[IdentityFacts, tuple[str, int] | None]] = [
    (GOOD, None),
    (_with(mailbox_is_patient=False), ("E3.902-no-patient", 902)),
    (_with(has_ins=False, ins_oid_allowed=False), ("E3.903-no-ins", 903)),
    (_with(ins_oid_allowed=False, matricule_matches=False), ("E3.902-oid-refused", 902)),
    (_with(ins_key_valid=False, matricule_matches=False), ("E3.904-ins-invalid", 904)),
    (_with(envelope_agrees=False), ("E3.904-envelope", 904)),
    (_with(envelope_agrees=False, missing_traits=("sex",)), ("E3.904-envelope", 904)),
    (_with(matricule_matches=False), ("E3.904-matricule", 904)),
    (_with(oid_matches=False), ("E3.904-matricule", 904)),
    (_with(missing_traits=("birthplace_code",)), ("E3.905-incomplete", 905)),
    (
        _with(missing_traits=("sex",), differing_traits=("birth_date",)),
        ("E3.905-incomplete", 905),
    ),
    (_with(differing_traits=("birth_name",)), ("E3.904-traits", 904)),
    (
        _with(matricule_matches=False, missing_traits=("sex",)),
        ("E3.904-matricule", 904),
    ),
    # unstructured documents (PDF, HPRIM) are not checked on their own
    (IdentityFacts(mailbox_is_patient=True, structured=False), None),
    (IdentityFacts(mailbox_is_patient=False, structured=False), ("E3.902-no-patient", 902)),
]


@pytest.mark.parametrize(("facts", "expected"), IDENTITY_TABLE)
def test_e3_identity_rule_table(facts: IdentityFacts, expected: tuple[str, int] | None) -> None:
    verdict = identity_verdict(facts)
    assert (None if verdict is None else (verdict.rule, verdict.code)) == expected


@pytest.mark.parametrize(
    ("oid", "test_mode", "allowed"),
    [
        ("1.2.250.1.213.1.4.8", False, True),
        ("1.2.250.1.213.1.4.9", False, True),
        ("1.2.250.1.213.1.4.10", False, False),
        ("1.2.250.1.213.1.4.11", False, False),
        ("1.2.250.1.213.1.4.10", True, True),
        ("1.2.250.1.213.1.4.11", True, True),
        ("1.2.250.1.213.1.4.2", True, False),
        (None, True, False),
    ],
)
def test_a2_ins_oids(oid: str | None, test_mode: bool, allowed: bool) -> None:
    assert ins_oid_allowed(oid, test_mode=test_mode) is allowed


def test_e3_traits_compare_as_the_ins_referential_writes_them() -> None:
    ours = Traits("PAT-TROIS", "Dominique", date(1979, 3, 28), "F", "51215")
    assert differing_traits(ours, Traits("pat-trois", "DOMINIQUE", None, None, None)) == ()
    assert differing_traits(Traits("HÉLÈNE"), Traits("HELENE")) == ()
    theirs = Traits("PAT-DEUX", "DOMINIQUE", date(1979, 3, 29), "M", "63220")
    assert differing_traits(ours, theirs) == ("birth_name", "sex", "birthplace", "birth_date")


def test_e3_unstructured_siblings_share_the_message_verdict() -> None:
    wrong = IdentityVerdict("E3.904-matricule", 904)
    shared = message_verdicts([wrong, None, None], [True, False, True])
    assert shared[0] == wrong and shared[2] is None
    assert shared[1] == IdentityVerdict(MESSAGE_RULE, 904)
    assert message_verdicts([None, None], [True, False]) == [None, None]


def test_g3_receipt_code_is_the_earliest_rule_s() -> None:
    verdicts = [
        IdentityVerdict("E3.905-incomplete", 905),
        None,
        IdentityVerdict("E3.903-no-ins", 903),
    ]
    assert receipt_error(verdicts) == 903
    assert receipt_error([None]) is None


def test_g3_labels_are_ascii_for_the_disposition_field() -> None:
    assert set(ERROR_CODES) == {900, 901, 902, 903, 904, 905, 906}
    for error in ERROR_CODES.values():
        error.label.encode("ascii")
    assert ERROR_CODES[902].label == "Identifiant de patient inconnu"
