"""The identity check of a document filed into a patient's record (E3, A2), as a rule table.

A structured document (a CDA, alone, in an ``IHE_XDM.zip`` or in an HL7 v2 message) names
the patient it is about by INS. Before it enters a record, the gateway compares that identity
with the qualified identity of the mailbox it was delivered to. When they do not agree, the
document is quarantined (kept for the operator, never shown to the patient) and the sender,
if it asked for an integration receipt, gets an MDN error (G3) with one of the codes of the
ANS table ``applicationErrorCondition``:

=====  ==================================================================================
code   reader outcome / comparison that leads to it (first matching line wins)
=====  ==================================================================================
902    the mailbox has no qualified patient identity (not a patient account, no INS)
903    the document names no INS (reader finding ``NO_INS``: no recordTarget INS, no XDS
       patientId or PID-3 under an INS OID)
902    the document's INS is under an OID this gateway refuses (A2: the test ``.10`` and
       demo ``.11`` OIDs outside test mode): a fictitious patient is unknown here
904    the INS is malformed (reader finding ``INS_INVALID``: wrong length or key)
904    the envelope names another INS than the document (HL7 v2: PID-3 is not the CDA's
       ``recordTarget`` INS): the two identities must agree before anything is filed
904    the matricule or its OID differs from the mailbox's INS
905    the INS matches but identity traits are missing (reader finding ``INS_INCOMPLETE``:
       birth name, first birth given name, birth date, sex or birthplace code absent)
904    the INS matches but a trait differs from the mailbox's qualified identity
=====  ==================================================================================

900 and 901 are not identity outcomes either: the filing job answers a deletion request (E4)
that names no document of the record with 900 (wrong version on replace/delete: the
document or version is unknown here) and one whose sender is neither the document's sender
nor its author with 901 (author not allowed to replace/delete).

906 ("other error") is not an identity outcome: the filing job uses it for an XDM report
from which no document could be read at all. Unstructured documents (PDF, images, text,
HPRIM, which carry no INS) are not checked on their own, but when a structured document of
the same message fails the check, they share its verdict: MSSanté mail carries one patient
per message (ECO.2.1.1), so the PDF beside a wrong-patient CDA is that wrong patient's report.

Everything here is pure: facts in, verdict out. The module imports nothing of the product
but the rule engine (:mod:`caducee.policies.verdict`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TypeAlias

from caducee.policies.verdict import Rule, first_match

INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"
INS_NIR_TEST_OID = "1.2.250.1.213.1.4.10"
INS_NIR_DEMO_OID = "1.2.250.1.213.1.4.11"
PRODUCTION_INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID})
TEST_INS_OIDS = frozenset({INS_NIR_TEST_OID, INS_NIR_DEMO_OID})


def ins_oid_allowed(oid: str | None, *, test_mode: bool) -> bool:
    """A2: production INS OIDs always; the test and demo OIDs only in test mode."""
    if oid in PRODUCTION_INS_OIDS:
        return True
    return test_mode and oid in TEST_INS_OIDS


# ---------------------------------------------------------------------------------------------
# Error codes of integration receipts (G3)


@dataclass(frozen=True)
class ErrorCode:
    """One line of the ANS ``applicationErrorCondition`` table.

    ``label`` is ASCII because it goes into the ``Disposition`` field of a
    ``message/disposition-notification`` part; ``text`` is the French sentence for humans.
    """

    code: int
    label: str
    text: str


UNKNOWN_DOCUMENT = 900
NOT_AUTHOR = 901
UNKNOWN_PATIENT = 902
NO_INS = 903
INS_MISMATCH = 904
INS_INCOMPLETE = 905
OTHER_ERROR = 906

ERROR_CODES: dict[int, ErrorCode] = {
    UNKNOWN_DOCUMENT: ErrorCode(
        UNKNOWN_DOCUMENT,
        "Version incorrecte du document a remplacer ou supprimer",
        "Le document à remplacer ou à supprimer est inconnu dans cette version",
    ),
    NOT_AUTHOR: ErrorCode(
        NOT_AUTHOR,
        "Auteur non autorise a remplacer ou supprimer le document",
        "L'expéditeur n'est pas autorisé à remplacer ou supprimer ce document",
    ),
    UNKNOWN_PATIENT: ErrorCode(
        UNKNOWN_PATIENT, "Identifiant de patient inconnu", "Identifiant de patient inconnu"
    ),
    NO_INS: ErrorCode(
        NO_INS, "INS non present dans le document", "INS non présent dans le document"
    ),
    INS_MISMATCH: ErrorCode(
        INS_MISMATCH,
        "INS ne correspondant pas a l'identite du patient",
        "L'INS transmis ne correspond pas à l'identité du patient destinataire",
    ),
    INS_INCOMPLETE: ErrorCode(
        INS_INCOMPLETE,
        "INS incomplet (traits d'identite manquants)",
        "INS incomplet : des traits d'identité manquent",
    ),
    OTHER_ERROR: ErrorCode(OTHER_ERROR, "Autre erreur", "Le document n'a pas pu être lu"),
}


# ---------------------------------------------------------------------------------------------
# Identity traits and their comparison


@dataclass(frozen=True)
class Traits:
    """The identity traits that qualify an INS (A2); ``None`` when unknown."""

    birth_name: str | None = field(default=None, repr=False)
    given_name: str | None = field(default=None, repr=False)
    birth_date: date | None = field(default=None, repr=False)
    sex: str | None = field(default=None, repr=False)
    birthplace: str | None = field(default=None, repr=False)


def normalise_trait(value: str) -> str:
    """Compare names as the INS referential writes them: upper case, no accents, one space."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(stripped.upper().replace("’", "'").split())


