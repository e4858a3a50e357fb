"""Slot reserved for this session's work on metadata_encryption; filled by the change that needs it.

Revision ID: 0018_metadata_encryption
Revises: 0017_sign_in_failures
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0018_metadata_encryption"
down_revision = "0017_sign_in_failures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
