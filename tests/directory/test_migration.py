"""The ``0002_directory`` migration: same schema as the models, and a clean downgrade."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from caducee.directory.models import DirectoryEntry, Practitioner
from caducee.storage import schema
from caducee.storage.db import Base, Database

TABLES = {"directory_entries", "directory_practitioners"}


def _ours(item: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    table = item if type_ == "table" else getattr(item, "table", None)
    return getattr(table, "name", name) in TABLES


def test_migration_matches_the_models(database: Database) -> None:
    assert DirectoryEntry.__tablename__ in TABLES and Practitioner.__tablename__ in TABLES
    # On SQLite the directory's own file (its "main"); on PostgreSQL the one engine.
    with database.directory_engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": _ours}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_migration_downgrades_and_upgrades_again(fresh_database_url: str) -> None:
    database = Database(fresh_database_url)
    try:
        schema.upgrade(database, "0002_directory")
        assert set(inspect(database.engine).get_table_names()) >= TABLES
        schema.downgrade(database, "0001_foundation")
        assert not TABLES & set(inspect(database.engine).get_table_names())
        schema.upgrade(database)
        assert set(inspect(database.directory_engine).get_table_names()) >= TABLES
    finally:
        database.dispose()
