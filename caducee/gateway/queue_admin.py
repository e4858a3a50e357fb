"""The outbound relay queue for the operator: list, show, retry, bounce, delete (C5, G4).

``caducee queue …`` and the admin API (``/admin/queue/relay``) call these functions, so the
two say and do the same. Nothing here shows content: no subject, no body, no recipient
address (domains, states and status codes only).

*Bounce* ends a job as if every recipient still pending had failed: the relay records the
outcome and sends the failure DSN to the sender exactly as it does when the retry period
runs out (the rules of :class:`caducee.gateway.relay.handler.Relay`: hosted sender → its
INBOX, remote → queued, null sender → none). *Delete* drops the job and its stored message
and tells nobody.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from caducee.gateway.relay import outcomes, state
from caducee.gateway.relay.handler import Relay
from caducee.mailboxes.relay.models import RelayMessage
from caducee.mailboxes.reports.dsn import dsn_allowed
from caducee.storage.db import utcnow
from caducee.storage.jobs import DEAD, READY, RUNNING, ClaimedJob, JobRow

if TYPE_CHECKING:
    from caducee.gateway.runtime import Gateway

OPERATOR_WORKER = "operator"
CANCELLED = ("5.0.0", "cancelled by the operator of the sending gateway")


class QueueError(Exception):
    """A queue operation refused; ``code`` is stable (API ``code``), ``status`` its HTTP status."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def entry_view(entry: state.QueueEntry, now: datetime) -> dict[str, Any]:
    """One relay job as JSON (``queue list --json`` and the API): ids, times, counts, codes."""
    return {
        "id": entry.job_id,
        "purpose": entry.purpose,
        "state": entry.job_state,
        "created": entry.created_at.isoformat(),
        "age_seconds": max(int((now - entry.created_at).total_seconds()), 0),
        "attempts": entry.attempts,
        "recipients": entry.recipients,
        "recipient_states": entry.states,
        "recipient_domains": list(entry.domains),
        "next_attempt": _iso(entry.next_attempt_at),
        "expires": _iso(entry.expires_at),
        "last_error": entry.last_error,
    }


def list_jobs(session: Session, *, include_done: bool = False) -> list[dict[str, Any]]:
    """Every waiting relay job (``include_done``: also the finished ones), oldest first."""
    now = utcnow()
    return [entry_view(e, now) for e in state.list_queue(session, include_done=include_done)]


def _job(session: Session, job_id: int) -> JobRow:
    job = state.relay_job(session, job_id)
    if job is None:
        raise QueueError("not-found", f"no relay job {job_id}", 404)
    return job


def show_job(session: Session, job_id: int) -> dict[str, Any]:
    """One relay job with each recipient's domain, state and last status (no address)."""
    job = _job(session, job_id)
    payload = job.payload if isinstance(job.payload, dict) else {}
    message = session.get(RelayMessage, job_id)
    rows = state.recipients_of(session, job_id)
    if rows:
        recipients = [
            {
                "domain": row.domain,
                "state": row.state,
                "attempts": row.attempts,
                "reply_code": row.reply_code,
                "status": row.status,
                "last_attempt": _iso(row.last_attempt_at),
            }
            for row in rows
        ]
    else:  # not attempted yet: the payload says who
        recipients = [
            {
                "domain": state.domain_of(str(address)),
                "state": "queued",
                "attempts": 0,
                "reply_code": None,
                "status": None,
                "last_attempt": None,
            }
            for address in payload.get("recipients", [])
        ]
    return {
        "id": job.id,
        "purpose": str(payload.get("purpose", "")),
        "state": job.state,
        "created": job.created_at.isoformat(),
        "next_attempt": _iso(job.next_attempt_at) if job.state in (READY, RUNNING) else None,
        "attempts": message.attempts if message is not None else 0,
        "arrival": _iso(message.arrival_at) if message is not None else None,
        "expires": _iso(message.expires_at) if message is not None else None,
        "delay_notified": _iso(message.delay_notified_at) if message is not None else None,
        "sender_notified_possible": bool(str(payload.get("envelope_from", ""))),
        "last_error": job.last_error,
        "recipients": recipients,
    }


def _busy(job: JobRow, now: datetime) -> bool:
    return job.state == RUNNING and job.locked_until is not None and job.locked_until > now


def retry_job(session: Session, job_id: int) -> None:
    """Make a waiting (or dead) relay job due now; :class:`QueueError` when there is nothing."""
    job = _job(session, job_id)
    if not state.retry_now(session, job_id, utcnow()):
        busy = " (it is being attempted right now)" if job.state == RUNNING else ""
        raise QueueError("nothing-to-retry", f"relay job {job_id} is {job.state}{busy}")


def delete_job(gateway: Gateway, session: Session, job_id: int) -> int:
    """Drop a relay job and its stored message, telling nobody; the recipient count."""
    job = _job(session, job_id)
    if _busy(job, utcnow()):
        raise QueueError("busy", f"relay job {job_id} is being attempted right now")
    dropped = state.delete_job(session, job_id)
    assert dropped is not None
    blob_id, count = dropped
    if blob_id:
        gateway.blobs.delete(session, blob_id)
    return count


@dataclass(frozen=True)
class Bounced:
    """What a bounce did."""

    failed: int
    """Recipients that were pending and are now failed."""
    dsn: bool
    """A failure DSN went to the sender (never for the null sender)."""


def bounce_job(gateway: Gateway, session: Session, job_id: int) -> Bounced:
    """Fail every pending recipient of a relay job now and send the sender its DSN.

    The job is taken with the relay's own lease (so no worker attempts it meanwhile) and
    ended by the relay's recording code, the one that ends a job whose retry period ran
    out: states, the DSN (or none for the null sender) and the job's end are its rules.
    """
    now = utcnow()
    job = _job(session, job_id)
    if job.state not in (READY, DEAD) or _busy(job, now):
        raise QueueError("nothing-to-bounce", f"relay job {job_id} is {job.state}")
    try:
        payload = state.RelayPayload.parse(job.payload)
    except ValueError:
        raise QueueError("unusable-job", f"relay job {job_id} has no usable envelope") from None
    taken = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.state.in_((READY, DEAD)))
        .values(
            state=RUNNING,
            locked_by=OPERATOR_WORKER,
            locked_until=now + gateway.queue.lease,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise QueueError("busy", f"relay job {job_id} is being attempted right now")
    claimed = ClaimedJob(
        job_id, job.kind, job.payload, job.attempts, job.max_attempts, OPERATOR_WORKER
    )
    failure = outcomes.failed(*CANCELLED, gateway.settings.gateway.hostname)
    failed = Relay(gateway).fail_pending(session, claimed, payload, failure, now)
    return Bounced(failed, bool(failed) and dsn_allowed(payload.envelope_from))
