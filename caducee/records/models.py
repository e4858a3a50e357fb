"""Tables of the patient's document record (E1–E5).

``record_documents`` holds one row per document found in a message delivered to a patient:
filed (in the record), offered (policy ``patient-choice``: on the message until the patient
adds it), quarantined (E3: kept for the operator, never shown to the patient) or duplicate
(E4: the same document was already in the record; the row only says where it came from
again), in conflict (E4: another content under a uniqueId the record holds; kept for the
operator, never filed) or withdrawn (E4: its author asked for its deletion; kept for the
operator and the audit, shown to no one else). The bytes are encrypted blobs (J1); the row
keeps what search and the FHIR ``DocumentReference`` need. ``record_attachments`` says what
filing did with each attachment of a message, so that a format the record does not take stays
on the message, marked not filed, with the reason (E1), and whether the attachment was
withheld from the patient's copy of the message (E3, E5).

``records`` and ``mailboxes`` are independent layers (the import contract forbids either to
import the other) and ``records`` names no mail table: the jobs layer (:mod:`caducee.jobs`)
reads the stored message and the patient's identity through ``mailboxes`` and hands them to
filing as plain values, then writes what filing found about the message (D4) back through
``mailboxes`` (``tests/records/test_layering.py`` checks that no mail table is named here).
For the same reason the foreign keys to ``accounts`` and ``messages`` (cascade on account
deletion; a document outlives its message) exist in the migration only.
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

from caducee.storage.blobs import BlobRow
from caducee.storage.db import Base, UtcDateTime, utcnow
from caducee.storage.sealed import SealedText

BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class DocumentState(enum.StrEnum):
    """Where a document stands in the record."""

    FILED = "filed"
    OFFERED = "offered"
    QUARANTINED = "quarantined"
    DUPLICATE = "duplicate"
    WITHDRAWN = "withdrawn"
    CONFLICT = "conflict"
    """E4: another content under a uniqueId the record knows; not filed, kept for the operator."""


class VersionStatus(enum.StrEnum):
    """XDS availability status: the latest version of a document, or an older one (E4)."""

    CURRENT = "current"
    SUPERSEDED = "superseded"


class AttachmentOutcome(enum.StrEnum):
    """What filing did with one attachment of a message."""

    READ = "read"
    NOT_FILED = "not-filed"
    WITHDRAWAL = "withdrawal"
    """A deletion request (E4) that withdrew the document it names."""


class RecordDocument(Base):
    """One document of a patient's record, with its metadata (E2) and visibility (E5)."""

    __tablename__ = "record_documents"
    __table_args__ = (
        UniqueConstraint("account_id", "dedupe_key", name="uq_record_documents_dedupe"),
        Index("ix_record_documents_listing", "account_id", "state", "status", "document_date"),
        Index("ix_record_documents_uid", "account_id", "document_uid"),
        Index("ix_record_documents_sha256", "account_id", "sha256"),
        Index("ix_record_documents_replaces", "account_id", "replaces_uid"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[int] = mapped_column(BIG_ID)
    message_id: Mapped[int | None] = mapped_column(BIG_ID, index=True)
    attachment_position: Mapped[int] = mapped_column(Integer)
    entry_name: Mapped[str | None] = mapped_column(String(255))
    source_format: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=VersionStatus.CURRENT.value)
    error_code: Mapped[int | None] = mapped_column(Integer)
    identity_rule: Mapped[str | None] = mapped_column(String(64))
    problems: Mapped[str | None] = mapped_column(Text)

    content_blob_id: Mapped[str | None] = mapped_column(ForeignKey(BlobRow.id))
    mime_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BIG_ID)
    sha1: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64))
    rendition_blob_id: Mapped[str | None] = mapped_column(ForeignKey(BlobRow.id))
    rendition_mime_type: Mapped[str | None] = mapped_column(String(100))
    rendition_size: Mapped[int | None] = mapped_column(BIG_ID)
    rendition_sha1: Mapped[str | None] = mapped_column(String(40))
    rendition_sha256: Mapped[str | None] = mapped_column(String(64))

    document_uid: Mapped[str | None] = mapped_column(String(255))
    xds_entry_id: Mapped[str | None] = mapped_column(String(255))
    set_id: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[int | None] = mapped_column(Integer)
    replaces_uid: Mapped[str | None] = mapped_column(String(255))
    superseded_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("record_documents.id", ondelete="SET NULL")
    )
    duplicate_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("record_documents.id", ondelete="SET NULL")
    )
    dedupe_key: Mapped[str | None] = mapped_column(String(64))

    type_code: Mapped[str | None] = mapped_column(String(64))
    type_system: Mapped[str | None] = mapped_column(String(128))
    type_display: Mapped[str | None] = mapped_column(String(255))
    class_code: Mapped[str | None] = mapped_column(String(64))
    format_code: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(SealedText("record_documents.title"))
    document_date: Mapped[datetime] = mapped_column(UtcDateTime())
    confidentiality: Mapped[str | None] = mapped_column(String(8))
    language: Mapped[str | None] = mapped_column(String(16))
    author_national_id: Mapped[str | None] = mapped_column(String(64), index=True)
    author_family: Mapped[str | None] = mapped_column(SealedText("record_documents.author_family"))
    author_given: Mapped[str | None] = mapped_column(SealedText("record_documents.author_given"))
    organisation_id: Mapped[str | None] = mapped_column(String(64))
    organisation_name: Mapped[str | None] = mapped_column(
        SealedText("record_documents.organisation_name")
    )
    sender: Mapped[str | None] = mapped_column(String(320))
    mail_subject: Mapped[str | None] = mapped_column(SealedText("record_documents.mail_subject"))
    mail_message_id: Mapped[str | None] = mapped_column(String(998))

    author_flags: Mapped[str] = mapped_column(String(200), default="")
    hidden_from_patient: Mapped[bool] = mapped_column(Boolean, default=False)
    hidden_from_representatives: Mapped[bool] = mapped_column(Boolean, default=False)
    hidden_from_professionals: Mapped[bool] = mapped_column(Boolean, default=False)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    """The patient pinned it (H2): their own marker for the list, no effect on access."""

    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    filed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    withdrawn_by_message_id: Mapped[int | None] = mapped_column(BIG_ID, index=True)


class RecordAttachment(Base):
    """What filing did with one attachment of one message, for one patient (E1)."""

    __tablename__ = "record_attachments"
    __table_args__ = (
        UniqueConstraint(
            "account_id", "message_id", "position", name="uq_record_attachments_position"
        ),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BIG_ID, index=True)
    message_id: Mapped[int] = mapped_column(BIG_ID, index=True)
    position: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BIG_ID)
    source_format: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    problems: Mapped[str | None] = mapped_column(Text)
    document_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    withheld: Mapped[bool] = mapped_column(Boolean, default=False)
    """E3/E5: left out of the patient's copy of the message (a notice in its place)."""
    withheld_reason: Mapped[str | None] = mapped_column(String(32))
