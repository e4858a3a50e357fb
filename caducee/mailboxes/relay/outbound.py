"""Mail the gateway itself sends: receipts, notices, DSNs and relayed submissions (C5, G2–G4).

Whatever leaves the gateway goes through :func:`queue_outbound` inside the
transaction that decided to send it: the message bytes become an encrypted
blob and one ``relay`` job carries the envelope. The relay worker (outbound
SMTP with our client certificate, DKIM signature, retries, DSNs) or local
delivery takes it from there; nothing is sent from inside a request.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from caducee.mailboxes.accounts.store import recipient_account
from caducee.mailboxes.delivery import SUBMITTED, join_patient_reply
from caducee.mailboxes.models import Folder, MailboxEntry, StoredMessage
from caducee.storage.blobs import BlobStore
from caducee.storage.jobs import JobKind, JobQueue, JobRow, Relay

RELAY_JOB = JobKind.RELAY.value
SUBMISSION = "submission"
"""``purpose`` of a local user's message relayed to another operator (C5)."""
SENT_FOLDER = "Sent"


def queue_outbound(
    session: Session,
    blobs: BlobStore,
    queue: JobQueue,
    *,
    envelope_from: str,
    recipients: Sequence[str],
    content: bytes,
    purpose: str,
    message_id: str | None = None,
) -> int:
    """Store ``content`` encrypted and queue its delivery to ``recipients``; return the job id.

    ``envelope_from`` is ``""`` for the null sender (DSNs and MDNs, RFC 5321
    §4.5.5). ``purpose`` (``mdn``, ``dsn``, ``submission``…) is kept for the
    operator's queue listing; it never holds content. ``message_id`` (the header
    ``Message-ID`` of a submission) lets a report about the message be recognised (B2).
    """
    if not recipients:
        raise ValueError("an outbound message needs at least one recipient")
    blob_id = blobs.write(session, content)
    payload = Relay(
        blob_id=blob_id,
        envelope_from=envelope_from,
        recipients=tuple(r.lower() for r in recipients),
        purpose=purpose,
        message_id=message_id or None,
    )
    if purpose == SUBMISSION and envelope_from:
        _join_conversation(session, envelope_from, content)
    return queue.enqueue(session, payload, max_attempts=1000)


_MESSAGE_ID = re.compile(r"<[^<>\s]{1,990}>")
_HEADER_LIMIT = 64 * 1024


def _join_conversation(session: Session, sender: str, content: bytes) -> None:
    """D1: a patient's reply relayed to another operator joins the conversation it answers."""
    end = content.find(b"\r\n\r\n", 0, _HEADER_LIMIT)
    try:
        headers = BytesHeaderParser(policy=compat32).parsebytes(
            content[: end + 4 if end >= 0 else _HEADER_LIMIT]
        )
        answered = " ".join(
            str(value)
            for value in headers.get_all("In-Reply-To", []) + headers.get_all("References", [])
        )
        own = _MESSAGE_ID.findall(str(headers.get("Message-ID", "") or ""))
    except (ValueError, TypeError, IndexError, AttributeError):
        return
    thread_ids = tuple(dict.fromkeys(_MESSAGE_ID.findall(answered)))
    if not thread_ids:
        return
    patient = recipient_account(session, sender, patient=True)
    if patient is None:
        return
    join_patient_reply(
        session,
        patient.id,
        message_id=None,
        message_id_header=own[0] if own else None,
        thread_ids=thread_ids,
    )


def sent_by(
    session: Session, *, account_id: int, address: str, message_ids: Collection[str]
) -> bool:
    """Did this mailbox send a message with one of ``message_ids``? (B2: reports under ``<>``)

    Sent means: a copy in the account's Sent folder (what its mail client appended), a
    submission of it delivered here, or a submission of it relayed to another operator
    (the ``relay`` job keeps the Message-ID, never the content).
    """
    ids = sorted({i for i in message_ids if i})
    if not ids:
        return False
    in_sent_folder = (
        select(MailboxEntry.id)
        .join(Folder, Folder.id == MailboxEntry.folder_id)
        .join(StoredMessage, StoredMessage.id == MailboxEntry.message_id)
        .where(
            Folder.account_id == account_id,
            or_(Folder.special_use == "\\Sent", Folder.name == SENT_FOLDER),
            StoredMessage.message_id_header.in_(ids),
        )
        .limit(1)
    )
    submitted_here = (
        select(StoredMessage.id)
        .where(
            StoredMessage.direction == SUBMITTED,
            StoredMessage.envelope_from == address.lower(),
            StoredMessage.message_id_header.in_(ids),
        )
        .limit(1)
    )
    relayed = (
        select(JobRow.id)
        .where(
            JobRow.kind == RELAY_JOB,
            JobRow.payload["envelope_from"].as_string() == address.lower(),
            JobRow.payload["message_id"].as_string().in_(ids),
        )
        .limit(1)
    )
    return any(
        session.execute(query).first() is not None
        for query in (in_sent_folder, submitted_here, relayed)
    )
