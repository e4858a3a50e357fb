"""The patient's notification centre (G1, issue 17): what happened, read, unread, deleted.

The out-of-band notifications (:mod:`caducee.mailboxes.notifications.patients`) tell the
patient *that* something happened, on their personal e-mail or phone, grouped and only when
they want it. The centre is the same events inside the space: one line per event the
``notify-patient`` handler collects — a new message, new or changed documents, a
professional's access to the record — whatever the patient chose for e-mail and SMS, kept
until the patient deletes it. Like the e-mail it holds no health content: a kind, a count,
a time; the page links to where to look (messages, documents, history).

A line is written in the transaction that collects its event, so it exists exactly when the
event's job completes (a retried job rolled back leaves no line).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.storage.db import Base, UtcDateTime, table_of, utcnow

BIG_ID = BigInteger().with_variant(Integer, "sqlite")
PAGE_SIZE = 20
KINDS = (
    "new-message",
    "new-document",
    "record-access",
    # caregiving (aidants, F3): the other side of each change is told (the app's
    # PARTAGE_PROFIL_AIDANT, ACCORD/REFUS_PARTAGE_PROFIL, REVOCATION_PAR_AIDANT/AIDE)
    "caregiver-invitation",
    "caregiver-accepted",
    "caregiver-refused",
    "caregiver-revoked",
)


class CentreNotification(Base):
    """One event in the patient's notification centre."""

    __tablename__ = "webmail_notifications"
    __table_args__ = (Index("ix_webmail_notifications_account", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


_CENTRE = table_of(CentreNotification)
_ADD = insert(_CENTRE)
"""Built once, its values bound at execution: no per-row coercion or cache key (issue 19)."""


def add_to_centre(session: Session, account_id: int, kind: str, count: int = 1) -> None:
    """Record one event (``new-message``, ``new-document``, ``record-access``) for the patient."""
    if kind not in KINDS:
        return
    # A Core insert, not session.add: it runs for every inbound message (a worker's
    # notification job), where the ORM's unit of work cost more than the row (issue 19).
    session.execute(
        _ADD,
        {
            "account_id": account_id,
            "kind": kind,
            "count": max(1, min(count, 10_000)),
            "created_at": utcnow(),
        },
    )


@dataclass(frozen=True)
class CentrePage:
    """One page of the centre, newest first."""

    items: tuple[CentreNotification, ...]
    total: int
    unread: int
    page: int
    pages: int


def centre_page(session: Session, account_id: int, page: int = 1) -> CentrePage:
    """The patient's notifications, newest first, with the number not read yet."""
    mine = CentreNotification.account_id == account_id
    total = int(session.scalar(select(func.count()).where(mine)) or 0)
    unread = int(
        session.scalar(select(func.count()).where(mine, CentreNotification.read_at.is_(None))) or 0
    )
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, page), pages)
    items = tuple(
        session.scalars(
            select(CentreNotification)
            .where(mine)
            .order_by(CentreNotification.id.desc())
            .limit(PAGE_SIZE)
            .offset((page - 1) * PAGE_SIZE)
        )
    )
    return CentrePage(items, total, unread, page, pages)


def unread_count(session: Session, account_id: int) -> int:
    """How many notifications the patient has not read (the menu shows it)."""
    return int(
        session.scalar(
            select(func.count()).where(
                CentreNotification.account_id == account_id,
                CentreNotification.read_at.is_(None),
            )
        )
        or 0
    )


def mark(session: Session, account_id: int, notification_id: int, *, read: bool) -> bool:
    """Mark one of the patient's notifications read or unread; False if not theirs."""
    result = session.execute(
        update(CentreNotification)
        .where(
            CentreNotification.id == notification_id,
            CentreNotification.account_id == account_id,
        )
        .values(read_at=utcnow() if read else None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_all_read(session: Session, account_id: int) -> int:
    """Mark every notification of the patient read; how many were unread."""
    result = session.execute(
        update(CentreNotification)
        .where(
            CentreNotification.account_id == account_id,
            CentreNotification.read_at.is_(None),
        )
        .values(read_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def remove(session: Session, account_id: int, notification_id: int) -> bool:
    """Delete one of the patient's notifications; False if not theirs."""
    result = session.execute(
        delete(CentreNotification).where(
            CentreNotification.id == notification_id,
            CentreNotification.account_id == account_id,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
