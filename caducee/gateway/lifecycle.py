"""The gateway side of the patient-space lifecycle (I1, I2): delivery, jobs and deletion.

:mod:`caducee.mailboxes.accounts.lifecycle` decides; this module does what spans layers: it
hands the
activation code to the notification senders (smarthost e-mail, SMS), schedules the jobs that
open a space whose delay ran out (``space-open``) and delete a closed space whose archive
period or deletion request ran out (``space-purge``), and deletes a space's mail *and* record
(records and mailboxes never import each other; the gateway may).

Every job re-checks the deadline in its own transaction, so a space reopened (or activated)
meanwhile is left alone, and :func:`run_due` (``caducee patient run-due``) catches up with any
deadline whose job was lost or whose delay the operator shortened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from caducee.gateway.notify.setup import email_sender, sms_sender
from caducee.mailboxes.access.caregivers import purge_lapsed
from caducee.mailboxes.accounts.dormant import IdlePolicy, IdleReport, sweep_idle
from caducee.mailboxes.accounts.lifecycle import (
    OPEN_SPACE_JOB,
    PURGE_SPACE_JOB,
    AccountCredentials,
    ActivationCode,
    Actor,
    LifecyclePolicy,
    PatientSpace,
    SpaceStatus,
    audit,
    due_to_open,
    due_to_purge,
    open_if_due,
)
from caducee.mailboxes.accounts.store import Account
from caducee.mailboxes.delivery import MailDelivery
from caducee.mailboxes.imap_models import ExpungedEntry, StructureCache
from caducee.mailboxes.models import (
    Conversation,
    ConversationMessage,
    Folder,
    MailboxEntry,
    StoredMessage,
)
from caducee.mailboxes.notifications.patients import NotificationSettings, PatientContact
from caducee.records.models import RecordAttachment, RecordDocument
from caducee.storage.db import utcnow
from caducee.storage.jobs import READY, RUNNING, ClaimedJob, JobRow
from caducee.storage.traces import Purged as TracesPurged
from caducee.storage.traces import purge_audit, purge_traces
from caducee.storage.worker import JobHandler, PermanentJobError

if TYPE_CHECKING:  # runtime imports this module to register the handlers
    from caducee.gateway.runtime import Gateway

log = logging.getLogger("caducee.lifecycle")
SWEEP_JOB = "lifecycle-sweep"


def policy_of(gateway: Gateway) -> LifecyclePolicy:
    """The lifecycle policy of this gateway's settings."""
    return LifecyclePolicy.from_settings(gateway.settings)


# ---------------------------------------------------------------------------------------------
# Scheduling


def schedule_opening(gateway: Gateway, session: Session, account_id: int, at: datetime) -> None:
    """Enqueue the job that opens the space at ``at`` (in the caller's transaction)."""
    gateway.queue.enqueue(
        session,
        OPEN_SPACE_JOB,
        {"account_id": account_id},
        delay=max(at - utcnow(), timedelta(0)),
    )


def schedule_purge(gateway: Gateway, session: Session, account_id: int) -> None:
    """Enqueue the job that deletes the closed space at its ``purge_after``."""
    space = session.get(PatientSpace, account_id)
    if space is None or space.purge_after is None:
        return
    gateway.queue.enqueue(
        session,
        PURGE_SPACE_JOB,
        {"account_id": account_id},
        delay=max(space.purge_after - utcnow(), timedelta(0)),
    )


# ---------------------------------------------------------------------------------------------
# Activation code delivery


def set_contact(session: Session, account_id: int, *, email: str | None, phone: str | None) -> None:
    """Record where the patient is told things (G1); used for the activation code too."""
    from caducee.mailboxes.notifications.patients import update_preferences

    changes: dict[str, str] = {}
    if email:
        changes["email"] = email
    if phone:
        changes["phone"] = phone
    if changes:
        update_preferences(
            session,
            account_id,
            changes,
            NotificationSettings(),
            actor_kind="operator",
            actor_id="operator",
            channel="cli",
        )


