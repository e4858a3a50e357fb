"""Open a gateway home: its settings and its database, for commands and servers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from caducee.config import Settings, load_settings
from caducee.storage.db import Database
from caducee.storage.keyring import Keyring


def open_database(settings: Settings, *, pool_size: int | None = None) -> Database:
    """The home's database with the keys of its sealed columns (J1): the one way to open it."""
    database = Database(
        settings.database_url,
        pool_size=settings.database.pool_size if pool_size is None else pool_size,
    )
    return database.seal_with(Keyring(settings.path(settings.crypto.keyring)))


@dataclass(frozen=True)
class Home:
    """Everything a command needs from a home folder."""

    settings: Settings
    database: Database


@contextmanager
def open_home(home: Path) -> Iterator[Home]:
    """Load the settings of ``home`` and connect to its database; dispose on exit.

    Raises :class:`caducee.config.ConfigError` when the configuration is unusable.
    """
    settings = load_settings(home)
    database = open_database(settings)
    try:
        yield Home(settings=settings, database=database)
    finally:
        database.dispose()
