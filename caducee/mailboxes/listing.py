"""Read a mailbox for the operator: what ``caducee mailbox list`` shows until IMAP lands."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.mailboxes.accounts.store import find_account
from caducee.mailboxes.models import Folder, MailboxEntry, StoredMessage
from caducee.storage.blobs import BlobStore

HEADER_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ListedMessage:
    """One line of a mailbox listing."""

    folder: str
    uid: int
    received_at: datetime
    sender: str
    header_from: str | None
    subject: str
    size: int
    flags: str


class UnknownMailbox(LookupError):
    """No account owns this address."""


def list_messages(session: Session, blobs: BlobStore, address: str) -> list[ListedMessage]:
    """Every message of every folder of ``address``, oldest first."""
    account = find_account(session, address)
    if account is None:
        raise UnknownMailbox(address)
    rows = session.execute(
        select(Folder.name, MailboxEntry, StoredMessage)
        .join(MailboxEntry, MailboxEntry.folder_id == Folder.id)
        .join(StoredMessage, StoredMessage.id == MailboxEntry.message_id)
        .where(Folder.account_id == account.id)
        .order_by(Folder.name, MailboxEntry.uid)
    ).all()
    listed = []
    for folder, entry, message in rows:
        raw = blobs.read(session, message.blob_id)
        end = raw.find(b"\r\n\r\n")
        headers = BytesHeaderParser(policy=default_policy).parsebytes(
            raw[: end if 0 <= end < HEADER_LIMIT else HEADER_LIMIT]
        )
        listed.append(
            ListedMessage(
                folder=folder,
                uid=entry.uid,
                received_at=message.received_at,
                sender=message.envelope_from or "<>",
                header_from=message.header_from,
                subject=str(headers.get("Subject", "") or ""),
                size=message.size,
                flags=entry.flags,
            )
        )
    return listed
