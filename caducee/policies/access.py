"""Who may read a patient's record, and which of its documents (F1, F2, F3, E5), as rule tables.

Two tables decide, in this order, from facts gathered by the callers (the FHIR API, the
patient API, the CLI); nothing here reads a database or a clock:

1. :data:`ACCESS_RULES` decides whether the caller may open the record at all. The first line
   whose condition holds decides; its id is the ``rule`` a refusal names (HTTP 403 with a FHIR
   ``OperationOutcome``) and the audit trail records (F4).

   ==========================  =======  ==============================================
   rule                        outcome  when
   ==========================  =======  ==============================================
   I2.record-closed            deny     someone other than the patient, space closed
   F2.own-record               allow    the patient reads their own record
   F3.no-delegation            deny     a patient account acting for another, without
                                        the operator's delegation
   F3.age-unknown              deny     delegated, but the minor's birth date is unknown
   F3.age-of-majority          deny     delegated, but the minor is 18 or older: the
                                        representative loses access on the birthday
   F3.representative           allow    delegated, the patient is a minor
   F3.caregiver-no-delegation  deny     a patient account acting as caregiver for
                                        another, without an accepted delegation
   F3.caregiver-not-adult      deny     a caregiving delegation, but the helped person
                                        is a minor or their birth date is unknown: a
                                        minor's profile goes through legal representation
   F3.caregiver                allow    an accepted caregiving delegation, the helped
                                        person an adult
   F1.medecin-traitant         allow    the patient's médecin traitant (never blocked)
   F1.blocked                  deny     a professional the patient blocked (even with
                                        a break-glass reason: the patient's no wins)
   F2.declared-pharmacy        deny     a pharmacy known to the patient only as a
                                        correspondent (C4): it exchanges messages, it
                                        is not a known professional for the record
   F2.known-professional       allow    a professional who wrote to the patient (D2)
   F2.emergency-not-personal   deny     an emergency access (SAMU or break-glass) from a
                                        mailbox that is not a personal (PER) one: no
                                        person answers for it
   F2.samu-unrecognised        deny     purpose ETREAT from a professional the directory
                                        does not place in a SAMU
   F2.samu-masked              allow    SAMU (ETREAT), the patient's SAMU and masked
                                        documents switches on: hidden documents included
   F2.samu-access              allow    SAMU (ETREAT), the patient's SAMU switch on
   F2.samu-disabled            deny     SAMU (ETREAT), the patient's SAMU switch off
   F2.emergency-masked         allow    break-glass (BTG, with a reason), the patient's
                                        break-glass and masked documents switches on
   F2.emergency-access         allow    break-glass (BTG): a stated reason, a personal
                                        (PER) mailbox, the patient's break-glass switch on
   F2.emergency-disabled       deny     break-glass asked, the patient's switch is off
   F2.unknown-professional     deny     a professional the patient does not know
   F2.not-authorised           deny     anyone else (e.g. another patient)
   ==========================  =======  ==============================================

2. :data:`VISIBILITY_RULES` then decides, per document, whether the *basis* of the access
   (own record, representative, médecin traitant, known professional, emergency) lets the
   caller see a document with the given flags (E5). Hidden documents are simply absent from
   what the caller gets: a search leaves them out, a read answers "not found".

   ============================  ==============================  ==========================
   rule                          document flag                   hidden from
   ============================  ==============================  ==========================
   E5.invisible-patient          ``INVISIBLE_PATIENT``           the patient, their
                                                                 representatives and
                                                                 caregivers
   E5.invisible-representatives  ``INVISIBLE_REPRESENTANTS_...`` representatives and
                                                                 caregivers
   E5.hidden-from-professionals  ``MASQUE_PS`` or hidden by the  professionals, except the
                                 patient                         médecin traitant, the
                                                                 document's own author and
                                                                 an emergency access the
                                                                 patient opened to masked
                                                                 documents
   ============================  ==============================  ==========================

   A line may spare the document's author (``spares_author``): whether the caller is the
   author is a per-document fact (the caller's national id is the document's author id), so
   it is an argument of :func:`document_verdict` and :func:`decide`, never an access fact.

:func:`hidden_flags` gives, for a basis, the set of flags that hide a document, and
:func:`author_spared_flags` those of them that do not hide it from its author: the SQL
filters of the callers are built from both, so the query and the table cannot disagree.

:func:`status_change_refusal` is the one rule of the patient's own right changes (F1): the
médecin traitant cannot be blocked.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date
from typing import TypeAlias

from caducee.policies.verdict import Rule, first_match

AGE_OF_MAJORITY = 18


class Actor(enum.StrEnum):
    """Who is asking, relative to the record."""

    PATIENT = "patient"
    """The patient whose record it is."""
    REPRESENTATIVE = "representative"
    """A patient account acting for another patient (a parent for a minor, F3)."""
    CAREGIVER = "caregiver"
    """A patient account acting for an adult who invited them as caregiver (aidant, F3)."""
    PROFESSIONAL = "professional"
    """A health professional or organisation, authenticated as such."""
    OTHER = "other"
    """Anyone else (another patient acting for nobody, an unidentified account)."""


class Basis(enum.StrEnum):
    """Why an access was allowed: decides which documents the caller sees."""

    OWN_RECORD = "own-record"
    REPRESENTATIVE = "representative"
    CAREGIVER = "caregiver"
    """A caregiver acting for the helped person: what the patient sees, less what the author
    kept from the patient or from legal representatives (a third person acting for them)."""
    MEDECIN_TRAITANT = "medecin-traitant"
    KNOWN_PROFESSIONAL = "known-professional"
    EMERGENCY = "emergency"
    """SAMU or break-glass: the documents hidden from professionals stay hidden."""
    EMERGENCY_MASKED = "emergency-masked"
    """SAMU or break-glass with the patient's "documents masqués" switch on: hidden ones too."""


