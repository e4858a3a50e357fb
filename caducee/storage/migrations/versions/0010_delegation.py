"""Mailbox delegation (C2): an account may send as a mailbox delegated to it.

Revision ID: 0010_delegation
Revises: 0009_lifecycle
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0010_delegation"
down_revision = "0009_lifecycle"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mailbox_delegations",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "mailbox_account_id",
            BIG_ID,
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "delegate_account_id",
            BIG_ID,
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("mailbox_account_id", "delegate_account_id", name="uq_delegation_pair"),
    )
    op.create_index(
        "ix_mailbox_delegations_mailbox_account_id", "mailbox_delegations", ["mailbox_account_id"]
    )
    op.create_index(
        "ix_mailbox_delegations_delegate_account_id",
        "mailbox_delegations",
        ["delegate_account_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_mailbox_delegations_delegate_account_id", "mailbox_delegations")
    op.drop_index("ix_mailbox_delegations_mailbox_account_id", "mailbox_delegations")
    op.drop_table("mailbox_delegations")
