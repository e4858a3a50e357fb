"""Every rule table of the product, in one list, and the page that documents them.

:data:`TABLES` names each table once: the tests walk it (every row has the one id syntax,
every row is shown deciding and letting facts through) and :func:`refusals_markdown` writes
``docs/refusals.md`` from it (``caducee rules`` prints the same page; a test fails when the
file and the tables differ). A table that is not listed here is a table nobody checks: the
tests also fail when a policy module defines one that is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from caducee.policies import access, exchange, identity, inbound, limits, mss_headers, submission
from caducee.policies.verdict import Refusal, Rule


@dataclass(frozen=True)
class Table:
    """One rule table: where it is asked, and how its outcomes read."""

    name: str
    """``<module>.<constant>``, e.g. ``inbound.RCPT_CHAIN``."""
    title: str
    asked: str
    """Who asks the table, and when (one sentence)."""
    rules: Sequence[Rule[Any, Any]]
    outcome: Callable[[Any], str]


def _refusal(outcome: Refusal) -> str:
    return f"`{outcome.code} {outcome.enhanced}` {outcome.text}"


def _access(outcome: access.Basis | None) -> str:
    return "deny (HTTP 403)" if outcome is None else f"allow ({outcome.value})"


def _hiding(outcome: access.Hiding) -> str:
    bases = ", ".join(sorted(basis.value for basis in outcome.hidden_from))
    spared = "; its author still sees it" if outcome.spares_author else ""
    return f"`{outcome.flag.value}` hidden from {bases}{spared}"


def _identity(outcome: int) -> str:
    return f"quarantine, MDN error `{outcome}` ({identity.ERROR_CODES[outcome].label})"


TABLES: tuple[Table, ...] = (
    Table(
        "limits.CONNECTION_CHAIN",
        "Connections (every SMTP port)",
        "At the socket, before any command (and before TLS on ports in clear first); the "
        "session clock when it runs out.",
        limits.CONNECTION_CHAIN,
        _refusal,
    ),
    Table(
        "limits.ENVELOPE_LIMIT_CHAIN",
        "Envelope limits (every SMTP port)",
        "At MAIL (declared SIZE) and at each RCPT (recipient count).",
        limits.ENVELOPE_LIMIT_CHAIN,
        _refusal,
    ),
    Table(
        "limits.DATA_READ_CHAIN",
        "Reading the data (every SMTP port)",
        "By the DATA reader, before any handler sees the message.",
        limits.DATA_READ_CHAIN,
        _refusal,
    ),
    Table(
        "inbound.MAIL_CHAIN",
        "Operators' port: MAIL FROM",
        "At MAIL on the operators' port: the connection and the sender.",
        inbound.MAIL_CHAIN,
        _refusal,
    ),
    Table(
        "inbound.RCPT_CHAIN",
        "Operators' port: RCPT TO",
        "At each RCPT on the operators' port.",
        inbound.RCPT_CHAIN,
        _refusal,
    ),
    Table(
        "inbound.DATA_CHAIN",
        "Operators' port: DATA",
        "At the end of DATA on the operators' port, from the header block (and, under the "
        "null sender to a patient, the report).",
        inbound.DATA_CHAIN,
        _refusal,
    ),
    Table(
        "submission.SENDER_CHAIN",
        "Submission: sender",
        "At MAIL on the submission ports, and for each header From at DATA (and in the webmail).",
        submission.SENDER_CHAIN,
        _refusal,
    ),
    Table(
        "submission.HEADER_CHAIN",
        "Submission: header block",
        "At the end of DATA on the submission ports, before the header From is judged.",
        submission.HEADER_CHAIN,
        _refusal,
    ),
    Table(
        "submission.RECIPIENT_CHAIN",
        "Submission: recipients",
        "At each RCPT on the submission ports (and for each recipient in the webmail).",
        submission.RECIPIENT_CHAIN,
        _refusal,
    ),
    Table(
        "access.ACCESS_RULES",
        "Access to a patient's record",
        "By the FHIR and patient APIs and the CLI, before a record is opened; a denial is "
        "HTTP 403 with the rule id, and every decision is audited (F4).",
        access.ACCESS_RULES,
        _access,
    ),
    Table(
        "access.VISIBILITY_RULES",
        "Document visibility",
        "Per document, on the basis the access was allowed on; a hidden document is absent "
        "(search leaves it out, a read answers 404).",
        access.VISIBILITY_RULES,
        _hiding,
    ),
    Table(
        "access.RIGHT_CHANGE_RULES",
        "Changes of a professional's rights",
        "When the patient (or the operator) blocks or authorises a professional (HTTP 409, "
        "CLI error).",
        access.RIGHT_CHANGE_RULES,
        lambda outcome: "refuse the change",
    ),
    Table(
        "identity.MAILBOX_RULES",
        "Identity check: the mailbox",
        "By the filing job, for every document delivered to a mailbox.",
        identity.MAILBOX_RULES,
        _identity,
    ),
    Table(
        "identity.DOCUMENT_RULES",
        "Identity check: structured documents",
        "By the filing job, for each CDA (alone, in an XDM archive or in HL7 v2).",
        identity.DOCUMENT_RULES,
        _identity,
    ),
    Table(
        "exchange.END_OF_EXCHANGE_RULES",
        "End of an exchange",
        "At DATA, from the header block of a professional's message (never a refusal).",
        exchange.END_OF_EXCHANGE_RULES,
        lambda outcome: "the patient may no longer answer this professional",
    ),
    Table(
        "mss_headers.READABLE_RULES",
        "MSSanté headers: readable",
        "By the filing job; a finding is recorded on the message, never a refusal.",
        mss_headers.READABLE_RULES,
        lambda outcome: f"finding `{outcome}`",
    ),
    Table(
        "mss_headers.CODECDA_RULES",
        "MSSanté headers: X-MSS-CODECDA",
        "By the filing job, against the CDA documents of the XDM archives.",
        mss_headers.CODECDA_RULES,
        lambda outcome: f"finding `{outcome}`",
    ),
    Table(
        "mss_headers.INS_RULES",
        "MSSanté headers: X-MSS-INS",
        "By the filing job, against the INS of the CDA documents.",
        mss_headers.INS_RULES,
        lambda outcome: f"finding `{outcome}`",
    ),
    Table(
        "mss_headers.NIL_RULES",
        "MSSanté headers: X-MSS-NIL",
        "By the filing job.",
        mss_headers.NIL_RULES,
        lambda outcome: f"finding `{outcome}`",
    ),
)

POLICY_MODULES = (access, exchange, identity, inbound, limits, mss_headers, submission)
"""The modules that define rule tables (the tests check each of their tables is listed)."""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def refusals_markdown() -> str:
    """``docs/refusals.md``: every table, every row, in the order the tables decide."""
    lines = [
        "# Refusals and decisions: every rule table",
        "",
        "<!-- Written by `caducee rules > docs/refusals.md` from caducee/policies/tables.py;",
        "     tests/policies/test_rule_tables.py fails when this file and the tables differ. -->",
        "",
        "Every decision of the gateway is a row of a rule table (`caducee/policies/`): the",
        "first row whose condition holds decides, and its id (`<spec id>.<slug>`) is what the",
        "refusal, the log line, the audit event and the metric",
        '`caducee_rule_hits_total{rule="…"}` name. Tables are listed in the order a message',
        "meets them.",
        "",
    ]
    for table in TABLES:
        lines += [
            f"## {table.title}",
            "",
            f"`{table.name}`: {table.asked}",
            "",
            "| rule | outcome | when |",
            "|---|---|---|",
        ]
        lines += [
            f"| `{rule.id}` | {_cell(table.outcome(rule.outcome))} | {_cell(rule.summary)} |"
            for rule in table.rules
        ]
        lines.append("")
    return "\n".join(lines)
