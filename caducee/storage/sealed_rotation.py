"""Sealed columns after a key rotation: re-sealed under the active KEK, old KEKs freed (J1).

``caducee keys rotate`` rewraps blob data keys; the sealed columns
(:mod:`caducee.storage.sealed`) carry the KEK id in each value, so they are re-sealed here in
small batches, and a KEK is retired only when neither a blob nor a sealed value still names
it. The columns are found in the metadata by their type, so a column sealed later is rotated
without a change here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import Column, MetaData, Table, select, update
from sqlalchemy.orm import Session
from sqlalchemy.types import Text

from caducee.storage.sealed import PREFIX, SealedText, sealer_of


def sealed_columns(metadata: MetaData) -> Iterator[tuple[Table, Column[str]]]:
    """Every (table, column) of ``metadata`` stored sealed."""
    for table in metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, SealedText):
                yield table, column


def _raw(table: Table, column: Column[str]) -> tuple[Table, list[Column[object]], Column[str]]:
    """A light copy of the table whose sealed column reads as stored (not opened)."""
    keys = [Column(key.name, key.type) for key in table.primary_key.columns]
    raw = Column(column.name, Text())
    return Table(table.name, MetaData(), *keys, raw), keys, raw


def reseal_batch(session: Session, metadata: MetaData, *, batch_size: int = 500) -> int:
    """Re-seal up to ``batch_size`` values per column sealed under another KEK; how many."""
    sealer = sealer_of(session.get_bind().dialect)
    active_id = sealer.keyring.active_id
    current = f"{PREFIX}{active_id}:%"
    done = 0
    for table, column in sealed_columns(metadata):
        light, keys, raw = _raw(table, column)
        label = column.type.label if isinstance(column.type, SealedText) else ""
        rows = session.execute(
            select(*keys, raw).where(raw.is_not(None), raw.not_like(current)).limit(batch_size)
        ).all()
        for row in rows:
            key_values, stored = tuple(row)[:-1], row[-1]
            value = sealer.seal(sealer.open(str(stored), label), label)
            condition = [key == key_value for key, key_value in zip(keys, key_values, strict=True)]
            session.execute(update(light).where(*condition).values({raw.name: value}))
        done += len(rows)
    return done


def kek_ids_in_use(session: Session, metadata: MetaData, candidates: Iterable[str]) -> set[str]:
    """Those of ``candidates`` that some sealed value still names."""
    used: set[str] = set()
    for key_id in candidates:
        for table, column in sealed_columns(metadata):
            _light, _keys, raw = _raw(table, column)
            found = session.execute(
                select(raw).where(raw.like(f"{PREFIX}{key_id}:%")).limit(1)
            ).first()
            if found is not None:
                used.add(key_id)
                break
    return used
