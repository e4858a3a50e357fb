"""Slot reserved for this session's work on webmail_account; filled by the change that needs it.

Revision ID: 0022_webmail_account
Revises: 0021_webmail_more
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0022_webmail_account"
down_revision = "0021_webmail_more"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
