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
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, Table, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from caducee.storage.keyring import Keyring
from caducee.storage.sealed import ColumnSealer, attach
from caducee.storage.writer_lock import WriterLock

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

DIRECTORY_SCHEMA = "directory"
"""The name under which a SQLite home's directory file is attached to every connection."""

_TOUCH_WRITE_INTENT = "DELETE FROM main.write_intent WHERE 0"
"""A write to the main SQLite file's empty ``write_intent`` table: it takes that file's lock."""


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL, or None (another engine, or an in-memory database)."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite":
        return None
    name = parsed.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def directory_file(main: Path) -> Path:
    """Where a SQLite home keeps its directory tables: beside the main file.

    The national directory is loaded in bulk (a million rows, index builds of
    seconds). SQLite has one writer per file: in the main file, every
    delivery's commit waited for those builds (issue 20: ``250`` up to 4.8 s
    late). In a file of its own, attached to every connection under
    :data:`DIRECTORY_SCHEMA`, its write lock is not the one mail waits for;
    unqualified names find its tables (SQLite looks in ``main``, then in the
    attached files), so queries and joins are written as before.
    """
    return main.with_name(f"{main.stem}-directory{main.suffix}")


def database_files(url: str) -> list[Path]:
    """Every file a SQLite database URL stands for (copy them together); [] for others."""
    main = sqlite_file(url)
    return [] if main is None else [main, directory_file(main)]


def _tune_sqlite(dbapi_connection: Any, attach_directory: Path | None) -> None:
    # Let SQLAlchemy, not the driver, decide when transactions begin, so that
    # BEGIN IMMEDIATE below is honoured.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    if attach_directory is not None:
        cursor.execute(f"ATTACH DATABASE ? AS {DIRECTORY_SCHEMA}", (str(attach_directory),))
        cursor.execute(f"PRAGMA {DIRECTORY_SCHEMA}.journal_mode=WAL")
        cursor.execute(f"PRAGMA {DIRECTORY_SCHEMA}.synchronous=FULL")
    cursor.close()


def _begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN: two writers then queue on busy_timeout
    # instead of failing with "database is locked" on lock upgrade.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


_HAS_WRITE_INTENT = (
    "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = 'write_intent'"
)


def _begin_writing_main(conn: Any) -> None:
    """Take the main file's write lock at BEGIN, and not the attached directory's.

    ``BEGIN IMMEDIATE`` would lock every attached file: a delivery would wait
    for a directory import again. A deferred ``BEGIN`` whose first statement
    writes to the main file (a ``DELETE`` that matches nothing) takes that
    lock at once, with the same busy handling, and the directory's only if the
    transaction writes to it. A home not yet migrated to the table (revision
    0029) begins ``IMMEDIATE``. The statements go through SQLAlchemy, so a
    writer kept waiting past ``busy_timeout`` gets its ``OperationalError``,
    as callers that retry expect.
    """
    driver = conn.connection.driver_connection
    if driver.execute(_HAS_WRITE_INTENT).fetchone() is None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    conn.exec_driver_sql("BEGIN")
    try:
        conn.exec_driver_sql(_TOUCH_WRITE_INTENT)
    except BaseException:
        if driver.in_transaction:
            driver.execute("ROLLBACK")
        raise


def _sqlite_engine(url: str, *, begin: Any, attach_directory: Path | None) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", lambda dbapi, _record: _tune_sqlite(dbapi, attach_directory))
    event.listen(engine, "begin", begin)
    return engine


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create an engine with the durability settings of this module.

    A SQLite file gets its directory file attached (:func:`directory_file`).
    """
    url = normalise_url(url)
    main = sqlite_file(url)
    if make_url(url).get_backend_name() == "sqlite":
        if main is None:
            return _sqlite_engine(url, begin=_begin_immediate, attach_directory=None)
        return _sqlite_engine(url, begin=_begin_writing_main, attach_directory=directory_file(main))
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _make_read_engine(url: str) -> Engine:
    """SQLite engine whose transactions begin DEFERRED: readers never take the write lock."""
    main = sqlite_file(url)
    return _sqlite_engine(
        url,
        begin=lambda conn: conn.exec_driver_sql("BEGIN"),
        attach_directory=None if main is None else directory_file(main),
    )


_WRITERS: dict[str, WriterLock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer_lock(url: str) -> WriterLock:
    """The lock this process's writers to one SQLite file queue on (see :meth:`transaction`)."""
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(url, WriterLock())


class Database:
    """An engine plus a session factory; the one handle the rest of the code receives.

    :meth:`transaction` is for work that may write. :meth:`reading` is for
    lookups: on SQLite it uses a second engine whose transactions do not take
    the write lock, so lookups run beside a writer (WAL); on PostgreSQL both
    are the same engine. :attr:`directory_engine` is for bulk writes to the
    directory tables alone (the importer): on a SQLite file it opens the
    directory file by itself, so its transactions never hold the main file's
    write lock; elsewhere it is :attr:`engine`.
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
        main = sqlite_file(self.url)
        self.directory_engine = (
            self.engine
            if main is None
            else _sqlite_engine(
                f"sqlite:///{directory_file(main)}",
                begin=_begin_immediate,
                attach_directory=None,
            )
        )

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
        attach(self.directory_engine.dialect, sealer)
        return self

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on error.

        On SQLite, the writers of one process queue on a lock of their own before ``BEGIN
        IMMEDIATE``. SQLite's busy handler makes a blocked writer sleep (1, 2, 5 … up to
        100 ms) and poll, so with the group committer and the job workers writing at once,
        the committer slept while the lock lay free (issue 19: 65 % of its time in
        ``BEGIN IMMEDIATE``); a waiter on this lock wakes as soon as it is released. Writers
        in other processes still meet on ``busy_timeout``. Writers waiting for a client go
        before the job workers' (:mod:`caducee.storage.writer_lock`). Reentrant: a nested
        transaction in the same thread behaves as before (it waits on SQLite's lock), and so
        does a writer that waited ``busy_timeout`` here.
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
        if self.directory_engine is not self.engine:
            self.directory_engine.dispose()
