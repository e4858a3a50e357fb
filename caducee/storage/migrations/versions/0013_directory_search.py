"""Directory search indexes and import staging (issue 20).

Reserved slot in the revision chain while the work lands; no schema change yet.

Revision ID: 0013_directory_search
Revises: 0012_certificates
Create Date: 2026-12-06
"""

from __future__ import annotations

revision = "0013_directory_search"
down_revision = "0012_certificates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
