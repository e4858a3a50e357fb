"""IMAP folder incarnations: a never-reused UIDVALIDITY per folder (issue 15).

``imap_uid_validity`` holds, per account, the last UIDVALIDITY given to one of
its folders. CREATE (and RENAME creating superior levels) takes the next value
under the row's lock, so a folder deleted and created again under the same name
gets a new UIDVALIDITY even within the same second (before, it was the clock,
and DELETE + CREATE within a second gave back the old UIDVALIDITY and UIDs). No
backfill: the first allocation of an account starts above its folders' largest
value and the clock.

``imap_expunged.message_id`` (nullable, no backfill) names the message an expunged
UID was: a session whose FETCH was resolved before a concurrent EXPUNGE, or that
holds EXPUNGE responses back during a FETCH by sequence number (RFC 3501 §7.4.1),
still answers with that message's data rather than NIL.

Revision ID: 0014_imap_incarnation
Revises: 0013_directory_search
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_imap_incarnation"
down_revision = "0013_directory_search"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "imap_uid_validity",
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("last_value", BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_imap_uid_validity"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_imap_uid_validity_account_id_accounts",
            ondelete="CASCADE",
        ),
    )
    with op.batch_alter_table("imap_expunged") as batch:
        batch.add_column(sa.Column("message_id", BIG_ID, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("imap_expunged") as batch:
        batch.drop_column("message_id")
    op.drop_table("imap_uid_validity")
