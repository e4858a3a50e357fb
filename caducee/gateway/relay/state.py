"""Reading and changing the durable state of relay jobs (``relay_messages``, ``relay_recipients``).

The handler and ``caducee queue`` share these functions. Rows are created at a
job's first attempt from its payload; the job row keeps the lease and the next
attempt time, these rows keep what each recipient became. Everything here runs
in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from caducee.mailboxes.relay.models import RecipientState, RelayMessage, RelayRecipient
from caducee.mailboxes.relay.outbound import RELAY_JOB
from caducee.storage.db import utcnow
from caducee.storage.jobs import DEAD, DONE, READY, RUNNING, ClaimedJob, JobRow


class LeaseLost(Exception):
    """Another worker holds the job now (our lease expired): this attempt's writes roll back."""


@dataclass(frozen=True)
class RelayPayload:
    """The envelope of a relay job (see :func:`caducee.mailboxes.relay.outbound.queue_outbound`)."""

    blob_id: str
    envelope_from: str
    recipients: tuple[str, ...]
    purpose: str

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> RelayPayload:
        """Raise ``ValueError`` on a payload the relay cannot use."""
        blob_id = payload.get("blob_id")
        sender = payload.get("envelope_from", "")
        recipients = payload.get("recipients")
        if not isinstance(blob_id, str) or not isinstance(sender, str):
            raise ValueError("relay payload without blob_id or envelope_from")
        if not isinstance(recipients, list) or not recipients:
            raise ValueError("relay payload without recipients")
        unique = tuple(dict.fromkeys(str(r).strip().lower() for r in recipients if str(r).strip()))
        if not unique:
            raise ValueError("relay payload without recipients")
        return cls(blob_id, sender.strip(), unique, str(payload.get("purpose", "")))


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


@dataclass
class Snapshot:
    """The state of one relay job as its attempt starts."""

    message: RelayMessage
    recipients: list[RelayRecipient] = field(default_factory=list)

    def pending(self) -> list[RelayRecipient]:
        return [r for r in self.recipients if r.state == RecipientState.PENDING.value]


def hold(session: Session, job: ClaimedJob) -> None:
    """Check (and, on PostgreSQL, lock) that ``job`` is still ours; raise :class:`LeaseLost`."""
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job.id, JobRow.state == RUNNING, JobRow.locked_by == job.worker)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"relay job {job.id}: lease lost")


def load(
    session: Session,
    job_id: int,
    payload: RelayPayload,
    *,
    retry: timedelta,
    delay_warning: timedelta,
) -> Snapshot:
    """The job's state, created from the payload at its first attempt.

    The five days (``retry``) and four hours (``delay_warning``) count from the
    job's creation: the moment the gateway took responsibility for the message.
    """
    message = session.get(RelayMessage, job_id)
    if message is None:
        created = session.scalar(select(JobRow.created_at).where(JobRow.id == job_id))
        arrival = created or utcnow()
        message = RelayMessage(
            job_id=job_id,
            arrival_at=arrival,
            warn_at=arrival + delay_warning,
            expires_at=arrival + retry,
            attempts=0,
        )
        session.add(message)
        session.flush()
        for address in payload.recipients:
            session.add(
                RelayRecipient(
                    job_id=job_id,
                    address=address,
                    domain=domain_of(address)[:253],
                    state=RecipientState.PENDING.value,
                    attempts=0,
                )
            )
        session.flush()
    recipients = list(
        session.scalars(
            select(RelayRecipient)
            .where(RelayRecipient.job_id == job_id)
            .order_by(RelayRecipient.id)
        )
    )
    return Snapshot(message, recipients)


def reschedule(session: Session, job: ClaimedJob, at: datetime, summary: str) -> None:
    """Give the job back to the queue for ``at`` (our own back-off, not the queue's)."""
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job.id, JobRow.state == RUNNING, JobRow.locked_by == job.worker)
        .values(
            state=READY,
            next_attempt_at=at,
            last_error=summary[:2000],
            locked_by=None,
            locked_until=None,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"relay job {job.id}: lease lost")


