"""The durable job queue: filing, notifications, receipts and relay run from here.

A job is a row (kind, JSON payload, attempts, next attempt, state). Producers
enqueue inside their own transaction, so a job exists exactly when the work
that implies it was committed. Workers claim jobs with a lease:

* PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` inside the claiming UPDATE,
  so concurrent workers never see the same ready row;
* SQLite: the claiming UPDATE runs in a ``BEGIN IMMEDIATE`` transaction, which
  serialises writers, so the same guarantee holds.

One claim may lease a batch of jobs (``limit``), which a worker then runs in one
transaction (:mod:`caducee.storage.worker`): on SQLite every write transaction is an
fsync and a turn of the single writer lock the SMTP committer needs too (issue 19).
A worker that dies leaves its jobs ``running`` until the lease expires, then
they are claimed again. Completing checks that the lease is still held, so a
worker that lost its lease cannot mark another worker's claim done. Failures
back off exponentially; after ``max_attempts`` a job is dead-lettered.

Every kind of job is a :class:`JobKind` with a typed payload (a :class:`JobPayload`
dataclass: :meth:`JobPayload.to_json` when enqueued, :meth:`JobPayload.from_job` in the
handler). A payload that does not parse raises :class:`MalformedPayloadError`, which the
worker turns into a dead letter with a clear error instead of retrying. The kinds live here,
in the lowest layer, because producers in every layer above (``mailboxes`` delivery, the
relay, the lifecycle, the ``jobs`` handlers) enqueue them.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import random
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

from sqlalchemy import (
    JSON,
    BigInteger,
    Index,
    Integer,
    Select,
    String,
    Text,
    and_,
    bindparam,
    or_,
    select,
    update,
)
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


class JobKind(enum.StrEnum):
    """Every kind of background work; the value is the ``jobs.kind`` column."""

    RELAY = "relay"
    """Send one stored message to its remote and local recipients (C5, B2)."""
    FILE_DOCUMENTS = "file-documents"
    """File a delivered message's documents for one patient, then decide their copy (E1–E6)."""
    NOTIFY_PATIENT = "notify-patient"
    """Group one event in the patient's notification batch, or send a batch (G1)."""
    OPEN_SPACE = "space-open"
    """Open a patient's space at its scheduled time (I1)."""
    PURGE_SPACE = "space-purge"
    """Delete a closed space once its keeping period is over (I2)."""
    LIFECYCLE_SWEEP = "lifecycle-sweep"
    """The periodic sweep of spaces due to open or be purged."""


class MalformedPayloadError(ValueError):
    """A job's payload does not parse as its kind's: retrying can never succeed."""


