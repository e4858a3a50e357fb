"""The ``file-documents`` job: file a message's documents, then decide the patient's copy.

One transaction, which also completes the job (exactly once):

1. :class:`caducee.records.filing.Filing` files the attachments in the record (E1–E6, G3);
2. ``on_filed`` (the gateway's audit and notification hook) runs when something was filed;
3. when delivery held the patient's copy (:func:`caducee.mailboxes.held.held_copy`), the
   record says what the patient may see (:func:`caducee.records.withheld.patient_copy_facts`)
   and the mailbox releases or keeps it (:func:`caducee.mailboxes.held.decide_held_copy`).
"""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy.orm import Session

from caducee.config import Settings
from caducee.mailboxes.held import decide_held_copy, held_copy
from caducee.mailboxes.relay.outbound import queue_outbound
from caducee.records.filing import Filing
from caducee.records.withheld import patient_copy_facts
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import ClaimedJob, JobQueue
from caducee.storage.worker import JobHandler, PermanentJobError

log = logging.getLogger("caducee.records.filing")


class LeaseLostError(RuntimeError):
    """Another worker owns the job now; this attempt's effects are rolled back."""


class FiledHook(Protocol):
    """Called in the filing transaction after a message was filed (audit, notifications)."""

    def __call__(self, session: Session, /, *, message_id: int, account_id: int) -> int: ...


def _job_target(job: ClaimedJob) -> tuple[int, int]:
    try:
        message_id = int(job.payload["message_id"])
        account_id = int(job.payload["account_id"])
    except (KeyError, TypeError, ValueError):
        raise PermanentJobError("file-documents job payload is malformed") from None
    return message_id, account_id


def make_filing_handler(
    database: Database,
    blobs: BlobStore,
    queue: JobQueue,
    settings: Settings,
    *,
    on_filed: FiledHook | None = None,
) -> JobHandler:
    """The handler of ``file-documents`` jobs (``mailboxes.delivery.FILE_DOCUMENTS_JOB``).

    ``on_filed`` records the filing in the audit trail and queues the patient's notification,
    in the same transaction (F4, G1).
    """

    def handle(job: ClaimedJob) -> None:
        message_id, account_id = _job_target(job)
        with database.transaction() as session:
            filing = Filing(session, blobs, queue, settings, queue_outbound)
            summary = filing.run(message_id, account_id)
            if on_filed is not None and summary.skipped is None:
                on_filed(session, message_id=message_id, account_id=account_id)
            # E3/E5: whatever filing found (or skipped), the patient's held copy is decided now
            held = held_copy(session, account_id=account_id, message_id=message_id)
            decision = None
            if held is not None:
                facts = patient_copy_facts(
                    session, blobs, account_id=account_id, message_id=message_id
                )
                decision = decide_held_copy(
                    session,
                    blobs,
                    queue,
                    held,
                    withheld_parts=facts.withheld_parts,
                    hide_all=facts.hide_all,
                    content=facts.content,
                )
            if not queue.complete(job, session):
                raise LeaseLostError("the job's lease was lost; filing rolled back")
        fields = summary.log_fields()
        if decision is not None:
            fields["patient_copy"] = decision.state
            fields["withheld_parts"] = decision.withheld_parts
        log.info("documents filed", extra={"job_id": job.id, **fields})

    return handle
