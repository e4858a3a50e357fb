"""Access: audit trail, patients' access settings, legal representatives, notifications (F1-F4, G1).

- ``audit_events``: the hash-chained, append-only trail (``position`` is the key and the
  chain order); no foreign key on purpose: an event outlives the account it is about.
- ``audit_head``: one row with the last position and hash; writers lock it to append. The row
  is created here and again by the code when missing.
- ``patient_access``: the patient's emergency-access (break-glass) choice.
- ``legal_representatives``: delegations from the operator, parent account → minor account.
- ``patient_contacts``: personal e-mail/phone, language and notification choices.
- ``notification_batches``: events waiting to be told in one notification; at most one
  ``open`` batch per patient (partial unique index, SQLite and PostgreSQL).

Revision ID: 0007_access
Revises: 0006_relay
Create Date: 2026-11-25
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0007_access"
down_revision = "0006_relay"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GENESIS_HASH = "0" * 64


def _account_fk(table: str, column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["accounts.id"], name=f"fk_{table}_{column}_accounts", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("position", BIG_ID, autoincrement=False, nullable=False),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(80), nullable=False),
        sa.Column("action", sa.String(48), nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(80), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(64), nullable=True),
        sa.Column("subject_account_id", BIG_ID, nullable=True),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("previous_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_subject", "audit_events", ["subject_account_id", "position"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("position", BIG_ID, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    assert head is not None
    op.bulk_insert(
        head,
        [
            {
                "id": 1,
                "position": 0,
                "hash": GENESIS_HASH,
                "updated_at": datetime.now(UTC),
            }
        ],
    )
    op.create_table(
        "patient_access",
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("emergency_access", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_patient_access"),
        _account_fk("patient_access", "account_id"),
    )
    op.create_table(
        "legal_representatives",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("minor_account_id", BIG_ID, nullable=False),
        sa.Column("representative_account_id", BIG_ID, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_legal_representatives"),
        sa.UniqueConstraint(
            "minor_account_id", "representative_account_id", name="uq_legal_representatives_pair"
        ),
        _account_fk("legal_representatives", "minor_account_id"),
        _account_fk("legal_representatives", "representative_account_id"),
    )
    op.create_index(
        "ix_legal_representatives_minor_account_id",
        "legal_representatives",
        ["minor_account_id"],
    )
    op.create_index(
        "ix_legal_representatives_representative_account_id",
        "legal_representatives",
        ["representative_account_id"],
    )
    op.create_table(
        "patient_contacts",
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("language", sa.String(8), nullable=True),
        sa.Column("email_enabled", sa.Boolean(), nullable=False),
        sa.Column("sms_enabled", sa.Boolean(), nullable=False),
        sa.Column("notify_new_message", sa.Boolean(), nullable=True),
        sa.Column("notify_new_document", sa.Boolean(), nullable=True),
        sa.Column("notify_record_access", sa.Boolean(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_patient_contacts"),
        _account_fk("patient_contacts", "account_id"),
    )
    op.create_table(
        "notification_batches",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_at", UtcDateTime(), nullable=False),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("new_messages", sa.Integer(), nullable=False),
        sa.Column("new_documents", sa.Integer(), nullable=False),
        sa.Column("record_accesses", sa.Integer(), nullable=False),
        sa.Column("email_sent_at", UtcDateTime(), nullable=True),
        sa.Column("sms_sent_at", UtcDateTime(), nullable=True),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notification_batches"),
        _account_fk("notification_batches", "account_id"),
    )
    op.create_index("ix_notification_batches_account_id", "notification_batches", ["account_id"])
    op.create_index(
        "uq_notification_batches_open",
        "notification_batches",
        ["account_id"],
        unique=True,
        sqlite_where=sa.text("state = 'open'"),
        postgresql_where=sa.text("state = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("uq_notification_batches_open", table_name="notification_batches")
    op.drop_index("ix_notification_batches_account_id", table_name="notification_batches")
    op.drop_table("notification_batches")
    op.drop_table("patient_contacts")
    op.drop_index(
        "ix_legal_representatives_representative_account_id", table_name="legal_representatives"
    )
    op.drop_index("ix_legal_representatives_minor_account_id", table_name="legal_representatives")
    op.drop_table("legal_representatives")
    op.drop_table("patient_access")
    op.drop_table("audit_head")
    op.drop_index("ix_audit_events_subject", table_name="audit_events")
    op.drop_table("audit_events")
