"""Rules for mail that local users submit (C1–C4, D2, D3).

Professionals write within the trust space; patients only answer the
professionals who wrote to them and did not end the exchange (or a pharmacy
they declared), never another patient, never outside the trust space. A
patient is refused in words a patient understands, in French and English.
"""

from __future__ import annotations

from dataclasses import dataclass

from caducee.policies.inbound import (
    HEADERS_RULE,
    INS_KEY_RULE,
    PROFESSIONAL_BAL_TYPES,
    RECIPIENT_STATE_RULES,
    PatientState,
    RecipientKind,
)
from caducee.policies.verdict import Refusal, Rule, SmtpRule


@dataclass(frozen=True)
class SenderFacts:
    """What MAIL FROM (and header From) is judged on (C2)."""

    address: str
    owned: bool


@dataclass(frozen=True)
class SubmittedHeaderFacts:
    """What the header block of submitted mail is judged on before its From is (B4, C2)."""

    headers_parse: bool
    has_from: bool


@dataclass(frozen=True)
class SubmittedRecipientFacts:
    """What each RCPT TO of a submission is judged on."""

    sender_is_patient: bool
    sender_bal_type: str | None
    kind: RecipientKind
    ins_key_valid: bool
    patient_state: PatientState
    in_trust_space: bool
    patient_may_write: bool


def _patient_text(french: str, english: str) -> str:
    """French, then English. Without accents: SMTP replies are ASCII unless SMTPUTF8 was used."""
    assert french.isascii() and english.isascii()
    return f"{french} / {english}"


SENDER_CHAIN: tuple[SmtpRule[SenderFacts], ...] = (
    Rule(
        "C2.sender-alignment",
        lambda f: not f.owned,
        Refusal(553, "5.7.1", "This sender address does not belong to your account"),
        "Envelope sender and header From must be addresses the account owns.",
    ),
)


HEADER_CHAIN: tuple[SmtpRule[SubmittedHeaderFacts], ...] = (HEADERS_RULE,)
"""Submitted mail needs a header with a From field before C2 can judge that From."""


RECIPIENT_CHAIN: tuple[SmtpRule[SubmittedRecipientFacts], ...] = (
    Rule(
        "C4.patient-to-patient",
        lambda f: f.sender_is_patient and f.kind is RecipientKind.PATIENT,
        Refusal(
            550,
            "5.7.1",
            _patient_text(
                "Vous ne pouvez pas ecrire a un autre patient",
                "You cannot write to another patient",
            ),
        ),
        "A patient never writes to another patient.",
    ),
    Rule(
        "C4.outside-trust-space",
        lambda f: not f.in_trust_space,
        Refusal(
            550,
            "5.7.1",
            _patient_text(
                "Ce destinataire est hors de l'espace de confiance MSSante",
                "This recipient is outside the MSSante trust space",
            ),
        ),
        "Mail leaves only for domains of the trust space.",
    ),
    INS_KEY_RULE,
    *RECIPIENT_STATE_RULES,
    Rule(
        "C4.not-a-correspondent",
        lambda f: f.sender_is_patient and not f.patient_may_write,
        Refusal(
            550,
            "5.7.1",
            _patient_text(
                "Vous pouvez seulement repondre a un professionnel de sante qui vous a ecrit "
                "et n'a pas clos l'echange",
                "You can only reply to a health professional who wrote to you "
                "and has not ended the exchange",
            ),
        ),
        "C4/D3: a patient answers only professionals who wrote and did not end the exchange.",
    ),
    Rule(
        "B3.sender-not-listed",
        lambda f: (
            f.kind is RecipientKind.PATIENT
            and not f.sender_is_patient
            and f.sender_bal_type not in PROFESSIONAL_BAL_TYPES
        ),
        Refusal(
            550,
            "5.7.1",
            "Only a professional or organisation mailbox listed in the directory"
            " may write to a patient",
        ),
        "B3 applies to hosted senders too.",
    ),
)
