"""Durable state of outbound relay jobs, per message and per recipient (C5, G4).

A ``relay`` job (queued by :func:`caducee.mailboxes.relay.outbound.queue_outbound`)
carries one message for several recipients, and recipients fare differently:
one operator answers ``250``, another ``451``, a third ``550``. The job row
alone cannot say that, so the relay keeps:

* :class:`RelayMessage`: one row per relay job, created at its first attempt:
  when the message arrived (the job's creation, so the five days count from
  acceptance, not from the first attempt), when the delay notice is due and
  when retrying stops, how many attempts were made, and whether the delay DSN
  was already sent (it is sent once).
* :class:`RelayRecipient`: one row per recipient: ``pending`` until delivered
  or failed, the last reply code and enhanced status, the remote reply text
  (for the DSN's ``Diagnostic-Code``) and the host that gave it.

A recipient reaches ``failed`` in the same transaction that queues (or
delivers) its failure DSN, so "failed" also means "reported". Rows go when
their job row goes (``ON DELETE CASCADE``). No column holds message content:
addresses and the remote servers' replies only.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from caducee.storage.db import Base, UtcDateTime
from caducee.storage.jobs import JobRow  # noqa: F401  (``jobs`` must be in the metadata)

BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class RecipientState(enum.StrEnum):
    """Where one recipient of a relayed message stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class RelayMessage(Base):
    """The relay's memory of one ``relay`` job."""

    __tablename__ = "relay_messages"

    job_id: Mapped[int] = mapped_column(
        BIG_ID, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    arrival_at: Mapped[datetime] = mapped_column(UtcDateTime())
    warn_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    delay_notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class RelayRecipient(Base):
    """One recipient of a relayed message and its last outcome."""

    __tablename__ = "relay_recipients"
    __table_args__ = (
        UniqueConstraint("job_id", "address", name="uq_relay_recipients_job_address"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(
        BIG_ID, ForeignKey("relay_messages.job_id", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(253))
    state: Mapped[str] = mapped_column(String(16), default=RecipientState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reply_code: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str | None] = mapped_column(String(16))
    diagnostic: Mapped[str | None] = mapped_column(Text)
    remote_mta: Mapped[str | None] = mapped_column(String(253))
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
