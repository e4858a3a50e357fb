"""Mail: trust space, folders, messages, mailbox entries, conversations, known professionals.

Revision ID: 0003_mail
Revises: 0002_directory
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0003_mail"
down_revision = "0002_directory"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _fk(table: str, column: str, target: str, *, cascade: bool = False) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=f"fk_{table}_{column}_{target}",
        ondelete="CASCADE" if cascade else None,
    )


def upgrade() -> None:
    op.create_table(
        "trust_domains",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("display_name", sa.String(253), nullable=False),
        sa.Column("operator_dn", sa.String(500), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=True),
        sa.Column("imported_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trust_domains"),
        sa.UniqueConstraint("domain", "operator_dn", name="uq_trust_domains_domain_operator"),
    )
    op.create_index("ix_trust_domains_domain", "trust_domains", ["domain"])
    op.create_table(
        "trust_anchors",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("not_after", UtcDateTime(), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("added_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trust_anchors"),
        sa.UniqueConstraint("fingerprint", name="uq_trust_anchors_fingerprint"),
    )
    op.create_table(
        "folders",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("special_use", sa.String(16), nullable=True),
        sa.Column("uid_validity", BIG_ID, nullable=False),
        sa.Column("uid_next", BIG_ID, nullable=False),
        sa.Column("highest_modseq", BIG_ID, nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_folders"),
        sa.UniqueConstraint("account_id", "name", name="uq_folders_account_name"),
        _fk("folders", "account_id", "accounts", cascade=True),
    )
    op.create_index("ix_folders_account_id", "folders", ["account_id"])
    op.create_table(
        "messages",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("blob_id", sa.String(32), nullable=False),
        sa.Column("size", BIG_ID, nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("envelope_from", sa.String(320), nullable=False),
        sa.Column("header_from", sa.String(320), nullable=True),
        sa.Column("message_id_header", sa.String(998), nullable=True),
        sa.Column("dkim_result", sa.String(16), nullable=False),
        sa.Column("end_of_exchange", sa.Boolean(), nullable=False),
        sa.Column("mss_problems", sa.Text(), nullable=True),
        sa.Column("dedupe_key", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("dedupe_key", name="uq_messages_dedupe_key"),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name="fk_messages_blob_id_blobs"),
    )
    op.create_index("ix_messages_blob_id", "messages", ["blob_id"])
    op.create_index("ix_messages_message_id_header", "messages", ["message_id_header"])
    op.create_table(
        "mailbox_entries",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("folder_id", BIG_ID, nullable=False),
        sa.Column("message_id", BIG_ID, nullable=False),
        sa.Column("uid", BIG_ID, nullable=False),
        sa.Column("flags", sa.String(500), nullable=False),
        sa.Column("modseq", BIG_ID, nullable=False),
        sa.Column("internal_date", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mailbox_entries"),
        sa.UniqueConstraint("folder_id", "uid", name="uq_mailbox_entries_folder_uid"),
        _fk("mailbox_entries", "folder_id", "folders", cascade=True),
        _fk("mailbox_entries", "message_id", "messages"),
    )
    op.create_index("ix_mailbox_entries_message_id", "mailbox_entries", ["message_id"])
    op.create_table(
        "conversations",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("patient_account_id", BIG_ID, nullable=False),
        sa.Column("professional_address", sa.String(320), nullable=False),
        sa.Column("root_message_id", BIG_ID, nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("last_message_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        _fk("conversations", "patient_account_id", "accounts", cascade=True),
        _fk("conversations", "root_message_id", "messages"),
    )
    op.create_index("ix_conversations_patient_account_id", "conversations", ["patient_account_id"])
    op.create_table(
        "conversation_messages",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("conversation_id", BIG_ID, nullable=False),
        sa.Column("message_id", BIG_ID, nullable=False),
        sa.Column("message_id_header", sa.String(998), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_conversation_messages"),
        _fk("conversation_messages", "conversation_id", "conversations", cascade=True),
        _fk("conversation_messages", "message_id", "messages"),
    )
    op.create_index(
        "ix_conversation_messages_conversation_id", "conversation_messages", ["conversation_id"]
    )
    op.create_index(
        "ix_conversation_messages_message_id_header", "conversation_messages", ["message_id_header"]
    )
    op.create_table(
        "known_professionals",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("patient_account_id", BIG_ID, nullable=False),
        sa.Column("professional_address", sa.String(320), nullable=False),
        sa.Column("reply_address", sa.String(320), nullable=False),
        sa.Column("first_contact_at", UtcDateTime(), nullable=False),
        sa.Column("last_message_at", UtcDateTime(), nullable=False),
        sa.Column("can_reply", sa.Boolean(), nullable=False),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("medecin_traitant", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_known_professionals"),
        sa.UniqueConstraint(
            "patient_account_id", "professional_address", name="uq_known_professionals_pair"
        ),
        _fk("known_professionals", "patient_account_id", "accounts", cascade=True),
    )
    op.create_index(
        "ix_known_professionals_patient_account_id", "known_professionals", ["patient_account_id"]
    )
    op.create_index(
        "ix_known_professionals_reply_address", "known_professionals", ["reply_address"]
    )


def downgrade() -> None:
    op.drop_table("known_professionals")
    op.drop_table("conversation_messages")
    op.drop_table("conversations")
    op.drop_table("mailbox_entries")
    op.drop_table("messages")
    op.drop_table("folders")
    op.drop_table("trust_anchors")
    op.drop_table("trust_domains")
