"""G1 and B5: what a delivery leaves for after its commit — the patient's ``new-message``
event, and whether the job workers have anything to do now.

``serve``'s deliveries collect the event in their own transaction (issue 19); other callers
queue a ``notify-patient`` job. Either way the event is in the patient's notification centre
once it ran, and ``jobs_due`` is true exactly when a job is due now (the workers are woken
for it, and only for it).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from caducee.mailboxes.delivery import (
    FILE_DOCUMENTS_JOB,
    NOTIFY_PATIENT_JOB,
    MailDelivery,
)
from caducee.mailboxes.notifications.centre import centre_page
from caducee.mailboxes.notifications.patients import NotificationSettings, make_notify_handler
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue, JobRow
from tests.harness.envelopes import professional_mail
from tests.harness.identities import add_patient, valid_ins


def _jobs(database: Database, kind: str, account_id: int) -> list[dict[str, object]]:
    """The payloads of the jobs of ``kind`` queued for the account."""
    with database.reading() as session:
        payloads: list[dict[str, object]] = list(
            session.scalars(select(JobRow.payload).where(JobRow.kind == kind))
        )
    return [payload for payload in payloads if payload.get("account_id") == account_id]


def _centre_kinds(database: Database, account_id: int) -> list[str]:
    with database.reading() as session:
        return [item.kind for item in centre_page(session, account_id).items]


def test_g1_serve_s_deliveries_collect_the_new_message_event_themselves(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    queue = JobQueue(database)
    notifier = make_notify_handler(database, queue, NotificationSettings(home=tmp_path))
    delivery = MailDelivery(blobs, queue, notifier.collect_new_message)
    account_id, address = add_patient(database, ins=valid_ins())[:2]
    with database.transaction() as session:
        delivered = delivery.deliver(
            session, professional_mail(address, account_id, 1, attachments=False)
        )
    assert not delivered.jobs_due  # nothing for the workers now
    assert _jobs(database, NOTIFY_PATIENT_JOB, account_id) == []
    assert _centre_kinds(database, account_id) == ["new-message"]  # committed with the message


def test_g1_other_deliveries_queue_the_event_and_a_filing_is_due_at_once(
    database: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    queue = JobQueue(database)
    notifier = make_notify_handler(database, queue, NotificationSettings(home=tmp_path))
    account_id, address = add_patient(database, ins=valid_ins())[:2]
    with database.transaction() as session:
        queued = MailDelivery(blobs, queue).deliver(
            session, professional_mail(address, account_id, 2, attachments=False)
        )
    assert queued.jobs_due
    [job] = _jobs(database, NOTIFY_PATIENT_JOB, account_id)
    assert job["event"] == "new-message"
    assert _centre_kinds(database, account_id) == []  # until the job runs
    with database.transaction() as session:
        reported = MailDelivery(blobs, queue, notifier.collect_new_message).deliver(
            session, professional_mail(address, account_id, 3, attachments=True)
        )
    assert reported.jobs_due  # the filing job (E1) is due now
    assert len(_jobs(database, FILE_DOCUMENTS_JOB, account_id)) == 1
