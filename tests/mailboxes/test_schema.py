"""K2 for the access tables: the 0007 migration builds exactly what the models declare, and its
downgrade removes exactly them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

import caducee.mailboxes.access.rights
import caducee.mailboxes.notifications.patients
import caducee.storage.audit
from caducee.storage import schema
from caducee.storage.db import Base, Database

ACCESS_TABLES = {
    "audit_events",
    "audit_head",
    "patient_access",
    "legal_representatives",
    "patient_contacts",
    "notification_batches",
}


def test_k2_access_migration_matches_the_models(database: Database) -> None:
    assert caducee.mailboxes.access.rights.PatientAccess.__tablename__ == "patient_access"
    assert (
        caducee.mailboxes.notifications.patients.PatientContact.__tablename__ == "patient_contacts"
    )
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    flat = [d for item in differences for d in (item if isinstance(item, list) else [item])]
    about_access = [d for d in flat if any(name in repr(d) for name in ACCESS_TABLES)]
    assert about_access == []


def test_k2_access_migration_steps_down_and_up(fresh_database_url: str) -> None:
    database = Database(fresh_database_url)
    try:
        schema.upgrade(database, "0007_access")
        tables = set(inspect(database.engine).get_table_names())
        assert tables >= ACCESS_TABLES
        schema.downgrade(database, "0006_relay")
        assert not ACCESS_TABLES & set(inspect(database.engine).get_table_names())
        schema.upgrade(database)
        assert set(inspect(database.engine).get_table_names()) >= ACCESS_TABLES
    finally:
        database.dispose()
