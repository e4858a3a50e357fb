"""Tables the IMAP service adds beside the mailbox tables (H1, G2, J1).

* :class:`ExpungedEntry` remembers which UID left a folder at which
  modification sequence. A session (in this process or another one) that last
  synchronised at modseq *n* learns every expunge since *n* with one indexed
  query, which is what CONDSTORE-style bookkeeping and cross-process IDLE need;
  without it a session would have to compare its whole UID list with the
  folder's on every check.
* :class:`StructureCache` points to an encrypted blob holding the parsed MIME
  structure of a message and the raw header fields IMAP answers with (ENVELOPE,
  BODYSTRUCTURE, section offsets). Subjects and names are health content, so the
  cache is a blob like the message itself (J1), never a plain column. ``version``
  lets a newer parser rebuild older entries.
* :class:`FolderRecent` is the boundary of ``\\Recent``: the first UID no
  read-write SELECT has claimed yet.
* :class:`ValidityCounter` is the last UIDVALIDITY given to a folder of an account
  (migration ``0014_imap_incarnation``): each folder incarnation takes the next
  value, so a folder deleted and created again under the same name never gets
  the UIDVALIDITY (hence UIDs) of its predecessor, not even within one second.
* :class:`ReadReceipt` is the durable memory of G2: one row per message and
  recipient account, written in the transaction that sets the first ``\\Seen``,
  so a read receipt is queued once and never twice.

The existing tables are not changed; ``mailbox_entries`` only gains an index on
``(folder_id, modseq)`` (migration ``0005_imap``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from caducee.mailboxes import models as _models
from caducee.storage.db import Base, UtcDateTime, utcnow

BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class ExpungedEntry(Base):
    """A UID removed from a folder (EXPUNGE, MOVE) and the modseq of its removal."""

    __tablename__ = "imap_expunged"
    __table_args__ = (Index("ix_imap_expunged_folder_modseq", "folder_id", "modseq"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BIG_ID)
    modseq: Mapped[int] = mapped_column(BIG_ID)
    message_id: Mapped[int | None] = mapped_column(BIG_ID, nullable=True)
    """The message the UID named (``0014_imap_incarnation``): sessions that still show the
    UID are answered with its data; NULL for rows written before, or by other writers."""


class StructureCache(Base):
    """The encrypted parsed structure of one stored message."""

    __tablename__ = "imap_structure_cache"

    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # The rendered ENVELOPE sealed apart (migration 0027): a listing decrypts only this.
    envelope_blob_id: Mapped[str | None] = mapped_column(ForeignKey("blobs.id"), default=None)


class FolderRecent(Base):
    """Where ``\\Recent`` starts in a folder: UIDs from here on were never claimed."""

    __tablename__ = "imap_folder_recent"

    folder_id: Mapped[int] = mapped_column(
        ForeignKey("folders.id", ondelete="CASCADE"), primary_key=True
    )
    first_recent_uid: Mapped[int] = mapped_column(BIG_ID)


class ValidityCounter(Base):
    """The last UIDVALIDITY handed out to a folder of one account (never decreases)."""

    __tablename__ = "imap_uid_validity"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    last_value: Mapped[int] = mapped_column(BIG_ID)


class ReadReceipt(Base):
    """G2: the ``displayed`` MDN queued for one message read by one account."""

    __tablename__ = "read_receipts"
    __table_args__ = (
        UniqueConstraint("message_id", "account_id", name="uq_read_receipts_message_account"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int | None] = mapped_column(BIG_ID)
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(String(32), default="sent")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


ENTRIES_BY_MODSEQ = Index(
    "ix_mailbox_entries_folder_modseq",
    _models.MailboxEntry.__table__.c.folder_id,
    _models.MailboxEntry.__table__.c.modseq,
)
"""Serves "what changed in this folder since modseq n" (created by ``0005_imap``)."""
