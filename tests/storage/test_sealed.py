"""J1 for metadata: names, titles and subjects are sealed in their columns, rotate with the keys.

The end-to-end check (a dump after demo traffic) is ``tests/gateway/test_sealed_at_rest.py``;
these tests pin the column type itself: what the database holds, what the code reads back,
tampering, a handle without keys, the upgrade of rows written before sealing, and rotation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from caducee.config import load_settings
from caducee.gateway.cli import main
from caducee.gateway.home import open_database
from caducee.mailboxes.accounts.store import Account, AccountKind, create_account
from caducee.storage import schema
from caducee.storage.db import Database
from caducee.storage.keyring import Keyring
from caducee.storage.sealed import ColumnSealer, SealedColumnError

NAME = "Dominique PAT-TROIS"


def _stored(database: Database, address: str) -> str:
    """The ``display_name`` column as the database holds it."""
    with database.engine.connect() as connection:
        value = connection.execute(
            text("SELECT display_name FROM accounts WHERE address = :a"), {"a": address}
        ).scalar_one()
    return str(value)


def test_j1_a_name_is_stored_sealed_and_read_back_in_clear(database: Database) -> None:
    with database.transaction() as session:
        create_account(session, "n@patient.test", AccountKind.PATIENT, display_name=NAME)
    stored = _stored(database, "n@patient.test")
    assert stored.startswith("s1:") and "PAT-TROIS" not in stored
    with database.reading() as session:
        account = session.scalars(select(Account).where(Account.address == "n@patient.test")).one()
        assert account.display_name == NAME
    # the same name twice gives two different stored values (a fresh nonce each time)
    with database.transaction() as session:
        create_account(session, "m@patient.test", AccountKind.PATIENT, display_name=NAME)
    assert _stored(database, "m@patient.test") != stored


def test_j1_a_value_moved_to_another_column_or_altered_does_not_open(tmp_path: Path) -> None:
    sealer = ColumnSealer(Keyring.create(tmp_path / "kek"))
    sealed = sealer.seal("Compte rendu", "record_documents.title")
    assert sealer.open(sealed, "record_documents.title") == "Compte rendu"
    with pytest.raises(SealedColumnError):
        sealer.open(sealed, "accounts.display_name")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealedColumnError):
        sealer.open(flipped, "record_documents.title")
    with pytest.raises(SealedColumnError, match="in clear"):
        sealer.open("Compte rendu", "record_documents.title")


def test_j1_a_handle_without_keys_refuses_rather_than_writing_clear_text(
    database_url: str,
) -> None:
    keyless = Database(database_url)
    try:
        with (
            pytest.raises(StatementError, match="no column key"),
            keyless.transaction() as session,
        ):
            create_account(session, "k@patient.test", AccountKind.PATIENT, display_name=NAME)
        with keyless.engine.connect() as connection:
            count = connection.execute(text("SELECT count(*) FROM accounts")).scalar_one()
        assert count == 0
    finally:
        keyless.dispose()


def test_j1_rows_written_before_sealing_are_sealed_by_the_upgrade(
    fresh_database_url: str, tmp_path: Path
) -> None:
    database = Database(fresh_database_url).seal_with(Keyring.create(tmp_path / "kek"))
    try:
        schema.upgrade(database, "0017_sign_in_failures")
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO accounts (address, kind, state, display_name, created_at) "
                    "VALUES ('old@patient.test', 'patient', 'active', :n, CURRENT_TIMESTAMP)"
                ),
                {"n": NAME},
            )
        schema.upgrade(database)
        assert _stored(database, "old@patient.test").startswith("s1:")
        with database.reading() as session:
            account = session.scalars(select(Account)).one()
            assert account.display_name == NAME
        schema.downgrade(database, "0017_sign_in_failures")
        assert _stored(database, "old@patient.test") == NAME
    finally:
        database.dispose()


def test_j1_keys_rotate_reseals_names_and_retires_the_old_key(
    demo_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(demo_home)
    database = open_database(settings)
    try:
        with database.reading() as session:
            names = {a.address: a.display_name for a in session.scalars(select(Account))}
        old_key = Keyring(settings.path(settings.crypto.keyring)).active_id
    finally:
        database.dispose()
    assert any(names.values()), "the demo accounts have display names"

    assert main(["keys", "rotate", "--home", str(demo_home)]) == 0
    assert "re-sealed" in capsys.readouterr().out

    keyring = Keyring(settings.path(settings.crypto.keyring))
    assert keyring.active_id != old_key and old_key not in keyring.key_ids()
    database = open_database(settings)
    try:
        with database.reading() as session:
            assert {a.address: a.display_name for a in session.scalars(select(Account))} == names
        for address, name in names.items():
            if name:
                assert _stored(database, address).startswith(f"s1:{keyring.active_id}:")
    finally:
        database.dispose()
