"""What happens after filing, for rights and notifications: audit each document, tell the patient.

``records`` may not import ``mailboxes`` (independent layers), so the filing job receives this
hook from the gateway, the way it receives ``queue_outbound``. Called in the filing
transaction once a run filed documents, it appends one ``document.file`` audit event per
document the message brought into the record (and one ``denied`` event per quarantined
document, naming the identity rule, E3) and queues one ``new-document`` notification (G1).
Both commit with the filing or not at all.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.mailboxes.notifications import Event, queue_notification
from caducee.records.models import DocumentState, RecordDocument
from caducee.storage.audit import Action, ActorKind, Result, record_event
from caducee.storage.jobs import JobQueue


class FilingHook(Protocol):
    """Called by the filing job, in its transaction, after one message was filed."""

    def __call__(self, session: Session, /, *, message_id: int, account_id: int) -> int: ...


def filing_hook(queue: JobQueue, *, actor_id: str = "filing") -> FilingHook:
    """The hook for ``make_filing_handler``; returns how many documents entered the record."""

    def on_filed(session: Session, /, *, message_id: int, account_id: int) -> int:
        rows = session.execute(
            select(RecordDocument.public_id, RecordDocument.state, RecordDocument.identity_rule)
            .where(
                RecordDocument.account_id == account_id,
                RecordDocument.message_id == message_id,
                RecordDocument.state.in_(
                    (DocumentState.FILED.value, DocumentState.QUARANTINED.value)
                ),
            )
            .order_by(RecordDocument.id)
        ).all()
        filed = 0
        for public_id, state, identity_rule in rows:
            quarantined = state == DocumentState.QUARANTINED.value
            filed += not quarantined
            record_event(
                session,
                actor_kind=ActorKind.SYSTEM.value,
                actor_id=actor_id,
                action=Action.DOCUMENT_FILE.value,
                object_type="document",
                object_id=str(public_id),
                result=(Result.DENIED if quarantined else Result.OK).value,
                rule=identity_rule if quarantined else "E1-filed",
                subject_account_id=account_id,
                channel="worker",
            )
        if filed:
            queue_notification(
                session,
                queue,
                account_id,
                Event.NEW_DOCUMENT,
                message_id=message_id,
                documents=filed,
            )
        return filed

    return on_filed