def differing_traits(mailbox: Traits, document: Traits) -> tuple[str, ...]:
    """Names of the traits both sides know and that differ (a trait unknown on one side is
    not a difference; a missing document trait is the 905 rule's business)."""
    differing: list[str] = []
    for name in ("birth_name", "given_name", "sex", "birthplace"):
        ours, theirs = getattr(mailbox, name), getattr(document, name)
        if ours and theirs and normalise_trait(ours) != normalise_trait(theirs):
            differing.append(name)
    if mailbox.birth_date and document.birth_date and mailbox.birth_date != document.birth_date:
        differing.append("birth_date")
    return tuple(differing)


# ---------------------------------------------------------------------------------------------
# Facts and the rule table


@dataclass(frozen=True)
class IdentityFacts:
    """What the check of one document is judged on; gathered by the filing job."""

    mailbox_is_patient: bool
    structured: bool
    has_ins: bool = False
    ins_key_valid: bool = False
    ins_oid_allowed: bool = False
    matricule_matches: bool = False
    oid_matches: bool = False
    missing_traits: tuple[str, ...] = ()
    differing_traits: tuple[str, ...] = ()
    envelope_agrees: bool = True
    """The identities the envelope names (HL7 v2 PID) have the document's INS and OID."""


IdentityRule: TypeAlias = Rule[IdentityFacts, int]
"""One line of the table: when it applies, the document is quarantined with its outcome, the
``applicationErrorCondition`` code."""


@dataclass(frozen=True)
class IdentityVerdict:
    """The document is quarantined with this code, because of this rule."""

    rule: str
    code: int

    @property
    def error(self) -> ErrorCode:
        return ERROR_CODES[self.code]


MAILBOX_RULES: tuple[IdentityRule, ...] = (
    IdentityRule(
        "E3.902-no-patient",
        lambda f: not f.mailbox_is_patient,
        UNKNOWN_PATIENT,
        "the mailbox has no qualified patient identity",
    ),
)
"""Rules that apply to every document, structured or not."""

DOCUMENT_RULES: tuple[IdentityRule, ...] = (
    IdentityRule("E3.903-no-ins", lambda f: not f.has_ins, NO_INS, "the document names no INS"),
    IdentityRule(
        "E3.902-oid-refused",
        lambda f: not f.ins_oid_allowed,
        UNKNOWN_PATIENT,
        "the INS is under an OID this gateway refuses (A2)",
    ),
    IdentityRule(
        "E3.904-ins-invalid",
        lambda f: not f.ins_key_valid,
        INS_MISMATCH,
        "the INS has a wrong length or key",
    ),
    IdentityRule(
        "E3.904-envelope",
        lambda f: not f.envelope_agrees,
        INS_MISMATCH,
        "the message names another INS than the document (PID vs CDA)",
    ),
    IdentityRule(
        "E3.904-matricule",
        lambda f: not (f.matricule_matches and f.oid_matches),
        INS_MISMATCH,
        "the INS or its OID is not the mailbox's",
    ),
    IdentityRule(
        "E3.905-incomplete",
        lambda f: bool(f.missing_traits),
        INS_INCOMPLETE,
        "identity traits are missing",
    ),
    IdentityRule(
        "E3.904-traits",
        lambda f: bool(f.differing_traits),
        INS_MISMATCH,
        "an identity trait differs from the mailbox's",
    ),
)
"""Rules that apply to structured documents only, in order: the first that applies decides."""

RULE_ORDER: dict[str, int] = {
    rule.id: position for position, rule in enumerate(MAILBOX_RULES + DOCUMENT_RULES)
}
MESSAGE_RULE = "E3.same-message"
"""The rule id given to unstructured documents that share a structured sibling's verdict."""


def identity_verdict(facts: IdentityFacts) -> IdentityVerdict | None:
    """The verdict of the first rule that applies, or ``None``: the document may be filed."""
    rule = first_match(MAILBOX_RULES + (DOCUMENT_RULES if facts.structured else ()), facts)
    return None if rule is None else IdentityVerdict(rule=rule.id, code=rule.outcome)


def message_verdicts(
    verdicts: Sequence[IdentityVerdict | None], structured: Sequence[bool]
) -> list[IdentityVerdict | None]:
    """Extend the first structured failure to the unstructured documents of the message."""
    failures = [v for v, s in zip(verdicts, structured, strict=True) if s and v is not None]
    if not failures:
        return list(verdicts)
    shared = IdentityVerdict(rule=MESSAGE_RULE, code=receipt_error(failures) or OTHER_ERROR)
    return [
        verdict if verdict is not None or is_structured else shared
        for verdict, is_structured in zip(verdicts, structured, strict=True)
    ]


def receipt_error(verdicts: Sequence[IdentityVerdict | None]) -> int | None:
    """The one code a receipt reports for several verdicts: the earliest rule's."""
    found = [v for v in verdicts if v is not None]
    if not found:
        return None
    return min(found, key=lambda v: RULE_ORDER.get(v.rule, len(RULE_ORDER))).code
