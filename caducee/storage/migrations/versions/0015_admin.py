"""Admin API operations (issue 16): no schema change.

The trust, directory-import and relay-queue operations of the admin API needed no new
table (their audit events and token scopes use the existing ones). The revision stays in
the chain, empty, because homes migrated while the work landed already record it.

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
