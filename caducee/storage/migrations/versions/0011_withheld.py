"""Patient copies held until filed; parts withheld from them (E3, E5).

``held_deliveries``: the patient's copy of a message with attachments waits here, invisible,
until the filing job decides what of it the patient may see (``mailboxes.models.HeldDelivery``).
``record_attachments`` gains ``withheld`` and ``withheld_reason``: the attachment was left out
of the patient's copy (replaced by a notice) and is kept for the operator's quarantine.
``record_documents.state`` gains the value ``conflict`` (E4); it is a free string column.
``conversation_messages.message_id`` may be null: a patient's reply relayed to another operator
joins its conversation by its ``Message-ID`` (D1) without being stored here.

Revision ID: 0011_withheld
Revises: 0010_delegation
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0011_withheld"
down_revision = "0010_delegation"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _fk(
    column: str, target: str, *, cascade: bool = False, on_delete: str | None = None
) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=f"fk_held_deliveries_{column}_{target}",
        ondelete="CASCADE" if cascade else on_delete,
    )


def upgrade() -> None:
    op.create_table(
        "held_deliveries",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("message_id", BIG_ID, nullable=False),
        sa.Column("folder_id", BIG_ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("held_at", UtcDateTime(), nullable=False),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.Column("copy_message_id", BIG_ID, nullable=True),
        sa.Column("uid", BIG_ID, nullable=True),
        sa.Column("withheld_parts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_held_deliveries"),
        sa.UniqueConstraint("account_id", "message_id", name="uq_held_deliveries_account_message"),
        _fk("account_id", "accounts", cascade=True),
        _fk("message_id", "messages", cascade=True),
        _fk("folder_id", "folders", cascade=True),
        _fk("copy_message_id", "messages", on_delete="SET NULL"),
    )
    op.create_index("ix_held_deliveries_state", "held_deliveries", ["state"])
    op.create_index("ix_held_deliveries_message_id", "held_deliveries", ["message_id"])
    # D1: a patient's reply relayed to another operator joins its thread by Message-ID alone
    with op.batch_alter_table("conversation_messages") as batch:
        batch.alter_column("message_id", existing_type=BIG_ID, nullable=True)
    with op.batch_alter_table("record_attachments") as batch:
        batch.add_column(
            sa.Column("withheld", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("withheld_reason", sa.String(32), nullable=True))


def downgrade() -> None:
    # Held copies become visible only through filing; without the table they would be lost, so
    # the downgrade refuses to run while a copy is still held.
    pending = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM held_deliveries WHERE state = 'held'"))
        .scalar()
    )
    if pending:
        raise RuntimeError(f"{pending} patient copies are still held: run the filing jobs first")
    # A conflict without its state would read as a document of the record: keep it hidden.
    op.execute(
        "UPDATE record_documents SET state = 'quarantined', identity_rule = 'E4-conflict' "
        "WHERE state = 'conflict'"
    )
    op.execute("DELETE FROM conversation_messages WHERE message_id IS NULL")
    with op.batch_alter_table("conversation_messages") as batch:
        batch.alter_column("message_id", existing_type=BIG_ID, nullable=False)
    with op.batch_alter_table("record_attachments") as batch:
        batch.drop_column("withheld_reason")
        batch.drop_column("withheld")
    op.drop_index("ix_held_deliveries_message_id", table_name="held_deliveries")
    op.drop_index("ix_held_deliveries_state", table_name="held_deliveries")
    op.drop_table("held_deliveries")
