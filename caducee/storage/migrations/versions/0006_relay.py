"""Relay: per-message and per-recipient state of outbound relay jobs (C5, G4).

``relay_messages`` holds one row per ``relay`` job (arrival, delay-notice and
expiry times, attempts, whether the delay DSN went out); ``relay_recipients``
one row per recipient (pending, delivered or failed, last reply code, enhanced
status, remote reply and host). Both go with their job row (``ON DELETE
CASCADE``), so ``caducee queue delete`` and any purge of finished jobs clean up.

Revision ID: 0006_relay
Revises: 0005_imap
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0006_relay"
down_revision = "0005_imap"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "relay_messages",
        sa.Column("job_id", BIG_ID, nullable=False),
        sa.Column("arrival_at", UtcDateTime(), nullable=False),
        sa.Column("warn_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("delay_notified_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name="pk_relay_messages"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_relay_messages_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "relay_recipients",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("job_id", BIG_ID, nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reply_code", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("remote_mta", sa.String(253), nullable=True),
        sa.Column("last_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_relay_recipients"),
        sa.UniqueConstraint("job_id", "address", name="uq_relay_recipients_job_address"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["relay_messages.job_id"],
            name="fk_relay_recipients_job_id_relay_messages",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_relay_recipients_job_id", "relay_recipients", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_relay_recipients_job_id", table_name="relay_recipients")
    op.drop_table("relay_recipients")
    op.drop_table("relay_messages")
