"""Trace retention (I5): technical traces purged after a while, the audit chain still checkable.

*Technical traces* are the rows the machinery keeps about work it did: finished jobs (and, by
cascade, their relay bookkeeping) and sent notification batches. They carry ids and counts,
never content; :func:`purge_traces` deletes those older than ``[lifecycle]
trace_retention_days`` (183). The audit trail (F4) is the patient's access history: it is kept
forever unless ``audit_retention_days`` is set; :func:`purge_audit` then deletes the events
older than that behind a *checkpoint* — the last deleted event's position and hash, signed with
an HMAC key derived from the active key-encryption key — from which
:func:`caducee.storage.audit.verify_chain` carries on, and :func:`verify_checkpoints` shows
that every checkpoint was written by the gateway.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import column, delete, func, select, table
from sqlalchemy.orm import Session

from caducee.storage.audit import AuditCheckpoint, AuditEvent, record_event
from caducee.storage.db import UtcDateTime, utcnow
from caducee.storage.jobs import DEAD, DONE, JobRow
from caducee.storage.keyring import Keyring

_LABEL = b"caducee audit checkpoint v1"


def _signature(key: bytes, position: int, digest: str, cutoff: datetime) -> str:
    derived = hmac.new(key, _LABEL, hashlib.sha256).digest()
    message = f"{position}\n{digest}\n{cutoff.isoformat()}".encode()
    return hmac.new(derived, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Purged:
    """How many rows a purge deleted."""

    jobs: int = 0
    notification_batches: int = 0
    audit_events: int = 0


def purge_traces(session: Session, cutoff: datetime) -> Purged:
    """Delete finished jobs and sent notification batches older than ``cutoff``."""
    jobs = session.execute(
        delete(JobRow)
        .where(JobRow.state.in_((DONE, DEAD)), JobRow.finished_at < cutoff)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    batches_table = table("notification_batches", column("sent_at", UtcDateTime()))
    batches = session.execute(
        delete(batches_table).where(batches_table.c.sent_at < cutoff)
    ).rowcount  # type: ignore[attr-defined]
    return Purged(jobs=int(jobs or 0), notification_batches=int(batches or 0))


def purge_audit(session: Session, keyring: Keyring, cutoff: datetime) -> int:
    """Delete audit events older than ``cutoff`` behind a signed checkpoint; how many."""
    last = session.scalar(
        select(func.max(AuditEvent.position)).where(AuditEvent.occurred_at < cutoff)
    )
    if last is None:
        return 0
    head = session.execute(
        select(AuditEvent.position, AuditEvent.hash).where(AuditEvent.position == last)
    ).one()
    kek_id, key = keyring.active()
    session.add(
        AuditCheckpoint(
            position=int(head.position),
            hash=str(head.hash),
            cutoff=cutoff,
            created_at=utcnow(),
            kek_id=kek_id,
            signature=_signature(key, int(head.position), str(head.hash), cutoff),
        )
    )
    session.flush()
    removed = session.execute(
        delete(AuditEvent)
        .where(AuditEvent.position <= int(head.position))
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    record_event(
        session,
        actor_kind="system",
        actor_id="retention",
        action="audit.purge",
        object_type="audit",
        object_id=f"checkpoint:{int(head.position)}",
        result="ok",
        channel="job",
    )
    return int(removed or 0)


def verify_checkpoints(session: Session, keyring: Keyring) -> str | None:
    """None when every checkpoint carries the gateway's signature; else what is wrong."""
    for row in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.position)):
        try:
            key = keyring.key(row.kek_id)
        except Exception:
            return f"checkpoint {row.position}: its key {row.kek_id} is not in the keyring"
        expected = _signature(key, row.position, row.hash, row.cutoff)
        if not hmac.compare_digest(expected, row.signature):
            return f"checkpoint {row.position}: signature does not match (altered or forged)"
    return None
