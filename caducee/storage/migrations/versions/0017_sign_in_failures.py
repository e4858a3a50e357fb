"""Failed sign-ins counted across processes and nodes (C1, K2).

``sign_in_failures``: one shared failure count per key (a digest of an account and source
address, or of an address), its last failure and the block it earned
(``mailboxes.accounts.identity.shared_failures``). Rows fade: the gateway prunes the old ones.

Revision ID: 0017_sign_in_failures
Revises: 0016_webmail
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0017_sign_in_failures"
down_revision = "0016_webmail"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_in_failures",
        sa.Column("key", sa.String(66), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", UtcDateTime(), nullable=False),
        sa.Column("blocked_until", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_sign_in_failures_updated_at", "sign_in_failures", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_sign_in_failures_updated_at", table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
