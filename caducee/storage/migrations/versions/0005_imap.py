"""IMAP: expunged UIDs, encrypted structure cache, \\Recent boundary, read receipts (H1, G2, K2).

Also an index on ``mailbox_entries (folder_id, modseq)`` for "what changed since
modseq n" and, on PostgreSQL only, a trigger that sends ``NOTIFY
caducee_mailbox`` whenever a folder's ``uid_next`` or ``highest_modseq`` moves:
every writer (SMTP delivery, IMAP, webmail, in any process) then wakes the IDLE
sessions of every gateway process at commit, without having to remember to.
The payload is ``<schema>:<account id>`` so that gateways sharing one database
under different schemas ignore each other's changes.

Revision ID: 0005_imap
Revises: 0004_records
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0005_imap"
down_revision = "0004_records"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION caducee_folder_changed() RETURNS trigger AS $$
BEGIN
    IF NEW.uid_next IS DISTINCT FROM OLD.uid_next
       OR NEW.highest_modseq IS DISTINCT FROM OLD.highest_modseq THEN
        PERFORM pg_notify('caducee_mailbox', current_schema() || ':' || NEW.account_id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER folders_changed_notify
AFTER UPDATE OF uid_next, highest_modseq ON folders
FOR EACH ROW EXECUTE FUNCTION caducee_folder_changed()
"""


def upgrade() -> None:
    op.create_table(
        "imap_expunged",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("folder_id", BIG_ID, nullable=False),
        sa.Column("uid", BIG_ID, nullable=False),
        sa.Column("modseq", BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_imap_expunged"),
        sa.ForeignKeyConstraint(
            ["folder_id"],
            ["folders.id"],
            name="fk_imap_expunged_folder_id_folders",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_imap_expunged_folder_modseq", "imap_expunged", ["folder_id", "modseq"])
    op.create_table(
        "imap_structure_cache",
        sa.Column("message_id", BIG_ID, nullable=False),
        sa.Column("blob_id", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_imap_structure_cache"),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_imap_structure_cache_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["blob_id"], ["blobs.id"], name="fk_imap_structure_cache_blob_id_blobs"
        ),
    )
    op.create_table(
        "imap_folder_recent",
        sa.Column("folder_id", BIG_ID, nullable=False),
        sa.Column("first_recent_uid", BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint("folder_id", name="pk_imap_folder_recent"),
        sa.ForeignKeyConstraint(
            ["folder_id"],
            ["folders.id"],
            name="fk_imap_folder_recent_folder_id_folders",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "read_receipts",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("message_id", BIG_ID, nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("job_id", BIG_ID, nullable=True),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_read_receipts"),
        sa.UniqueConstraint("message_id", "account_id", name="uq_read_receipts_message_account"),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_read_receipts_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_read_receipts_account_id_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_read_receipts_account_id", "read_receipts", ["account_id"])
    op.create_index("ix_mailbox_entries_folder_modseq", "mailbox_entries", ["folder_id", "modseq"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS folders_changed_notify ON folders")
        op.execute("DROP FUNCTION IF EXISTS caducee_folder_changed()")
    op.drop_index("ix_mailbox_entries_folder_modseq", table_name="mailbox_entries")
    op.drop_index("ix_read_receipts_account_id", table_name="read_receipts")
    op.drop_table("read_receipts")
    op.drop_table("imap_folder_recent")
    op.drop_table("imap_structure_cache")
    op.drop_index("ix_imap_expunged_folder_modseq", table_name="imap_expunged")
    op.drop_table("imap_expunged")
