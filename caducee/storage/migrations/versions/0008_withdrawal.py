"""Record: withdrawn documents (E4, HL7 v2 deletion requests).

A deletion request (``OBX-11 = D``) withdraws a document: its row stays (for the operator
and the audit) with ``state = 'withdrawn'``, the instant and the message that withdrew it.
``state`` is a free string column, so the new state needs no change of type.

Revision ID: 0008_withdrawal
Revises: 0007_access
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0008_withdrawal"
down_revision = "0007_access"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("record_documents", sa.Column("withdrawn_at", UtcDateTime(), nullable=True))
    op.add_column("record_documents", sa.Column("withdrawn_by_message_id", BIG_ID, nullable=True))
    op.create_index(
        "ix_record_documents_withdrawn_by_message_id",
        "record_documents",
        ["withdrawn_by_message_id"],
    )


def downgrade() -> None:
    # Without the columns a withdrawn document must stay hidden: quarantined is the state
    # that keeps a row for the operator only.
    op.execute(
        "UPDATE record_documents SET state = 'quarantined', identity_rule = 'E4-withdrawn' "
        "WHERE state = 'withdrawn'"
    )
    op.drop_index("ix_record_documents_withdrawn_by_message_id", table_name="record_documents")
    op.drop_column("record_documents", "withdrawn_by_message_id")
    op.drop_column("record_documents", "withdrawn_at")
