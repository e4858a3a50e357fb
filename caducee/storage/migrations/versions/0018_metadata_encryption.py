"""Subjects, document titles, author, organisation and patient names sealed at rest (J1).

The columns become text holding ``s1:<kek id>:<sealed value>`` (:mod:`caducee.storage.sealed`).
Rows written before this revision are sealed here, with the keys the migrating handle carries
(``Database.seal_with``: every command opens its home that way); an empty database needs no key.
The downgrade opens them again and gives the columns back their bounded types.

Revision ID: 0018_metadata_encryption
Revises: 0017_sign_in_failures
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from caducee.storage.sealed import is_sealed, sealer_of

revision = "0018_metadata_encryption"
down_revision = "0017_sign_in_failures"
branch_labels = None
depends_on = None

#: (table, key column, sealed column, its length before this revision, nullable)
SEALED = (
    ("record_documents", "id", "title", 500, True),
    ("record_documents", "id", "author_family", 200, True),
    ("record_documents", "id", "author_given", 200, True),
    ("record_documents", "id", "organisation_name", 255, True),
    ("record_documents", "id", "mail_subject", 998, True),
    ("accounts", "id", "display_name", 200, True),
    ("patients", "account_id", "birth_name", 200, False),
    ("patients", "account_id", "given_name", 200, False),
)


def _rewrite(table: str, key: str, column: str, *, seal: bool) -> None:
    connection = op.get_bind()
    light = sa.table(table, sa.column(key), sa.column(column, sa.Text()))
    rows = connection.execute(
        sa.select(light.c[key], light.c[column]).where(light.c[column].is_not(None))
    ).all()
    label = f"{table}.{column}"
    for row_key, stored in rows:
        value = str(stored)
        if seal == is_sealed(value):
            continue
        sealer = sealer_of(connection.dialect)
        new = sealer.seal(value, label) if seal else sealer.open(value, label)
        connection.execute(sa.update(light).where(light.c[key] == row_key).values({column: new}))


def upgrade() -> None:
    for table, key, column, _length, nullable in SEALED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.Text(), existing_nullable=nullable)
        _rewrite(table, key, column, seal=True)


def downgrade() -> None:
    for table, key, column, length, nullable in SEALED:
        _rewrite(table, key, column, seal=False)
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.String(length), existing_nullable=nullable)
