"""Caregivers (aidants): one row per invitation or delegation between two patient accounts
(F3, issue 17; :mod:`caducee.mailboxes.access.caregivers`).

``caregiving_delegations``: ``helped_account_id`` (the aidé) lets ``caregiver_account_id``
(the aidant) act for them once ``state`` is ``active``; ``pending`` until then, lapsing at
``expires_at``. One row per pair; a refusal or revocation deletes it (the audit trail keeps
the history). Nothing to backfill.

Revision ID: 0025_caregivers
Revises: 0024_emergency_switches
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0025_caregivers"
down_revision = "0024_emergency_switches"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TABLE = "caregiving_delegations"


def _account_fk(column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["accounts.id"], name=f"fk_{TABLE}_{column}_accounts", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("helped_account_id", BIG_ID, nullable=False),
        sa.Column("caregiver_account_id", BIG_ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("accepted_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=f"pk_{TABLE}"),
        sa.UniqueConstraint(
            "helped_account_id", "caregiver_account_id", name="uq_caregiving_delegations_pair"
        ),
        _account_fk("helped_account_id"),
        _account_fk("caregiver_account_id"),
    )
    for column in ("helped_account_id", "caregiver_account_id"):
        op.create_index(f"ix_{TABLE}_{column}", TABLE, [column])


def downgrade() -> None:
    for column in ("caregiver_account_id", "helped_account_id"):
        op.drop_index(f"ix_{TABLE}_{column}", table_name=TABLE)
    op.drop_table(TABLE)
