"""IMAP subscriptions as names of an account, not a folder column (issue 15, LIST-EXTENDED).

A subscription outlives its folder (RFC 3501 §6.3.6) and LIST-EXTENDED reports it
as ``\\Subscribed \\NonExistent`` (RFC 5258): ``imap_subscriptions`` holds one row
per (account, name). ``folders.subscribed`` stays, meaning "subscribed since its
creation" (standard folders); no backfill is needed, the subscription list is both
(``caducee.mailboxes.imap_subscriptions``).

Revision ID: 0026_imap_subscriptions
Revises: 0025_caregivers
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026_imap_subscriptions"
down_revision = "0025_caregivers"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "imap_subscriptions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_imap_subscriptions"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_imap_subscriptions_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("account_id", "name", name="uq_imap_subscriptions_account_name"),
    )
    op.create_index("ix_imap_subscriptions_account_id", "imap_subscriptions", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_imap_subscriptions_account_id", table_name="imap_subscriptions")
    op.drop_table("imap_subscriptions")
