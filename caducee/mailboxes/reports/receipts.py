"""Read receipts (G2): one RFC 8098 ``displayed`` MDN the first time a patient reads a message.

A professional who wants to know that the patient opened a message asks for it
with ``Disposition-Notification-To``. The spec says the patient cannot refuse,
so the gateway — not the patient's mail client — sends the receipt, at the
first ``\\Seen`` (IMAP STORE, a non-peek FETCH, or the webmail).

"Never twice" is a database fact, not a flag check: :func:`queue_displayed_receipt`
runs inside the transaction that adds ``\\Seen`` and inserts a ``read_receipts``
row keyed by (message, account) with ``ON CONFLICT DO NOTHING``. Only the
transaction whose insert took effect queues the MDN, through
:func:`caducee.mailboxes.relay.outbound.queue_outbound` (null envelope sender,
purpose ``mdn``); un-seeing and re-seeing, two IMAP sessions racing, or the
same message copied into two folders all end with one row and one MDN.

The receipt carries no health content: a fixed French/English text, the
machine-readable ``message/disposition-notification`` part and the original
header block (the sender's own headers, for correlation — the same choice as
the integration receipts of G3), written by :func:`caducee.reports.build_report` like every
report. Receipts go only to requested addresses in
the domain of the message's sender, never elsewhere (RFC 8098 §2.1, §6.2: a
header must not turn the gateway into a reflector); reports and bounces never
get one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import cast

from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from caducee.mailboxes.imap_models import ReadReceipt
from caducee.mailboxes.relay.outbound import queue_outbound
from caducee.reports import (
    REPORTING_UA_PRODUCT,
    build_report,
    header_block,
    header_text,
    original_recipient,
    receipt_recipients,
)
from caducee.storage.blobs import BlobStore
from caducee.storage.db import utcnow
from caducee.storage.jobs import JobQueue
from caducee.storage.upsert import upsert_insert

MDN_PURPOSE = "mdn"
DISPOSITION = "manual-action/MDN-sent-automatically; displayed"
SUBJECT = "Accusé de lecture"
_RECEIPTS = cast(Table, ReadReceipt.__table__)


@dataclass(frozen=True)
class ReadMessage:
    """What the receipt needs to know about the message that was just read."""

    message_id: int
    account_id: int
    account_address: str
    envelope_from: str
    raw: bytes


def asks_for_receipt(raw_header: bytes) -> bool:
    """Cheap test: does this header block carry ``Disposition-Notification-To``?"""
    return b"disposition-notification-to" in raw_header.lower()


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
    original_id = header_text(headers, "Message-ID")
    given = original_recipient(headers, final_recipient="")  # "rfc822;" when none was given
    fields = [
        ("Reporting-UA", f"{reporting_host}; {REPORTING_UA_PRODUCT}"),
        ("Original-Recipient", given if given != "rfc822;" else None),
        ("Final-Recipient", f"rfc822;{from_address}"),
        ("Original-Message-ID", original_id),
        ("Disposition", DISPOSITION),
    ]
    return build_report(
        report_type="disposition-notification",
        sender=Address(addr_spec=from_address),
        to=recipients,
        subject=SUBJECT,
        reporting_host=reporting_host,
        original_message_id=original_id,
        human_text=(
            "Le message que vous avez envoyé a été affiché par son destinataire.\r\n"
            "The message you sent was displayed by its recipient.\r\n"
            "Ce message a été envoyé automatiquement.\r\n"
        ),
        fields=[fields],
        original_headers=raw_header,
        now=now,
    )


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
