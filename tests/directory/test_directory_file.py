"""On SQLite the directory has a file of its own, so that mail never waits for an import.

A first national import builds its search indexes in write transactions of seconds; with the
directory in the main file, every delivery's commit waited for them (issue 20: the ``250``
came up to 4.8 s late). Migration 0029 moves the two directory tables to
``<name>-directory.db``, attached to every connection.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from caducee.directory.models import DirectoryEntry
from caducee.directory.service import NewEntry, add_entry
from caducee.storage import schema
from caducee.storage.db import Database, database_files
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

TABLES = ("directory_entries", "directory_practitioners")


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(name) for (name,) in rows} & set(TABLES)


def test_k2_directory_rows_move_to_their_file_and_back(fresh_database_url: str) -> None:
    if not fresh_database_url.startswith("sqlite"):
        pytest.skip("the directory file is SQLite's; PostgreSQL keeps one database")
    main, directory = database_files(fresh_database_url)
    database = Database(fresh_database_url)
    try:
        schema.upgrade(database, "0028_document_pins")
        with database.transaction() as session:
            add_entry(
                session,
                NewEntry(
                    address="dr.martin@hopital.mssante.fr",
                    bal_type="PER",
                    national_id="810106476764",
                    family_name="Martin",
                ),
            )
        assert _tables(main) == set(TABLES)

        schema.upgrade(database)
        assert (_tables(main), _tables(directory)) == (set(), set(TABLES))
        with database.reading() as session:  # unqualified names find the attached tables
            found = session.scalars(select(DirectoryEntry.family_name)).all()
        assert found == ["Martin"]
        with sqlite3.connect(directory) as connection:
            indexes = {
                str(name)
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                )
            }
        assert "ix_directory_entries_name_key" in indexes

        schema.downgrade(database, "0028_document_pins")
        assert (_tables(main), _tables(directory)) == (set(TABLES), set())
        with database.reading() as session:
            assert session.scalars(select(DirectoryEntry.address)).all() == [
                "dr.martin@hopital.mssante.fr"
            ]
    finally:
        database.dispose()


def test_k3_mail_is_accepted_while_an_import_holds_the_directory(
    working_gateway: ServedGateway,
) -> None:
    """Mail keeps its pace while an import writes the directory (here: an index build held
    open, as a first load's are for seconds): the ``250`` and the stored message do not wait
    for the directory's write lock, and lookups still read the directory."""
    gateway = working_gateway
    if gateway.env.get("CADUCEE_DATABASE__URL", "").startswith("postgresql"):
        pytest.skip("the directory file is SQLite's; PostgreSQL locks rows, not the database")
    directory = gateway.home / "caducee-directory.db"
    assert directory.is_file()
    subject = "Compte rendu pendant un import"
    importing = sqlite3.connect(directory, timeout=1, isolation_level=None)
    try:
        importing.execute("BEGIN IMMEDIATE")
        importing.execute("CREATE INDEX ix_import_in_progress ON directory_entries (city)")
        gateway.send(gateway.message(subject=subject))  # every recipient accepted: 250
        wait_until(
            lambda: any(item.get("subject") == subject for item in gateway.mailbox()),
            timeout=30,
            message="the message accepted during the import never reached the mailbox",
        )
        assert importing.in_transaction  # the import still held the directory's lock
    finally:
        importing.execute("ROLLBACK")
        importing.close()