class Purpose(enum.StrEnum):
    """Why a professional who is not known asks to read the record (HL7 v3 ``PurposeOfUse``).

    The national app has one switch per purpose: ``ETREAT`` for the SAMU's emergency
    treatment, ``BTG`` (break the glass) for any other professional, with a reason.
    """

    ETREAT = "ETREAT"
    BTG = "BTG"


@dataclass(frozen=True)
class EmergencySwitches:
    """The patient's three emergency access switches (the national app's "Accès en cas
    d'urgence" screen): SAMU, break-glass (other professionals), and masked documents
    included in an emergency read."""

    samu: bool = False
    break_glass: bool = False
    masked: bool = False

    @property
    def any(self) -> bool:
        """Some emergency access is open (SAMU or break-glass)."""
        return self.samu or self.break_glass


def emergency_switches(*, samu: bool, break_glass: bool, masked: bool) -> EmergencySwitches:
    """The switches as they may be stored: masked documents are only ever opened to an
    emergency access, so the masked switch is forced off when SAMU and break-glass are both
    off (the app's rule: "enabled only if SAMU or BTG is on")."""
    return EmergencySwitches(samu, break_glass, masked and (samu or break_glass))


class DocumentFlag(enum.StrEnum):
    """Visibility flags of a document (E5)."""

    HIDDEN_FROM_PATIENT = "hidden-from-patient"
    """``INVISIBLE_PATIENT``: set by the author."""
    HIDDEN_FROM_REPRESENTATIVES = "hidden-from-representatives"
    """``INVISIBLE_REPRESENTANTS_LEGAUX``: set by the author."""
    HIDDEN_FROM_PROFESSIONALS = "hidden-from-professionals"
    """``MASQUE_PS`` from the author, or hidden by the patient."""


class ProfessionalStatus(enum.StrEnum):
    """What the patient decided about a known professional (F1)."""

    AUTHORISED = "authorised"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class AccessFacts:
    """Everything the access table looks at, gathered by the caller.

    ``today`` is the date in France when the request is judged (the caller's clock), used
    with ``subject_birth_date`` for the age of majority (F3).
    """

    actor: Actor
    record_open: bool = True
    known: bool = False
    blocked: bool = False
    medecin_traitant: bool = False
    emergency: EmergencySwitches = EmergencySwitches()
    """The patient's emergency access switches."""
    purpose: Purpose | None = None
    """What the caller asked for: ``ETREAT`` (SAMU), ``BTG`` (break-glass, a reason was
    stated) or nothing (an ordinary access)."""
    samu: bool = False
    """The directory places the caller in a SAMU (the mailbox's service or organisation)."""
    personal_mailbox: bool = False
    """The caller authenticated as a person: a personal (PER) mailbox of the directory, or a
    Pro Santé Connect token of a person listed with one. Break-glass needs it (F2)."""
    declared_pharmacy: bool = False
    """The caller is known to the patient only through pharmacy mailboxes (declared for C4,
    or one that wrote): a correspondent, not a known professional for the record (F2)."""
    delegated: bool = False
    subject_birth_date: date | None = field(default=None, repr=False)
    today: date | None = None


