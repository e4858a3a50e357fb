"""The patient's held copy of a message: released to the folder, or kept back (E3, E5).

Delivery does not put the patient's copy of a message with attachments in their INBOX: it
writes a :class:`~caducee.mailboxes.models.HeldDelivery` row, invisible to IMAP, the
listings and the notifications, which read mailbox entries only. Once filing has decided
what of the message the patient may see (``records.withheld``), the filing job
(:mod:`caducee.jobs.filing`) calls :func:`decide_held_copy` in the same transaction:

- ``hide_all``: nothing of the message reaches the patient (state ``withheld``);
- otherwise the copy — the message itself, or ``content`` with the withheld parts replaced
  by a notice, stored as its own message row — is appended to the folder with the folder's
  next UID (:func:`caducee.mailboxes.delivery.append_to_folder`, the one place UIDs are
  given), so every IMAP client learns of it as a new message, and the ``new-message``
  notification is queued (G1).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.mailboxes.delivery import append_to_folder
from caducee.mailboxes.models import HeldDelivery, HeldState, StoredMessage
from caducee.storage.blobs import BlobStore
from caducee.storage.db import utcnow
from caducee.storage.jobs import JobQueue, NotifyPatient


@dataclass(frozen=True)
class CopyDecision:
    """What :func:`decide_held_copy` did (ids and counts: safe to log)."""

    state: str
    withheld_parts: int = 0
    uid: int | None = None
    copy_message_id: int | None = None


def held_copy(session: Session, *, account_id: int, message_id: int) -> HeldDelivery | None:
    """The patient's copy of ``message_id`` still waiting for filing's decision, if any."""
    return session.scalars(
        select(HeldDelivery).where(
            HeldDelivery.account_id == account_id,
            HeldDelivery.message_id == message_id,
            HeldDelivery.state == HeldState.HELD.value,
        )
    ).one_or_none()


def _store_copy(session: Session, blobs: BlobStore, message_id: int, content: bytes) -> int:
    """A ``messages`` row for the patient's copy; the original keeps its own."""
    original = session.get_one(StoredMessage, message_id)
    copy = StoredMessage(
        blob_id=blobs.write(session, content),
        size=len(content),
        received_at=original.received_at,
        direction=original.direction,
        envelope_from=original.envelope_from,
        header_from=original.header_from,
        message_id_header=original.message_id_header,
        dkim_result=original.dkim_result,
        end_of_exchange=original.end_of_exchange,
        mss_problems=original.mss_problems,
    )
    session.add(copy)
    session.flush()
    return copy.id


def decide_held_copy(
    session: Session,
    blobs: BlobStore,
    queue: JobQueue,
    held: HeldDelivery,
    *,
    withheld_parts: int,
    hide_all: bool,
    content: bytes | None,
) -> CopyDecision:
    """Release ``held`` (as ``content`` when parts were withheld) or keep it from the patient."""
    held.decided_at = utcnow()
    held.withheld_parts = withheld_parts
    if hide_all:
        held.state = HeldState.WITHHELD.value
        return CopyDecision(held.state, withheld_parts=withheld_parts)
    message_id = held.message_id
    copy_id = (
        _store_copy(session, blobs, message_id, content) if content is not None else message_id
    )
    uid = append_to_folder(session, held.folder_id, copy_id)
    held.state = HeldState.RELEASED.value
    held.copy_message_id = copy_id
    held.uid = uid
    if uid is not None:
        queue.enqueue(
            session,
            NotifyPatient(event="new-message", account_id=held.account_id, message_id=message_id),
        )
    return CopyDecision(held.state, withheld_parts, uid, copy_id)
