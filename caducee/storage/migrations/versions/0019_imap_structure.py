"""Empty: the IMAP work it was reserved for (issue 15) needed no schema change this round.

The structure cache written at delivery reuses the table of revision 0005.
Kept so that the revision chain of a database created meanwhile stays valid.

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