@dataclass(frozen=True)
class AccessVerdict:
    """The decision on opening a record: allowed or not, the rule that decided and why."""

    allowed: bool
    rule: str
    summary: str
    basis: Basis | None = None


AccessRule: TypeAlias = Rule[AccessFacts, Basis | None]
"""One line of :data:`ACCESS_RULES`: its outcome is the basis it allows on, None to deny."""


def eighteenth_birthday(birth_date: date) -> date:
    """The day a person born on ``birth_date`` comes of age (29 February: 1 March)."""
    year = birth_date.year + AGE_OF_MAJORITY
    try:
        return birth_date.replace(year=year)
    except ValueError:
        return date(year, 3, 1)


def is_minor(birth_date: date, today: date) -> bool:
    """True until the day of the 18th birthday, from which the person is an adult."""
    return today < eighteenth_birthday(birth_date)


def _closed(facts: AccessFacts) -> bool:
    return not facts.record_open and facts.actor is not Actor.PATIENT


def _representative(facts: AccessFacts) -> bool:
    return facts.actor is Actor.REPRESENTATIVE


def _caregiver(facts: AccessFacts) -> bool:
    return facts.actor is Actor.CAREGIVER


def _professional(facts: AccessFacts) -> bool:
    return facts.actor is Actor.PROFESSIONAL


def _samu(facts: AccessFacts) -> bool:
    return _professional(facts) and facts.purpose is Purpose.ETREAT


def _break_glass(facts: AccessFacts) -> bool:
    return _professional(facts) and facts.purpose is Purpose.BTG


def _adult(facts: AccessFacts) -> bool:
    assert facts.subject_birth_date is not None and facts.today is not None
    return not is_minor(facts.subject_birth_date, facts.today)


