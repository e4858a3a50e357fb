"""Read receipts (G2): one RFC 8098 ``displayed`` MDN the first time a patient reads a message.

A professional who wants to know that the patient opened a message asks for it
with ``Disposition-Notification-To``. The spec says the patient cannot refuse,
so the gateway — not the patient's mail client — sends the receipt, at the
first ``\\Seen`` (IMAP STORE, a non-peek FETCH, or the webmail).

"Never twice" is a database fact, not a flag check: :func:`queue_displayed_receipt`
runs inside the transaction that adds ``\\Seen`` and inserts a ``read_receipts``
row keyed by (message, account) with ``ON CONFLICT DO NOTHING``. Only the
transaction whose insert took effect queues the MDN, through
:func:`caducee.mailboxes.outbound.queue_outbound` (null envelope sender,
purpose ``mdn``); un-seeing and re-seeing, two IMAP sessions racing, or the
same message copied into two folders all end with one row and one MDN.

The receipt carries no health content: a fixed French/English text, the
machine-readable ``message/disposition-notification`` part and the original
header block (the sender's own headers, for correlation — the same choice as
the integration receipts of G3). Receipts go only to requested addresses in
the domain of the message's sender, never elsewhere (RFC 8098 §2.1, §6.2: a
header must not turn the gateway into a reflector); reports and bounces never
get one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.parser import BytesHeaderParser
from email.utils import format_datetime, getaddresses, make_msgid
from typing import cast

from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from caducee.mailboxes.imap_models import ReadReceipt
from caducee.mailboxes.outbound import queue_outbound
from caducee.storage.blobs import BlobStore
from caducee.storage.db import utcnow
from caducee.storage.jobs import JobQueue
from caducee.storage.upsert import upsert_insert

MDN_PURPOSE = "mdn"
DISPOSITION = "manual-action/MDN-sent-automatically; displayed"
REPORTING_UA_PRODUCT = "Caducee"
SUBJECT = "Accusé de lecture"
_MAX_RECIPIENTS = 5
_MAX_HEADER_BLOCK = 64 * 1024
_FIELDS_POLICY = policy.SMTP.clone(max_line_length=998)
_RECEIPTS = cast(Table, ReadReceipt.__table__)


@dataclass(frozen=True)
class ReadMessage:
    """What the receipt needs to know about the message that was just read."""

    message_id: int
    account_id: int
    account_address: str
    envelope_from: str
    raw: bytes


def header_block(raw: bytes) -> bytes:
    """The header block of a message (without the blank line), bounded in size."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    return raw[: end if end >= 0 else len(raw)][:_MAX_HEADER_BLOCK]


def asks_for_receipt(raw_header: bytes) -> bool:
    """Cheap test: does this header block carry ``Disposition-Notification-To``?"""
    return b"disposition-notification-to" in raw_header.lower()


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


def _one_line(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, TypeError, IndexError):
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def receipt_recipients(headers: EmailMessage, envelope_from: str) -> list[str]:
    """The requested addresses a displayed receipt may go to (in the sender's domain)."""
    if not envelope_from or headers.get_content_type() == "multipart/report":
        return []
    try:
        requested = headers.get_all("Disposition-Notification-To") or []
        header_from = headers.get_all("From") or []
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
    return recipients[:_MAX_RECIPIENTS]


def build_displayed_mdn(
    headers: EmailMessage,
    raw_header: bytes,
    *,
    from_address: str,
    recipients: Sequence[str],
    reporting_host: str,
    now: datetime | None = None,
) -> bytes:
    """The RFC 8098 ``displayed`` notification, CRLF line ends, ready to relay."""
    report = EmailMessage(policy=policy.SMTP)
    report["From"] = Address(addr_spec=from_address)
    report["To"] = ", ".join(recipients)
    report["Subject"] = SUBJECT
    report["Date"] = format_datetime(now or datetime.now(UTC))
    report["Message-ID"] = make_msgid(domain=reporting_host)
    original_id = _one_line(headers, "Message-ID")
    if original_id:
        report["In-Reply-To"] = original_id
        report["References"] = original_id
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = "multipart/report; report-type=disposition-notification"

    human = MIMEPart(policy=policy.SMTP)
    human.set_content(
        "Le message que vous avez envoyé a été affiché par son destinataire.\r\n"
        "The message you sent was displayed by its recipient.\r\n"
        "Ce message a été envoyé automatiquement.\r\n",
        charset="utf-8",
        cte="quoted-printable",
    )
    fields = EmailMessage(policy=_FIELDS_POLICY)
    fields["Reporting-UA"] = f"{reporting_host}; {REPORTING_UA_PRODUCT}"
    original_recipient = _one_line(headers, "Original-Recipient")
    kind, _, given = original_recipient.partition(";")
    if kind.strip().lower() == "rfc822" and "@" in given:
        fields["Original-Recipient"] = f"rfc822;{given.strip()}"
    fields["Final-Recipient"] = f"rfc822;{from_address}"
    if original_id:
        fields["Original-Message-ID"] = original_id
    fields["Disposition"] = DISPOSITION
    notification = MIMEPart(policy=policy.SMTP)
    notification["Content-Type"] = "message/disposition-notification"
    notification.set_payload([fields])
    original = MIMEPart(policy=policy.SMTP)
    original.set_content(
        raw_header.decode("utf-8", "replace").replace("\r\n", "\n") + "\n",
        subtype="rfc822-headers",
        charset="utf-8",
    )
    report.set_payload([human, notification, original])
    return report.as_bytes(policy=policy.SMTP)


def queue_displayed_receipt(
    session: Session,
    blobs: BlobStore,
    queue: JobQueue,
    read: ReadMessage,
    *,
    reporting_host: str,
) -> int | None:
    """Queue the G2 receipt for ``read`` if it asked for one and none was queued; return the job.

    Call it in the transaction that adds the first ``\\Seen``; the caller has
    already checked that the reader is the patient the message was delivered to.
    """
    raw_header = header_block(read.raw)
    if not asks_for_receipt(raw_header):
        return None
    headers = BytesHeaderParser(policy=policy.default).parsebytes(raw_header + b"\r\n\r\n")
    if not isinstance(headers, EmailMessage) or not headers.get_all("Disposition-Notification-To"):
        return None
    claimed = (
        session.connection()
        .execute(
            upsert_insert(session, _RECEIPTS)
            .values(
                message_id=read.message_id,
                account_id=read.account_id,
                job_id=None,
                recipients=0,
                reason="pending",
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["message_id", "account_id"])
            .returning(_RECEIPTS.c.id)
        )
        .first()
    )
    if claimed is None:  # another transaction (or an earlier read) already queued it
        return None
    recipients = receipt_recipients(headers, read.envelope_from)
    job_id: int | None = None
    reason = "no-allowed-recipient"
    if recipients:
        content = build_displayed_mdn(
            headers,
            raw_header,
            from_address=read.account_address,
            recipients=recipients,
            reporting_host=reporting_host,
        )
        job_id = queue_outbound(
            session,
            blobs,
            queue,
            envelope_from="",
            recipients=recipients,
            content=content,
            purpose=MDN_PURPOSE,
        )
        reason = "sent"
    session.connection().execute(
        update(_RECEIPTS)
        .where(
            _RECEIPTS.c.message_id == read.message_id,
            _RECEIPTS.c.account_id == read.account_id,
        )
        .values(job_id=job_id, recipients=len(recipients), reason=reason)
    )
    return job_id
