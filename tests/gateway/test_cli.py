"""K1/K3: init, doctor and serve as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from caducee.gateway.cli import main
from caducee.gateway.home import open_database
from tests.harness.paths import CADUCEE
from tests.harness.served import LISTENERS, free_port
from tests.harness.waiting import wait_until


def _isolated_ports(env: dict[str, str]) -> dict[str, int]:
    ports = {name: free_port() for name in LISTENERS}
    for name, port in ports.items():
        env[f"CADUCEE_LISTENERS__{name.upper()}"] = str(port)
    return ports


def test_k1_init_creates_a_complete_home_and_is_idempotent(
    home_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for relative in (
        "caducee.toml",
        "tls/ca.pem",
        "tls/server.pem",
        "tls/server.key",
        "dkim/caducee.key",
        "keys/kek/active",
        "blobs",
    ):
        assert (home_dir / relative).exists(), relative
    before = {
        path: path.stat().st_mtime_ns
        for path in home_dir.rglob("*")
        if path.is_file() and not path.name.startswith(("caducee.db", "caducee-directory.db"))
    }
    capsys.readouterr()
    assert main(["init", "--home", str(home_dir)]) == 0
    assert "already initialised; nothing changed" in capsys.readouterr().out
    after = {
        path: path.stat().st_mtime_ns
        for path in home_dir.rglob("*")
        if path.is_file() and not path.name.startswith(("caducee.db", "caducee-directory.db"))
    }
    assert before == after


def test_k3_doctor_accepts_a_new_home(home_dir: Path, home_env: dict[str, str]) -> None:
    env = dict(home_env)
    _isolated_ports(env)
    result = subprocess.run(
        [*CADUCEE, "doctor", "--home", str(home_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All is well." in result.stdout
    for check in (
        "config",
        "database",
        "CA certificate",
        "server certificate",
        "key-encryption key",
        "DKIM key",
        "listener http",
    ):
        assert f"ok       {check}" in result.stdout


def test_k3_doctor_lists_every_problem(home_dir: Path, home_env: dict[str, str]) -> None:
    env = dict(home_env)
    ports = _isolated_ports(env)
    (home_dir / "dkim" / "caducee.key").write_text("not a key")
    (home_dir / "keys" / "kek" / "active").write_text("kek-that-does-not-exist\n")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["smtp"]))
        squatter.listen()
        result = subprocess.run(
            [*CADUCEE, "doctor", "--home", str(home_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "PROBLEM  DKIM key" in result.stdout
    assert "PROBLEM  key-encryption key" in result.stdout
    assert (
        f"PROBLEM  listener smtp: 127.0.0.1:{ports['smtp']} in use by another program"
        in result.stdout
    )
    assert "3 problem(s)." in result.stdout


def test_k3_doctor_reports_a_database_behind_its_migrations(
    home_dir: Path, home_env: dict[str, str]
) -> None:
    from caducee.config import load_settings
    from caducee.storage import schema

    database = open_database(load_settings(home_dir))
    schema.downgrade(database, "base")
    database.dispose()
    env = dict(home_env)
    _isolated_ports(env)
    result = subprocess.run(
        [*CADUCEE, "doctor", "--home", str(home_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "PROBLEM  database: schema at nothing" in result.stdout


def _health(port: int) -> dict[str, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return dict(json.loads(response.read()))
    except OSError:
        return None


def test_k3_serve_answers_then_sigterm_exits_0(home_dir: Path, home_env: dict[str, str]) -> None:
    env = dict(home_env)
    ports = _isolated_ports(env)
    process = subprocess.Popen(
        [*CADUCEE, "serve", "--home", str(home_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health = wait_until(lambda: _health(ports["http"]), message="no answer on /healthz")
        assert health["service"] == "caducee"
        with urllib.request.urlopen(
            f"http://127.0.0.1:{ports['http']}/readyz", timeout=5
        ) as response:
            assert json.loads(response.read()) == {"status": "ready"}
        with urllib.request.urlopen(
            f"http://127.0.0.1:{ports['http']}/metrics", timeout=5
        ) as response:
            assert 'caducee_jobs{state="ready"}' in response.read().decode()
        doctor = subprocess.run(
            [*CADUCEE, "doctor", "--home", str(home_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert doctor.returncode == 0, doctor.stdout
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{ports['http']}" in out
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines, "serve logs JSON lines on stderr"
    messages = [line["message"] for line in lines]
    assert "gateway started" in messages and "gateway stopped" in messages
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)


def test_k3_serve_refuses_an_unmigrated_database(home_dir: Path, home_env: dict[str, str]) -> None:
    from caducee.config import load_settings
    from caducee.storage import schema

    database = open_database(load_settings(home_dir))
    schema.downgrade(database, "base")
    database.dispose()
    env = dict(home_env)
    _isolated_ports(env)
    result = subprocess.run(
        [*CADUCEE, "serve", "--home", str(home_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "database schema is at nothing" in result.stderr


def test_k3_readyz_is_503_problem_json_when_the_schema_is_behind(home_dir: Path) -> None:
    from starlette.testclient import TestClient

    from caducee.config import load_settings
    from caducee.gateway.http.app import build_http_app
    from caducee.gateway.runtime import build_gateway
    from caducee.storage import schema

    gateway = build_gateway(load_settings(home_dir))
    try:
        schema.downgrade(gateway.database, "base")
        response = TestClient(build_http_app(gateway)).get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Not ready"
        missing = TestClient(build_http_app(gateway)).get("/no-such-page")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
    finally:
        gateway.close()


def test_k3_readyz_answers_while_an_import_holds_the_sqlite_write_lock(home_dir: Path) -> None:
    """A readiness probe only reads: it must not queue behind a writer (a directory import
    holds SQLite's write lock for seconds), or the orchestrator restarts a working node."""
    import sqlite3

    from starlette.testclient import TestClient

    from caducee.config import load_settings
    from caducee.gateway.http.app import build_http_app
    from caducee.gateway.runtime import build_gateway

    gateway = build_gateway(load_settings(home_dir))
    try:
        if gateway.database.dialect != "sqlite":
            pytest.skip("PostgreSQL readers never take a write lock")
        path = gateway.database.engine.url.database
        assert path is not None
        writer = sqlite3.connect(path, timeout=1, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            response = TestClient(build_http_app(gateway)).get("/readyz")
        finally:
            writer.execute("ROLLBACK")
            writer.close()
        assert response.status_code == 200
        assert response.json() == {"status": "ready"}
    finally:
        gateway.close()


def test_k3_cli_help_lists_the_contract() -> None:
    result = subprocess.run(
        [*CADUCEE, "--help"], capture_output=True, text=True, timeout=30, env=os.environ
    )
    for command in ("init", "serve", "doctor", "config", "keys"):
        assert command in result.stdout
