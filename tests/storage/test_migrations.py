"""K2: the schema is built by Alembic migrations, upgrade and downgrade, on both engines."""

from __future__ import annotations

from sqlalchemy import inspect

from caducee.storage import schema
from caducee.storage.db import Database


def _tables(database: Database) -> set[str]:
    return set(inspect(database.engine).get_table_names()) - {"alembic_version"}


def test_k2_upgrade_downgrade_upgrade(fresh_database_url: str) -> None:
    database = Database(fresh_database_url)
    try:
        assert schema.current_revision(database) is None
        schema.upgrade(database)
        assert schema.current_revision(database) == schema.head_revision()
        tables = _tables(database)
        assert {"blobs", "jobs", "accounts", "patients", "app_passwords"} <= tables
        schema.downgrade(database, "base")
        assert schema.current_revision(database) is None
        assert _tables(database) == set()
        schema.upgrade(database)
        assert _tables(database) == tables
    finally:
        database.dispose()


def test_k2_each_migration_steps_down_and_up(fresh_database_url: str) -> None:
    """Every revision's downgrade undoes exactly its upgrade."""
    from alembic.script import ScriptDirectory

    from caducee.storage.schema import _config

    revisions = list(reversed(list(ScriptDirectory.from_config(_config()).walk_revisions())))
    database = Database(fresh_database_url)
    try:
        seen: list[set[str]] = [set()]
        for revision in revisions:
            schema.upgrade(database, revision.revision)
            seen.append(_tables(database))
        for index in range(len(revisions) - 1, -1, -1):
            target = revisions[index - 1].revision if index else "base"
            schema.downgrade(database, target)
            assert _tables(database) == seen[index], f"downgrade of {revisions[index].revision}"
    finally:
        database.dispose()
