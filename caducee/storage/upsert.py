"""``INSERT … ON CONFLICT`` for the engine of a session (SQLite and PostgreSQL share the syntax)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def upsert_insert(session: Session, table: Any) -> Any:
    """An insert construct with ``on_conflict_do_nothing``/``on_conflict_do_update``."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class PreparedUpsert:
    """An ``INSERT … ON CONFLICT`` built once per dialect, its values bound at execution.

    Why: built per row with ``.values(...)``, SQLAlchemy coerces every value and computes a
    new cache key each time; on the path every inbound message takes, that was over a
    quarter of the group committer's CPU (issue 19). ``finish`` adds the conflict clause
    (and ``RETURNING``) to the bare insert of ``table``.
    """

    def __init__(self, table: Any, finish: Callable[[Any], Any]) -> None:
        self.table = table
        self.finish = finish
        self._built: dict[str, Any] = {}

    def __call__(self, session: Session) -> Any:
        """The statement for the engine of ``session``."""
        dialect = session.get_bind().dialect.name
        statement = self._built.get(dialect)
        if statement is None:
            statement = self._built[dialect] = self.finish(upsert_insert(session, self.table))
        return statement
