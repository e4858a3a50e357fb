"""Rule ids stored on record rows take the one syntax ``<spec id>.<slug>`` (issue 13, item 7).

Identity and visibility decisions written before the rule engine spelt their ids with a hyphen
(``E3-904-envelope``, ``E4-conflict``, ``E5-invisible-patient``); the code now compares and
shows ``E3.904-envelope``, ``E4.conflict``... This rewrites the first hyphen after the spec id
in ``record_documents.identity_rule`` and ``record_attachments.withheld_reason``, where only E
rules were ever stored. ``audit_events.rule`` is left as written: audit rows are hash-chained
(``caducee audit verify``) and are a history, not a state.

Revision ID: 0020_rule_ids
Revises: 0019_imap_structure
Create Date: 2026-12-07
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0020_rule_ids"
down_revision = "0019_imap_structure"
branch_labels = None
depends_on = None

COLUMNS = (("record_documents", "identity_rule"), ("record_attachments", "withheld_reason"))
OLD = re.compile(r"^(E[0-9]+)-(.+)$")
NEW = re.compile(r"^(E[0-9]+)\.(.+)$")


def _respell(pattern: re.Pattern[str], separator: str) -> None:
    connection = op.get_bind()
    for table, column in COLUMNS:
        light = sa.table(table, sa.column(column, sa.String()))
        values: list[object] = list(
            connection.execute(
                sa.select(light.c[column]).where(light.c[column].is_not(None)).distinct()
            ).scalars()
        )
        for value in values:
            match = pattern.match(str(value))
            if match is None:
                continue
            connection.execute(
                sa.update(light)
                .where(light.c[column] == value)
                .values({column: f"{match.group(1)}{separator}{match.group(2)}"})
            )


def upgrade() -> None:
    _respell(OLD, ".")


def downgrade() -> None:
    _respell(NEW, "-")
