"""Schema management: upgrade, downgrade and inspect the migration state.

Alembic is driven programmatically so that the CLI, the tests and ``doctor``
share one code path and no ``alembic.ini`` has to be found on disk.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from caducee.storage.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the newest by default)."""
    config = _config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(database: Database, revision: str) -> None:
    """Take the schema back to ``revision`` (``base`` removes every table)."""
    config = _config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def head_revision() -> str:
    """The newest revision shipped with this code."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("no migrations shipped")
    return head


def current_revision(database: Database) -> str | None:
    """The revision the database is at, or None for an empty database.

    Read on the read engine: on SQLite the write engine begins every transaction with
    ``BEGIN IMMEDIATE``, so a readiness probe would queue behind a long import for the
    write lock it does not need.
    """
    with database.read_engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
