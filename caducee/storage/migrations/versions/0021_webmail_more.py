"""The webmail's notification centre: ``webmail_notifications`` (issue 17, G1).

One line per event the ``notify-patient`` handler collects for a patient (a new message,
new or changed documents, a professional's access to the record): its kind, a count, when,
and when the patient read it. No health content. Deleted with the account.

Revision ID: 0021_webmail_more
Revises: 0020_rule_ids
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0021_webmail_more"
down_revision = "0020_rule_ids"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webmail_notifications",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("read_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webmail_notifications"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_webmail_notifications_account_id_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_webmail_notifications_account", "webmail_notifications", ["account_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_webmail_notifications_account", table_name="webmail_notifications")
    op.drop_table("webmail_notifications")
