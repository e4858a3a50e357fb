"""Slot reserved for this session's work on imap_structure; filled by the change that needs it.

Revision ID: 0019_imap_structure
Revises: 0018_metadata_encryption
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0019_imap_structure"
down_revision = "0018_metadata_encryption"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
