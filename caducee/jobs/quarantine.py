"""The operator's quarantine (E3, E4, E5): the mail side and the record side, composed.

- patient copies still held (the filing job has not decided) or withheld whole (a message
  about another patient): ``mailboxes``' held deliveries;
- parts withheld from a patient's copy, documents quarantined by the identity check (E3) and
  documents in conflict under a known uniqueId (E4): :mod:`caducee.records.quarantine`.

Each item names its mailbox by address. Nothing here returns a name, a subject, a title or a
file name (J2); :func:`item_content` returns the bytes of one item for the operator who asks
(``caducee quarantine show --output``, which audits it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.mailboxes.accounts.store import Account
from caducee.mailboxes.models import HeldDelivery, HeldState, StoredMessage
from caducee.records.quarantine import document_content, record_quarantine, withheld_part
from caducee.records.withheld import attachment_bytes
from caducee.storage.blobs import BlobStore

E3_ANOTHER_PATIENT_RULE = "E3.another-patient"
_KEPT = (HeldState.HELD.value, HeldState.WITHHELD.value)


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
        select(Account.id, Account.address).where(Account.id.in_(sorted(account_ids)))
    ).all()
    return {int(row.id): str(row.address) for row in rows}


def quarantine_items(session: Session) -> list[QuarantineItem]:
    """Everything in quarantine, oldest first within each kind."""
    held = session.execute(
        select(
            HeldDelivery.id,
            HeldDelivery.account_id,
            HeldDelivery.message_id,
            HeldDelivery.state,
            StoredMessage.size,
            StoredMessage.received_at,
        )
        .join(StoredMessage, StoredMessage.id == HeldDelivery.message_id)
        .where(HeldDelivery.state.in_(_KEPT))
        .order_by(HeldDelivery.id)
    ).all()
    record = record_quarantine(session)
    accounts = _addresses(
        session, {int(row.account_id) for row in held} | {item.account_id for item in record}
    )
    items = [
        QuarantineItem(
            id=f"message:{row.id}",
            kind="held" if row.state == HeldState.HELD.value else "withheld-message",
            account=accounts.get(int(row.account_id), ""),
            message=int(row.message_id),
            content_type="message/rfc822",
            size=int(row.size),
            rule=None if row.state == HeldState.HELD.value else E3_ANOTHER_PATIENT_RULE,
            since=row.received_at,
        )
        for row in held
    ]
    items += [
        QuarantineItem(
            id=item.id,
            kind=item.kind,
            account=accounts.get(item.account_id, ""),
            message=item.message,
            content_type=item.content_type,
            size=item.size,
            rule=item.rule,
            since=item.since,
            error_code=item.error_code,
            related=item.related,
        )
        for item in record
    ]
    return items


def find_item(session: Session, item_id: str) -> QuarantineItem | None:
    """One item by its id."""
    return next((item for item in quarantine_items(session) if item.id == item_id), None)


def item_content(session: Session, blobs: BlobStore, item_id: str) -> bytes | None:
    """The bytes of one quarantined item (the message, the part, the document), or None."""
    kind, _, value = item_id.partition(":")
    if kind == "document":
        return document_content(session, blobs, value)
    if not value.isdigit():
        return None
    position: int | None = None
    if kind == "message":
        message_id = session.scalar(
            select(HeldDelivery.message_id).where(
                HeldDelivery.id == int(value), HeldDelivery.state.in_(_KEPT)
            )
        )
    elif kind == "part":
        found = withheld_part(session, int(value))
        if found is None:
            return None
        message_id, position = found
    else:
        return None
    if message_id is None:
        return None
    message = session.get(StoredMessage, message_id)
    if message is None:
        return None
    raw = blobs.read(session, message.blob_id)
    return raw if position is None else attachment_bytes(raw, position)
