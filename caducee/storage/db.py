"""The SQLAlchemy engine, the declarative base and transaction scopes.

Both engines are tuned for durability first: SQLite runs in WAL mode with
``synchronous=FULL`` so that a committed transaction survives a power cut, and
PostgreSQL keeps its default ``synchronous_commit=on``. Every module that owns
tables declares them on :class:`Base`; Alembic migrations in
``storage/migrations`` are the only way the schema changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, Table, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from caducee.storage.keyring import Keyring
from caducee.storage.sealed import ColumnSealer, attach

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base shared by every table of the product."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp always stored and returned as an aware UTC datetime.

    SQLite has no time zone type; without this, values read back are naive and
    comparisons with aware values fail at run time.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, typed (``__table__`` is typed as a plain FromClause)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


SQLITE_BUSY_SECONDS = 30
"""How long a SQLite writer waits for the write lock before its transaction fails."""


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, decide when transactions begin, so that
    # BEGIN IMMEDIATE below is honoured.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    cursor.close()


def _begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN: two writers then queue on busy_timeout
    # instead of failing with "database is locked" on lock upgrade.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create an engine with the durability settings of this module."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _tune_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _make_read_engine(url: str) -> Engine:
    """SQLite engine whose transactions begin DEFERRED: readers never take the write lock."""
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _tune_sqlite)
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    return engine


_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer_lock(url: str) -> threading.RLock:
    """The lock this process's writers to one SQLite file queue on (see :meth:`transaction`)."""
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(url, threading.RLock())


class Database:
    """An engine plus a session factory; the one handle the rest of the code receives.

    :meth:`transaction` is for work that may write. :meth:`reading` is for
    lookups: on SQLite it uses a second engine whose transactions do not take
    the write lock, so lookups run beside a writer (WAL); on PostgreSQL both
    are the same engine.
    """

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, pool_size=pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.read_engine = (
            _make_read_engine(self.url) if self.engine.dialect.name == "sqlite" else self.engine
        )
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        self._writer = _writer_lock(self.url) if self.engine.dialect.name == "sqlite" else None

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def seal_with(self, keyring: Keyring) -> Database:
        """Give this handle the keys of the sealed columns (J1); returns the handle.

        Every handle that reads or writes subjects, titles or names is opened through its home,
        which calls this; a handle without it refuses those columns instead of storing clear
        text (:mod:`caducee.storage.sealed`).
        """
        sealer = ColumnSealer(keyring)
        attach(self.engine.dialect, sealer)
        attach(self.read_engine.dialect, sealer)
        return self

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on error.

        On SQLite, the writers of one process queue on a lock of their own before ``BEGIN
        IMMEDIATE``. SQLite's busy handler makes a blocked writer sleep (1, 2, 5 … up to
        100 ms) and poll, so with the group committer and the job workers writing at once,
        the committer slept while the lock lay free (issue 19: 65 % of its time in
        ``BEGIN IMMEDIATE``); a waiter on this lock wakes as soon as it is released. Writers
        in other processes still meet on ``busy_timeout``. Reentrant: a nested transaction
        in the same thread behaves as before (it waits on SQLite's lock), and so does a writer
        that waited ``busy_timeout`` here.
        """
        # Bounded like busy_timeout: past it, SQLite's own lock decides (and fails as before).
        queued = self._writer is not None and self._writer.acquire(timeout=SQLITE_BUSY_SECONDS)
        try:
            session = self._sessions()
            try:
                with session.begin():
                    yield session
            finally:
                session.close()
        finally:
            if queued:
                assert self._writer is not None
                self._writer.release()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for lookups; rolled back at the end, whatever it did."""
        session = self._read_sessions()
        try:
            yield session
        finally:
            session.rollback()
            session.close()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
