"""K2 for the record: the 0004 migration builds exactly the tables the models declare, and the
record's models load without ``mailboxes``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

import caducee.mailboxes.models  # noqa: F401  (the mail tables, for the migration comparison)
from caducee.config import load_settings
from caducee.gateway.runtime import build_gateway
from caducee.mailboxes.delivery import FILE_DOCUMENTS_JOB
from caducee.storage import schema
from caducee.storage.db import Base, Database
from tests.harness.reports import OTHER_INS, Record, n1_xdm, with_ins, xdm_part

RECORD_TABLES = {"record_documents", "record_attachments"}


def test_k2_records_migration_matches_the_models(database: Database) -> None:
    """Only difference allowed: the foreign keys to ``mailboxes`` tables, migration-only."""
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    flat = [d for item in differences for d in (item if isinstance(item, list) else [item])]
    about_records = [d for d in flat if any(name in repr(d) for name in RECORD_TABLES)]
    cross_layer = set()
    for difference in about_records:
        assert difference[0] == "remove_fk", difference
        constraint = difference[1]
        cross_layer.add(
            (constraint.table.name, constraint.referred_table.name, constraint.ondelete)
        )
    assert cross_layer == {
        ("record_documents", "accounts", "CASCADE"),
        ("record_documents", "messages", "SET NULL"),
        ("record_attachments", "accounts", "CASCADE"),
        ("record_attachments", "messages", "CASCADE"),
    }


def test_e1_records_models_usable_without_mailboxes_loaded(tmp_path: Path) -> None:
    """The independent layers: filing works in a process that never imported ``mailboxes``."""
    script = (
        "import sys, caducee.records.filing, caducee.records.service\n"
        "from caducee.storage.db import Base\n"
        "assert 'messages' not in Base.metadata.tables, 'mailboxes was imported'\n"
        "from sqlalchemy.orm import configure_mappers; configure_mappers()\n"
        "from caducee.records.models import RecordDocument\n"
        "RecordDocument.__mapper__._sorted_tables\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=60)


def test_e1_the_gateway_handles_the_job_kind_delivery_enqueues(demo_home: Path) -> None:
    gateway = build_gateway(load_settings(demo_home))
    try:
        assert FILE_DOCUMENTS_JOB in gateway.handlers
    finally:
        gateway.close()


def test_e3_rule_ids_stored_before_the_one_syntax_are_respelt_by_the_upgrade(
    record: Record, n1_cda: bytes
) -> None:
    """Migration 0020: a quarantine stored as ``E3-904-matricule`` reads ``E3.904-matricule``."""
    message_id = record.mail([xdm_part(n1_xdm(with_ins(n1_cda, OTHER_INS), ins=OTHER_INS))])
    [document] = record.documents(message_id)
    assert document.identity_rule == "E3.904-matricule"

    def stored() -> str:
        with record.database.engine.connect() as connection:
            return str(
                connection.execute(
                    text("SELECT identity_rule FROM record_documents WHERE public_id = :p"),
                    {"p": document.public_id},
                ).scalar_one()
            )

    schema.downgrade(record.database, "0019_imap_structure")
    assert stored() == "E3-904-matricule"  # as rows written before the engine hold it
    schema.upgrade(record.database)
    assert stored() == "E3.904-matricule"
