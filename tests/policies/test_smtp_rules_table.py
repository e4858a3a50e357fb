"""A1, A5, B1–B4, C2, C4, K4: every SMTP rule chain as a table of facts → verdict.

Pure: facts in, verdict out, no socket, no database. Each row of each chain is shown
refusing (the code, enhanced code and rule id a peer or a user sees) and not refusing
(the chain goes on to a later row or accepts). A chain that gains a row, or a module that
gains a chain, fails :func:`test_every_row_of_every_chain_is_in_the_table`.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest

from caducee.policies import inbound, limits, submission
from caducee.policies.inbound import (
    DATA_CHAIN,
    HEADERS_RULE,
    INS_KEY_RULE,
    MAIL_CHAIN,
    RCPT_CHAIN,
    RECIPIENT_STATE_RULES,
    ContentFacts,
    PatientState,
    RecipientFacts,
    RecipientKind,
    SessionFacts,
)
from caducee.policies.limits import (
    CONNECTION_CHAIN,
    DATA_READ_CHAIN,
    ENVELOPE_LIMIT_CHAIN,
    ConnectionCap,
    ConnectionFacts,
    DataReadFacts,
    EnvelopeLimitFacts,
)
from caducee.policies.submission import (
    HEADER_CHAIN,
    RECIPIENT_CHAIN,
    SENDER_CHAIN,
    SenderFacts,
    SubmittedHeaderFacts,
    SubmittedRecipientFacts,
)
from caducee.policies.verdict import Refusal, Rule, Verdict, first_refusal

MB = 1024 * 1024

CHAINS: dict[str, tuple[Rule[Any, Refusal], ...]] = {
    "CONNECTION": CONNECTION_CHAIN,
    "ENVELOPE": ENVELOPE_LIMIT_CHAIN,
    "DATA_READ": DATA_READ_CHAIN,
    "MAIL": MAIL_CHAIN,
    "RCPT": RCPT_CHAIN,
    "DATA": DATA_CHAIN,
    "SENDER": SENDER_CHAIN,
    "HEADER": HEADER_CHAIN,
    "RECIPIENT": RECIPIENT_CHAIN,
}
# The name of each chain in caducee.policies.tables.TABLES.
TABLE_NAMES = {
    "CONNECTION": "limits.CONNECTION_CHAIN",
    "ENVELOPE": "limits.ENVELOPE_LIMIT_CHAIN",
    "DATA_READ": "limits.DATA_READ_CHAIN",
    "MAIL": "inbound.MAIL_CHAIN",
    "RCPT": "inbound.RCPT_CHAIN",
    "DATA": "inbound.DATA_CHAIN",
    "SENDER": "submission.SENDER_CHAIN",
    "HEADER": "submission.HEADER_CHAIN",
    "RECIPIENT": "submission.RECIPIENT_CHAIN",
}


@dataclass(frozen=True)
class Case:
    """One line of the table.

    ``row`` is the rule the line is about. ``decides`` is the rule expected to refuse
    (``row`` itself when the line shows the row firing; a later row or None when it shows
    the row letting the facts through). ``reply`` is what the client reads when it fires.
    """

    chain: str
    row: str
    label: str
    facts: Any
    decides: str | None
    reply: tuple[int, str] | None = None

    @property
    def fires(self) -> bool:
        return self.decides == self.row

    @property
    def id(self) -> str:
        outcome = "fires" if self.fires else f"passes->{self.decides or 'accept'}"
        return f"{self.chain}:{self.row}:{outcome}:{self.label}"


def fires(chain: str, row: str, label: str, facts: Any, code: int, enhanced: str) -> Case:
    return Case(chain, row, label, facts, row, (code, enhanced))


def passes(chain: str, row: str, label: str, facts: Any, then: str | None = None) -> Case:
    return Case(chain, row, label, facts, then)


# MAIL FROM on the operators' port (B1, B2, A5) ----------------------------------------------

PEER = SessionFacts(
    tls=True,
    plaintext_allowed=False,
    client_certificate=True,
    certificate_names_trusted_domain=True,
    sender="dr.martin@hopital-nord.example",
    sender_syntax_ok=True,
    sender_domain_trusted=True,
    sender_domain_hosted_here=False,
)
CLEAR = replace(PEER, tls=False, client_certificate=False, certificate_names_trusted_domain=False)
NULL_SENDER = replace(
    PEER,
    sender="",
    sender_syntax_ok=False,
    sender_domain_trusted=False,
    sender_domain_hosted_here=False,
)
GARBLED = replace(
    PEER, sender="not an address", sender_syntax_ok=False, sender_domain_trusted=False
)
FROM_OUR_PATIENT = replace(
    PEER, sender="2550399123456 53@patient.mssante.fr", sender_domain_hosted_here=True
)
OUTSIDER = replace(PEER, sender="someone@gmail.example", sender_domain_trusted=False)

M = "MAIL"
MAIL_TABLE: list[Case] = [
    fires(M, "B1.tls-required", "in clear", CLEAR, 530, "5.7.0"),
    passes(
        M, "B1.tls-required", "in clear, allow_plaintext", replace(CLEAR, plaintext_allowed=True)
    ),
    passes(M, "B1.tls-required", "over TLS", PEER),
    fires(
        M,
        "B1.client-certificate",
        "TLS without certificate",
        replace(PEER, client_certificate=False, certificate_names_trusted_domain=False),
        530,
        "5.7.0",
    ),
    passes(
        M,
        "B1.client-certificate",
        "certificate naming a foreign domain",
        replace(PEER, certificate_names_trusted_domain=False),
        "B1.certificate-domain",
    ),
    fires(
        M,
        "B1.certificate-domain",
        "certificate names no trust-space domain",
        replace(PEER, certificate_names_trusted_domain=False),
        550,
        "5.7.1",
    ),
    fires(
        M,
        "B1.certificate-domain",
        "untrusted certificate even with allow_plaintext",
        replace(PEER, plaintext_allowed=True, certificate_names_trusted_domain=False),
        550,
        "5.7.1",
    ),
    passes(
        M, "B1.certificate-domain", "trusted certificate, bad sender", GARBLED, "B2.sender-syntax"
    ),
    fires(M, "B2.sender-syntax", "not an address", GARBLED, 553, "5.1.7"),
    passes(M, "B2.sender-syntax", "null sender", NULL_SENDER),
    passes(M, "B2.sender-syntax", "valid sender outside", OUTSIDER, "A5.sender-domain"),
    fires(
        M, "A5.sender-domain-hosted-here", "peer sends as a patient", FROM_OUR_PATIENT, 550, "5.7.1"
    ),
    passes(M, "A5.sender-domain-hosted-here", "sender of another operator", PEER),
    passes(M, "A5.sender-domain-hosted-here", "null sender", NULL_SENDER),
    fires(M, "A5.sender-domain", "domain outside the trust space", OUTSIDER, 550, "5.7.1"),
    passes(M, "A5.sender-domain", "trust-space domain", PEER),
    passes(M, "A5.sender-domain", "null sender", NULL_SENDER),
]


# RCPT TO on the operators' port (A1, B2, B3) ------------------------------------------------

TO_PATIENT = RecipientFacts(
    kind=RecipientKind.PATIENT,
    ins_key_valid=True,
    patient_state=PatientState.ACTIVE,
    null_sender=False,
    sender_is_patient=False,
    sender_bal_type="PER",
)
# As rcpt.resolve_recipient builds them: no patient state and no BAL type for a non-patient.
TO_HOSTED = replace(
    TO_PATIENT, kind=RecipientKind.HOSTED, patient_state=PatientState.UNKNOWN, sender_bal_type=None
)
TO_FOREIGN = replace(TO_HOSTED, kind=RecipientKind.FOREIGN)
TO_UNKNOWN = replace(TO_HOSTED, kind=RecipientKind.UNKNOWN)
PATIENT_TO_PATIENT = replace(TO_PATIENT, sender_is_patient=True, sender_bal_type=None)

R = "RCPT"
RCPT_TABLE: list[Case] = [
    fires(R, "A1.ins-key", "wrong INS key", replace(TO_PATIENT, ins_key_valid=False), 550, "5.1.3"),
    passes(R, "A1.ins-key", "good INS key", TO_PATIENT),
    passes(R, "A1.ins-key", "not a patient address", replace(TO_HOSTED, ins_key_valid=False)),
    fires(R, "B2.not-hosted", "foreign domain", TO_FOREIGN, 550, "5.7.1"),
    passes(R, "B2.not-hosted", "hosted professional", TO_HOSTED),
    passes(R, "B2.not-hosted", "unknown mailbox of ours", TO_UNKNOWN, "B2.unknown-recipient"),
    fires(R, "B2.unknown-recipient", "no hosted mailbox", TO_UNKNOWN, 550, "5.1.1"),
    fires(
        R,
        "B2.unknown-recipient",
        "no patient space",
        replace(TO_PATIENT, patient_state=PatientState.UNKNOWN),
        550,
        "5.1.1",
    ),
    passes(R, "B2.unknown-recipient", "hosted mailbox exists", TO_HOSTED),
    passes(
        R,
        "B2.unknown-recipient",
        "closed patient space exists",
        replace(TO_PATIENT, patient_state=PatientState.CLOSED),
        "B2.patient-closed",
    ),
    fires(
        R,
        "A2.test-identity",
        "test INS OID out of test mode",
        replace(TO_PATIENT, patient_state=PatientState.TEST_IDENTITY),
        550,
        "5.2.1",
    ),
    passes(R, "A2.test-identity", "active space", TO_PATIENT),
    fires(
        R,
        "I1.patient-not-open-yet",
        "created, not activated",
        replace(TO_PATIENT, patient_state=PatientState.NOT_OPEN_YET),
        550,
        "5.2.1",
    ),
    passes(R, "I1.patient-not-open-yet", "active space", TO_PATIENT),
    fires(
        R,
        "I1.patient-opposed",
        "opposed space",
        replace(TO_PATIENT, patient_state=PatientState.OPPOSED),
        550,
        "5.2.1",
    ),
    passes(R, "I1.patient-opposed", "active space", TO_PATIENT),
    fires(
        R,
        "B2.patient-closed",
        "closed space",
        replace(TO_PATIENT, patient_state=PatientState.CLOSED),
        550,
        "5.2.1",
    ),
    passes(
        R,
        "B2.patient-closed",
        "suspended space",
        replace(TO_PATIENT, patient_state=PatientState.SUSPENDED),
        "B2.patient-suspended",
    ),
    fires(
        R,
        "B2.patient-suspended",
        "suspended space",
        replace(TO_PATIENT, patient_state=PatientState.SUSPENDED),
        450,
        "4.2.1",
    ),
    passes(R, "B2.patient-suspended", "active space", TO_PATIENT),
    fires(R, "B3.patient-to-patient", "patient sender", PATIENT_TO_PATIENT, 550, "5.7.1"),
    passes(R, "B3.patient-to-patient", "professional sender", TO_PATIENT),
    passes(
        R,
        "B3.patient-to-patient",
        "unlisted sender",
        replace(TO_PATIENT, sender_bal_type=None),
        "B3.sender-not-listed",
    ),
    fires(
        R,
        "B3.sender-not-listed",
        "sender not in the directory",
        replace(TO_PATIENT, sender_bal_type=None),
        550,
        "5.7.1",
    ),
    fires(
        R,
        "B3.sender-not-listed",
        "unknown BAL type",
        replace(TO_PATIENT, sender_bal_type="PAT"),
        550,
        "5.7.1",
    ),
    *(
        passes(
            R, "B3.sender-not-listed", f"{bal} mailbox", replace(TO_PATIENT, sender_bal_type=bal)
        )
        for bal in ("PER", "ORG", "APP", "CAB")
    ),
    passes(R, "B3.sender-not-listed", "unlisted sender to a professional", TO_HOSTED),
    # B2: a report under <> may reach the patient; whether it is one is a DATA fact.
    passes(
        R,
        "B3.sender-not-listed",
        "null sender",
        replace(TO_PATIENT, null_sender=True, sender_bal_type=None),
    ),
]


# DATA on the operators' port (B3, B4) -------------------------------------------------------

CONTENT = ContentFacts(
    size=200_000,
    size_limit=25 * MB,
    headers_parse=True,
    has_from=True,
    null_sender=False,
    from_aligned=True,
    to_patient=True,
    header_from_is_patient=False,
    dkim_required=True,
    dkim_pass=True,
)

# A DSN under <> about a message the patient sent: From is the reporting MTA, unsigned.
NULL_SENDER_REPORT = replace(
    CONTENT,
    null_sender=True,
    from_aligned=False,
    dkim_required=False,
    dkim_pass=False,
    well_formed_report=True,
    report_about_sent=True,
)

D = "DATA"
DATA_TABLE: list[Case] = [
    fires(D, "B4.size", "one byte over 25 MB", replace(CONTENT, size=25 * MB + 1), 552, "5.3.4"),
    passes(D, "B4.size", "exactly 25 MB", replace(CONTENT, size=25 * MB)),
    fires(
        D, "B4.headers", "unparsable header", replace(CONTENT, headers_parse=False), 550, "5.6.0"
    ),
    fires(D, "B4.headers", "no From field", replace(CONTENT, has_from=False), 550, "5.6.0"),
    passes(D, "B4.headers", "parsable header with From", CONTENT),
    passes(
        D,
        "B4.headers",
        "ordinary message under the null sender",
        replace(NULL_SENDER_REPORT, well_formed_report=False, report_about_sent=False),
        "B2.null-sender-not-a-report",
    ),
    # B2: under <>, a patient receives only a DSN or MDN about a message it sent.
    fires(
        D,
        "B2.null-sender-not-a-report",
        "ordinary message to a patient",
        replace(NULL_SENDER_REPORT, well_formed_report=False, report_about_sent=False),
        550,
        "5.7.1",
    ),
    fires(
        D,
        "B2.null-sender-not-a-report",
        "a report-looking message that is not one, naming a sent message",
        replace(NULL_SENDER_REPORT, well_formed_report=False),
        550,
        "5.7.1",
    ),
    passes(
        D, "B2.null-sender-not-a-report", "DSN about a message the patient sent", NULL_SENDER_REPORT
    ),
    passes(
        D,
        "B2.null-sender-not-a-report",
        "ordinary message under <> to a professional",
        replace(
            NULL_SENDER_REPORT, to_patient=False, well_formed_report=False, report_about_sent=False
        ),
    ),
    passes(
        D,
        "B2.null-sender-not-a-report",
        "report about a message of someone else",
        replace(NULL_SENDER_REPORT, report_about_sent=False),
        "B2.null-sender-report-not-ours",
    ),
    passes(D, "B2.null-sender-not-a-report", "ordinary message with a sender", CONTENT),
    fires(
        D,
        "B2.null-sender-report-not-ours",
        "report about no message the patient sent",
        replace(NULL_SENDER_REPORT, report_about_sent=False),
        550,
        "5.7.1",
    ),
    passes(D, "B2.null-sender-report-not-ours", "report about a sent message", NULL_SENDER_REPORT),
    passes(
        D,
        "B2.null-sender-report-not-ours",
        "report to a professional (904 MDN back to its sender)",
        replace(NULL_SENDER_REPORT, to_patient=False, report_about_sent=False),
    ),
    passes(
        D,
        "B2.null-sender-report-not-ours",
        "report about a sent message, header From a patient",
        replace(NULL_SENDER_REPORT, header_from_is_patient=True),
        "B3.header-from-patient",
    ),
    passes(
        D,
        "B4.headers",
        "misaligned From",
        replace(CONTENT, from_aligned=False),
        "B4.from-alignment",
    ),
    fires(
        D,
        "B3.header-from-patient",
        "patient author to a patient",
        replace(CONTENT, header_from_is_patient=True),
        550,
        "5.7.1",
    ),
    passes(
        D,
        "B3.header-from-patient",
        "patient author to a professional",
        replace(CONTENT, to_patient=False, header_from_is_patient=True),
    ),
    passes(D, "B3.header-from-patient", "professional author", CONTENT),
    fires(
        D,
        "B4.from-alignment",
        "From is not the sender",
        replace(CONTENT, from_aligned=False),
        550,
        "5.7.1",
    ),
    passes(D, "B4.from-alignment", "From is the sender", CONTENT),
    passes(
        D,
        "B4.from-alignment",
        "report under the null sender",
        NULL_SENDER_REPORT,
    ),
    passes(
        D,
        "B4.from-alignment",
        "aligned, unsigned",
        replace(CONTENT, dkim_pass=False),
        "B4.dkim",
    ),
    fires(D, "B4.dkim", "required and failing", replace(CONTENT, dkim_pass=False), 550, "5.7.20"),
    passes(D, "B4.dkim", "required and passing", CONTENT),
    passes(D, "B4.dkim", "not required", replace(CONTENT, dkim_required=False, dkim_pass=False)),
]


# Submission MAIL FROM and header From (C2) --------------------------------------------------

S = "SENDER"
SENDER_TABLE: list[Case] = [
    fires(
        S,
        "C2.sender-alignment",
        "address of another account",
        SenderFacts("dr.dupont@caducee.example", owned=False),
        553,
        "5.7.1",
    ),
    passes(
        S,
        "C2.sender-alignment",
        "the account's own address",
        SenderFacts("dr.martin@caducee.example", owned=True),
    ),
]


# Submission RCPT TO (C4, A1, B2, B3) --------------------------------------------------------

PRO_TO_PATIENT = SubmittedRecipientFacts(
    sender_is_patient=False,
    sender_bal_type="PER",
    kind=RecipientKind.PATIENT,
    ins_key_valid=True,
    patient_state=PatientState.ACTIVE,
    in_trust_space=True,
    patient_may_write=False,
)
PRO_TO_REMOTE = replace(
    PRO_TO_PATIENT, kind=RecipientKind.FOREIGN, patient_state=PatientState.UNKNOWN
)
PRO_OUTSIDE = replace(PRO_TO_REMOTE, in_trust_space=False)
# A patient answering a hosted professional who wrote to them.
PATIENT_REPLY = SubmittedRecipientFacts(
    sender_is_patient=True,
    sender_bal_type=None,
    kind=RecipientKind.HOSTED,
    ins_key_valid=True,
    patient_state=PatientState.UNKNOWN,
    in_trust_space=True,
    patient_may_write=True,
)
PATIENT_WRITES_PATIENT = replace(
    PATIENT_REPLY, kind=RecipientKind.PATIENT, patient_state=PatientState.ACTIVE
)

U = "RECIPIENT"
RECIPIENT_TABLE: list[Case] = [
    fires(U, "C4.patient-to-patient", "patient to patient", PATIENT_WRITES_PATIENT, 550, "5.7.1"),
    passes(U, "C4.patient-to-patient", "professional to patient", PRO_TO_PATIENT),
    passes(U, "C4.patient-to-patient", "patient to a correspondent", PATIENT_REPLY),
    fires(U, "C4.outside-trust-space", "professional to outside", PRO_OUTSIDE, 550, "5.7.1"),
    fires(
        U,
        "C4.outside-trust-space",
        "patient to outside",
        replace(PATIENT_REPLY, kind=RecipientKind.FOREIGN, in_trust_space=False),
        550,
        "5.7.1",
    ),
    passes(U, "C4.outside-trust-space", "professional to another operator", PRO_TO_REMOTE),
    passes(
        U,
        "C4.outside-trust-space",
        "to a hosted mailbox that does not exist",
        replace(PRO_TO_REMOTE, kind=RecipientKind.UNKNOWN),
        "B2.unknown-recipient",
    ),
    fires(
        U, "A1.ins-key", "wrong INS key", replace(PRO_TO_PATIENT, ins_key_valid=False), 550, "5.1.3"
    ),
    passes(U, "A1.ins-key", "good INS key", PRO_TO_PATIENT),
    fires(
        U,
        "B2.unknown-recipient",
        "no hosted mailbox",
        replace(PRO_TO_REMOTE, kind=RecipientKind.UNKNOWN),
        550,
        "5.1.1",
    ),
    fires(
        U,
        "B2.unknown-recipient",
        "no patient space",
        replace(PRO_TO_PATIENT, patient_state=PatientState.UNKNOWN),
        550,
        "5.1.1",
    ),
    passes(U, "B2.unknown-recipient", "existing patient space", PRO_TO_PATIENT),
    fires(
        U,
        "A2.test-identity",
        "test INS OID out of test mode",
        replace(PRO_TO_PATIENT, patient_state=PatientState.TEST_IDENTITY),
        550,
        "5.2.1",
    ),
    passes(U, "A2.test-identity", "active space", PRO_TO_PATIENT),
    fires(
        U,
        "I1.patient-not-open-yet",
        "created, not activated",
        replace(PRO_TO_PATIENT, patient_state=PatientState.NOT_OPEN_YET),
        550,
        "5.2.1",
    ),
    passes(U, "I1.patient-not-open-yet", "active space", PRO_TO_PATIENT),
    fires(
        U,
        "I1.patient-opposed",
        "opposed space",
        replace(PRO_TO_PATIENT, patient_state=PatientState.OPPOSED),
        550,
        "5.2.1",
    ),
    passes(U, "I1.patient-opposed", "active space", PRO_TO_PATIENT),
    fires(
        U,
        "B2.patient-closed",
        "closed space",
        replace(PRO_TO_PATIENT, patient_state=PatientState.CLOSED),
        550,
        "5.2.1",
    ),
    passes(U, "B2.patient-closed", "active space", PRO_TO_PATIENT),
    fires(
        U,
        "B2.patient-suspended",
        "suspended space",
        replace(PRO_TO_PATIENT, patient_state=PatientState.SUSPENDED),
        450,
        "4.2.1",
    ),
    passes(
        U,
        "B2.patient-suspended",
        "active space, unlisted sender",
        replace(PRO_TO_PATIENT, sender_bal_type=None),
        "B3.sender-not-listed",
    ),
    fires(
        U,
        "C4.not-a-correspondent",
        "hosted professional who never wrote or ended the exchange",
        replace(PATIENT_REPLY, patient_may_write=False),
        550,
        "5.7.1",
    ),
    fires(
        U,
        "C4.not-a-correspondent",
        "remote professional who never wrote",
        replace(PATIENT_REPLY, kind=RecipientKind.FOREIGN, patient_may_write=False),
        550,
        "5.7.1",
    ),
    passes(U, "C4.not-a-correspondent", "professional who wrote", PATIENT_REPLY),
    passes(
        U,
        "C4.not-a-correspondent",
        "remote professional who wrote",
        replace(PATIENT_REPLY, kind=RecipientKind.FOREIGN),
    ),
    passes(U, "C4.not-a-correspondent", "professional sender", PRO_TO_REMOTE),
    fires(
        U,
        "B3.sender-not-listed",
        "hosted sender not in the directory",
        replace(PRO_TO_PATIENT, sender_bal_type=None),
        550,
        "5.7.1",
    ),
    *(
        passes(
            U,
            "B3.sender-not-listed",
            f"{bal} mailbox",
            replace(PRO_TO_PATIENT, sender_bal_type=bal),
        )
        for bal in ("PER", "ORG", "APP", "CAB")
    ),
    passes(
        U,
        "B3.sender-not-listed",
        "unlisted sender to a professional",
        replace(PRO_TO_REMOTE, sender_bal_type=None),
    ),
]


# Limits every port shares (B4, K4) ---------------------------------------------------------

K = "CONNECTION"
CONNECTION_TABLE: list[Case] = [
    fires(
        K,
        "K4.connections-total",
        "process cap",
        ConnectionFacts(ConnectionCap.TOTAL),
        421,
        "4.7.0",
    ),
    passes(K, "K4.connections-total", "admitted", ConnectionFacts()),
    passes(
        K,
        "K4.connections-total",
        "address cap",
        ConnectionFacts(ConnectionCap.PER_ADDRESS),
        "K4.connections-per-address",
    ),
    fires(
        K,
        "K4.connections-per-address",
        "address cap",
        ConnectionFacts(ConnectionCap.PER_ADDRESS),
        421,
        "4.7.0",
    ),
    passes(K, "K4.connections-per-address", "admitted", ConnectionFacts()),
    fires(
        K, "K4.session-time", "session over", ConnectionFacts(session_expired=True), 421, "4.4.2"
    ),
    passes(K, "K4.session-time", "session running", ConnectionFacts()),
]

E = "ENVELOPE"
ENVELOPE_TABLE: list[Case] = [
    fires(
        E,
        "B4.declared-size",
        "SIZE over the limit",
        EnvelopeLimitFacts(declared_size=30 * MB, size_limit=25 * MB),
        552,
        "5.3.4",
    ),
    passes(
        E,
        "B4.declared-size",
        "SIZE at the limit",
        EnvelopeLimitFacts(declared_size=25 * MB, size_limit=25 * MB),
    ),
    passes(E, "B4.declared-size", "no SIZE", EnvelopeLimitFacts(size_limit=25 * MB)),
    fires(
        E,
        "K4.recipients",
        "one recipient too many",
        EnvelopeLimitFacts(recipients=100, recipient_limit=100),
        452,
        "4.5.3",
    ),
    passes(E, "K4.recipients", "room left", EnvelopeLimitFacts(recipients=99, recipient_limit=100)),
]

DR = "DATA_READ"
DATA_READ_TABLE: list[Case] = [
    fires(
        DR,
        "K4.data-in-flight",
        "over the DATA budget",
        DataReadFacts(over_budget=True, too_big=True),
        451,
        "4.3.1",
    ),
    passes(DR, "K4.data-in-flight", "within the budget", DataReadFacts()),
    passes(
        DR,
        "K4.data-in-flight",
        "within the budget, bare LF",
        DataReadFacts(bare_line_ending=True),
        "B4.crlf-only",
    ),
    fires(
        DR,
        "B4.crlf-only",
        "bare LF",
        DataReadFacts(bare_line_ending=True, too_big=True),
        521,
        "5.5.2",
    ),
    passes(DR, "B4.crlf-only", "CRLF only", DataReadFacts()),
    passes(
        DR, "B4.crlf-only", "CRLF only, too big", DataReadFacts(too_big=True), "B4.data-too-big"
    ),
    fires(
        DR, "B4.data-too-big", "reader stopped keeping", DataReadFacts(too_big=True), 552, "5.3.4"
    ),
    passes(DR, "B4.data-too-big", "within the limit", DataReadFacts()),
]

H = "HEADER"
HEADER_TABLE: list[Case] = [
    fires(H, "B4.headers", "unparsable", SubmittedHeaderFacts(False, False), 550, "5.6.0"),
    fires(H, "B4.headers", "no From", SubmittedHeaderFacts(True, False), 550, "5.6.0"),
    passes(H, "B4.headers", "a From", SubmittedHeaderFacts(True, True)),
]


TABLE: list[Case] = (
    CONNECTION_TABLE
    + ENVELOPE_TABLE
    + DATA_READ_TABLE
    + MAIL_TABLE
    + RCPT_TABLE
    + DATA_TABLE
    + SENDER_TABLE
    + HEADER_TABLE
    + RECIPIENT_TABLE
)


def _rule(chain: Sequence[Rule[Any, Refusal]], rule_id: str) -> Rule[Any, Refusal]:
    [rule] = [rule for rule in chain if rule.id == rule_id]
    return rule


def _index(chain: Sequence[Rule[Any, Refusal]], rule_id: str) -> int:
    return [rule.id for rule in chain].index(rule_id)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in TABLE if c.fires])
def test_a_row_fires_with_its_reply(case: Case) -> None:
    verdict = first_refusal(CHAINS[case.chain], case.facts)
    assert case.reply is not None
    code, enhanced = case.reply
    assert verdict is not None, "accepted"
    assert verdict.rule == case.row
    assert (verdict.refusal.code, verdict.refusal.enhanced) == (code, enhanced)
    assert verdict.refusal.temporary == (400 <= code < 500)
    reply = verdict.smtp_reply()
    assert reply.startswith(f"{code} {enhanced} ")
    assert reply.isascii() and "\r" not in reply and "\n" not in reply
    assert len(reply) > len(f"{code} {enhanced} ") + 10, "the text says why"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in TABLE if not c.fires])
def test_a_row_lets_other_facts_through(case: Case) -> None:
    chain = CHAINS[case.chain]
    assert not _rule(chain, case.row).refuses(case.facts)
    verdict = first_refusal(chain, case.facts)
    assert (verdict.rule if verdict else None) == case.decides
    if case.decides is not None:  # the chain went on past this row
        assert _index(chain, case.decides) > _index(chain, case.row)


# When two rows would refuse, the earlier one decides: (chain, earlier, later, facts).
ORDER: list[tuple[str, str, str, Any]] = [
    (
        M,
        "B1.tls-required",
        "B2.sender-syntax",
        replace(CLEAR, sender="junk", sender_syntax_ok=False, sender_domain_trusted=False),
    ),
    (
        M,
        "B1.certificate-domain",
        "A5.sender-domain",
        replace(OUTSIDER, certificate_names_trusted_domain=False),
    ),
    (M, "B2.sender-syntax", "A5.sender-domain", GARBLED),
    (
        M,
        "A5.sender-domain-hosted-here",
        "A5.sender-domain",
        replace(FROM_OUR_PATIENT, sender_domain_trusted=False),
    ),
    # A1: a wrong key is a syntax error, not an unknown user.
    (
        R,
        "A1.ins-key",
        "B2.unknown-recipient",
        replace(TO_PATIENT, ins_key_valid=False, patient_state=PatientState.UNKNOWN),
    ),
    (
        R,
        "B2.patient-closed",
        "B3.patient-to-patient",
        replace(PATIENT_TO_PATIENT, patient_state=PatientState.CLOSED),
    ),
    (
        R,
        "B2.patient-suspended",
        "B3.sender-not-listed",
        replace(TO_PATIENT, patient_state=PatientState.SUSPENDED, sender_bal_type=None),
    ),
    (D, "B4.size", "B4.headers", replace(CONTENT, size=30 * MB, headers_parse=False)),
    (D, "B4.headers", "B4.dkim", replace(CONTENT, has_from=False, dkim_pass=False)),
    (
        D,
        "B4.headers",
        "B2.null-sender-not-a-report",
        replace(NULL_SENDER_REPORT, headers_parse=False, well_formed_report=False),
    ),
    (
        D,
        "B2.null-sender-report-not-ours",
        "B3.header-from-patient",
        replace(NULL_SENDER_REPORT, report_about_sent=False, header_from_is_patient=True),
    ),
    (
        D,
        "B3.header-from-patient",
        "B4.from-alignment",
        replace(CONTENT, header_from_is_patient=True, from_aligned=False),
    ),
    (D, "B4.from-alignment", "B4.dkim", replace(CONTENT, from_aligned=False, dkim_pass=False)),
    (
        U,
        "C4.patient-to-patient",
        "C4.not-a-correspondent",
        replace(PATIENT_WRITES_PATIENT, patient_may_write=False),
    ),
    (
        U,
        "C4.outside-trust-space",
        "C4.not-a-correspondent",
        replace(
            PATIENT_REPLY, kind=RecipientKind.FOREIGN, in_trust_space=False, patient_may_write=False
        ),
    ),
    (
        U,
        "A1.ins-key",
        "B3.sender-not-listed",
        replace(PRO_TO_PATIENT, ins_key_valid=False, sender_bal_type=None),
    ),
    (
        U,
        "B2.unknown-recipient",
        "C4.not-a-correspondent",
        replace(PATIENT_REPLY, kind=RecipientKind.UNKNOWN, patient_may_write=False),
    ),
    (
        U,
        "B2.patient-closed",
        "B3.sender-not-listed",
        replace(PRO_TO_PATIENT, patient_state=PatientState.CLOSED, sender_bal_type=None),
    ),
]


@pytest.mark.parametrize(
    ("chain_name", "earlier", "later", "facts"),
    [pytest.param(*row, id=f"{row[0]}:{row[1]}-before-{row[2]}") for row in ORDER],
)
def test_the_earlier_row_wins(chain_name: str, earlier: str, later: str, facts: Any) -> None:
    chain = CHAINS[chain_name]
    assert _index(chain, earlier) < _index(chain, later)
    assert _rule(chain, earlier).refuses(facts) and _rule(chain, later).refuses(facts)
    verdict = first_refusal(chain, facts)
    assert verdict is not None and verdict.rule == earlier


@pytest.mark.parametrize("chain_name", list(CHAINS))
def test_every_row_of_every_chain_is_in_the_table(chain_name: str) -> None:
    ids = [rule.id for rule in CHAINS[chain_name]]
    assert len(ids) == len(set(ids)), "a rule id appears twice in one chain"
    cases = [case for case in TABLE if case.chain == chain_name]
    fired = {case.row for case in cases if case.fires}
    passed = {case.row for case in cases if not case.fires}
    assert set(ids) == fired, ("rows never shown firing", sorted(set(ids) ^ fired))
    assert set(ids) == passed, ("rows never shown letting facts through", sorted(set(ids) ^ passed))
    reached = {case.decides for case in cases} - {None}
    assert reached <= set(ids)


def _module_rules(module: types.ModuleType) -> list[tuple[str, Rule[Any, Refusal]]]:
    """Every rule a policy module defines, alone or in a tuple or list of rules."""
    found: list[tuple[str, Rule[Any, Refusal]]] = []
    for name, value in vars(module).items():
        if isinstance(value, Rule):
            found.append((name, value))
        elif isinstance(value, tuple | list) and value and all(isinstance(v, Rule) for v in value):
            found.extend((name, rule) for rule in value)
    return found


@pytest.mark.parametrize("module", [inbound, limits, submission], ids=lambda m: m.__name__)
def test_every_rule_of_the_policy_modules_is_in_a_tested_chain(module: types.ModuleType) -> None:
    tested = {id(rule) for chain in CHAINS.values() for rule in chain}
    untested = [(name, rule.id) for name, rule in _module_rules(module) if id(rule) not in tested]
    assert not untested
    untested_chains = [
        name
        for name, value in vars(module).items()
        if name.endswith("_CHAIN") and not any(value is chain for chain in CHAINS.values())
    ]
    assert not untested_chains


@pytest.mark.parametrize("rule", [INS_KEY_RULE, *RECIPIENT_STATE_RULES], ids=lambda r: r.id)
def test_a1_b2_recipient_rows_are_the_same_on_both_ports(rule: Rule[Any, Refusal]) -> None:
    assert any(row is rule for row in RCPT_CHAIN)
    assert any(row is rule for row in RECIPIENT_CHAIN)


@pytest.mark.parametrize(
    "rule", [r for r in RECIPIENT_CHAIN if r.id.startswith("C4.")], ids=lambda r: r.id
)
def test_c4_patient_refusals_are_french_then_english(rule: Rule[Any, Refusal]) -> None:
    french, separator, english = rule.refusal.text.partition(" / ")
    assert separator and french.strip() and english.strip()
    assert rule.refusal.text.isascii()
    assert french != english


def test_b4_bare_line_ending_closes_the_session() -> None:
    bare = _rule(DATA_READ_CHAIN, "B4.crlf-only").refusal
    assert (bare.code, bare.enhanced) == (521, "5.5.2")  # RFC 7504: 521 closes the session
    assert not bare.temporary and bare.text.endswith("closing")


@pytest.mark.parametrize("rule", [HEADERS_RULE], ids=lambda r: r.id)
def test_b4_header_row_is_the_same_on_both_ports(rule: Rule[Any, Refusal]) -> None:
    assert any(row is rule for row in DATA_CHAIN)
    assert any(row is rule for row in HEADER_CHAIN)


@pytest.mark.parametrize(
    ("code", "temporary"),
    [(250, False), (399, False), (400, True), (450, True), (499, True), (500, False), (550, False)],
)
def test_only_4xx_refusals_are_temporary(code: int, temporary: bool) -> None:
    assert Refusal(code, "x.y.z", "text").temporary is temporary


def test_first_refusal_accepts_on_an_empty_chain_and_stops_at_the_first_refusal() -> None:
    seen: list[str] = []

    def watch(name: str, answer: bool) -> Rule[object, Refusal]:
        def refuses(facts: object) -> bool:
            seen.append(name)
            return answer

        return Rule(name, refuses, Refusal(550, "5.7.1", name), name)

    assert first_refusal((), object()) is None
    chain = (watch("one", False), watch("two", True), watch("three", True))
    verdict = first_refusal(chain, object())
    assert verdict == Verdict("two", Refusal(550, "5.7.1", "two"))
    assert seen == ["one", "two"]
    assert verdict.smtp_reply() == "550 5.7.1 two"
