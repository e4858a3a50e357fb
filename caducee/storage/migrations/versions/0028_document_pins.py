"""The patient pins documents of their record (H2: the national app's "épingler").

``record_documents.pinned``: the patient's own marker, shown in the list and used by its
"pinned only" filter; it changes nothing of who may read the document.

Revision ID: 0028_document_pins
Revises: 0027_imap_envelope
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028_document_pins"
down_revision = "0027_imap_envelope"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("record_documents") as batch:
        batch.add_column(
            sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("record_documents") as batch:
        batch.drop_column("pinned")
