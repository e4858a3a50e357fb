"""The durable job queue: filing, notifications, receipts and relay run from here.

A job is a row (kind, JSON payload, attempts, next attempt, state). Producers
enqueue inside their own transaction, so a job exists exactly when the work
that implies it was committed. Workers claim jobs with a lease:

* PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` inside the claiming UPDATE,
  so concurrent workers never see the same ready row;
* SQLite: the claiming UPDATE runs in a ``BEGIN IMMEDIATE`` transaction, which
  serialises writers, so the same guarantee holds.

A worker that dies leaves its jobs ``running`` until the lease expires, then
they are claimed again. Completing checks that the lease is still held, so a
worker that lost its lease cannot mark another worker's claim done. Failures
back off exponentially; after ``max_attempts`` a job is dead-lettered.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text, and_, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.storage.db import Base, Database, UtcDateTime, table_of, utcnow

READY = "ready"
RUNNING = "running"
DONE = "done"
DEAD = "dead"


class JobRow(Base):
    """One unit of background work."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_next", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=READY)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int]
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    locked_by: Mapped[str | None] = mapped_column(String(128))
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


_INSERT_JOB = table_of(JobRow).insert().returning(table_of(JobRow).c.id)


@dataclass(frozen=True)
class ClaimedJob:
    """A job leased to one worker."""

    id: int
    kind: str
    payload: Mapping[str, Any]
    attempts: int
    max_attempts: int
    worker: str


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off between attempts, with jitter and a ceiling."""

    base_seconds: float = 30.0
    max_seconds: float = 3600.0
    jitter: float = 0.2

    def delay(self, attempts: int) -> timedelta:
        """How long to wait after the ``attempts``-th failure."""
        raw = min(self.base_seconds * (2 ** max(attempts - 1, 0)), self.max_seconds)
        spread = raw * self.jitter
        return timedelta(seconds=max(0.0, raw + random.uniform(-spread, spread)))  # noqa: S311


class JobQueue:
    """Enqueue, claim, complete and fail jobs; inspect and repair the queue."""

    def __init__(
        self,
        database: Database,
        *,
        lease_seconds: int = 300,
        max_attempts: int = 8,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.database = database
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.retry = retry or RetryPolicy()

    def enqueue(
        self,
        session: Session,
        kind: str,
        payload: Mapping[str, Any],
        *,
        delay: timedelta = timedelta(0),
        max_attempts: int | None = None,
    ) -> int:
        """Add a job in the caller's transaction and return its id; visible on commit."""
        json.dumps(payload)  # refuse what cannot be stored, here rather than at commit
        now = utcnow()
        return int(
            session.connection()
            .execute(
                _INSERT_JOB,
                {
                    "kind": kind,
                    "payload": dict(payload),
                    "state": READY,
                    "attempts": 0,
                    "max_attempts": max_attempts or self.max_attempts,
                    "next_attempt_at": now + delay,
                    "locked_by": None,
                    "locked_until": None,
                    "last_error": None,
                    "created_at": now,
                    "updated_at": now,
                    "finished_at": None,
                },
            )
            .scalar_one()
        )

    def claim(
        self, worker: str, *, limit: int = 1, kinds: Sequence[str] | None = None
    ) -> list[ClaimedJob]:
        """Lease up to ``limit`` due jobs to ``worker``; never the same job to two workers."""
        now = utcnow()
        due = or_(
            and_(JobRow.state == READY, JobRow.next_attempt_at <= now),
            and_(JobRow.state == RUNNING, JobRow.locked_until < now),
        )
        candidates = select(JobRow.id).where(due).order_by(JobRow.next_attempt_at).limit(limit)
        if kinds:
            candidates = candidates.where(JobRow.kind.in_(kinds))
        if self.database.dialect == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        statement = (
            update(JobRow)
            .where(JobRow.id.in_(candidates.scalar_subquery()))
            .values(
                state=RUNNING,
                locked_by=worker,
                locked_until=now + self.lease,
                attempts=JobRow.attempts + 1,
                updated_at=now,
            )
            .returning(JobRow.id, JobRow.kind, JobRow.payload, JobRow.attempts, JobRow.max_attempts)
            .execution_options(synchronize_session=False)
        )
        with self.database.transaction() as session:
            rows = session.execute(statement).all()
        return [
            ClaimedJob(
                id=r[0], kind=r[1], payload=r[2], attempts=r[3], max_attempts=r[4], worker=worker
            )
            for r in sorted(rows, key=lambda r: r[0])
        ]

    def _held(self, job: ClaimedJob) -> Any:
        return and_(JobRow.id == job.id, JobRow.state == RUNNING, JobRow.locked_by == job.worker)

    def complete(self, job: ClaimedJob, session: Session | None = None) -> bool:
        """Mark a job done; False when the lease was lost meanwhile.

        Pass ``session`` to complete in the same transaction as the job's own
        database effects, which makes those effects happen exactly once.
        """
        now = utcnow()
        statement = (
            update(JobRow)
            .where(self._held(job))
            .values(state=DONE, finished_at=now, updated_at=now, locked_by=None, locked_until=None)
            .execution_options(synchronize_session=False)
        )
        if session is not None:
            return session.execute(statement).rowcount == 1  # type: ignore[attr-defined,no-any-return]
        with self.database.transaction() as own:
            return own.execute(statement).rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def fail(self, job: ClaimedJob, error: str, *, permanent: bool = False) -> str:
        """Record a failure: retry later with back-off, or dead-letter. Returns the new state."""
        now = utcnow()
        dead = permanent or job.attempts >= job.max_attempts
        values: dict[str, Any] = {
            "state": DEAD if dead else READY,
            "last_error": error[:2000],
            "updated_at": now,
            "locked_by": None,
            "locked_until": None,
        }
        if dead:
            values["finished_at"] = now
        else:
            values["next_attempt_at"] = now + self.retry.delay(job.attempts)
        with self.database.transaction() as session:
            session.execute(
                update(JobRow)
                .where(self._held(job))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        return str(values["state"])

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        from sqlalchemy import func

        with self.database.transaction() as session:
            rows = session.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
        return {state: count for state, count in rows}

    def backlog(self) -> list[tuple[str, int, datetime]]:
        """Per kind: how many jobs are ready (due or waiting to retry) and the oldest's creation."""
        from sqlalchemy import func

        with self.database.reading() as session:
            rows = session.execute(
                select(JobRow.kind, func.count(), func.min(JobRow.created_at))
                .where(JobRow.state == READY)
                .group_by(JobRow.kind)
            ).all()
        return [(kind, count, _aware(oldest)) for kind, count, oldest in rows]

    def retry_now(self, job_id: int) -> bool:
        """Put a dead or waiting job back at the front of the queue."""
        now = utcnow()
        with self.database.transaction() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_((READY, DEAD)))
                .values(
                    state=READY, next_attempt_at=now, updated_at=now, finished_at=None, attempts=0
                )
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def _aware(moment: datetime) -> datetime:
    """``moment`` in UTC (an aggregate may come back naive from SQLite)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
