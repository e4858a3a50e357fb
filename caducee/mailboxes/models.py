"""Messages, folders and mailbox entries; conversations and known professionals (D1–D3).

A stored message is one encrypted blob shared by every mailbox it was
delivered to; a mailbox entry gives it a UID and flags in one folder. UIDs are
allocated from the folder's ``uid_next`` inside the delivery transaction, so
they are stable and never reused (IMAP UIDVALIDITY stays constant).

Conversations and known professionals are the patient-side memory of the
traffic: who wrote, who may be answered (D2: the ``Reply-To`` address when the
professional gave one), and whether the exchange was ended (D3).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from caducee.mailboxes.accounts import store as _accounts  # noqa: F401 - tables our foreign keys name
from caducee.storage.blobs import BlobRow as _BlobRow  # noqa: F401
from caducee.storage.db import Base, UtcDateTime, utcnow

BIG_ID = BigInteger().with_variant(Integer, "sqlite")

INBOX = "INBOX"
STANDARD_FOLDERS: tuple[tuple[str, str | None], ...] = (
    (INBOX, None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
)


class Folder(Base):
    """An IMAP folder of one account."""

    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_folders_account_name"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    special_use: Mapped[str | None] = mapped_column(String(16))
    uid_validity: Mapped[int] = mapped_column(BIG_ID)
    uid_next: Mapped[int] = mapped_column(BIG_ID, default=1)
    highest_modseq: Mapped[int] = mapped_column(BIG_ID, default=1)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)


class StoredMessage(Base):
    """One accepted message: where its encrypted bytes are, and what the gateway learnt of it."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"), index=True)
    size: Mapped[int] = mapped_column(BIG_ID)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    direction: Mapped[str] = mapped_column(String(16))
    envelope_from: Mapped[str] = mapped_column(String(320))
    header_from: Mapped[str | None] = mapped_column(String(320))
    message_id_header: Mapped[str | None] = mapped_column(String(998), index=True)
    dkim_result: Mapped[str] = mapped_column(String(16), default="none")
    end_of_exchange: Mapped[bool] = mapped_column(Boolean, default=False)
    mss_problems: Mapped[str | None] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(String(64), unique=True)


class MailboxEntry(Base):
    """A message in one folder: its UID, flags and modification sequence."""

    __tablename__ = "mailbox_entries"
    __table_args__ = (UniqueConstraint("folder_id", "uid", name="uq_mailbox_entries_folder_uid"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    uid: Mapped[int] = mapped_column(BIG_ID)
    flags: Mapped[str] = mapped_column(String(500), default="")
    modseq: Mapped[int] = mapped_column(BIG_ID, default=1)
    internal_date: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class HeldState(enum.StrEnum):
    """Where a patient's held copy stands (E3, E5: hold until filed)."""

    HELD = "held"
    """Delivered, invisible: the filing job has not decided yet."""
    RELEASED = "released"
    """Visible in the folder (``uid``), as ``copy_message_id`` (the parts it withheld replaced)."""
    WITHHELD = "withheld"
    """Every document it carried is about another patient: kept for the operator only."""


class HeldDelivery(Base):
    """A patient's copy of a message with attachments, invisible until filing decided (E3, E5).

    Delivery writes this row in place of the mailbox entry; the filing job (records) then
    appends the patient's copy to ``folder_id`` — the message itself, or a copy whose parts
    carrying an ``INVISIBLE_PATIENT`` document or another patient's document are replaced by a
    notice — or keeps it from the patient altogether. IMAP, listings and notifications only
    ever see mailbox entries, so a held copy is invisible to all of them without a filter.
    """

    __tablename__ = "held_deliveries"
    __table_args__ = (
        UniqueConstraint("account_id", "message_id", name="uq_held_deliveries_account_message"),
        Index("ix_held_deliveries_state", "state"),
        Index("ix_held_deliveries_copy", "copy_message_id", "account_id"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=HeldState.HELD.value)
    held_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    copy_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    uid: Mapped[int | None] = mapped_column(BIG_ID)
    withheld_parts: Mapped[int] = mapped_column(Integer, default=0)


class Conversation(Base):
    """A thread between one patient and professionals, rooted at a professional's message (D1)."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    patient_account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    professional_address: Mapped[str] = mapped_column(String(320))
    root_message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_message_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ConversationMessage(Base):
    """Which conversation a ``Message-ID`` belongs to, for threading replies (D1)."""

    __tablename__ = "conversation_messages"
    __table_args__ = (Index("ix_conversation_messages_message", "message_id", "conversation_id"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    """None for a patient's reply relayed to another operator (not stored here)."""
    message_id_header: Mapped[str | None] = mapped_column(String(998), index=True)


class KnownProfessional(Base):
    """A professional who wrote to a patient (D2), managed by the patient (F1)."""

    __tablename__ = "known_professionals"
    __table_args__ = (
        UniqueConstraint(
            "patient_account_id", "professional_address", name="uq_known_professionals_pair"
        ),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    patient_account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    professional_address: Mapped[str] = mapped_column(String(320))
    reply_address: Mapped[str] = mapped_column(String(320), index=True)
    first_contact_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_message_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    can_reply: Mapped[bool] = mapped_column(Boolean, default=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16), default="authorised")
    medecin_traitant: Mapped[bool] = mapped_column(Boolean, default=False)
