"""Shared fixtures: one engine per test run, real homes made by ``caducee init``.

The suite runs on SQLite by default. With ``CADUCEE_TEST_DATABASE_URL`` set
to a PostgreSQL URL, the same tests run on PostgreSQL: every fresh database
is then a schema of its own (selected through ``search_path``), so tests stay
isolated without creating databases.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

from caducee.gateway.cli import main as caducee_main
from caducee.storage import schema
from caducee.storage.db import Database, database_files, normalise_url
from caducee.storage.keyring import Keyring
from tests.harness.paths import SAMPLES

pytest_plugins = ["tests.harness.fixtures"]

PG_URL = os.environ.get("CADUCEE_TEST_DATABASE_URL", "")


def engine_name() -> str:
    """``postgresql`` when the run targets PostgreSQL, else ``sqlite``."""
    return "postgresql" if PG_URL else "sqlite"


def pytest_report_header(config: pytest.Config) -> str:
    return f"caducee database engine: {engine_name()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PG_URL:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set CADUCEE_TEST_DATABASE_URL)")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


class PgSchemas:
    """Creates throw-away PostgreSQL schemas and drops them at the end of the run."""

    def __init__(self, url: str) -> None:
        self.admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
        self.base_url = normalise_url(url)
        self.created: list[str] = []

    def new(self) -> str:
        name = f"caducee_t_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{name}"'))
        self.created.append(name)
        separator = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{separator}options={quote(f'-csearch_path={name}')}"

    def drop_all(self) -> None:
        with self.admin.connect() as connection:
            for name in self.created:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[PgSchemas | None]:
    if not PG_URL:
        yield None
        return
    schemas = PgSchemas(PG_URL)
    yield schemas
    schemas.drop_all()


@pytest.fixture
def fresh_database_url(tmp_path: Path, pg_schemas: PgSchemas | None) -> str:
    """An empty database of the engine under test."""
    if pg_schemas is not None:
        return pg_schemas.new()
    return f"sqlite:///{tmp_path / 'fresh.db'}"


@pytest.fixture(scope="session")
def _migrated_template(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: PgSchemas | None
) -> str:
    """One database migrated to head per run; tests get a copy (SQLite) or truncation (PG)."""
    if pg_schemas is not None:
        url = pg_schemas.new()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('template') / 'template.db'}"
    database = Database(url)
    schema.upgrade(database)
    database.dispose()
    return url


@pytest.fixture
def database_url(_migrated_template: str, tmp_path: Path) -> str:
    """A database at the head revision with every table empty."""
    if _migrated_template.startswith("sqlite"):
        target = f"sqlite:///{tmp_path / 'caducee.db'}"
        for source, copy in zip(
            database_files(_migrated_template), database_files(target), strict=True
        ):
            shutil.copyfile(source, copy)
        return target
    database = Database(_migrated_template)
    with database.engine.begin() as connection:
        names = [
            f'"{row[0]}"'
            for row in connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            )
            if row[0] != "alembic_version"
        ]
        if names:
            connection.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
    database.dispose()
    return _migrated_template


@pytest.fixture(scope="session")
def column_keyring(tmp_path_factory: pytest.TempPathFactory) -> Keyring:
    """The keys of the sealed columns (J1) for the databases tests open directly."""
    return Keyring.create(tmp_path_factory.mktemp("column-keyring") / "kek")


@pytest.fixture
def database(database_url: str, column_keyring: Keyring) -> Iterator[Database]:
    """A migrated, empty :class:`Database` of the engine under test, its sealed columns keyed."""
    db = Database(database_url).seal_with(column_keyring)
    yield db
    db.dispose()


@pytest.fixture
def home_env(fresh_database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for a home on the engine under test (PostgreSQL: its own schema).

    Applied to this process and returned for subprocesses.
    """
    env = dict(os.environ)
    for name in [n for n in env if n.startswith("CADUCEE_") and n != "CADUCEE_TEST_DATABASE_URL"]:
        monkeypatch.delenv(name)
        del env[name]
    if PG_URL:
        monkeypatch.setenv("CADUCEE_DATABASE__URL", fresh_database_url)
        env["CADUCEE_DATABASE__URL"] = fresh_database_url
    return env


def _init(home: Path, *, demo: bool) -> Path:
    arguments = ["init", "--home", str(home)] + (["--demo"] if demo else [])
    assert caducee_main(arguments) == 0
    return home


@pytest.fixture
def home_dir(tmp_path: Path, home_env: dict[str, str]) -> Path:
    """A home made by ``caducee init`` (no demo)."""
    return _init(tmp_path / "home", demo=False)


@pytest.fixture
def demo_home(tmp_path: Path, home_env: dict[str, str]) -> Path:
    """A home made by ``caducee init --demo``."""
    return _init(tmp_path / "home", demo=True)


@pytest.fixture(scope="session")
def engine() -> str:
    """The database engine under test: ``sqlite`` or ``postgresql``."""
    return engine_name()


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The real public sample files copied into the repository (``tests/samples``)."""
    return SAMPLES