def _parse_field(kind: str, name: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the field's type: int, str, an optional, a tuple of str."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None:
            return None
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _parse_field(kind, name, inner, value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    if (
        typing.get_origin(hint) is tuple
        and isinstance(value, list | tuple)
        and value
        and all(isinstance(item, str) for item in value)
    ):
        return tuple(value)
    raise MalformedPayloadError(f"{kind} job payload: {name} is missing or not a valid value")


_FIELD_TYPES: dict[type[JobPayload], dict[str, Any]] = {}


def _field_types(payload_type: type[JobPayload]) -> dict[str, Any]:
    """The resolved field types of a payload class: resolved once, checked for every job."""
    hints = _FIELD_TYPES.get(payload_type)
    if hints is None:
        hints = _FIELD_TYPES[payload_type] = typing.get_type_hints(payload_type)
    return hints


@dataclass(frozen=True)
class JobPayload:
    """The typed payload of one job kind; subclasses name their :attr:`kind`."""

    kind: ClassVar[JobKind]

    def to_json(self) -> dict[str, Any]:
        """The payload as stored (JSON): optional fields left unset are omitted."""
        stored: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            stored[item.name] = list(value) if isinstance(value, tuple) else value
        return stored

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Self:
        """Parse a stored payload; :class:`MalformedPayloadError` when it does not fit."""
        if not isinstance(payload, Mapping):
            raise MalformedPayloadError(f"{cls.kind} job payload is not an object")
        hints = _field_types(cls)
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            optional = item.default is not dataclasses.MISSING
            if item.name not in payload and optional:
                continue
            values[item.name] = _parse_field(
                cls.kind, item.name, hints[item.name], payload.get(item.name)
            )
        return cls(**values)

    @classmethod
    def from_job(cls, job: ClaimedJob) -> Self:
        """The payload of a claimed job of this kind."""
        if job.kind != cls.kind:
            raise MalformedPayloadError(f"a {job.kind} job is not a {cls.kind} job")
        return cls.from_json(job.payload)


@dataclass(frozen=True)
class FileDocuments(JobPayload):
    """File the documents of ``message_id`` in the record of ``account_id``."""

    kind: ClassVar[JobKind] = JobKind.FILE_DOCUMENTS
    message_id: int
    account_id: int


@dataclass(frozen=True)
class NotifyPatient(JobPayload):
    """One event for a patient's notification batch, or (``send-batch``) a batch to send."""

    kind: ClassVar[JobKind] = JobKind.NOTIFY_PATIENT
    event: str
    account_id: int | None = None
    message_id: int | None = None
    documents: int | None = None
    batch_id: int | None = None


@dataclass(frozen=True)
class Relay(JobPayload):
    """One stored message (``blob_id``) to send to ``recipients`` from ``envelope_from``."""

    kind: ClassVar[JobKind] = JobKind.RELAY
    blob_id: str
    envelope_from: str
    recipients: tuple[str, ...]
    purpose: str
    message_id: str | None = None
    """The ``Message-ID`` header of a submission, to recognise reports about it (B2)."""


@dataclass(frozen=True)
class OpenSpace(JobPayload):
    """Open the space of ``account_id``."""

    kind: ClassVar[JobKind] = JobKind.OPEN_SPACE
    account_id: int


@dataclass(frozen=True)
class PurgeSpace(JobPayload):
    """Purge the closed space of ``account_id``."""

    kind: ClassVar[JobKind] = JobKind.PURGE_SPACE
    account_id: int


@dataclass(frozen=True)
class LifecycleSweep(JobPayload):
    """The periodic lifecycle sweep; it carries nothing."""

    kind: ClassVar[JobKind] = JobKind.LIFECYCLE_SWEEP


PAYLOADS: Mapping[str, type[JobPayload]] = {
    payload.kind.value: payload
    for payload in (FileDocuments, NotifyPatient, Relay, OpenSpace, PurgeSpace, LifecycleSweep)
}
"""The payload type of every kind; the worker checks a payload against it before its handler."""


def check_payload(job: ClaimedJob) -> None:
    """Raise :class:`MalformedPayloadError` when ``job``'s payload does not fit its kind."""
    payload_type = PAYLOADS.get(job.kind)
    if payload_type is not None:
        payload_type.from_json(job.payload)


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


_JOBS = table_of(JobRow)
_COMPLETE = (
    update(_JOBS)
    .where(
        _JOBS.c.id == bindparam("job_id"),
        _JOBS.c.state == RUNNING,
        _JOBS.c.locked_by == bindparam("worker"),
    )
    .values(
        state=DONE,
        finished_at=bindparam("now"),
        updated_at=bindparam("now"),
        locked_by=None,
        locked_until=None,
    )
)
"""Mark a held job done. Built once: it runs for every job, most of them one per inbound
message (issue 19); built per call on the ORM entity, its expression, cache key and the ORM's bulk
update path cost more than the row."""

_DUE = or_(
    and_(_JOBS.c.state == READY, _JOBS.c.next_attempt_at <= bindparam("now")),
    and_(_JOBS.c.state == RUNNING, _JOBS.c.locked_until < bindparam("now")),
)
"""A job a claim may lease at ``now`` (bound at execution): due, or its lease expired."""
_ANY_DUE = select(_JOBS.c.id).where(_DUE).limit(1)
"""Any job a claim could lease now."""
_ANY_DUE_OF = _ANY_DUE.where(_JOBS.c.kind.in_(bindparam("kinds", expanding=True)))


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
        kind: JobPayload | str,
        payload: Mapping[str, Any] | None = None,
        *,
        delay: timedelta = timedelta(0),
        max_attempts: int | None = None,
    ) -> int:
        """Add a job in the caller's transaction and return its id; visible on commit.

        Pass a typed :class:`JobPayload` (its kind is its class's); a kind and a mapping is
        for kinds the product does not define (tests of the queue itself).
        """
        if isinstance(kind, JobPayload):
            if payload is not None:
                raise TypeError("a typed payload carries its own values")
            kind_name, payload = kind.kind.value, kind.to_json()
        elif payload is None:
            raise TypeError("a job kind given as a string needs its payload")
        else:
            kind_name = str(kind)
            if kind_name in PAYLOADS:
                PAYLOADS[kind_name].from_json(payload)  # a known kind's payload must parse
        json.dumps(payload)  # refuse what cannot be stored, here rather than at commit
        now = utcnow()
        return int(
            session.connection()
            .execute(
                _INSERT_JOB,
                {
                    "kind": kind_name,
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
        self,
        worker: str,
        *,
        limit: int = 1,
        kinds: Sequence[str] | None = None,
        one_of: Sequence[str] = (),
        session: Session | None = None,
    ) -> list[ClaimedJob]:
        """Lease up to ``limit`` due jobs to ``worker``; never the same job to two workers.

        ``kinds`` restricts the batch (None or empty: every kind). ``one_of`` adds at most one
        due job of those kinds to the same claim: a worker batches the jobs that run together
        in one transaction, but takes slow ones (the network, a PDF) one at a time, so that
        another worker or node can take the next instead of it waiting behind this batch.
        ``session``: claim in the caller's transaction (a worker claims its next batch in the
        commit of the current one); the lease then exists when that transaction commits.
        """
        now = utcnow()
        picks = [self._due(kinds, limit)]
        if one_of:
            picks.append(self._due(one_of, 1))
        if session is None and not self._any_due(now, [*kinds, *one_of] if kinds else None):
            return []
        statement = (
            update(JobRow)
            .where(or_(*(JobRow.id.in_(pick.scalar_subquery()) for pick in picks)))
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
        if session is not None:
            rows = session.execute(statement, {"now": now}).all()
        else:
            with self.database.transaction() as own:
                rows = own.execute(statement, {"now": now}).all()
        return [
            ClaimedJob(
                id=r[0], kind=r[1], payload=r[2], attempts=r[3], max_attempts=r[4], worker=worker
            )
            for r in sorted(rows, key=lambda r: r[0])
        ]

    def _any_due(self, now: datetime, kinds: Sequence[str] | None) -> bool:
        """Whether a claim of ``kinds`` (None: every kind) may find a job, asked without the
        write lock.

        Workers are woken at every commit of the SMTP committer, most of them to find nothing;
        on SQLite an empty claim still takes the one writer lock from the committer. A job
        that becomes due just after this look is found at the next wake or poll, as a job
        committed just after a claim always was. One prebuilt statement: it runs at every
        wake of every worker (issue 19).
        """
        if self.database.dialect != "sqlite":
            return True  # no single writer to spare; SKIP LOCKED claims are cheap
        with self.database.reading() as session:
            if kinds is None:
                return session.execute(_ANY_DUE, {"now": now}).first() is not None
            found = session.execute(_ANY_DUE_OF, {"now": now, "kinds": [str(k) for k in kinds]})
            return found.first() is not None

    def _due(self, kinds: Sequence[str] | None, limit: int) -> Select[Any]:
        """The ids of up to ``limit`` jobs of ``kinds`` claimable at ``now`` (bound at
        execution), the longest due first."""
        candidates = select(JobRow.id).where(_DUE).order_by(JobRow.next_attempt_at).limit(limit)
        if kinds:
            candidates = candidates.where(JobRow.kind.in_([str(kind) for kind in kinds]))
        if self.database.dialect == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        return candidates

    def _held(self, job: ClaimedJob) -> Any:
        return and_(JobRow.id == job.id, JobRow.state == RUNNING, JobRow.locked_by == job.worker)

    def complete(self, job: ClaimedJob, session: Session | None = None) -> bool:
        """Mark a job done; False when the lease was lost meanwhile.

        Pass ``session`` to complete in the same transaction as the job's own
        database effects, which makes those effects happen exactly once.

        Without it, on SQLite, a read comes first: most handlers complete their job in their
        own transaction, and the worker's completion after them then has nothing to do;
        looking without the write lock spares the single writer (the SMTP group committer) an
        empty write transaction per job. A job no longer held cannot become held by this
        claim again, so the read cannot miss a completion that was due.
        """
        now = utcnow()
        values = {"job_id": job.id, "worker": job.worker, "now": now}
        if session is not None:
            return session.execute(_COMPLETE, values).rowcount == 1  # type: ignore[attr-defined,no-any-return]
        if self.database.dialect == "sqlite":
            with self.database.reading() as reader:
                if reader.scalar(select(JobRow.id).where(self._held(job))) is None:
                    return False
        with self.database.transaction() as own:
            return own.execute(_COMPLETE, values).rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def fail(
        self,
        job: ClaimedJob,
        error: str,
        *,
        permanent: bool = False,
        session: Session | None = None,
    ) -> str:
        """Record a failure: retry later with back-off, or dead-letter. Returns the new state.

        Pass ``session`` to record it in a transaction shared with other jobs (a worker's
        batch, after this job's own effects were rolled back to their savepoint).
        """
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
        statement = (
            update(JobRow)
            .where(self._held(job))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if session is not None:
            session.execute(statement)
        else:
            with self.database.transaction() as own:
                own.execute(statement)
        return str(values["state"])

    def release(self, jobs: Sequence[ClaimedJob]) -> int:
        """Give back claimed jobs that were never started; return how many were still held.

        They are due again at once, for any worker, and the attempt their claim counted is
        taken back: nothing was tried. A worker does this with the rest of a batch when it
        stops, or when running the batch's first jobs used up half of the lease (the later
        ones would otherwise risk running after their lease passed to another worker).
        """
        if not jobs:
            return 0
        now = utcnow()
        worker = jobs[0].worker
        statement = (
            update(JobRow)
            .where(
                JobRow.id.in_([job.id for job in jobs]),
                JobRow.state == RUNNING,
                JobRow.locked_by == worker,
            )
            .values(
                state=READY,
                attempts=JobRow.attempts - 1,
                locked_by=None,
                locked_until=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        with self.database.transaction() as session:
            return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]

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
