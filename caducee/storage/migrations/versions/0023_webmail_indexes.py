"""Indexes for the webmail's conversation list and conversation page at 10,000 messages (H2, D1).

The list groups a patient's INBOX by conversation in SQL: for each entry, the conversation of
the message it shows — the message itself, or the original of a copy the filing job made with
withheld parts (E5). Both lookups went through a full scan per entry (16 s at 10,000):

* ``conversation_messages (message_id, conversation_id)``: the conversation of a message;
* ``held_deliveries (copy_message_id, account_id)``: the original of a released copy.

Revision ID: 0023_webmail_indexes
Revises: 0022_webmail_account
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0023_webmail_indexes"
down_revision = "0022_webmail_account"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_conversation_messages_message",
        "conversation_messages",
        ["message_id", "conversation_id"],
    )
    op.create_index("ix_held_deliveries_copy", "held_deliveries", ["copy_message_id", "account_id"])


def downgrade() -> None:
    op.drop_index("ix_held_deliveries_copy", table_name="held_deliveries")
    op.drop_index("ix_conversation_messages_message", table_name="conversation_messages")
