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
(``multipart/report``, null sender) never get one. Everything is built with the standard
``email`` package, and parses back as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime, getaddresses, make_msgid

from caducee.policies.identity import ErrorCode

MDN_PURPOSE = "mdn"
KO_PREFIX = "[KO Intégration système !]"
XDM_SUBJECT_PREFIX = "XDM/1.0/DDM"
DISPOSITION_MODE = "automatic-action/MDN-sent-automatically"
REPORTING_UA_PRODUCT = "Caducee"
_MAX_RECIPIENTS = 5
_MAX_HEADER_BLOCK = 64 * 1024
_MAX_FIELD = 900


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


def _header_text(message: EmailMessage, name: str) -> str:
    """A header's decoded value, or ``""`` when absent or unreadable."""
    try:
        value = message.get(name)
    except (ValueError, TypeError, IndexError):
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def is_report(message: EmailMessage) -> bool:
    """DSNs and MDNs: never answered with an MDN (no receipt loops)."""
    return message.get_content_type() == "multipart/report"


def is_xdm_subject(message: EmailMessage) -> bool:
    """The MSSanté/IHE subject of a mail carrying an XDM report."""
    return _header_text(message, "Subject").upper().startswith(XDM_SUBJECT_PREFIX)


def receipt_recipients(message: EmailMessage, envelope_from: str) -> list[str]:
    """The ``Disposition-Notification-To`` addresses a receipt may go to (may be empty)."""
    if not envelope_from or is_report(message):
        return []
    try:
        requested = message.get_all("Disposition-Notification-To") or []
        sender_from = message.get_all("From") or []
    except (ValueError, TypeError, IndexError):
        return []
    domains = {_domain(envelope_from)}
    domains |= {_domain(address) for _, address in getaddresses([str(v) for v in sender_from])}
    domains.discard("")
    recipients: list[str] = []
    for _, address in getaddresses([str(value) for value in requested]):
        address = address.strip()
        if "@" not in address or any(char.isspace() for char in address):
            continue
        if _domain(address) in domains and address.lower() not in recipients:
            recipients.append(address.lower())
    return recipients[:_MAX_RECIPIENTS]


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


def _original_headers(raw_message: bytes) -> str:
    end = raw_message.find(b"\r\n\r\n")
    if end < 0:
        end = raw_message.find(b"\n\n")
    block = raw_message[: end if end >= 0 else len(raw_message)][:_MAX_HEADER_BLOCK]
    return block.decode("utf-8", errors="replace").replace("\r\n", "\n") + "\n"


def _original_recipient(message: EmailMessage, final_recipient: str) -> str:
    """The ``Original-Recipient`` the sender gave, else the address we delivered to."""
    given = _header_text(message, "Original-Recipient")
    kind, _, address = given.partition(";")
    if kind.strip().lower() == "rfc822" and "@" in address and "\r" not in address:
        return f"rfc822;{address.strip()}"
    return f"rfc822;{final_recipient}"


def _fields_block(fields: Sequence[tuple[str, str]]) -> str:
    """The MDN fields, one per line and never folded (some receivers do not unfold them).

    Values are ASCII without line breaks (header values were whitespace-collapsed); the
    generator writes this block as it is, so its lines end in CRLF already.
    """
    lines = []
    for name, value in fields:
        text = " ".join(value.split()).encode("ascii", "replace").decode("ascii")[:_MAX_FIELD]
        if text:
            lines.append(f"{name}: {text}")
    return "\r\n".join(lines) + "\r\n"


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
    when = now or datetime.now(UTC)
    report = EmailMessage(policy=policy.SMTP)
    report["From"] = Address(addr_spec=from_address)
    report["To"] = ", ".join(recipients)
    report["Subject"] = receipt_subject(_header_text(original, "Subject"), error)
    report["Date"] = format_datetime(when)
    report["Message-ID"] = make_msgid(domain=reporting_host)
    original_id = _header_text(original, "Message-ID")
    if original_id:
        report["In-Reply-To"] = original_id
        report["References"] = original_id
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = "multipart/report; report-type=disposition-notification"

    human = MIMEPart(policy=policy.SMTP)
    human.set_content(_human_text(error), charset="utf-8", cte="quoted-printable")

    fields = [
        ("Reporting-UA", f"{reporting_host}; {REPORTING_UA_PRODUCT}"),
        ("Original-Recipient", _original_recipient(original, final_recipient)),
        ("Final-Recipient", f"rfc822;{final_recipient}"),
        ("Original-Message-ID", original_id),
        ("Disposition", disposition(error)),
    ]
    notification = MIMEPart(policy=policy.SMTP)
    notification["Content-Type"] = "message/disposition-notification"
    notification.set_payload(_fields_block(fields))

    headers = MIMEPart(policy=policy.SMTP)
    headers.set_content(_original_headers(raw_original), subtype="rfc822-headers", charset="utf-8")

    report.set_payload([human, notification, headers])
    return report.as_bytes(policy=policy.SMTP)
