"""IMAP folder incarnations and recent flags (issue 15).

Reserved slot in the revision chain while the work lands; no schema change yet.

Revision ID: 0014_imap_incarnation
Revises: 0013_directory_search
Create Date: 2026-12-06
"""

from __future__ import annotations

revision = "0014_imap_incarnation"
down_revision = "0013_directory_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
