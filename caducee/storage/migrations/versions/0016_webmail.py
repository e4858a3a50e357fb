"""Webmail sessions (issue 17, H2).

``webmail_sessions``: one signed-in browser of a patient. Only the SHA-256 of the session
token is stored (the token itself lives in the browser's cookie), with the CSRF token bound
to the session, the idle and absolute deadlines, and what the patient sees in the list of
their sessions (when, which browser). Revoking a session stamps ``revoked_at``.

``webmail_totp_steps``: the last TOTP time step accepted for an account's sign-in, so that a
code is accepted once (RFC 6238 §5.2: a replayed value is refused).

Revision ID: 0016_webmail
Revises: 0015_admin
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0016_webmail"
down_revision = "0015_admin"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webmail_sessions",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("public_id", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("user_agent", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webmail_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_webmail_sessions_token_hash"),
        sa.UniqueConstraint("public_id", name="uq_webmail_sessions_public_id"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_webmail_sessions_account_id_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_webmail_sessions_account_id", "webmail_sessions", ["account_id"])
    op.create_table(
        "webmail_totp_steps",
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("used_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_webmail_totp_steps"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_webmail_totp_steps_account_id_accounts",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("webmail_totp_steps")
    op.drop_index("ix_webmail_sessions_account_id", table_name="webmail_sessions")
    op.drop_table("webmail_sessions")