def activation_texts(code: str, expires: datetime, language: str) -> tuple[str, str]:
    """The subject and body of the code message: the code and its expiry, nothing else."""
    if language == "en":
        return (
            "Your health space activation code",
            f"Your activation code: {code}\nValid until {expires:%Y-%m-%d %H:%M} UTC, once.\n"
            "If you did not expect it, ignore this message.",
        )
    return (
        "Votre code d'activation de messagerie santé",
        f"Votre code provisoire : {code}\nValable jusqu'au {expires:%d/%m/%Y %H:%M} (UTC). "
        "Le code provisoire ne peut servir qu'une seule fois.\n"
        "Si vous n'attendiez pas ce message, ignorez-le.",
    )


def deliver_activation_code(
    gateway: Gateway, account_id: int, code: str, expires: datetime
) -> list[str]:
    """Send the code through the configured channels; the channels used (may be empty).

    The code goes only to the senders, never to a log line or a job payload.
    """
    settings = NotificationSettings.from_settings(gateway.settings)
    with gateway.database.reading() as session:
        contact = session.get(PatientContact, account_id)
        email = contact.email if contact is not None and contact.email_enabled else None
        phone = contact.phone if contact is not None and contact.sms_enabled else None
        language = (contact.language if contact is not None else None) or settings.default_language
    subject, body = activation_texts(code, expires, language)
    used: list[str] = []
    sender = email_sender(settings) if email else None
    if sender is not None and email:
        message = EmailMessage()
        message["From"] = settings.from_address
        message["To"] = email
        message["Subject"] = subject
        message["Date"] = format_datetime(utcnow())
        message["Message-ID"] = make_msgid(domain=settings.from_address.rpartition("@")[2])
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body, charset="utf-8")
        sender.send(message, settings.from_address, email)
        used.append("email")
    sms = sms_sender(settings) if phone else None
    if sms is not None and phone:
        sms.send(phone, body.replace("\n", " "))
        used.append("sms")
    log.info("activation code delivered", extra={"account_id": account_id, "channels": used})
    return used


# ---------------------------------------------------------------------------------------------
# Deletion


@dataclass(frozen=True)
class Purged:
    """What a purge removed (counts only)."""

    messages: int
    documents: int
    blobs: int


