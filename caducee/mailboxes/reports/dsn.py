"""Delivery status notifications (G4): the RFC 3464 report a sender gets on delay or failure.

A relayed message that cannot be delivered, or not yet, is reported to its
envelope sender as ``multipart/report; report-type=delivery-status``:

1. a short human-readable text, in French then English, naming the recipients,
   the status codes and what the remote server answered — never the body;
2. ``message/delivery-status``: the per-message fields (``Reporting-MTA``,
   ``Arrival-Date``) then one block per recipient (``Final-Recipient``,
   ``Action: failed|delayed``, ``Status``, ``Remote-MTA``, ``Diagnostic-Code``,
   ``Last-Attempt-Date`` and, for delays, ``Will-Retry-Until``);
3. the original header block as ``text/rfc822-headers`` (RFC 3462 / RFC 6522):
   enough for the sender to recognise the message, without mailing its health
   content back (RET=HDRS is our only return mode).

This module says what a DSN contains; :func:`caducee.reports.build_report` writes it, as it
writes every report. It does no I/O. The relay decides when a DSN is
due and sends it with the null sender (``MAIL FROM:<>``), and never about a
message that itself had the null sender (RFC 3461 §6.2, RFC 5321 §4.5.5), which
is what prevents bounce loops: :func:`dsn_allowed` is that rule.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime

from caducee.reports import build_report, header_block, header_text, one_line
from caducee.reports.build import Fields

DSN_PURPOSE = "dsn"
REPORTER_LOCAL_PART = "MAILER-DAEMON"


class Action(enum.StrEnum):
    """The RFC 3464 ``Action`` values the relay reports."""

    FAILED = "failed"
    DELAYED = "delayed"


@dataclass(frozen=True)
class RecipientReport:
    """What the DSN says about one recipient."""

    address: str
    action: Action
    status: str
    """Enhanced status code (RFC 3463): ``5.x.x`` for failed, ``4.x.x`` for delayed."""
    remote_mta: str | None = None
    diagnostic: str | None = None
    """The remote server's reply (``550 5.1.1 ...``), or our own reason."""
    diagnostic_type: str = "smtp"
    """``smtp`` for a remote reply; ``X-Caducee`` for a reason of ours (TLS, DNS...)."""
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None


def dsn_allowed(envelope_from: str) -> bool:
    """A DSN may be sent about a message only if it had a sender (never about a bounce)."""
    return bool(envelope_from.strip().strip("<>"))


def _original_message_id(raw: bytes) -> str:
    """The original's Message-ID (for threading only), or ``""``."""
    headers = BytesHeaderParser(policy=policy.default).parsebytes(header_block(raw) + b"\r\n\r\n")
    return header_text(headers, "Message-ID") if isinstance(headers, EmailMessage) else ""


def _date(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC))


def _recipient_line_fr(report: RecipientReport) -> str:
    line = f"  - {report.address} : statut {report.status}"
    if report.diagnostic:
        source = "réponse du serveur distant" if report.diagnostic_type == "smtp" else "motif"
        line += f" ({source} : {one_line(report.diagnostic)})"
    return line


def _recipient_line_en(report: RecipientReport) -> str:
    line = f"  - {report.address}: status {report.status}"
    if report.diagnostic:
        source = "remote server replied" if report.diagnostic_type == "smtp" else "reason"
        line += f" ({source}: {one_line(report.diagnostic)})"
    return line


def _human_text(
    reporting_mta: str, failed: list[RecipientReport], delayed: list[RecipientReport]
) -> str:
    lines = [f"Ceci est un message automatique du serveur {reporting_mta}.", ""]
    if failed:
        lines.append("Votre message n'a pas pu être distribué aux destinataires suivants :")
        lines += [_recipient_line_fr(r) for r in failed]
        lines.append("")
    if delayed:
        until = next((r.will_retry_until for r in delayed if r.will_retry_until), None)
        lines.append("La distribution de votre message aux destinataires suivants est retardée :")
        lines += [_recipient_line_fr(r) for r in delayed]
        if until is not None:
            lines.append(
                f"De nouvelles tentatives auront lieu jusqu'au {until:%d/%m/%Y %H:%M} UTC ;"
                " vous n'avez rien à faire pour le moment."
            )
        lines.append("")
    lines += [
        "Le contenu du message n'est pas joint ; seuls ses en-têtes le sont.",
        "",
        "---",
        "",
        f"This is an automatic message from the server {reporting_mta}.",
        "",
    ]
    if failed:
        lines.append("Your message could not be delivered to the following recipients:")
        lines += [_recipient_line_en(r) for r in failed]
        lines.append("")
    if delayed:
        until = next((r.will_retry_until for r in delayed if r.will_retry_until), None)
        lines.append("Delivery of your message to the following recipients is delayed:")
        lines += [_recipient_line_en(r) for r in delayed]
        if until is not None:
            lines.append(
                f"Delivery will be retried until {until:%Y-%m-%d %H:%M} UTC;"
                " you need not do anything yet."
            )
        lines.append("")
    lines.append("The message content is not attached; only its header is.")
    return "\r\n".join(lines) + "\r\n"


def subject_of(recipients: Sequence[RecipientReport]) -> str:
    """A fixed subject: the original subject is in the attached header block, not here."""
    if any(r.action is Action.FAILED for r in recipients):
        return "Message non distribué / Undelivered message"
    return "Distribution retardée / Delivery delayed"


def build_dsn(
    original: bytes,
    *,
    recipients: Sequence[RecipientReport],
    to: str,
    reporting_mta: str,
    arrival: datetime,
    from_address: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """The RFC 3464 report about ``original`` for ``recipients``, CRLF line ends, ready to send.

    ``original`` is the message as it was queued (only its header block is
    used); ``to`` is the original envelope sender; ``reporting_mta`` our host name.
    """
    if not recipients:
        raise ValueError("a DSN reports on at least one recipient")
    when = now or datetime.now(UTC)
    failed = [r for r in recipients if r.action is Action.FAILED]
    delayed = [r for r in recipients if r.action is Action.DELAYED]
    blocks: list[Fields] = [
        [("Reporting-MTA", f"dns; {reporting_mta}"), ("Arrival-Date", _date(arrival))]
    ]
    for r in recipients:
        diagnostic = f"{r.diagnostic_type}; {r.diagnostic}" if r.diagnostic else None
        blocks.append(
            [
                ("Final-Recipient", f"rfc822; {r.address}"),
                ("Action", r.action.value),
                ("Status", r.status),
                ("Remote-MTA", f"dns; {r.remote_mta}" if r.remote_mta else None),
                ("Diagnostic-Code", diagnostic),
                ("Last-Attempt-Date", _date(r.last_attempt) if r.last_attempt else None),
                (
                    "Will-Retry-Until",
                    _date(r.will_retry_until)
                    if r.will_retry_until and r.action is Action.DELAYED
                    else None,
                ),
            ]
        )
    return build_report(
        report_type="delivery-status",
        sender=Address(
            display_name="Mail Delivery System",
            addr_spec=from_address or f"{REPORTER_LOCAL_PART}@{reporting_mta}",
        ),
        to=[str(Address(addr_spec=to))],
        subject=subject_of(recipients),
        reporting_host=reporting_mta,
        original_message_id=_original_message_id(original),
        human_text=_human_text(reporting_mta, failed, delayed),
        fields=blocks,
        original_headers=header_block(original),
        now=when,
    )
