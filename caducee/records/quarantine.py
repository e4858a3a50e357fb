"""The record's side of the operator's quarantine (E3, E4, E5): ids, types, sizes and rules.

- attachments withheld from a patient's copy (``record_attachments.withheld``);
- documents quarantined by the identity check (E3) and documents in conflict with one the
  record already holds under the same uniqueId (E4).

The mail side (patient copies still held, or withheld whole) and the mailbox addresses are
``mailboxes``'; :mod:`caducee.jobs.quarantine` composes both into the listing of
``caducee quarantine``. Nothing here returns a name, a subject, a title or a file name (J2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.records.models import DocumentState, RecordAttachment, RecordDocument
from caducee.storage.blobs import BlobStore

E4_CONFLICT_RULE = "E4.conflict"
_KEPT = (DocumentState.QUARANTINED.value, DocumentState.CONFLICT.value)


@dataclass(frozen=True)
class RecordItem:
    """One item of the record's quarantine, for one mailbox (named by its account id)."""

    id: str
    """``part:<n>`` or ``document:<public id>``."""
    kind: str
    """``withheld-part``, ``quarantined`` or ``conflict``."""
    account_id: int
    message: int | None
    content_type: str | None
    size: int | None
    rule: str | None
    since: datetime | None
    error_code: int | None = None
    related: str | None = None
    """For a conflict: the document of the record that holds the uniqueId."""


def record_quarantine(session: Session) -> list[RecordItem]:
    """Withheld parts, then quarantined and conflicting documents, oldest first in each."""
    parts = session.scalars(
        select(RecordAttachment)
        .where(RecordAttachment.withheld.is_(True))
        .order_by(RecordAttachment.id)
    ).all()
    documents = session.scalars(
        select(RecordDocument).where(RecordDocument.state.in_(_KEPT)).order_by(RecordDocument.id)
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
    items = [
        RecordItem(
            id=f"part:{part.id}",
            kind="withheld-part",
            account_id=part.account_id,
            message=part.message_id,
            content_type=part.content_type,
            size=part.size,
            rule=part.withheld_reason,
            since=part.created_at,
        )
        for part in parts
    ]
    items += [
        RecordItem(
            id=f"document:{document.public_id}",
            kind="conflict" if document.state == DocumentState.CONFLICT.value else "quarantined",
            account_id=document.account_id,
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


def withheld_part(session: Session, part_id: int) -> tuple[int, int] | None:
    """``(message id, attachment position)`` of a withheld part, or None."""
    part = session.get(RecordAttachment, part_id)
    if part is None or not part.withheld:
        return None
    return part.message_id, part.position


def document_content(session: Session, blobs: BlobStore, public_id: str) -> bytes | None:
    """The bytes of a quarantined or conflicting document, or None."""
    document = session.scalar(
        select(RecordDocument).where(
            RecordDocument.public_id == public_id, RecordDocument.state.in_(_KEPT)
        )
    )
    if document is None or document.content_blob_id is None:
        return None
    return blobs.read(session, document.content_blob_id)
