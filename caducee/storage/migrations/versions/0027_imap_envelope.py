"""The rendered ENVELOPE of a message in a sealed record of its own (issue 15).

A first ``FETCH 1:* (FLAGS ENVELOPE)`` in a fresh process decrypted and parsed each
message's whole IMAP structure (part tree and header block) to render one ENVELOPE.
Delivery now also seals the rendered ENVELOPE apart, and
``imap_structure_cache.envelope_blob_id`` points to it; a listing decrypts only
that. Nullable: messages stored before keep the structure path (nothing to
backfill).

Revision ID: 0027_imap_envelope
Revises: 0026_imap_subscriptions
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027_imap_envelope"
down_revision = "0026_imap_subscriptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("imap_structure_cache") as batch:
        batch.add_column(sa.Column("envelope_blob_id", sa.String(32), nullable=True))
        batch.create_foreign_key(
            "fk_imap_structure_cache_envelope_blob_id_blobs",
            "blobs",
            ["envelope_blob_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("imap_structure_cache") as batch:
        batch.drop_constraint("fk_imap_structure_cache_envelope_blob_id_blobs", type_="foreignkey")
        batch.drop_column("envelope_blob_id")
