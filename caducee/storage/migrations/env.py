"""Alembic environment: runs on the connection given by :mod:`caducee.storage.schema`."""

from __future__ import annotations

from alembic import context

from caducee.storage.db import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - always called through caducee.storage.schema
    raise RuntimeError("run migrations through 'caducee' (caducee.storage.schema)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
