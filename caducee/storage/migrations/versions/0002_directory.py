"""Directory: mailboxes of the trust space and practitioners' activities.

``directory_entries`` holds one row per mailbox (address unique, lower-cased),
``directory_practitioners`` one row per activity of a registered professional.
Search keys, addresses and postal codes use the ``C`` collation on PostgreSQL
so that prefix searches are byte-wise index range scans, as on SQLite.

Revision ID: 0002_directory
Revises: 0001_foundation
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.db import UtcDateTime

revision = "0002_directory"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _binary(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _shared_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("national_id", sa.String(32), nullable=True),
        sa.Column("id_type", sa.String(8), nullable=True),
        sa.Column("pp_identifier", sa.String(16), nullable=True),
        sa.Column("civility", sa.String(50), nullable=True),
        sa.Column("family_name", sa.Text(), nullable=True),
        sa.Column("given_name", sa.Text(), nullable=True),
        sa.Column("profession_code", sa.String(16), nullable=True),
        sa.Column("profession_label", sa.Text(), nullable=True),
        sa.Column("category_code", sa.String(16), nullable=True),
        sa.Column("category_label", sa.Text(), nullable=True),
        sa.Column("speciality_code", sa.String(16), nullable=True),
        sa.Column("speciality_label", sa.Text(), nullable=True),
        sa.Column("structure_id", sa.String(32), nullable=True),
        sa.Column("organisation_name", sa.Text(), nullable=True),
        sa.Column("trade_name", sa.Text(), nullable=True),
        sa.Column("address_lines", sa.Text(), nullable=True),
        sa.Column("postal_code", _binary(16), nullable=True),
        sa.Column("city", sa.Text(), nullable=True),
        sa.Column("department", sa.String(3), nullable=True),
        sa.Column("country", sa.Text(), nullable=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("red_list", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("row_hash", sa.String(32), nullable=False),
        sa.Column("name_key", _binary(200), nullable=False),
        sa.Column("org_key", _binary(200), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    ]


def _search_indexes(table: str) -> list[tuple[str, list[str]]]:
    return [
        (f"ix_{table}_national_id", ["national_id"]),
        (f"ix_{table}_name_key", ["name_key"]),
        (f"ix_{table}_org_key", ["org_key"]),
        (f"ix_{table}_postal_code", ["postal_code"]),
        (f"ix_{table}_profession_name", ["profession_code", "name_key"]),
        (f"ix_{table}_department_name", ["department", "name_key"]),
    ]


ENTRY_INDEXES = [("ix_directory_entries_domain", ["domain"]), *_search_indexes("directory_entries")]
PRACTITIONER_INDEXES = _search_indexes("directory_practitioners")


def upgrade() -> None:
    op.create_table(
        "directory_entries",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("address", _binary(254), nullable=False),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("bal_type", sa.String(3), nullable=False),
        sa.Column("service", sa.Text(), nullable=True),
        sa.Column("dematerialisation", sa.String(16), nullable=True),
        sa.Column("hosted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("pharmacy", sa.Boolean(), server_default=sa.false(), nullable=False),
        *_shared_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_directory_entries"),
        sa.UniqueConstraint("address", name="uq_directory_entries_address"),
    )
    for name, columns in ENTRY_INDEXES:
        op.create_index(name, "directory_entries", columns)
    op.create_table(
        "directory_practitioners",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("activity_key", _binary(64), nullable=False),
        sa.Column("practice_mode", sa.Text(), nullable=True),
        sa.Column("siret", sa.String(14), nullable=True),
        sa.Column("finess", sa.String(9), nullable=True),
        sa.Column("sector_label", sa.Text(), nullable=True),
        *_shared_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_directory_practitioners"),
        sa.UniqueConstraint("activity_key", name="uq_directory_practitioners_activity_key"),
    )
    for name, columns in PRACTITIONER_INDEXES:
        op.create_index(name, "directory_practitioners", columns)


def downgrade() -> None:
    for name, _columns in reversed(PRACTITIONER_INDEXES):
        op.drop_index(name, table_name="directory_practitioners")
    op.drop_table("directory_practitioners")
    for name, _columns in reversed(ENTRY_INDEXES):
        op.drop_index(name, table_name="directory_entries")
    op.drop_table("directory_entries")
