"""K2 on SQLite: which file a write transaction locks, and what a writer kept waiting gets.

A write transaction takes the main file's lock at ``BEGIN`` and the attached directory file's
only when it writes there (see ``docs/storage.md``); callers that retry on a busy database
(the login audit) catch SQLAlchemy's ``OperationalError``, so that is what a writer kept
waiting past ``busy_timeout`` must get.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from caducee.storage.db import Database, database_files


def _sqlite_files(database: Database) -> tuple[Path, Path]:
    if database.dialect != "sqlite":
        pytest.skip("PostgreSQL locks rows, not database files")
    main, directory = database_files(database.url)
    return main, directory


def _short_wait(connection: Connection) -> None:
    """Make this pooled connection's busy handler give up after 0.1 s (not 30)."""
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute("PRAGMA busy_timeout=100")


@contextmanager
def _write_locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding ``path``'s write lock (``ROLLBACK`` on it releases it)."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


def test_k2_a_writer_kept_waiting_gets_sqlalchemy_s_error_and_keeps_no_transaction(
    database: Database,
) -> None:
    main, _ = _sqlite_files(database)
    with _write_locked(main) as holder, database.engine.connect() as connection:
        _short_wait(connection)
        with pytest.raises(OperationalError, match="locked"):
            connection.begin()
        holder.execute("ROLLBACK")
        with connection.begin():  # the failed BEGIN left nothing open behind it
            connection.execute(text("DELETE FROM write_intent"))


def test_k2_a_write_transaction_locks_the_directory_file_only_to_write_there(
    database: Database,
) -> None:
    _, directory = _sqlite_files(database)
    # as a directory import holds it
    with _write_locked(directory), database.engine.connect() as connection:
        _short_wait(connection)
        with connection.begin():  # reads the directory, writes the main file
            connection.execute(text("SELECT count(*) FROM directory_entries")).scalar()
            connection.execute(text("DELETE FROM write_intent"))
        with pytest.raises(OperationalError, match="locked"), connection.begin():
            connection.execute(text("UPDATE directory_entries SET hosted = hosted"))
