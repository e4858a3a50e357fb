"""What of a message the patient may see, decided after filing (E3, E5).

Delivery holds the patient's copy of a message with attachments
(``mailboxes.models.HeldDelivery``, invisible to IMAP, listings and notifications). The
filing job (:mod:`caducee.jobs.filing`) then asks this module, in its own transaction and
with the message's bytes it read through ``mailboxes``, what the record's decisions mean for
that copy — :func:`patient_copy_facts`:

- an attachment that carries a document its author marked ``INVISIBLE_PATIENT``, or a document
  quarantined by the identity check (another patient, no INS, ...), is *withheld*: the patient's
  copy has a short notice in its place (French, names nothing), the attachment row is marked
  ``withheld`` with its reason, and the original message — kept whole for the operator's
  quarantine and the other recipients — is not changed;
- when every document the message carried was quarantined by the identity check, the message is
  about someone else: nothing of it reaches the patient (``hide_all``).

The mailbox side (releasing the copy to the folder, the notification) is
:mod:`caducee.mailboxes.held`'s. Everything commits with the filing or not at all. A filing
job that never completes leaves the copy held: hidden is the safe side, and
``caducee quarantine list`` shows it to the operator.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.records.mailparts import is_attachment, leaves
from caducee.records.models import DocumentState, RecordAttachment, RecordDocument

log = logging.getLogger("caducee.records.withheld")

NOTICE = (
    "Un document joint à ce message a été retenu par votre messagerie de santé et ne vous est "
    "pas transmis ici.\r\n"
    "Pour toute question, adressez-vous au professionnel de santé qui vous a écrit.\r\n"
)
"""What the patient reads in place of a withheld part: that something was withheld, no more."""

INVISIBLE_REASON = "E5.invisible-patient"


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
            reasons[int(position)] = f"E3.{error_code}" if error_code else "E3.quarantined"
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


@dataclass(frozen=True)
class PatientCopyFacts:
    """What the record's decisions mean for the patient's copy of one message."""

    withheld_parts: int
    """How many attachments the patient may not see."""
    hide_all: bool
    """Nothing of the message may reach the patient (about another patient, or unreadable)."""
    content: bytes | None
    """The copy with the withheld parts replaced by the notice; None: the message as it is."""


def patient_copy_facts(
    session: Session, *, account_id: int, message_id: int, raw: bytes | None
) -> PatientCopyFacts:
    """Mark the withheld attachments and say what the patient's copy must be.

    ``raw`` is the stored message (the jobs layer read it for filing); ``None`` when it is
    gone, and then nothing of it may reach the patient once a part is withheld.
    """
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
        return PatientCopyFacts(len(reasons), hide_all=True, content=None)
    if not reasons:
        return PatientCopyFacts(0, hide_all=False, content=None)
    if raw is None:
        return PatientCopyFacts(len(reasons), hide_all=True, content=None)
    try:
        content = withhold_parts(raw, reasons)
    except Exception as error:  # ``email`` does no I/O: the message is malformed
        log.warning("copy could not be built", extra={"reason": type(error).__name__})
        return PatientCopyFacts(len(reasons), hide_all=True, content=None)
    return PatientCopyFacts(len(reasons), hide_all=False, content=content)


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
