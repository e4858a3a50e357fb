"""What follows filing, for rights and notifications: audit each document, tell the patient.

The filing job (:mod:`caducee.jobs.filing`) calls :func:`after_filing` in its transaction once
a run filed documents; it composes the record (what was filed) with the mailbox's
notifications, which is why it lives in the jobs layer above both. It appends one
``document.file`` audit event per document the message brought into the record (and one
``denied`` event per quarantined document, naming the identity rule, E3, or per document in
conflict, ``E4.conflict``), one ``document.withdraw`` event per document the message withdrew
(E4, a deletion request), and queues one ``new-document`` notification (G1: "new or updated
document" — a withdrawal changes the record too) counting only the documents the patient may
see: telling of a document its author made ``INVISIBLE_PATIENT`` (E5) would reveal that it
exists. Both commit with the filing or not at all.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.mailboxes.notifications.patients import Event, queue_notification
from caducee.records.models import DocumentState, RecordDocument
from caducee.storage.audit import Action, ActorKind, Result, record_event
from caducee.storage.jobs import JobQueue


def after_filing(
    session: Session,
    queue: JobQueue,
    /,
    *,
    message_id: int,
    account_id: int,
    actor_id: str = "filing",
) -> int:
    """Audit what filing did with ``message_id`` and tell the patient; returns how many
    documents entered the record."""
    rows = session.execute(
        select(
            RecordDocument.public_id,
            RecordDocument.state,
            RecordDocument.identity_rule,
            RecordDocument.hidden_from_patient,
        )
        .where(
            RecordDocument.account_id == account_id,
            RecordDocument.message_id == message_id,
            RecordDocument.state.in_(
                (
                    DocumentState.FILED.value,
                    DocumentState.QUARANTINED.value,
                    DocumentState.CONFLICT.value,
                )
            ),
        )
        .order_by(RecordDocument.id)
    ).all()
    filed = 0
    told = 0  # documents the patient may see (E5: INVISIBLE_PATIENT ones are not told)
    for public_id, state, identity_rule, hidden_from_patient in rows:
        conflict = state == DocumentState.CONFLICT.value
        quarantined = state == DocumentState.QUARANTINED.value or conflict
        filed += not quarantined
        told += not quarantined and not hidden_from_patient
        record_event(
            session,
            actor_kind=ActorKind.SYSTEM.value,
            actor_id=actor_id,
            action=Action.DOCUMENT_FILE.value,
            object_type="document",
            object_id=str(public_id),
            result=(Result.DENIED if quarantined else Result.OK).value,
            rule="E4.conflict" if conflict else identity_rule if quarantined else "E1.filed",
            subject_account_id=account_id,
            channel="worker",
        )
    withdrawn = session.execute(
        select(RecordDocument.public_id, RecordDocument.hidden_from_patient)
        .where(
            RecordDocument.account_id == account_id,
            RecordDocument.withdrawn_by_message_id == message_id,
            RecordDocument.state == DocumentState.WITHDRAWN.value,
        )
        .order_by(RecordDocument.id)
    ).all()
    for public_id, hidden_from_patient in withdrawn:
        told += not hidden_from_patient
        record_event(
            session,
            actor_kind=ActorKind.SYSTEM.value,
            actor_id=actor_id,
            action=Action.DOCUMENT_WITHDRAW.value,
            object_type="document",
            object_id=str(public_id),
            result=Result.OK.value,
            rule="E4.withdrawn",
            subject_account_id=account_id,
            channel="worker",
        )
    if told:
        queue_notification(
            session,
            queue,
            account_id,
            Event.NEW_DOCUMENT,
            message_id=message_id,
            documents=told,
        )
    return filed
