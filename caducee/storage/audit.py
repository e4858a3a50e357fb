"""The audit trail: an append-only, hash-chained log of who did what to which object (F4).

Every read of a message or document, every filing, every right change and every login is one
:class:`AuditEvent`: actor, action, object, result (and the rule that decided), time, and the
patient whose data it concerns, so that the patient can read their history. Never content:
no subject, no title, no name, no INS, no address; objects are named by ids.

It lives in ``storage`` because every layer records into it (``records`` when filing,
``mailboxes`` when a right changes, ``gateway`` for reads and logins) and may import nothing
above ``storage``.

Tamper evidence. Events are numbered 1, 2, 3… (``position``, the primary key). Each event
stores the hash of the previous one and its own hash, SHA-256 over a canonical JSON of its
fields and that previous hash; one row, :class:`AuditHead`, holds the last position and
hash. :func:`verify_chain` recomputes everything: an edited event no longer matches its hash
(or, if its hash was recomputed too, the next event's link), a deleted event leaves a gap in
the positions, a deleted last event leaves the head ahead of the chain. The chain does not
resist someone who rewrites every later row and the head; exporting the head hash
(``caducee audit verify`` prints it) to a place the database administrator cannot write
anchors it.

Concurrency. Appending reads and updates the head row inside the caller's transaction:
on PostgreSQL under ``SELECT … FOR UPDATE``, which makes concurrent writers queue on that row
until the first commits; on SQLite every write transaction of :class:`Database` already begins
``IMMEDIATE`` and so is serialised. Two writers therefore never extend the chain from the same
head, and the unique ``position`` is a second guard: a fork would fail to commit rather than
persist. Callers should append late in their transaction, so the head lock is held briefly.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.storage.db import Base, Database, UtcDateTime, table_of, utcnow
from caducee.storage.upsert import upsert_insert

BIG_ID = BigInteger().with_variant(Integer, "sqlite")
GENESIS_HASH = "0" * 64
"""The "previous hash" of the first event."""
HEAD_ROW_ID = 1


class Action(enum.StrEnum):
    """What was done. New actions may be added; stored values never change meaning."""

    LOGIN = "login"
    RECORD_SEARCH = "record.search"
    DOCUMENT_READ = "document.read"
    DOCUMENT_CONTENT = "document.content"
    DOCUMENT_FILE = "document.file"
    DOCUMENT_WITHDRAW = "document.withdraw"
    DOCUMENT_VISIBILITY = "document.visibility"
    MESSAGE_READ = "message.read"
    MESSAGE_SEND = "message.send"
    """A message sent from a patient's mailbox by someone acting for them (a caregiver)."""
    PROFESSIONAL_BLOCK = "professional.block"
    PROFESSIONAL_AUTHORISE = "professional.authorise"
    MEDECIN_TRAITANT_SET = "medecin-traitant.set"
    MEDECIN_TRAITANT_CLEAR = "medecin-traitant.clear"
    EMERGENCY_ENABLE = "emergency-access.enable"
    EMERGENCY_DISABLE = "emergency-access.disable"
    REPRESENTATIVE_ADD = "representative.add"
    REPRESENTATIVE_REMOVE = "representative.remove"
    NOTIFICATIONS_UPDATE = "notifications.update"
    CAREGIVER_INVITE = "caregiver.invite"
    CAREGIVER_ACCEPT = "caregiver.accept"
    CAREGIVER_REFUSE = "caregiver.refuse"
    CAREGIVER_REVOKE = "caregiver.revoke"


class Result(enum.StrEnum):
    """How it ended."""

    ALLOWED = "allowed"
    DENIED = "denied"
    OK = "ok"
    FAILED = "failed"


class ActorKind(enum.StrEnum):
    """Who acted."""

    PATIENT = "patient"
    REPRESENTATIVE = "representative"
    CAREGIVER = "caregiver"
    """A patient acting for an adult who made them their caregiver (aidant, F3)."""
    PROFESSIONAL = "professional"
    ORGANISATION = "organisation"
    OPERATOR = "operator"
    SYSTEM = "system"
    UNKNOWN = "unknown"


