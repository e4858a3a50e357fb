"""Client certificates bound to hosted accounts (C1: SASL EXTERNAL for APP mailboxes).

``account_certificates``: the SHA-256 fingerprint of a client certificate the operator bound
to an account (``caducee account certificate add``), with its subject and expiry for the
listing (``mailboxes.certificates.AccountCertificate``).

Revision ID: 0012_certificates
Revises: 0011_withheld
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0012_certificates"
down_revision = "0011_withheld"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account_certificates",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(400), nullable=False),
        sa.Column("not_after", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_account_certificates"),
        sa.UniqueConstraint("fingerprint", name="uq_account_certificates_fingerprint"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_account_certificates_account_id_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_account_certificates_account_id", "account_certificates", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_account_certificates_account_id", table_name="account_certificates")
    op.drop_table("account_certificates")
