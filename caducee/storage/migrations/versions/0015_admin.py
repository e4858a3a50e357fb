"""Admin API operations (issue 16).

Reserved slot in the revision chain while the work lands; no schema change yet.

Revision ID: 0015_admin
Revises: 0014_imap_incarnation
Create Date: 2026-12-06
"""

from __future__ import annotations

revision = "0015_admin"
down_revision = "0014_imap_incarnation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
