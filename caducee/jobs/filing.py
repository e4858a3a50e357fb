"""The ``file-documents`` job: file a message's documents, then decide the patient's copy.

One transaction, which also completes the job (exactly once):

1. the stored message and the mailbox's identity are read through ``mailboxes``
   (:mod:`caducee.jobs.mail`) and handed to :class:`caducee.records.filing.Filing`, which files
   the attachments in the record (E1–E6) and returns what it found about the message: the D4
   header codes, written on the message here, and the integration receipt (G3), queued here
   for the relay (:func:`caducee.mailboxes.relay.outbound.queue_outbound`);
2. when something was filed, :func:`caducee.jobs.followup.after_filing` audits each document
   and queues the patient's ``new-document`` notification (F4, G1);
3. when delivery held the patient's copy (:func:`caducee.mailboxes.held.held_copy`), the
   record says what the patient may see (:func:`caducee.records.withheld.patient_copy_facts`)
   and the mailbox releases or keeps it (:func:`caducee.mailboxes.held.decide_held_copy`).

A malformed payload dead-letters the job (:class:`~caducee.storage.jobs.MalformedPayloadError`).
"""

from __future__ import annotations

import logging

from caducee.config import Settings
from caducee.jobs.followup import after_filing
from caducee.jobs.mail import mailbox_patient, record_mss_problems, stored_mail
from caducee.mailboxes.held import decide_held_copy, held_copy
from caducee.mailboxes.relay.outbound import queue_outbound
from caducee.records.filing import Filing, already_filed
from caducee.records.withheld import patient_copy_facts
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import ClaimedJob, FileDocuments, JobQueue
from caducee.storage.worker import JobHandler

log = logging.getLogger("caducee.records.filing")


class LeaseLostError(RuntimeError):
    """Another worker owns the job now; this attempt's effects are rolled back."""


def make_filing_handler(
    database: Database,
    blobs: BlobStore,
    queue: JobQueue,
    settings: Settings,
    *,
    follow_up: bool = True,
) -> JobHandler:
    """The handler of ``file-documents`` jobs (:attr:`caducee.storage.jobs.JobKind.FILE_DOCUMENTS`).

    ``follow_up`` (the audit and the patient's notification, in the same transaction) is
    left out only by tests that look at filing alone.
    """

    def handle(job: ClaimedJob) -> None:
        target = FileDocuments.from_job(job)
        message_id, account_id = target.message_id, target.account_id
        with database.transaction() as session:
            mail = None
            if not already_filed(session, message_id, account_id):
                mail = stored_mail(session, blobs, message_id)
            summary = Filing(session, blobs, settings).run(
                message_id,
                account_id,
                mail=mail,
                mailbox=mailbox_patient(session, account_id),
            )
            record_mss_problems(session, message_id, summary.mss_problems)
            if summary.receipt is not None:
                queue_outbound(
                    session,
                    blobs,
                    queue,
                    envelope_from="",
                    recipients=summary.receipt.recipients,
                    content=summary.receipt.content,
                    purpose=summary.receipt.purpose,
                )
            if follow_up and summary.skipped is None:
                after_filing(session, queue, message_id=message_id, account_id=account_id)
            # E3/E5: whatever filing found (or skipped), the patient's held copy is decided now
            held = held_copy(session, account_id=account_id, message_id=message_id)
            decision = None
            if held is not None:
                if mail is None:
                    mail = stored_mail(session, blobs, message_id)
                facts = patient_copy_facts(
                    session,
                    account_id=account_id,
                    message_id=message_id,
                    raw=mail.raw if mail is not None else None,
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