ACCESS_RULES: tuple[AccessRule, ...] = (
    AccessRule("I2.record-closed", _closed, None, "the patient's space is closed (I2)"),
    AccessRule(
        "F2.own-record",
        lambda f: f.actor is Actor.PATIENT,
        Basis.OWN_RECORD,
        "the patient reads their own record",
    ),
    AccessRule(
        "F3.no-delegation",
        lambda f: _representative(f) and not f.delegated,
        None,
        "no legal representation of this patient is registered for the caller (F3)",
    ),
    AccessRule(
        "F3.age-unknown",
        lambda f: _representative(f) and (f.subject_birth_date is None or f.today is None),
        None,
        "the represented patient's birth date is unknown, so minority cannot be checked (F3)",
    ),
    AccessRule(
        "F3.age-of-majority",
        lambda f: _representative(f) and _adult(f),
        None,
        "the represented patient is 18 or older: legal representation has ended (F3)",
    ),
    AccessRule(
        "F3.representative",
        _representative,
        Basis.REPRESENTATIVE,
        "a legal representative acts for a minor (F3)",
    ),
    AccessRule(
        "F3.caregiver-no-delegation",
        lambda f: _caregiver(f) and not f.delegated,
        None,
        "no accepted caregiving delegation from this patient to the caller (F3, caregivers)",
    ),
    AccessRule(
        "F3.caregiver-not-adult",
        lambda f: (
            _caregiver(f) and (f.subject_birth_date is None or f.today is None or not _adult(f))
        ),
        None,
        "caregiving is between adults: a minor's profile goes through legal representation "
        "(F3, caregivers)",
    ),
    AccessRule(
        "F3.caregiver",
        _caregiver,
        Basis.CAREGIVER,
        "a caregiver (aidant) acts for an adult who invited them (F3, caregivers)",
    ),
    AccessRule(
        "F1.medecin-traitant",
        lambda f: _professional(f) and f.medecin_traitant,
        Basis.MEDECIN_TRAITANT,
        "the patient's médecin traitant (F1)",
    ),
    AccessRule(
        "F1.blocked",
        lambda f: _professional(f) and f.blocked,
        None,
        "the patient blocked this professional (F1)",
    ),
    AccessRule(
        "F2.declared-pharmacy",
        lambda f: _professional(f) and f.declared_pharmacy and not f.known,
        None,
        "a pharmacy the patient declared may exchange messages (C4) but is not a known "
        "professional for the record (F2)",
    ),
    AccessRule(
        "F2.known-professional",
        lambda f: _professional(f) and f.known,
        Basis.KNOWN_PROFESSIONAL,
        "a professional who wrote to the patient (F2, D2)",
    ),
    AccessRule(
        "F2.emergency-not-personal",
        lambda f: _professional(f) and f.purpose is not None and not f.personal_mailbox,
        None,
        "emergency access is for personal (PER) mailboxes only: a person answers for it (F2)",
    ),
    AccessRule(
        "F2.samu-unrecognised",
        lambda f: _samu(f) and not f.samu,
        None,
        "emergency treatment (ETREAT) is for the SAMU: the directory does not place this "
        "professional in one (F2)",
    ),
    AccessRule(
        "F2.samu-masked",
        lambda f: _samu(f) and f.emergency.samu and f.emergency.masked,
        Basis.EMERGENCY_MASKED,
        "the SAMU in an emergency, masked documents included: both enabled by the patient (F2)",
    ),
    AccessRule(
        "F2.samu-access",
        lambda f: _samu(f) and f.emergency.samu,
        Basis.EMERGENCY,
        "the SAMU in an emergency, enabled by the patient (F2)",
    ),
    AccessRule(
        "F2.samu-disabled",
        _samu,
        None,
        "the patient has not enabled emergency access by the SAMU (F2)",
    ),
    AccessRule(
        "F2.emergency-masked",
        lambda f: _break_glass(f) and f.emergency.break_glass and f.emergency.masked,
        Basis.EMERGENCY_MASKED,
        "break-glass with a stated reason, masked documents included: both enabled by the "
        "patient (F2)",
    ),
    AccessRule(
        "F2.emergency-access",
        lambda f: _break_glass(f) and f.emergency.break_glass,
        Basis.EMERGENCY,
        "emergency access with a stated reason from a personal mailbox, enabled by the "
        "patient (F2)",
    ),
    AccessRule(
        "F2.emergency-disabled",
        _break_glass,
        None,
        "the patient has not enabled emergency access (F2)",
    ),
    AccessRule(
        "F2.unknown-professional",
        _professional,
        None,
        "this professional has not written to the patient and is not their médecin "
        "traitant; emergency access needs a stated reason (F2)",
    ),
    AccessRule(
        "F2.not-authorised",
        lambda f: True,
        None,
        "only the patient, their representatives and professionals may read a record (F2)",
    ),
)


def access_verdict(facts: AccessFacts) -> AccessVerdict:
    """The first line of :data:`ACCESS_RULES` that applies decides."""
    rule = first_match(ACCESS_RULES, facts)
    assert rule is not None, "the last rule always applies"
    return AccessVerdict(
        allowed=rule.outcome is not None, rule=rule.id, summary=rule.summary, basis=rule.outcome
    )


# ---------------------------------------------------------------------------------------------
# Document visibility (E5)


@dataclass(frozen=True)
class Hiding:
    """What a line of :data:`VISIBILITY_RULES` decides: documents with ``flag`` are hidden
    from callers on ``hidden_from`` (the SQL filters of the callers are built from it)."""

    flag: DocumentFlag
    hidden_from: frozenset[Basis]
    spares_author: bool = False
    """The document's own author still sees it (F2: "ainsi que le médecin qui l'a chargé")."""


@dataclass(frozen=True)
class DocumentFacts:
    """One document as the visibility table sees it, for one caller."""

    basis: Basis
    flags: frozenset[DocumentFlag]
    author: bool = False
    """The caller is the document's own author (the caller's national id is its author id)."""


VisibilityRule: TypeAlias = Rule[DocumentFacts, Hiding]
"""One line of :data:`VISIBILITY_RULES`."""


def _hides(
    rule_id: str,
    flag: DocumentFlag,
    hidden_from: frozenset[Basis],
    summary: str,
    *,
    spares_author: bool = False,
) -> VisibilityRule:
    hiding = Hiding(flag, hidden_from, spares_author)

    def when(facts: DocumentFacts) -> bool:
        return (
            flag in facts.flags
            and facts.basis in hidden_from
            and not (facts.author and spares_author)
        )

    return Rule(rule_id, when, hiding, summary)