def purge_space(gateway: Gateway, session: Session, account_id: int) -> Purged:
    """Delete a space's mail, record, credentials and account (the caller commits).

    Messages shared with another mailbox stay (only this mailbox's entries go). The audit
    trail keeps its events (ids only, no content): it is append-only.
    """
    blobs_removed: list[str] = []
    documents = list(
        session.scalars(select(RecordDocument).where(RecordDocument.account_id == account_id))
    )
    session.execute(delete(RecordAttachment).where(RecordAttachment.account_id == account_id))
    for document in documents:
        for blob_id in (document.content_blob_id, document.rendition_blob_id):
            if blob_id:
                blobs_removed.append(blob_id)
    session.execute(
        update(RecordDocument)
        .where(RecordDocument.account_id == account_id)
        .values(superseded_by_id=None, duplicate_of_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(RecordDocument)
        .where(RecordDocument.account_id == account_id)
        .execution_options(synchronize_session=False)
    )
    folder_ids = list(session.scalars(select(Folder.id).where(Folder.account_id == account_id)))
    message_ids = set(
        session.scalars(
            select(MailboxEntry.message_id).where(MailboxEntry.folder_id.in_(folder_ids))
        )
    )
    conversation_ids = list(
        session.scalars(
            select(Conversation.id).where(Conversation.patient_account_id == account_id)
        )
    )
    if conversation_ids:
        session.execute(
            delete(ConversationMessage).where(
                ConversationMessage.conversation_id.in_(conversation_ids)
            )
        )
        session.execute(delete(Conversation).where(Conversation.id.in_(conversation_ids)))
    if folder_ids:
        session.execute(delete(ExpungedEntry).where(ExpungedEntry.folder_id.in_(folder_ids)))
        session.execute(delete(MailboxEntry).where(MailboxEntry.folder_id.in_(folder_ids)))
    session.flush()
    removed_messages = 0
    for message_id in sorted(message_ids):
        still_used = session.scalar(
            select(func.count())
            .select_from(MailboxEntry)
            .where(MailboxEntry.message_id == message_id)
        )
        referenced = session.scalar(
            select(func.count())
            .select_from(ConversationMessage)
            .where(ConversationMessage.message_id == message_id)
        ) or session.scalar(
            select(func.count())
            .select_from(Conversation)
            .where(Conversation.root_message_id == message_id)
        )
        if still_used or referenced:
            continue
        message = session.get(StoredMessage, message_id)
        if message is None:
            continue
        blob_id = message.blob_id
        cache = session.get(StructureCache, message_id)  # its row cascades; not its blob
        if cache is not None:
            blobs_removed.append(cache.blob_id)
            if cache.envelope_blob_id is not None:
                blobs_removed.append(cache.envelope_blob_id)
        session.execute(delete(StoredMessage).where(StoredMessage.id == message_id))
        blobs_removed.append(blob_id)
        removed_messages += 1
    for code in session.scalars(
        select(ActivationCode).where(ActivationCode.account_id == account_id)
    ):
        if code.pending_totp_blob_id:
            blobs_removed.append(code.pending_totp_blob_id)
    credentials = session.get(AccountCredentials, account_id)
    if credentials is not None and credentials.totp_blob_id:
        blobs_removed.append(credentials.totp_blob_id)
    session.execute(delete(Account).where(Account.id == account_id))  # cascades in the database
    session.expunge_all()
    for blob_id in blobs_removed:
        gateway.blobs.delete(session, blob_id)
    audit(session, Actor.system(), "space.purge", account_id)
    return Purged(removed_messages, len(documents), len(blobs_removed))


def purge_if_due(gateway: Gateway, session: Session, account_id: int) -> Purged | None:
    """Delete the space when it is still closed and its deadline passed."""
    space = session.get(PatientSpace, account_id)
    if (
        space is None
        or space.status not in (SpaceStatus.CLOSED.value, SpaceStatus.OPPOSED.value)
        or space.purge_after is None
        or space.purge_after > utcnow()
    ):
        return None
    return purge_space(gateway, session, account_id)


# ---------------------------------------------------------------------------------------------
# Jobs


def _account_id(job: ClaimedJob) -> int:
    value = job.payload.get("account_id")
    if not isinstance(value, int) or isinstance(value, bool):
        raise PermanentJobError("payload without an integer account_id")
    return value


def open_space_handler(gateway: Gateway) -> JobHandler:
    """``space-open``: open the space if it still waits and its delay ran out."""

    def handle(job: ClaimedJob) -> None:
        account_id = _account_id(job)
        with gateway.database.transaction() as session:
            space = session.get(PatientSpace, account_id)
            if (
                space is not None
                and space.status == SpaceStatus.CREATED.value
                and space.opens_at is not None
                and space.opens_at > utcnow()
            ):  # the delay was lengthened: come back then
                schedule_opening(gateway, session, account_id, space.opens_at)
            elif open_if_due(session, account_id):
                log.info("space opened automatically", extra={"account_id": account_id})
            gateway.queue.complete(job, session)

    return handle


def purge_space_handler(gateway: Gateway) -> JobHandler:
    """``space-purge``: delete the closed space if its deadline passed."""

    def handle(job: ClaimedJob) -> None:
        account_id = _account_id(job)
        with gateway.database.transaction() as session:
            space = session.get(PatientSpace, account_id)
            if (
                space is not None
                and space.status == SpaceStatus.CLOSED.value
                and space.purge_after is not None
                and space.purge_after > utcnow()
            ):
                schedule_purge(gateway, session, account_id)
            else:
                purged = purge_if_due(gateway, session, account_id)
                if purged is not None:
                    log.info(
                        "space deleted",
                        extra={
                            "account_id": account_id,
                            "messages": purged.messages,
                            "documents": purged.documents,
                        },
                    )
            gateway.queue.complete(job, session)

    return handle


def idle_policy_of(gateway: Gateway) -> IdlePolicy:
    """The dormant-mailbox policy of this gateway's settings (I4)."""
    section = gateway.settings.lifecycle
    notifications = NotificationSettings.from_settings(gateway.settings)
    return IdlePolicy(
        flag_after=timedelta(days=section.idle_flag_days),
        disable_after=timedelta(days=section.idle_disable_days),
        sender=notifications.from_address,
        operator_name=gateway.settings.gateway.operator_name,
    )


def run_idle_sweep(gateway: Gateway) -> IdleReport:
    """Flag, tell and disable dormant professional mailboxes now (I4)."""
    with gateway.database.transaction() as session:
        report = sweep_idle(
            session, MailDelivery(gateway.blobs, gateway.queue), idle_policy_of(gateway)
        )
    if report.flagged or report.disabled:
        log.info(
            "dormant mailboxes",
            extra={"flagged": len(report.flagged), "disabled": len(report.disabled)},
        )
    return report


def run_trace_purge(gateway: Gateway) -> tuple[TracesPurged, int]:
    """Delete technical traces (and, when configured, old audit events) now (I5)."""
    section = gateway.settings.lifecycle
    now = utcnow()
    with gateway.database.transaction() as session:
        purged = purge_traces(session, now - timedelta(days=section.trace_retention_days))
    audit_removed = 0
    if section.audit_retention_days > 0:
        with gateway.database.transaction() as session:
            audit_removed = purge_audit(
                session, gateway.keyring, now - timedelta(days=section.audit_retention_days)
            )
    log.info(
        "traces purged",
        extra={
            "jobs": purged.jobs,
            "notification_batches": purged.notification_batches,
            "audit_events": audit_removed,
        },
    )
    return purged, audit_removed


def run_invitation_purge(gateway: Gateway) -> int:
    """Delete caregiver invitations that lapsed unanswered (F3): every rule already ignores
    them, so keeping who invited whom any longer would only keep personal data."""
    with gateway.database.transaction() as session:
        removed = purge_lapsed(session)
    log.info("lapsed caregiver invitations purged", extra={"invitations": removed})
    return removed


def ensure_sweep(gateway: Gateway) -> bool:
    """Queue the periodic ``lifecycle-sweep`` unless one is already waiting; True if queued."""
    with gateway.database.transaction() as session:
        waiting = session.scalar(
            select(func.count())
            .select_from(JobRow)
            .where(JobRow.kind == SWEEP_JOB, JobRow.state.in_((READY, RUNNING)))
        )
        if waiting:
            return False
        gateway.queue.enqueue(session, SWEEP_JOB, {})
        return True


def sweep_handler(gateway: Gateway) -> JobHandler:
    """``lifecycle-sweep``: openings and deletions due (safety net), dormant mailboxes, old
    traces, lapsed caregiver invitations; then the next sweep after ``[lifecycle]
    sweep_interval_hours``."""

    def handle(job: ClaimedJob) -> None:
        run_due(gateway)
        run_idle_sweep(gateway)
        run_trace_purge(gateway)
        run_invitation_purge(gateway)
        interval = timedelta(hours=gateway.settings.lifecycle.sweep_interval_hours)
        with gateway.database.transaction() as session:
            if gateway.queue.complete(job, session):
                gateway.queue.enqueue(session, SWEEP_JOB, {}, delay=interval)

    return handle


def lifecycle_handlers(gateway: Gateway) -> dict[str, JobHandler]:
    """The lifecycle job kinds, for :func:`caducee.gateway.runtime.standard_handlers`."""
    return {
        OPEN_SPACE_JOB: open_space_handler(gateway),
        PURGE_SPACE_JOB: purge_space_handler(gateway),
        SWEEP_JOB: sweep_handler(gateway),
    }


def run_due(gateway: Gateway) -> tuple[int, int]:
    """Open and delete every space whose deadline passed now; (opened, deleted)."""
    opened = deleted = 0
    with gateway.database.transaction() as session:
        for account_id in due_to_open(session):
            opened += open_if_due(session, account_id)
    with gateway.database.transaction() as session:
        candidates = due_to_purge(session)
    for account_id in candidates:
        with gateway.database.transaction() as session:
            deleted += purge_if_due(gateway, session, account_id) is not None
    return opened, deleted