def finish(session: Session, job: ClaimedJob, summary: str | None) -> None:
    """Mark the job done (every recipient delivered or failed and reported)."""
    now = utcnow()
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job.id, JobRow.state == RUNNING, JobRow.locked_by == job.worker)
        .values(
            state=DONE,
            finished_at=now,
            updated_at=now,
            last_error=summary,
            locked_by=None,
            locked_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"relay job {job.id}: lease lost")


# -- for the operator (caducee queue) -------------------------------------------------------


@dataclass(frozen=True)
class QueueEntry:
    """One line of ``caducee queue list``: ids, times, counts and codes; never content."""

    job_id: int
    purpose: str
    job_state: str
    created_at: datetime
    next_attempt_at: datetime | None
    attempts: int
    recipients: int
    states: dict[str, int]
    domains: tuple[str, ...]
    last_error: str | None
    expires_at: datetime | None


def list_queue(session: Session, *, include_done: bool = False) -> list[QueueEntry]:
    """Relay jobs, oldest first; finished ones only with ``include_done``."""
    statement = select(JobRow).where(JobRow.kind == RELAY_JOB).order_by(JobRow.id)
    if not include_done:
        statement = statement.where(JobRow.state != DONE)
    jobs = list(session.scalars(statement))
    ids = [job.id for job in jobs]
    messages = {
        m.job_id: m
        for m in session.scalars(select(RelayMessage).where(RelayMessage.job_id.in_(ids)))
    }
    by_job: dict[int, list[RelayRecipient]] = {}
    for row in session.scalars(select(RelayRecipient).where(RelayRecipient.job_id.in_(ids))):
        by_job.setdefault(row.job_id, []).append(row)
    entries = []
    for job in jobs:
        rows = by_job.get(job.id)
        payload = job.payload if isinstance(job.payload, dict) else {}
        if rows:
            states: dict[str, int] = {}
            for row in rows:
                states[row.state] = states.get(row.state, 0) + 1
            domains = tuple(sorted({row.domain for row in rows}))
            count = len(rows)
        else:  # not attempted yet: the payload says who
            queued = [str(r) for r in payload.get("recipients", [])]
            states = {"queued": len(queued)} if queued else {}
            domains = tuple(sorted({domain_of(r) for r in queued}))
            count = len(queued)
        message = messages.get(job.id)
        entries.append(
            QueueEntry(
                job_id=job.id,
                purpose=str(payload.get("purpose", "")),
                job_state=job.state,
                created_at=job.created_at,
                next_attempt_at=job.next_attempt_at if job.state != DONE else None,
                attempts=message.attempts if message is not None else 0,
                recipients=count,
                states=states,
                domains=domains,
                last_error=job.last_error,
                expires_at=message.expires_at if message is not None else None,
            )
        )
    return entries


def relay_job(session: Session, job_id: int) -> JobRow | None:
    """The relay job ``job_id``, or None (also for jobs of other kinds)."""
    job = session.get(JobRow, job_id)
    return job if job is not None and job.kind == RELAY_JOB else None


def retry_now(session: Session, job_id: int, now: datetime) -> bool:
    """Make a waiting or dead relay job due now; False when there is nothing to retry."""
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.kind == RELAY_JOB, JobRow.state.in_((READY, DEAD)))
        .values(state=READY, next_attempt_at=now, updated_at=now, finished_at=None, attempts=0)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.execute(
        update(RelayMessage).where(RelayMessage.job_id == job_id).values(next_attempt_at=now)
    )
    return True


def delete_job(session: Session, job_id: int) -> tuple[str, int] | None:
    """Drop a relay job and its state (no DSN); return (blob id, recipient count) or None."""
    job = relay_job(session, job_id)
    if job is None:
        return None
    payload = job.payload if isinstance(job.payload, dict) else {}
    count = len(payload.get("recipients", []))
    session.execute(delete(RelayRecipient).where(RelayRecipient.job_id == job_id))
    session.execute(delete(RelayMessage).where(RelayMessage.job_id == job_id))
    session.execute(delete(JobRow).where(JobRow.id == job_id))
    return str(payload.get("blob_id", "")), count


def recipients_of(session: Session, job_id: int) -> Sequence[RelayRecipient]:
    """The recipient rows of a job, in order (empty before the first attempt)."""
    return list(
        session.scalars(
            select(RelayRecipient)
            .where(RelayRecipient.job_id == job_id)
            .order_by(RelayRecipient.id)
        )
    )
