"""What of a message the patient may see: the held copy, decided after filing (E3, E5).

Delivery does not put the patient's copy of a message with attachments in their INBOX: it
writes a ``held_deliveries`` row (``mailboxes.models.HeldDelivery``) in the delivery
transaction, invisible to IMAP, the listings and the notifications, which all read mailbox
entries only. The filing job then decides, in its own transaction, with
:func:`decide_patient_copy`:

- an attachment that carries a document its author marked ``INVISIBLE_PATIENT``, or a document
  quarantined by the identity check (another patient, no INS, ...), is *withheld*: the patient's
  copy has a short notice in its place (French, names nothing), the attachment row is marked
  ``withheld`` with its reason, and the original message — kept whole for the operator's
  quarantine and the other recipients — is not changed;
- when every document the message carried was quarantined by the identity check, the message is
  about someone else: nothing of it reaches the patient (state ``withheld``);
- otherwise the copy (the message itself when nothing was withheld) is appended to the folder
  with the folder's next UID — a UID no client saw before, so every IMAP client learns of it as
  a new message — and the ``new-message`` notification is queued (G1).

Everything commits with the filing or not at all. A filing job that never completes leaves the
copy held: hidden is the safe side, and ``caducee quarantine list`` shows it to the operator.

``records`` may not import ``mailboxes``; the mail tables are reached through the light table
clauses of :mod:`caducee.records.models`, like the rest of filing.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from caducee.records.mailparts import is_attachment, leaves
from caducee.records.models import (
    HELD_STATE,
    MAIL_ENTRIES,
    MAIL_FOLDERS,
    MAIL_HELD,
    MAIL_MESSAGES,
    RELEASED_STATE,
    WITHHELD_STATE,
    DocumentState,
    RecordAttachment,
    RecordDocument,
)
from caducee.storage.blobs import BlobStore
from caducee.storage.db import utcnow
from caducee.storage.jobs import JobQueue

log = logging.getLogger("caducee.records.withheld")

NOTIFY_PATIENT_JOB = "notify-patient"
"""The job kind ``mailboxes.notifications`` handles (same string; the layers are independent)."""

NOTICE = (
    "Un document joint à ce message a été retenu par votre messagerie de santé et ne vous est "
    "pas transmis ici.\r\n"
    "Pour toute question, adressez-vous au professionnel de santé qui vous a écrit.\r\n"
)
"""What the patient reads in place of a withheld part: that something was withheld, no more."""

INVISIBLE_REASON = "E5-invisible-patient"


@dataclass(frozen=True)
class CopyDecision:
    """What :func:`decide_patient_copy` did (ids and counts: safe to log)."""

    state: str
    withheld_parts: int = 0
    uid: int | None = None
    copy_message_id: int | None = None


def withheld_positions(session: Session, account_id: int, message_id: int) -> dict[int, str]:
    """Attachment positions the patient may not see, with the reason (E3 code or E5 flag)."""
    rows = session.execute(
        select(
            RecordDocument.attachment_position,
            RecordDocument.state,
            RecordDocument.error_code,
            RecordDocument.hidden_from_patient,
        ).where(RecordDocument.account_id == account_id, RecordDocument.message_id == message_id)
    ).all()
    reasons: dict[int, str] = {}
    for position, state, error_code, hidden in rows:
        if state == DocumentState.QUARANTINED.value:
            reasons[int(position)] = f"E3-{error_code}" if error_code else "E3-quarantined"
        elif hidden and int(position) not in reasons:
            reasons[int(position)] = INVISIBLE_REASON
    return reasons


def _about_another_patient(session: Session, account_id: int, message_id: int) -> bool:
    """True when the message brought documents and the identity check quarantined all."""
    states = set(
        session.scalars(
            select(RecordDocument.state).where(
                RecordDocument.account_id == account_id,
                RecordDocument.message_id == message_id,
            )
        )
    )
    return states == {DocumentState.QUARANTINED.value}


def _notice_part(part: Message) -> None:
    """Turn ``part`` into the notice, in place: the original part's headers are dropped."""
    for name in set(part.keys()):
        if name.lower().startswith("content-"):
            del part[name]
    part["Content-Type"] = 'text/plain; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "base64"
    part["Content-Disposition"] = "inline"
    part.set_payload(base64.encodebytes(NOTICE.encode("utf-8")).decode("ascii"))


def withhold_parts(
    raw: bytes, positions: Mapping[int, str], *, max_attachments: int = 200
) -> bytes:
    """The message with the attachments at ``positions`` replaced by the notice.

    Attachments are counted the way filing counts them (:mod:`caducee.records.mailparts`);
    those beyond ``max_attachments``, which filing never read, are withheld too. Other parts
    keep their bytes.
    """
    message = BytesParser(policy=compat32).parsebytes(raw)
    position = 0
    for part in leaves(message):
        if not is_attachment(part):
            continue
        if position in positions or position >= max_attachments:
            _notice_part(part)
        position += 1
    return message.as_bytes(policy=compat32)


