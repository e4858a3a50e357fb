"""Slot reserved for this session's work on jobs; filled by the change that needs it.

Revision ID: 0020_jobs
Revises: 0019_imap_structure
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0020_jobs"
down_revision = "0019_imap_structure"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
