"""K3: one versioned, documented configuration file with environment overrides."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from caducee.config import ConfigError, Settings, load_settings
from caducee.gateway.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "caducee" / "config" / "caducee.example.toml"


def _write(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "caducee.toml").write_text(text, encoding="utf-8")
    return home


def test_k3_example_file_documents_every_field() -> None:
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    text = EXAMPLE.read_text(encoding="utf-8")
    for section_name, field in Settings.model_fields.items():
        if section_name == "home":
            continue
        assert section_name in example, f"{section_name} missing from the example"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for key in annotation.model_fields:
                assert key in example[section_name], (
                    f"[{section_name}] {key} missing from the example"
                )
                # a comment line precedes every field
                pattern = rf"#[^\n]*\n(?:#[^\n]*\n)*{re.escape(key)} ="
                assert re.search(pattern, text), f"[{section_name}] {key} has no comment"


def test_k3_example_file_is_valid_and_equals_defaults(tmp_path: Path) -> None:
    home = _write(tmp_path / "h", EXAMPLE.read_text(encoding="utf-8"))
    loaded = load_settings(home, environ={})
    defaults = Settings(home=home.resolve())
    assert loaded == defaults


def test_k3_environment_overrides_a_field(tmp_path: Path) -> None:
    home = _write(tmp_path / "h", "version = 1\n[listeners]\nhttp = 8080\n")
    settings = load_settings(
        home,
        environ={
            "CADUCEE_LISTENERS__HTTP": "9090",
            "CADUCEE_GATEWAY__HOSTED_DOMAINS": '["a.mssante.fr"]',
            "CADUCEE_GATEWAY__TEST_MODE": "true",
            "CADUCEE_DATABASE__URL": "postgresql://postgres@127.0.0.1/test",
        },
    )
    assert settings.listeners.http == 9090
    assert settings.gateway.hosted_domains == ("a.mssante.fr",)
    assert settings.gateway.test_mode is True
    assert settings.database_url == "postgresql://postgres@127.0.0.1/test"


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        (
            "version = 1\n[listeners]\nsmtp = 70000\n",
            {},
            r"\[listeners\] smtp: expected less than or equal to 65535, got 70000",
        ),
        ("version = 1\n[listeners]\nsmtpp = 25\n", {}, r"\[listeners\] smtpp: unknown field"),
        ("version = 2\n", {}, r"version: this gateway reads version 1 files"),
        (
            "version = 1\n[tls]\nmin_version = 'TLSv1.0'\n",
            {},
            r"\[tls\] min_version: expected 'TLSv1.2' or 'TLSv1.3'",
        ),
        (
            "version = 1\n[database]\nurl = 'mysql://x'\n",
            {},
            r"\[database\] url: expected a sqlite:/// or postgresql:// URL",
        ),
        ("version = 1\n[queue\n", {}, r"not valid TOML"),
        (
            "version = 1\n",
            {"CADUCEE_LISTENERS__HTTP": "eighty"},
            r"environment variable CADUCEE_LISTENERS__HTTP: \[listeners\] http: "
            r"expected a valid integer",
        ),
    ],
)
def test_k3_invalid_configuration_gives_one_clear_error(
    tmp_path: Path, text: str, environ: dict[str, str], expected: str
) -> None:
    home = _write(tmp_path / "h", text)
    with pytest.raises(ConfigError, match=expected):
        load_settings(home, environ=environ)


def test_k3_config_check_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CADUCEE_DATABASE__URL", raising=False)
    home = _write(tmp_path / "h", "version = 1\n")
    assert main(["config", "check", "--home", str(home)]) == 0
    assert "valid (version 1)" in capsys.readouterr().out
    _write(home, "version = 1\n[queue]\nworkers = -1\n")
    assert main(["config", "check", "--home", str(home)]) == 2
    error = capsys.readouterr().err
    assert "[queue] workers: expected greater than or equal to 0, got -1" in error
    assert "Traceback" not in error


def test_k3_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="caducee init"):
        load_settings(tmp_path / "nowhere", environ={})


def test_k3_relative_paths_resolve_against_home(tmp_path: Path) -> None:
    home = _write(tmp_path / "h", "version = 1\n[blobs]\npath = 'store'\n")
    settings = load_settings(home, environ={})
    assert settings.path(settings.blobs.path) == home.resolve() / "store"
    assert settings.database_url == f"sqlite:///{home.resolve() / 'caducee.db'}"
