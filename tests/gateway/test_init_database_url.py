"""K2/K3: ``caducee init`` writes into ``caducee.toml`` the database URL it used.

A home initialised with ``CADUCEE_DATABASE__URL`` (PostgreSQL in production) must
keep using that database when the variable is gone, not fall back to a SQLite file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from caducee.config import load_settings
from caducee.gateway.cli import main
from caducee.gateway.commands.init import initial_database_url
from caducee.storage import schema
from caducee.storage.db import Database


def test_k2_init_writes_the_database_url_from_the_environment(
    tmp_path: Path,
    home_env: dict[str, str],
    fresh_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CADUCEE_DATABASE__URL", fresh_database_url)
    home = tmp_path / "home"
    assert main(["init", "--home", str(home)]) == 0
    assert "password" not in capsys.readouterr().out
    written = tomllib.loads((home / "caducee.toml").read_text(encoding="utf-8"))
    assert written["database"]["url"] == fresh_database_url
    monkeypatch.delenv("CADUCEE_DATABASE__URL")
    settings = load_settings(home)
    assert settings.database_url == fresh_database_url
    database = Database(settings.database_url)
    try:
        assert schema.current_revision(database) == schema.head_revision()
    finally:
        database.dispose()
    assert not (home / "caducee.db").exists()


def test_k2_init_without_the_variable_keeps_sqlite_in_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CADUCEE_DATABASE__URL", raising=False)
    assert initial_database_url({}) == ("sqlite:///caducee.db", False)


def test_k2_init_leaves_the_database_password_out_of_the_file() -> None:
    url, left_out = initial_database_url(
        {"CADUCEE_DATABASE__URL": "postgresql://caducee:s3cr%40t@db.example:5432/caducee"}
    )
    assert (url, left_out) == ("postgresql://caducee@db.example:5432/caducee", True)
    quoted = initial_database_url(
        {"CADUCEE_DATABASE__URL": '"postgresql://u@h/db?sslmode=require"'}
    )
    assert quoted == ("postgresql://u@h/db?sslmode=require", False)