_ALLOCATE_UID = (
    update(MAIL_FOLDERS)
    .where(MAIL_FOLDERS.c.id == bindparam("folder"))
    .values(
        uid_next=MAIL_FOLDERS.c.uid_next + 1,
        highest_modseq=MAIL_FOLDERS.c.highest_modseq + 1,
    )
    .returning(MAIL_FOLDERS.c.uid_next, MAIL_FOLDERS.c.highest_modseq)
)


def _append(session: Session, folder_id: int, message_id: int) -> int | None:
    """The folder's next UID for ``message_id`` (as ``mailboxes.delivery.append_to_folder``)."""
    connection = session.connection()
    allocated = connection.execute(_ALLOCATE_UID, {"folder": folder_id}).first()
    if allocated is None:
        return None
    uid = int(allocated[0]) - 1
    connection.execute(
        MAIL_ENTRIES.insert().values(
            folder_id=folder_id,
            message_id=message_id,
            uid=uid,
            flags="",
            modseq=int(allocated[1]),
            internal_date=utcnow(),
        )
    )
    return uid


def _store_copy(session: Session, blobs: BlobStore, message_id: int, content: bytes) -> int:
    """A ``messages`` row for the patient's copy; the original keeps its own."""
    original = session.execute(
        select(
            MAIL_MESSAGES.c.received_at,
            MAIL_MESSAGES.c.direction,
            MAIL_MESSAGES.c.envelope_from,
            MAIL_MESSAGES.c.header_from,
            MAIL_MESSAGES.c.message_id_header,
            MAIL_MESSAGES.c.dkim_result,
            MAIL_MESSAGES.c.end_of_exchange,
            MAIL_MESSAGES.c.mss_problems,
        ).where(MAIL_MESSAGES.c.id == message_id)
    ).one()
    blob_id = blobs.write(session, content)
    return int(
        session.execute(
            MAIL_MESSAGES.insert()
            .values(
                blob_id=blob_id,
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
            .returning(MAIL_MESSAGES.c.id)
        ).scalar_one()
    )


def decide_patient_copy(
    session: Session, blobs: BlobStore, queue: JobQueue, *, message_id: int, account_id: int
) -> CopyDecision | None:
    """Release (or keep) the patient's held copy of a filed message; None when none is held."""
    held = session.execute(
        select(MAIL_HELD.c.id, MAIL_HELD.c.folder_id).where(
            MAIL_HELD.c.account_id == account_id,
            MAIL_HELD.c.message_id == message_id,
            MAIL_HELD.c.state == HELD_STATE,
        )
    ).one_or_none()
    if held is None:
        return None
    now = utcnow()
    reasons = withheld_positions(session, account_id, message_id)
    if reasons:
        for attachment in session.scalars(
            select(RecordAttachment).where(
                RecordAttachment.account_id == account_id,
                RecordAttachment.message_id == message_id,
                RecordAttachment.position.in_(sorted(reasons)),
            )
        ):
            attachment.withheld = True
            attachment.withheld_reason = reasons[attachment.position][:32]
        session.flush()
    if _about_another_patient(session, account_id, message_id):
        session.execute(
            update(MAIL_HELD)
            .where(MAIL_HELD.c.id == held.id)
            .values(state=WITHHELD_STATE, decided_at=now, withheld_parts=len(reasons))
        )
        return CopyDecision(WITHHELD_STATE, withheld_parts=len(reasons))
    copy_id = message_id
    if reasons:
        blob_id = session.scalar(
            select(MAIL_MESSAGES.c.blob_id).where(MAIL_MESSAGES.c.id == message_id)
        )
        raw = blobs.read(session, str(blob_id))
        try:
            content = withhold_parts(raw, reasons)
        except Exception as error:  # ``email`` does no I/O: the message is malformed
            log.warning("copy could not be built", extra={"reason": type(error).__name__})
            session.execute(
                update(MAIL_HELD)
                .where(MAIL_HELD.c.id == held.id)
                .values(state=WITHHELD_STATE, decided_at=now, withheld_parts=len(reasons))
            )
            return CopyDecision(WITHHELD_STATE, withheld_parts=len(reasons))
        copy_id = _store_copy(session, blobs, message_id, content)
    uid = _append(session, int(held.folder_id), copy_id)
    session.execute(
        update(MAIL_HELD)
        .where(MAIL_HELD.c.id == held.id)
        .values(
            state=RELEASED_STATE,
            decided_at=now,
            copy_message_id=copy_id,
            uid=uid,
            withheld_parts=len(reasons),
        )
    )
    if uid is not None:
        queue.enqueue(
            session,
            NOTIFY_PATIENT_JOB,
            {"event": "new-message", "account_id": account_id, "message_id": message_id},
        )
    return CopyDecision(RELEASED_STATE, len(reasons), uid, copy_id)


def attachment_bytes(raw: bytes, position: int) -> bytes | None:
    """The decoded bytes of the attachment at ``position`` (as filing numbers them)."""
    message = BytesParser(policy=compat32).parsebytes(raw)
    found = 0
    for part in leaves(message):
        if not is_attachment(part):
            continue
        if found == position:
            data = part.get_payload(decode=True)
            return data if isinstance(data, bytes) else b""
        found += 1
    return None