class AuditEvent(Base):
    """One event of the chain. Rows are inserted, never updated or deleted."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_subject", "subject_account_id", "position"),)

    position: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(48))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(80))
    result: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(String(64))
    subject_account_id: Mapped[int | None] = mapped_column(BIG_ID)
    channel: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(200))
    previous_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The last position and hash of the chain: one row, the lock writers queue on."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    position: Mapped[int] = mapped_column(BIG_ID)
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditCheckpoint(Base):
    """Where a purge cut the chain (I5): the last purged event's position and hash, signed.

    :func:`verify_chain` starts from the latest checkpoint; the signature (HMAC under a key
    derived from the keyring, see :mod:`caducee.storage.traces`) shows it was written by the
    gateway, not by whoever deleted rows.
    """

    __tablename__ = "audit_checkpoints"

    position: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    cutoff: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    kek_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(64))


_EVENTS = table_of(AuditEvent)
_HEAD = table_of(AuditHead)
_CHECKPOINTS = table_of(AuditCheckpoint)
_LIMITS = {
    "actor_kind": 16,
    "actor_id": 80,
    "action": 48,
    "object_type": 32,
    "object_id": 80,
    "result": 16,
    "rule": 64,
    "channel": 16,
    "reason": 200,
}


@dataclass(frozen=True)
class EventFields:
    """The hashed content of one event (everything but its own hash)."""

    position: int
    occurred_at: datetime
    actor_kind: str
    actor_id: str
    action: str
    object_type: str
    object_id: str
    result: str
    rule: str | None
    subject_account_id: int | None
    channel: str | None
    reason: str | None
    previous_hash: str


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(fields: EventFields) -> str:
    """SHA-256 of a canonical JSON array of the fields, in a fixed order."""
    material = [
        fields.position,
        _instant(fields.occurred_at),
        fields.actor_kind,
        fields.actor_id,
        fields.action,
        fields.object_type,
        fields.object_id,
        fields.result,
        fields.rule,
        fields.subject_account_id,
        fields.channel,
        fields.reason,
        fields.previous_hash,
    ]
    encoded = json.dumps(material, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


def _clip(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = "".join(char if char.isprintable() else " " for char in value)
    return cleaned[: _LIMITS[name]]


def _locked_head(session: Session) -> tuple[int, str]:
    """The head row, locked until the caller's transaction ends; created when missing."""
    locked = select(_HEAD.c.position, _HEAD.c.hash).where(_HEAD.c.id == HEAD_ROW_ID)
    locked = locked.with_for_update()
    connection = session.connection()
    row = connection.execute(locked).first()
    if row is None:
        connection.execute(
            upsert_insert(session, _HEAD)
            .values(id=HEAD_ROW_ID, position=0, hash=GENESIS_HASH, updated_at=utcnow())
            .on_conflict_do_nothing(index_elements=["id"])
        )
        row = connection.execute(locked).one()
    return int(row.position), str(row.hash)


