"""The patient's emergency access becomes three switches, as in the national app (F2, H2).

``patient_access.emergency_access`` (one boolean) becomes ``samu`` (emergency treatment,
purpose ``ETREAT``, by a SAMU professional), ``break_glass`` (any other professional stating
a reason, purpose ``BTG``) and ``masked`` (documents hidden from professionals included in an
emergency read). The meaning of existing rows is kept: a patient who had emergency access on
has SAMU and break-glass on and masked documents off; off stays all off. The downgrade keeps
the old switch on when either SAMU or break-glass was on.

Revision ID: 0024_emergency_switches
Revises: 0023_webmail_indexes
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024_emergency_switches"
down_revision = "0023_webmail_indexes"
branch_labels = None
depends_on = None

_TABLE = sa.table(
    "patient_access",
    sa.column("emergency_access", sa.Boolean()),
    sa.column("samu", sa.Boolean()),
    sa.column("break_glass", sa.Boolean()),
    sa.column("masked", sa.Boolean()),
)


def upgrade() -> None:
    with op.batch_alter_table("patient_access") as batch:
        for name in ("samu", "break_glass", "masked"):
            batch.add_column(
                sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())
            )
    op.execute(
        _TABLE.update().values(
            samu=_TABLE.c.emergency_access, break_glass=_TABLE.c.emergency_access, masked=False
        )
    )
    with op.batch_alter_table("patient_access") as batch:
        batch.drop_column("emergency_access")


def downgrade() -> None:
    with op.batch_alter_table("patient_access") as batch:
        batch.add_column(
            sa.Column("emergency_access", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(_TABLE.update().values(emergency_access=sa.or_(_TABLE.c.samu, _TABLE.c.break_glass)))
    with op.batch_alter_table("patient_access") as batch:
        for name in ("masked", "break_glass", "samu"):
            batch.drop_column(name)
