"""Slot reserved for this session's work on webmail_more; filled by the change that needs it.

Revision ID: 0021_webmail_more
Revises: 0020_jobs
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0021_webmail_more"
down_revision = "0020_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