def record_event(
    session: Session,
    *,
    actor_kind: str,
    actor_id: str,
    action: str,
    object_type: str,
    object_id: str,
    result: str,
    rule: str | None = None,
    subject_account_id: int | None = None,
    channel: str | None = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> EventFields:
    """Append one event in the caller's (write) transaction; it exists when that commits.

    ``actor_id``/``object_id`` are ids (``account:12``, ``idnat:810001234567``, a document's
    public id), never names or content. ``reason`` is a break-glass justification given by a
    professional. Values are clipped to their column sizes before hashing.
    """
    position, previous = _locked_head(session)
    fields = EventFields(
        position=position + 1,
        occurred_at=(at or utcnow()).astimezone(UTC),
        actor_kind=_clip("actor_kind", actor_kind) or "",
        actor_id=_clip("actor_id", actor_id) or "",
        action=_clip("action", action) or "",
        object_type=_clip("object_type", object_type) or "",
        object_id=_clip("object_id", object_id) or "",
        result=_clip("result", result) or "",
        rule=_clip("rule", rule),
        subject_account_id=subject_account_id,
        channel=_clip("channel", channel),
        reason=_clip("reason", reason),
        previous_hash=previous,
    )
    digest = event_hash(fields)
    connection = session.connection()
    connection.execute(
        _EVENTS.insert().values(
            position=fields.position,
            occurred_at=fields.occurred_at,
            actor_kind=fields.actor_kind,
            actor_id=fields.actor_id,
            action=fields.action,
            object_type=fields.object_type,
            object_id=fields.object_id,
            result=fields.result,
            rule=fields.rule,
            subject_account_id=fields.subject_account_id,
            channel=fields.channel,
            reason=fields.reason,
            previous_hash=fields.previous_hash,
            hash=digest,
        )
    )
    connection.execute(
        update(_HEAD)
        .where(_HEAD.c.id == HEAD_ROW_ID)
        .values(position=fields.position, hash=digest, updated_at=utcnow())
    )
    return fields


def login_event(
    session: Session,
    *,
    account_id: int | None,
    account_kind: str | None,
    success: bool,
    method: str,
    channel: str,
    throttled: bool = False,
) -> EventFields:
    """One login attempt (IMAP, SMTP submission, HTTP): who, how, and whether it worked.

    ``account_id`` is the account the credentials named (None when no such account);
    ``method`` names the mechanism (``app-password``, ``oidc``, ``certificate``);
    ``channel`` the door (``smtp``, ``imap``, ``http``). An attempt refused without
    checking, because of earlier failures, is ``denied`` under the rule ``C1.throttled``.
    """
    known = account_id is not None
    kind = account_kind if success and account_kind else ActorKind.UNKNOWN.value
    if throttled:
        result, rule = Result.DENIED, "C1.throttled"
    else:
        result, rule = (Result.OK if success else Result.FAILED), f"C1.{method}"
    return record_event(
        session,
        actor_kind=kind,
        actor_id=f"account:{account_id}" if success and known else "unknown",
        action=Action.LOGIN.value,
        object_type="account",
        object_id=str(account_id) if known else "unknown",
        result=result.value,
        rule=rule[:64],
        subject_account_id=account_id,
        channel=channel,
    )


def message_read_event(
    session: Session,
    *,
    reader_account_id: int,
    reader_kind: str,
    message_id: int,
    mailbox_account_id: int,
    channel: str,
) -> EventFields:
    """One read of a stored message's content (IMAP ``FETCH BODY[]``, webmail)."""
    return record_event(
        session,
        actor_kind=reader_kind,
        actor_id=f"account:{reader_account_id}",
        action=Action.MESSAGE_READ.value,
        object_type="message",
        object_id=str(message_id),
        result=Result.ALLOWED.value,
        subject_account_id=mailbox_account_id,
        channel=channel,
    )


class AuditTrail:
    """For callers without a transaction at hand (IMAP/SMTP logins): one event, one commit."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def record(self, **fields: Any) -> EventFields:
        """:func:`record_event` (same keyword arguments) in a transaction of its own."""
        with self.database.transaction() as session:
            return record_event(session, **fields)


# ---------------------------------------------------------------------------------------------
# Reading and verifying


def history(
    session: Session,
    subject_account_id: int,
    *,
    limit: int = 50,
    before: int | None = None,
    actions: Sequence[str] = (),
) -> list[AuditEvent]:
    """The events about one patient, newest first (``before``: positions below it)."""
    query = select(AuditEvent).where(AuditEvent.subject_account_id == subject_account_id)
    if before is not None:
        query = query.where(AuditEvent.position < before)
    if actions:
        query = query.where(AuditEvent.action.in_(list(actions)))
    query = query.order_by(AuditEvent.position.desc()).limit(max(1, min(limit, 500)))
    return list(session.scalars(query))


def recent(session: Session, *, limit: int = 50) -> list[AuditEvent]:
    """The last events of the whole trail, newest first (for the operator)."""
    return list(
        session.scalars(
            select(AuditEvent).order_by(AuditEvent.position.desc()).limit(max(1, limit))
        )
    )


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_chain` found: intact, or the first broken position and why."""

    events: int
    head_position: int
    head_hash: str
    broken_at: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def _fields_of(row: Any) -> EventFields:
    return EventFields(
        position=int(row.position),
        occurred_at=row.occurred_at,
        actor_kind=row.actor_kind,
        actor_id=row.actor_id,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        result=row.result,
        rule=row.rule,
        subject_account_id=None if row.subject_account_id is None else int(row.subject_account_id),
        channel=row.channel,
        reason=row.reason,
        previous_hash=row.previous_hash,
    )


def _rows(session: Session, batch: int, after: int = 0) -> Iterator[Any]:
    """Every event in chain order, in batches (Core rows: nothing stays in the session)."""
    last = after
    connection = session.connection()
    while True:
        rows = connection.execute(
            select(_EVENTS)
            .where(_EVENTS.c.position > last)
            .order_by(_EVENTS.c.position)
            .limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = int(rows[-1].position)


def verify_chain(session: Session, *, batch: int = 2000) -> ChainReport:
    """Walk the whole chain; the first inconsistency is reported with its position."""
    head = session.execute(
        select(_HEAD.c.position, _HEAD.c.hash).where(_HEAD.c.id == HEAD_ROW_ID)
    ).first()
    head_position = int(head.position) if head is not None else 0
    head_hash = str(head.hash) if head is not None else GENESIS_HASH
    checkpoint = session.execute(
        select(_CHECKPOINTS.c.position, _CHECKPOINTS.c.hash)
        .order_by(_CHECKPOINTS.c.position.desc())
        .limit(1)
    ).first()
    expected = 1 if checkpoint is None else int(checkpoint.position) + 1  # after a purge (I5)
    previous = GENESIS_HASH if checkpoint is None else str(checkpoint.hash)
    count = 0

    def broken(position: int, problem: str) -> ChainReport:
        return ChainReport(count, head_position, head_hash, broken_at=position, problem=problem)

    for row in _rows(session, batch, expected - 1):
        fields = _fields_of(row)
        if fields.position != expected:
            return broken(expected, "event missing (deleted)")
        if fields.previous_hash != previous:
            return broken(fields.position, "link to the previous event broken")
        if event_hash(fields) != row.hash:
            return broken(fields.position, "event altered (hash mismatch)")
        previous = row.hash
        expected += 1
        count += 1
    last = expected - 1
    if head is None and last > 0:
        return broken(last, "chain head missing")
    if head_position > last:
        return broken(last + 1, "event missing (deleted at the end)")
    if head_position < last:
        return broken(head_position + 1, "events after the recorded head")
    if head_hash != previous:
        return broken(last, "chain head does not match the last event")
    return ChainReport(count, head_position, head_hash)
