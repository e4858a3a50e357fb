"""What the operator's quarantine holds (E3, E4, E5): ids, types, sizes and rules, no content.

- patient copies still held (the filing job has not decided) or withheld whole (a message
  about another patient, :mod:`caducee.records.withheld`);
- attachments withheld from a patient's copy (``record_attachments.withheld``);
- documents quarantined by the identity check (E3) and documents in conflict with one the
  record already holds under the same uniqueId (E4).

Nothing here returns a name, a subject, a title or a file name (J2); :func:`item_content`
returns the bytes of one item for the operator who asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.records.models import (
    HELD_STATE,
    MAIL_ACCOUNTS,
    MAIL_HELD,
    MAIL_MESSAGES,
    WITHHELD_STATE,
    DocumentState,
    RecordAttachment,
    RecordDocument,
)
from caducee.records.withheld import attachment_bytes
from caducee.storage.blobs import BlobStore

E4_CONFLICT_RULE = "E4-conflict"


@dataclass(frozen=True)
class QuarantineItem:
    """One line of the operator's quarantine."""

    id: str
    """``message:<n>``, ``part:<n>`` or ``document:<public id>``."""
    kind: str
    """``held``, ``withheld-message``, ``withheld-part``, ``quarantined`` or ``conflict``."""
    account: str
    message: int | None
    content_type: str | None
    size: int | None
    rule: str | None
    since: datetime | None
    error_code: int | None = None
    related: str | None = None
    """For a conflict: the document of the record that holds the uniqueId."""


def _addresses(session: Session, account_ids: set[int]) -> dict[int, str]:
    if not account_ids:
        return {}
    rows = session.execute(
        select(MAIL_ACCOUNTS.c.id, MAIL_ACCOUNTS.c.address).where(
            MAIL_ACCOUNTS.c.id.in_(sorted(account_ids))
        )
    ).all()
    return {int(row.id): str(row.address) for row in rows}


def quarantine_items(session: Session) -> list[QuarantineItem]:
    """Everything in quarantine, oldest first within each kind."""
    held = session.execute(
        select(
            MAIL_HELD.c.id,
            MAIL_HELD.c.account_id,
            MAIL_HELD.c.message_id,
            MAIL_HELD.c.state,
            MAIL_HELD.c.withheld_parts,
            MAIL_MESSAGES.c.size,
            MAIL_MESSAGES.c.received_at,
        )
        .join(MAIL_MESSAGES, MAIL_MESSAGES.c.id == MAIL_HELD.c.message_id)
        .where(MAIL_HELD.c.state.in_((HELD_STATE, WITHHELD_STATE)))
        .order_by(MAIL_HELD.c.id)
    ).all()
    parts = session.scalars(
        select(RecordAttachment)
        .where(RecordAttachment.withheld.is_(True))
        .order_by(RecordAttachment.id)
    ).all()
    documents = session.scalars(
        select(RecordDocument)
        .where(
            RecordDocument.state.in_(
                (DocumentState.QUARANTINED.value, DocumentState.CONFLICT.value)
            )
        )
        .order_by(RecordDocument.id)
    ).all()
    originals = {
        row.id: row.public_id
        for row in session.execute(
            select(RecordDocument.id, RecordDocument.public_id).where(
                RecordDocument.id.in_(
                    sorted({d.duplicate_of_id for d in documents if d.duplicate_of_id})
                )
            )
        )
    }
    accounts = _addresses(
        session,
        {int(row.account_id) for row in held}
        | {p.account_id for p in parts}
        | {d.account_id for d in documents},
    )
    items = [
        QuarantineItem(
            id=f"message:{row.id}",
            kind="held" if row.state == HELD_STATE else "withheld-message",
            account=accounts.get(int(row.account_id), ""),
            message=int(row.message_id),
            content_type="message/rfc822",
            size=int(row.size),
            rule=None if row.state == HELD_STATE else "E3-another-patient",
            since=row.received_at,
        )
        for row in held
    ]
    items += [
        QuarantineItem(
            id=f"part:{part.id}",
            kind="withheld-part",
            account=accounts.get(part.account_id, ""),
            message=part.message_id,
            content_type=part.content_type,
            size=part.size,
            rule=part.withheld_reason,
            since=part.created_at,
        )
        for part in parts
    ]
    items += [
        QuarantineItem(
            id=f"document:{document.public_id}",
            kind="conflict" if document.state == DocumentState.CONFLICT.value else "quarantined",
            account=accounts.get(document.account_id, ""),
            message=document.message_id,
            content_type=document.mime_type,
            size=document.size,
            rule=(
                E4_CONFLICT_RULE
                if document.state == DocumentState.CONFLICT.value
                else document.identity_rule
            ),
            since=document.received_at,
            error_code=document.error_code,
            related=(
                f"document:{originals[document.duplicate_of_id]}"
                if document.duplicate_of_id in originals
                else None
            ),
        )
        for document in documents
    ]
    return items


def find_item(session: Session, item_id: str) -> QuarantineItem | None:
    """One item by its id."""
    return next((item for item in quarantine_items(session) if item.id == item_id), None)


def item_content(session: Session, blobs: BlobStore, item_id: str) -> bytes | None:
    """The bytes of one quarantined item (the message, the part, the document), or None."""
    kind, _, value = item_id.partition(":")
    if kind == "document":
        document = session.scalar(
            select(RecordDocument).where(
                RecordDocument.public_id == value,
                RecordDocument.state.in_(
                    (DocumentState.QUARANTINED.value, DocumentState.CONFLICT.value)
                ),
            )
        )
        if document is None or document.content_blob_id is None:
            return None
        return blobs.read(session, document.content_blob_id)
    if not value.isdigit():
        return None
    if kind == "message":
        message_id = session.scalar(
            select(MAIL_HELD.c.message_id).where(
                MAIL_HELD.c.id == int(value),
                MAIL_HELD.c.state.in_((HELD_STATE, WITHHELD_STATE)),
            )
        )
        position = None
    elif kind == "part":
        part = session.get(RecordAttachment, int(value))
        if part is None or not part.withheld:
            return None
        message_id, position = part.message_id, part.position
    else:
        return None
    if message_id is None:
        return None
    blob_id = session.scalar(
        select(MAIL_MESSAGES.c.blob_id).where(MAIL_MESSAGES.c.id == message_id)
    )
    if blob_id is None:
        return None
    raw = blobs.read(session, str(blob_id))
    return raw if position is None else attachment_bytes(raw, position)
