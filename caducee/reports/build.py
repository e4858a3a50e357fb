"""The one ``multipart/report`` builder (RFC 6522) and the rules every report shares.

A report is three parts: a short text for humans (quoted-printable UTF-8), the machine part
(``message/delivery-status``, RFC 3464, or ``message/disposition-notification``, RFC 8098)
written as blocks of unfolded ``Name: value`` lines in ASCII separated by blank lines,
and the original message's header block as ``text/rfc822-headers`` — never its body: a
report must not mail health content back. The envelope is the same for all: a fresh
Message-ID of the reporting host, ``In-Reply-To``/``References`` to the original when it
had a Message-ID, and ``Auto-Submitted: auto-replied`` so that no auto-responder answers it
(RFC 3834).

Receipts (MDNs) go only to requested addresses in the domain of the message's sender
(envelope or ``From``): a header must not turn the gateway into a reflector towards third
parties (RFC 8098 §2.1, §6.2); reports and bounces never get one (no receipt loops).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Literal

REPORTING_UA_PRODUCT = "Caducee"
MAX_RECIPIENTS = 5
MAX_HEADER_BLOCK = 64 * 1024
MAX_FIELD = 900
REPORT_CONTENT_TYPE = "multipart/report"

ReportType = Literal["delivery-status", "disposition-notification"]
Fields = Sequence[tuple[str, str | None]]
"""One block of report fields; a field whose value is empty or None is left out."""

# Report headers may be long (References) and are never folded inside a word.
_POLICY = policy.SMTP.clone(max_line_length=998)


def header_block(raw: bytes) -> bytes:
    """The header block of a message (without the blank line), bounded in size."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    return raw[: end if end >= 0 else len(raw)][:MAX_HEADER_BLOCK]


def header_text(message: EmailMessage, name: str) -> str:
    """A header's decoded value on one line, or ``""`` when absent or unreadable."""
    try:
        value = message.get(name)
    except (ValueError, TypeError, IndexError):
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def one_line(text: str) -> str:
    """A field value on one line, ASCII, bounded (report fields are 7-bit)."""
    flat = " ".join(text.split())
    return flat.encode("ascii", "replace").decode("ascii")[:MAX_FIELD]


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


def is_report(message: EmailMessage) -> bool:
    """DSNs and MDNs: never answered with a receipt."""
    return message.get_content_type() == REPORT_CONTENT_TYPE


def receipt_recipients(message: EmailMessage, envelope_from: str) -> list[str]:
    """The ``Disposition-Notification-To`` addresses a receipt may go to (may be empty)."""
    if not envelope_from or is_report(message):
        return []
    try:
        requested = message.get_all("Disposition-Notification-To") or []
        header_from = message.get_all("From") or []
    except (ValueError, TypeError, IndexError):
        return []
    domains = {_domain(envelope_from)}
    domains |= {_domain(address) for _, address in getaddresses([str(v) for v in header_from])}
    domains.discard("")
    recipients: list[str] = []
    for _, address in getaddresses([str(value) for value in requested]):
        address = address.strip().lower()
        if "@" not in address or any(char.isspace() for char in address):
            continue
        if _domain(address) in domains and address not in recipients:
            recipients.append(address)
    return recipients[:MAX_RECIPIENTS]


def original_recipient(message: EmailMessage, final_recipient: str) -> str:
    """The ``Original-Recipient`` the sender gave (``rfc822;``), else ``final_recipient``."""
    given = header_text(message, "Original-Recipient")
    kind, _, address = given.partition(";")
    if kind.strip().lower() == "rfc822" and "@" in address:
        return f"rfc822;{address.strip()}"
    return f"rfc822;{final_recipient}"


def _fields_block(fields: Fields) -> EmailMessage:
    """One block of ``Name: value`` lines, unfolded (some receivers do not unfold them)."""
    block = EmailMessage(policy=_POLICY)
    for name, value in fields:
        text = one_line(value) if value else ""
        if text:
            block[name] = text
    return block


def build_report(
    *,
    report_type: ReportType,
    sender: Address,
    to: Sequence[str],
    subject: str,
    reporting_host: str,
    original_message_id: str,
    human_text: str,
    fields: Sequence[Fields],
    original_headers: bytes,
    now: datetime | None = None,
) -> bytes:
    """One ``multipart/report`` of ``report_type``, CRLF line ends, ready to relay."""
    report = EmailMessage(policy=_POLICY)
    report["From"] = sender
    report["To"] = ", ".join(to)
    report["Subject"] = subject
    report["Date"] = format_datetime((now or datetime.now(UTC)).astimezone(UTC))
    report["Message-ID"] = make_msgid(domain=reporting_host)
    if original_message_id.startswith("<") and original_message_id.endswith(">"):
        report["In-Reply-To"] = original_message_id
        report["References"] = original_message_id
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = f"{REPORT_CONTENT_TYPE}; report-type={report_type}"

    human = MIMEPart(policy=policy.SMTP)  # quoted-printable lines stay within 76 characters
    human.set_content(human_text, charset="utf-8", cte="quoted-printable")

    machine = MIMEPart(policy=_POLICY)
    machine["Content-Type"] = f"message/{report_type}"
    machine.set_payload([_fields_block(block) for block in fields])

    headers = MIMEPart(policy=_POLICY)
    headers.set_content(
        original_headers.decode("utf-8", "replace").replace("\r\n", "\n") + "\n",
        subtype="rfc822-headers",
        charset="utf-8",
    )
    report.set_payload([human, machine, headers])
    return report.as_bytes(policy=_POLICY)
