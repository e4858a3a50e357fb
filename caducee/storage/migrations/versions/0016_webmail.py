"""Webmail sessions and drafts (issue 17).

Reserved slot in the revision chain while the work lands; no schema change yet.

Revision ID: 0016_webmail
Revises: 0015_admin
Create Date: 2026-12-06
"""

from __future__ import annotations

revision = "0016_webmail"
down_revision = "0015_admin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
