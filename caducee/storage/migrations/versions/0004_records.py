"""Records: the patient's documents and what filing did with each attachment (E1–E5).

Revision ID: 0004_records
Revises: 0003_mail
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0004_records"
down_revision = "0003_mail"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "record_documents",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("public_id", sa.String(32), nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("message_id", BIG_ID, nullable=True),
        sa.Column("attachment_position", sa.Integer(), nullable=False),
        sa.Column("entry_name", sa.String(255), nullable=True),
        sa.Column("source_format", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("identity_rule", sa.String(64), nullable=True),
        sa.Column("problems", sa.Text(), nullable=True),
        sa.Column("content_blob_id", sa.String(32), nullable=True),
        sa.Column("mime_type", sa.String(100), nullable=False),
        sa.Column("size", BIG_ID, nullable=False),
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("rendition_blob_id", sa.String(32), nullable=True),
        sa.Column("rendition_mime_type", sa.String(100), nullable=True),
        sa.Column("rendition_size", BIG_ID, nullable=True),
        sa.Column("rendition_sha1", sa.String(40), nullable=True),
        sa.Column("rendition_sha256", sa.String(64), nullable=True),
        sa.Column("document_uid", sa.String(255), nullable=True),
        sa.Column("xds_entry_id", sa.String(255), nullable=True),
        sa.Column("set_id", sa.String(255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("replaces_uid", sa.String(255), nullable=True),
        sa.Column("superseded_by_id", BIG_ID, nullable=True),
        sa.Column("duplicate_of_id", BIG_ID, nullable=True),
        sa.Column("dedupe_key", sa.String(64), nullable=True),
        sa.Column("type_code", sa.String(64), nullable=True),
        sa.Column("type_system", sa.String(128), nullable=True),
        sa.Column("type_display", sa.String(255), nullable=True),
        sa.Column("class_code", sa.String(64), nullable=True),
        sa.Column("format_code", sa.String(255), nullable=True),
        sa.Column("title", sa.String(500), nullable=True),
        sa.Column("document_date", UtcDateTime(), nullable=False),
        sa.Column("confidentiality", sa.String(8), nullable=True),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("author_national_id", sa.String(64), nullable=True),
        sa.Column("author_family", sa.String(200), nullable=True),
        sa.Column("author_given", sa.String(200), nullable=True),
        sa.Column("organisation_id", sa.String(64), nullable=True),
        sa.Column("organisation_name", sa.String(255), nullable=True),
        sa.Column("sender", sa.String(320), nullable=True),
        sa.Column("mail_subject", sa.String(998), nullable=True),
        sa.Column("mail_message_id", sa.String(998), nullable=True),
        sa.Column("author_flags", sa.String(200), nullable=False),
        sa.Column("hidden_from_patient", sa.Boolean(), nullable=False),
        sa.Column("hidden_from_representatives", sa.Boolean(), nullable=False),
        sa.Column("hidden_from_professionals", sa.Boolean(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("filed_at", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_record_documents"),
        sa.UniqueConstraint("public_id", name="uq_record_documents_public_id"),
        sa.UniqueConstraint("account_id", "dedupe_key", name="uq_record_documents_dedupe"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_record_documents_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_documents_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["content_blob_id"], ["blobs.id"], name="fk_record_documents_content_blob_id_blobs"
        ),
        sa.ForeignKeyConstraint(
            ["rendition_blob_id"],
            ["blobs.id"],
            name="fk_record_documents_rendition_blob_id_blobs",
        ),
        sa.ForeignKeyConstraint(
            ["superseded_by_id"],
            ["record_documents.id"],
            name="fk_record_documents_superseded_by_id_record_documents",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["duplicate_of_id"],
            ["record_documents.id"],
            name="fk_record_documents_duplicate_of_id_record_documents",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_record_documents_message_id", "record_documents", ["message_id"])
    op.create_index(
        "ix_record_documents_author_national_id", "record_documents", ["author_national_id"]
    )
    op.create_index(
        "ix_record_documents_listing",
        "record_documents",
        ["account_id", "state", "status", "document_date"],
    )
    op.create_index("ix_record_documents_uid", "record_documents", ["account_id", "document_uid"])
    op.create_index("ix_record_documents_sha256", "record_documents", ["account_id", "sha256"])
    op.create_index(
        "ix_record_documents_replaces", "record_documents", ["account_id", "replaces_uid"]
    )
    op.create_table(
        "record_attachments",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("message_id", BIG_ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=True),
        sa.Column("content_type", sa.String(255), nullable=True),
        sa.Column("size", BIG_ID, nullable=False),
        sa.Column("source_format", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("problems", sa.Text(), nullable=True),
        sa.Column("document_count", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_record_attachments"),
        sa.UniqueConstraint(
            "account_id", "message_id", "position", name="uq_record_attachments_position"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_record_attachments_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_attachments_message_id_messages",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_record_attachments_account_id", "record_attachments", ["account_id"])
    op.create_index("ix_record_attachments_message_id", "record_attachments", ["message_id"])


def downgrade() -> None:
    op.drop_table("record_attachments")
    op.drop_table("record_documents")
