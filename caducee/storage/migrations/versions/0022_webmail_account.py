"""Empty: the webmail account pages it was reserved for (issue 17) needed no new table.

Drafts live in the IMAP Drafts folder; app passwords, export and closure use existing tables.
Kept so that the revision chain of a database created meanwhile stays valid.

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
