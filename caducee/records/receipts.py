"""Integration receipts (G3): the MDN that tells a sender whether its report was filed.

A report-producing system that wants to know whether its ``IHE_XDM.zip`` reached the
patient's record asks for a receipt with ``Disposition-Notification-To`` (RFC 8098; the
MSSanté IG "Transmission au LPS de documents CDA provenant d'un courriel MSSanté",
``struct-msg-mdn``). After filing, the gateway answers with a ``multipart/report;
report-type=disposition-notification``:

1. a short French text for humans (no INS, no name: only whether it worked and the code);
2. ``message/disposition-notification`` with ``Reporting-UA``, ``Original-Recipient``,
   ``Final-Recipient``, ``Original-Message-ID`` and ``Disposition:
   automatic-action/MDN-sent-automatically; processed`` on success, or
   ``processed/Error: <code>^<label>`` on failure (E3 codes 902–905, 906 otherwise);
3. the original header block (``text/rfc822-headers``). The IG re-attaches the whole
   original message and its files; we send only the headers, which identify it, rather than
   mailing health content back (up to 25 MB) to its author.

The subject follows the MSSanté convention: the original subject on success,
``[KO Intégration système !][<code>] <original subject>`` on failure.

Receipts go to the ``Disposition-Notification-To`` addresses whose domain is the domain of
the message's sender (envelope or ``From``), never elsewhere: a header may not turn the
gateway into a reflector towards third parties (RFC 8098 §2.1, §6.2). Reports and bounces
(``multipart/report``, null sender) never get one. The report is written by
:func:`caducee.reports.build_report`, like every DSN and MDN the gateway sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage

from caducee.policies.identity import ErrorCode
from caducee.reports import (
    REPORTING_UA_PRODUCT,
    build_report,
    header_block,
    header_text,
    is_report,
    original_recipient,
    receipt_recipients,
)

MDN_PURPOSE = "mdn"
KO_PREFIX = "[KO Intégration système !]"
XDM_SUBJECT_PREFIX = "XDM/1.0/DDM"
DISPOSITION_MODE = "automatic-action/MDN-sent-automatically"
__all__ = ["build_mdn", "disposition", "is_report", "receipt_recipients", "receipt_subject"]


def is_xdm_subject(message: EmailMessage) -> bool:
    """The MSSanté/IHE subject of a mail carrying an XDM report."""
    return header_text(message, "Subject").upper().startswith(XDM_SUBJECT_PREFIX)


def disposition(error: ErrorCode | None) -> str:
    """The ``Disposition`` field value (ASCII) for a success or an E3 failure."""
    if error is None:
        return f"{DISPOSITION_MODE}; processed"
    return f"{DISPOSITION_MODE}; processed/Error: {error.code}^{error.label}"


def receipt_subject(original_subject: str, error: ErrorCode | None) -> str:
    """The MSSanté subject convention for integration receipts."""
    subject = original_subject or "Accusé de traitement"
    if error is None:
        return subject
    return f"{KO_PREFIX}[{error.code}] {subject}"


def _human_text(error: ErrorCode | None) -> str:
    if error is None:
        return (
            "Le document a été intégré au dossier du patient.\r\n"
            "Ce message a été envoyé automatiquement.\r\n"
        )
    return (
        "Le document n'a pas pu être intégré.\r\n"
        f"Le système a retourné l'erreur {error.code}^{error.text}.\r\n"
        "Ce message a été envoyé automatiquement.\r\n"
    )


def build_mdn(
    original: EmailMessage,
    raw_original: bytes,
    *,
    from_address: str,
    recipients: Sequence[str],
    final_recipient: str,
    reporting_host: str,
    error: ErrorCode | None,
    now: datetime | None = None,
) -> bytes:
    """The RFC 8098 integration receipt for ``original``, as bytes ready to relay (CRLF)."""
    original_id = header_text(original, "Message-ID")
    fields = [
        ("Reporting-UA", f"{reporting_host}; {REPORTING_UA_PRODUCT}"),
        ("Original-Recipient", original_recipient(original, final_recipient)),
        ("Final-Recipient", f"rfc822;{final_recipient}"),
        ("Original-Message-ID", original_id),
        ("Disposition", disposition(error)),
    ]
    return build_report(
        report_type="disposition-notification",
        sender=Address(addr_spec=from_address),
        to=recipients,
        subject=receipt_subject(header_text(original, "Subject"), error),
        reporting_host=reporting_host,
        original_message_id=original_id,
        human_text=_human_text(error),
        fields=[fields],
        original_headers=header_block(raw_original),
        now=now,
    )
