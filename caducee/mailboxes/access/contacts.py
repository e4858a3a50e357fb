"""The patient's correspondents: who a patient may write to (C4, D2, D3).

A patient may write to the address a professional gave when writing to them
(``Reply-To``, else the sender) as long as that professional did not end the
exchange; and to a pharmacy the patient declared, which is recorded the same
way, as a correspondent the patient chose.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from caducee.mailboxes.accounts.store import normalise_address
from caducee.mailboxes.models import KnownProfessional
from caducee.storage.db import table_of, utcnow

_CONTACTS = table_of(KnownProfessional)
_MAY_WRITE = (
    select(_CONTACTS.c.id)
    .where(
        _CONTACTS.c.patient_account_id == bindparam("patient"),
        _CONTACTS.c.reply_address == bindparam("recipient"),
        _CONTACTS.c.can_reply.is_(True),
    )
    .limit(1)
)


def patient_may_write(session: Session, patient_account_id: int, recipient: str) -> bool:
    """True when ``recipient`` wrote to this patient (or was declared) and the exchange is open."""
    found = session.connection().execute(
        _MAY_WRITE, {"patient": patient_account_id, "recipient": normalise_address(recipient)}
    )
    return found.first() is not None


def declare_pharmacy(session: Session, patient_account_id: int, pharmacy_address: str) -> None:
    """Record the patient's pharmacy as a correspondent they may write to (C4)."""
    address = normalise_address(pharmacy_address)
    existing = session.scalar(
        select(KnownProfessional).where(
            KnownProfessional.patient_account_id == patient_account_id,
            KnownProfessional.professional_address == address,
        )
    )
    if existing is None:
        now = utcnow()
        session.add(
            KnownProfessional(
                patient_account_id=patient_account_id,
                professional_address=address,
                reply_address=address,
                first_contact_at=now,
                last_message_at=now,
                can_reply=True,
                status="authorised",
                medecin_traitant=False,
            )
        )
    else:
        existing.can_reply = True
        existing.ended_at = None
