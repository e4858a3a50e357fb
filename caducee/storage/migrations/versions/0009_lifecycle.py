"""Lifecycle of patient spaces (I1, I2), sign-in credentials and admin tokens.

``patient_spaces`` holds where a patient space stands (created, active, opposed, closed) and
its deadlines; ``accounts.state`` stays the door rule (active, suspended, closed).
``activation_codes`` are one-use codes (argon2id hashes only); ``account_credentials`` the
patient's own password (argon2id) and TOTP secret (an encrypted blob); ``admin_tokens`` the
operator's bearer tokens (SHA-256 of 256 random bits) with their scopes; ``account_idle``
the dormant professional mailboxes (I4); ``audit_checkpoints`` where a trace purge cut the
audit chain (I5).

Revision ID: 0009_lifecycle
Revises: 0008_withdrawal
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0009_lifecycle"
down_revision = "0008_withdrawal"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "patient_spaces",
        sa.Column(
            "account_id",
            BIG_ID,
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("opens_at", UtcDateTime(), nullable=True),
        sa.Column("activated_at", UtcDateTime(), nullable=True),
        sa.Column("opened_at", UtcDateTime(), nullable=True),
        sa.Column("opened_by", sa.String(16), nullable=True),
        sa.Column("opposed_at", UtcDateTime(), nullable=True),
        sa.Column("opposition_reference", sa.String(40), nullable=True),
        sa.Column("closed_at", UtcDateTime(), nullable=True),
        sa.Column("closed_by", sa.String(16), nullable=True),
        sa.Column("deletion_requested_at", UtcDateTime(), nullable=True),
        sa.Column("purge_after", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_patient_spaces_status_opens", "patient_spaces", ["status", "opens_at"])
    op.create_index("ix_patient_spaces_purge", "patient_spaces", ["status", "purge_after"])
    op.create_table(
        "activation_codes",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "account_id",
            BIG_ID,
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("code_hash", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("used_at", UtcDateTime(), nullable=True),
        sa.Column("voided_at", UtcDateTime(), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("pending_totp_blob_id", sa.String(32), nullable=True),
    )
    op.create_table(
        "account_credentials",
        sa.Column(
            "account_id",
            BIG_ID,
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("totp_blob_id", sa.String(32), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("last_login_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "admin_tokens",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", sa.String(500), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("last_used_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "account_idle",
        sa.Column(
            "account_id",
            BIG_ID,
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("last_activity_at", UtcDateTime(), nullable=False),
        sa.Column("flagged_at", UtcDateTime(), nullable=False),
        sa.Column("notified_at", UtcDateTime(), nullable=True),
        sa.Column("disabled_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("position", BIG_ID, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("cutoff", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("kek_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
    )
    # Every existing patient account is an open space (created before enrolment existed).
    op.execute(
        "INSERT INTO patient_spaces (account_id, status, created_at, opened_at, opened_by) "
        "SELECT id, CASE WHEN state = 'closed' THEN 'closed' ELSE 'active' END, created_at, "
        "created_at, 'migration' FROM accounts WHERE kind = 'patient'"
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_table("account_idle")
    op.drop_table("admin_tokens")
    op.drop_table("account_credentials")
    op.drop_table("activation_codes")
    op.drop_index("ix_patient_spaces_purge", table_name="patient_spaces")
    op.drop_index("ix_patient_spaces_status_opens", table_name="patient_spaces")
    op.drop_table("patient_spaces")