VISIBILITY_RULES: tuple[VisibilityRule, ...] = (
    _hides(
        "E5.invisible-patient",
        DocumentFlag.HIDDEN_FROM_PATIENT,
        frozenset({Basis.OWN_RECORD, Basis.REPRESENTATIVE, Basis.CAREGIVER}),
        "the author made the document invisible to the patient",
    ),
    _hides(
        "E5.invisible-representatives",
        DocumentFlag.HIDDEN_FROM_REPRESENTATIVES,
        frozenset({Basis.REPRESENTATIVE, Basis.CAREGIVER}),
        "the author made the document invisible to legal representatives (and so to a "
        "caregiver, a third person acting for the patient)",
    ),
    _hides(
        "E5.hidden-from-professionals",
        DocumentFlag.HIDDEN_FROM_PROFESSIONALS,
        frozenset({Basis.KNOWN_PROFESSIONAL, Basis.EMERGENCY}),
        "the document is hidden from professionals (only the médecin traitant, its author and "
        "an emergency access the patient opened to masked documents see it)",
        spares_author=True,
    ),
)


@dataclass(frozen=True)
class DocumentVerdict:
    """Whether one document is visible on a basis, and the rule that hid it."""

    visible: bool
    rule: str | None = None


def document_verdict(
    basis: Basis, flags: Collection[DocumentFlag], *, author: bool = False
) -> DocumentVerdict:
    """The first line of :data:`VISIBILITY_RULES` that hides the document decides.

    ``author``: the caller is the document's own author (lines with ``spares_author`` spare
    them).
    """
    rule = first_match(VISIBILITY_RULES, DocumentFacts(basis, frozenset(flags), author))
    return DocumentVerdict(visible=True) if rule is None else DocumentVerdict(False, rule.id)


def hidden_flags(basis: Basis) -> frozenset[DocumentFlag]:
    """The flags that hide a document from a caller on ``basis`` (for building queries)."""
    return frozenset(
        rule.outcome.flag for rule in VISIBILITY_RULES if basis in rule.outcome.hidden_from
    )


def author_spared_flags(basis: Basis) -> frozenset[DocumentFlag]:
    """Those of :func:`hidden_flags` that do not hide a document from its own author."""
    return frozenset(
        rule.outcome.flag
        for rule in VISIBILITY_RULES
        if basis in rule.outcome.hidden_from and rule.outcome.spares_author
    )


@dataclass(frozen=True)
class Decision:
    """Record access and document visibility together: what the rule table test checks."""

    allowed: bool
    rule: str
    basis: Basis | None


def decide(
    facts: AccessFacts, flags: Collection[DocumentFlag] = (), *, author: bool = False
) -> Decision:
    """May this caller read a document with ``flags`` of this record? (both tables)

    ``author``: the caller is the document's own author.
    """
    access = access_verdict(facts)
    if not access.allowed or access.basis is None:
        return Decision(allowed=False, rule=access.rule, basis=None)
    document = document_verdict(access.basis, flags, author=author)
    if not document.visible and document.rule is not None:
        return Decision(allowed=False, rule=document.rule, basis=access.basis)
    return Decision(allowed=True, rule=access.rule, basis=access.basis)


# ---------------------------------------------------------------------------------------------
# Right changes (F1)


@dataclass(frozen=True)
class RightChangeFacts:
    """A status change the patient asks for on one professional of their list (F1)."""

    medecin_traitant: bool
    new_status: ProfessionalStatus


RIGHT_CHANGE_RULES: tuple[Rule[RightChangeFacts, None], ...] = (
    Rule(
        "F1.medecin-traitant-unblockable",
        lambda f: f.medecin_traitant and f.new_status is ProfessionalStatus.BLOCKED,
        None,
        "the patient's médecin traitant cannot be blocked (F1)",
    ),
)
MEDECIN_TRAITANT_UNBLOCKABLE = RIGHT_CHANGE_RULES[0].id


def status_change_refusal(*, medecin_traitant: bool, new_status: ProfessionalStatus) -> str | None:
    """The rule refusing a status change, or None: the médecin traitant cannot be blocked."""
    rule = first_match(RIGHT_CHANGE_RULES, RightChangeFacts(medecin_traitant, new_status))
    return None if rule is None else rule.id
