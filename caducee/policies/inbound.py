"""Rules for mail arriving from other operators of the trust space (A1, A5, B1–B4).

Each stage of the SMTP session gathers facts and asks its chain. The chains
are tables: read them top to bottom, one line per rule, each with the spec id
it implements. The first rule that fires refuses; if none does, the stage
goes on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from caducee.policies.verdict import Refusal, Rule, SmtpRule

PROFESSIONAL_BAL_TYPES = frozenset({"PER", "ORG", "APP", "CAB"})


@dataclass(frozen=True)
class SessionFacts:
    """What MAIL FROM is judged on: the connection and the sender (B1, B2, A5)."""

    tls: bool
    plaintext_allowed: bool
    client_certificate: bool
    certificate_names_trusted_domain: bool
    sender: str
    sender_syntax_ok: bool
    sender_domain_trusted: bool
    sender_domain_hosted_here: bool

    @property
    def null_sender(self) -> bool:
        return self.sender == ""


class RecipientKind(enum.StrEnum):
    """What a recipient address is, as far as this gateway can tell."""

    PATIENT = "patient"
    HOSTED = "hosted"
    UNKNOWN = "unknown"
    FOREIGN = "foreign"


class PatientState(enum.StrEnum):
    """The state of a patient space as the mail rules see it (A2, I1, I2).

    ``NOT_OPEN_YET``, ``OPPOSED`` and ``CLOSED`` all refuse mail with ``5.2.1``, each in
    its own words: telling a sender "closed" about a space that never opened is false.
    ``TEST_IDENTITY`` is a space under a test or demo INS OID on a gateway out of test mode.
    """

    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"
    NOT_OPEN_YET = "not-open-yet"
    OPPOSED = "opposed"
    TEST_IDENTITY = "test-identity"
    UNKNOWN = "unknown"


class HostedRecipient(Protocol):
    """What the rules on a hosted recipient read (shared with submission)."""

    @property
    def kind(self) -> RecipientKind: ...

    @property
    def ins_key_valid(self) -> bool: ...

    @property
    def patient_state(self) -> PatientState: ...


@dataclass(frozen=True)
class RecipientFacts:
    """What RCPT TO is judged on (A1, B2, B3)."""

    kind: RecipientKind
    ins_key_valid: bool
    patient_state: PatientState
    null_sender: bool
    sender_is_patient: bool
    sender_bal_type: str | None


@dataclass(frozen=True)
class ContentFacts:
    """What DATA is judged on (B2 reports under the null sender, B3, B4)."""

    size: int
    size_limit: int
    headers_parse: bool
    has_from: bool
    null_sender: bool
    from_aligned: bool
    to_patient: bool
    header_from_is_patient: bool
    dkim_required: bool
    dkim_pass: bool
    well_formed_report: bool = False
    """``multipart/report`` (delivery-status or disposition-notification) with its report part.

    Only examined under the null sender to a patient (the body is read for nothing else)."""
    report_about_sent: bool = False
    """The report names (Original-Message-ID, returned headers, In-Reply-To/References) a
    message every patient recipient sent. Only examined under the null sender to a patient."""


def _refuse(code: int, enhanced: str, text: str) -> Refusal:
    return Refusal(code, enhanced, text)


MAIL_CHAIN: tuple[SmtpRule[SessionFacts], ...] = (
    Rule(
        "B1.tls-required",
        lambda f: not f.tls and not f.plaintext_allowed,
        _refuse(530, "5.7.0", "Must issue a STARTTLS command first"),
        "Mail between operators travels over TLS only.",
    ),
    Rule(
        "B1.client-certificate",
        lambda f: f.tls and not f.client_certificate and not f.plaintext_allowed,
        _refuse(530, "5.7.0", "A client certificate of the trust space is required"),
        "The peer proves it is an operator with a certificate chaining to a trust anchor.",
    ),
    Rule(
        "B1.certificate-domain",
        lambda f: f.client_certificate and not f.certificate_names_trusted_domain,
        _refuse(550, "5.7.1", "Your certificate names no domain of the trust space"),
        "The peer's certificate must name (SAN DNS) a domain of the trust space.",
    ),
    Rule(
        "B2.sender-syntax",
        lambda f: not f.null_sender and not f.sender_syntax_ok,
        _refuse(553, "5.1.7", "The sender address is not valid"),
        "MAIL FROM must be a valid address or the null sender.",
    ),
    Rule(
        "A5.sender-domain-hosted-here",
        lambda f: not f.null_sender and f.sender_domain_hosted_here,
        _refuse(550, "5.7.1", "Mail from a domain hosted here cannot come from another operator"),
        "Patients and hosted professionals send through submission, never through a peer.",
    ),
    Rule(
        "A5.sender-domain",
        lambda f: not f.null_sender and not f.sender_domain_trusted,
        _refuse(550, "5.7.1", "The sender's domain is not in the trust space"),
        "Mail from a domain outside the trust space is refused.",
    ),
)


class HeaderShape(Protocol):
    """What the header rule reads (shared with submission)."""

    @property
    def headers_parse(self) -> bool: ...

    @property
    def has_from(self) -> bool: ...


HEADERS_RULE: SmtpRule[HeaderShape] = Rule(
    "B4.headers",
    lambda f: not f.headers_parse or not f.has_from,
    _refuse(550, "5.6.0", "The message header is malformed or has no From field"),
    "A message must have a parsable header with a From field (submitted mail too).",
)

INS_KEY_RULE: SmtpRule[HostedRecipient] = Rule(
    "A1.ins-key",
    lambda f: f.kind is RecipientKind.PATIENT and not f.ins_key_valid,
    _refuse(550, "5.1.3", "Bad patient address: the INS key does not match"),
    "A patient address whose INS key is wrong is a syntax error, not an unknown user.",
)

# Whatever the port, a hosted recipient must exist and its space be open.
RECIPIENT_STATE_RULES: tuple[SmtpRule[HostedRecipient], ...] = (
    Rule(
        "B2.unknown-recipient",
        lambda f: (
            f.kind is RecipientKind.UNKNOWN
            or (f.kind is RecipientKind.PATIENT and f.patient_state is PatientState.UNKNOWN)
        ),
        _refuse(550, "5.1.1", "No such mailbox here"),
        "Unknown mailboxes are refused.",
    ),
    Rule(
        "A2.test-identity",
        lambda f: f.kind is RecipientKind.PATIENT and f.patient_state is PatientState.TEST_IDENTITY,
        _refuse(
            550, "5.2.1", "This patient's space uses a test INS; this gateway is not in test mode"
        ),
        "Test and demo INS OIDs are refused unless the gateway runs in test mode.",
    ),
    Rule(
        "I1.patient-not-open-yet",
        lambda f: f.kind is RecipientKind.PATIENT and f.patient_state is PatientState.NOT_OPEN_YET,
        _refuse(550, "5.2.1", "This patient's space is not open yet (awaiting activation)"),
        "A space opens on activation or after the configured delay; before, it receives nothing.",
    ),
    Rule(
        "I1.patient-opposed",
        lambda f: f.kind is RecipientKind.PATIENT and f.patient_state is PatientState.OPPOSED,
        _refuse(550, "5.2.1", "This patient declined the space; it receives no mail"),
        "A patient who opposed the creation of the space never receives mail in it.",
    ),
    Rule(
        "B2.patient-closed",
        lambda f: f.kind is RecipientKind.PATIENT and f.patient_state is PatientState.CLOSED,
        _refuse(550, "5.2.1", "This patient's space is closed"),
        "A closed patient space receives nothing.",
    ),
    Rule(
        "B2.patient-suspended",
        lambda f: f.kind is RecipientKind.PATIENT and f.patient_state is PatientState.SUSPENDED,
        _refuse(450, "4.2.1", "This patient's space is suspended; try again later"),
        "A suspended space defers mail.",
    ),
)


RCPT_CHAIN: tuple[SmtpRule[RecipientFacts], ...] = (
    INS_KEY_RULE,
    Rule(
        "B2.not-hosted",
        lambda f: f.kind is RecipientKind.FOREIGN,
        _refuse(550, "5.7.1", "Relaying denied: the recipient's domain is not hosted here"),
        "The operators' port delivers only to mailboxes hosted here.",
    ),
    *RECIPIENT_STATE_RULES,
    Rule(
        "B3.patient-to-patient",
        lambda f: f.kind is RecipientKind.PATIENT and f.sender_is_patient,
        _refuse(550, "5.7.1", "A patient cannot write to another patient"),
        "Only professionals start or continue a conversation with a patient.",
    ),
    Rule(
        "B3.sender-not-listed",
        lambda f: (
            f.kind is RecipientKind.PATIENT
            and not f.null_sender
            and not f.sender_is_patient
            and f.sender_bal_type not in PROFESSIONAL_BAL_TYPES
        ),
        _refuse(
            550,
            "5.7.1",
            "Only a professional or organisation mailbox listed in the directory"
            " may write to a patient",
        ),
        "The sender of mail to a patient must be a PER, ORG, APP or CAB mailbox of the directory.",
    ),
)


DATA_CHAIN: tuple[SmtpRule[ContentFacts], ...] = (
    Rule(
        "B4.size",
        lambda f: f.size > f.size_limit,
        _refuse(552, "5.3.4", "Message too big for this recipient"),
        "Mail to patients is limited to 25 MB (advertised with SIZE).",
    ),
    HEADERS_RULE,
    Rule(
        "B2.null-sender-not-a-report",
        lambda f: f.null_sender and f.to_patient and not f.well_formed_report,
        _refuse(
            550,
            "5.7.1",
            "The null sender is for delivery and read reports only (multipart/report, DSN or MDN)",
        ),
        "Under <>, a patient receives only a well-formed DSN or MDN (decided at DATA).",
    ),
    Rule(
        "B2.null-sender-report-not-ours",
        lambda f: (
            f.null_sender and f.to_patient and f.well_formed_report and not f.report_about_sent
        ),
        _refuse(550, "5.7.1", "This report is about no message the recipient sent"),
        "A report under <> reaches a patient only about a message that mailbox sent.",
    ),
    Rule(
        "B3.header-from-patient",
        lambda f: f.to_patient and f.header_from_is_patient,
        _refuse(550, "5.7.1", "A patient cannot write to another patient"),
        "Decided at DATA when the header names a patient as author.",
    ),
    Rule(
        "B4.from-alignment",
        lambda f: not f.null_sender and not f.from_aligned,
        _refuse(550, "5.7.1", "The From header does not match the envelope sender"),
        "Header From must be the envelope sender or an address of the same professional.",
    ),
    Rule(
        "B4.dkim",
        lambda f: f.dkim_required and not f.dkim_pass,
        _refuse(550, "5.7.20", "No valid DKIM signature of the sending operator's domain"),
        "When required by the config, a DKIM signature of the sender's domain must verify.",
    ),
)
