"""On SQLite, the directory tables move to a file of their own (issue 20).

A first import of the national directory builds its search indexes in
transactions of seconds; in the main file, every delivery's commit waited for
them. The connections attach ``<home>-directory.db`` as ``directory``
(:func:`caducee.storage.db.directory_file`): this revision moves
``directory_entries`` and ``directory_practitioners`` there, with their indexes,
and adds the empty ``write_intent`` table that a writer touches to take the
main file's write lock alone (:func:`caducee.storage.db._begin_writing_main`).

PostgreSQL has row locks and no such problem: nothing changes there. An
in-memory SQLite database has no directory file: its tables stay in ``main``.

Later migrations of these two tables on SQLite: unqualified names find them
(SQLite looks in ``main``, then in the attached files), but DDL that creates
objects (a batch copy, an index) must name the ``directory`` schema.

Revision ID: 0029_directory_file
Revises: 0028_document_pins
Create Date: 2026-12-07
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

revision = "0029_directory_file"
down_revision = "0028_document_pins"
branch_labels = None
depends_on = None

TABLES = ("directory_entries", "directory_practitioners")
DIRECTORY = "directory"
_CREATE = re.compile(r'^CREATE (TABLE|UNIQUE INDEX|INDEX)\s+("?)(\w+)\2', re.IGNORECASE)


def _attached(bind: Connection) -> bool:
    names = {str(row[1]) for row in bind.exec_driver_sql("PRAGMA database_list")}
    return DIRECTORY in names


def _move(bind: Connection, table: str, source: str, target: str) -> None:
    """Recreate ``table`` and its indexes in ``target`` from their DDL, copy, drop the old."""
    # Names below are this module's constants, never input.
    definitions = [
        str(sql)
        for (sql,) in bind.exec_driver_sql(
            f"SELECT sql FROM {source}.sqlite_master "  # noqa: S608
            "WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type = 'index', name",
            (table,),
        )
    ]
    if not definitions:
        return  # already moved (a move interrupted after the source's commit)
    # A move interrupted after the target's commit left a copy there: start again.
    bind.exec_driver_sql(f"DROP TABLE IF EXISTS {target}.{table}")
    for sql in definitions:
        match = _CREATE.match(sql)
        if match is None:
            raise RuntimeError(f"unexpected definition in {source}.{table}: {sql[:80]}")
        statement = f"CREATE {match.group(1)} {target}.{match.group(3)}" + sql[match.end() :]
        bind.exec_driver_sql(statement)
    bind.exec_driver_sql(f"INSERT INTO {target}.{table} SELECT * FROM {source}.{table}")  # noqa: S608
    bind.exec_driver_sql(f"DROP TABLE {source}.{table}")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    op.create_table("write_intent", sa.Column("id", sa.Integer(), primary_key=True))
    if _attached(bind):
        for table in TABLES:
            _move(bind, table, "main", DIRECTORY)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if _attached(bind):
        for table in TABLES:
            _move(bind, table, DIRECTORY, "main")
    op.drop_table("write_intent")
