"""The admin API (issue 16): every operation of its OpenAPI document, valid and invalid inputs.

This test walks the document itself, in process (tests/gateway/http/test_admin_schemathesis.py
runs schemathesis against a served gateway): for every operation it calls without a token,
with a token lacking the scope, with garbage bodies and path values, and with valid inputs;
no answer is a 5xx, every error is ``application/problem+json`` with the status it claims,
and every status is one the document declares for that operation. Plus the scoped flow:
create → show → code → close → reopen → export, accounts and app passwords, each audited.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from caducee.config import Settings
from caducee.config.settings import DatabaseSettings, GatewaySettings
from caducee.directory.formats import SourceKind
from caducee.directory.service import NewEntry, add_entry
from caducee.gateway.http.admin_api import admin_routes
from caducee.gateway.runtime import Gateway, build_gateway
from caducee.storage.admin_tokens import SCOPES, create_token
from caducee.storage.audit import AuditEvent
from caducee.storage.db import Database
from caducee.storage.keyring import Keyring
from tests.harness.identities import valid_ins

PROBLEM = "application/problem+json"
HOSTED = "dr.durand@hopital.test"


@pytest.fixture
def gateway(database: Database, database_url: str, tmp_path: Path) -> Iterator[Gateway]:
    Keyring.create(tmp_path / "keys" / "kek")
    built = build_gateway(
        Settings(
            home=tmp_path,
            gateway=GatewaySettings(hosted_domains=("hopital.test",)),
            database=DatabaseSettings(url=database_url),
        )
    )
    with built.database.transaction() as session:
        add_entry(
            session,
            NewEntry(
                address=HOSTED, bal_type="PER", national_id="810099999012", family_name="DURAND",
                given_name="Jean", profession_code="10", profession_label="Médecin",
                organisation_name="Hôpital", postal_code="75012", hosted=True,
                source=SourceKind.DEMO,
            ),
        )  # fmt: skip
    yield built
    built.close()


@pytest.fixture
def client(gateway: Gateway) -> TestClient:
    return TestClient(Starlette(routes=admin_routes(gateway)), raise_server_exceptions=False)


def _token(gateway: Gateway, scopes: tuple[str, ...] = SCOPES) -> dict[str, str]:
    with gateway.database.transaction() as session:
        _row, token = create_token(session, "test", scopes, timedelta(days=1))
    return {"Authorization": f"Bearer {token}"}


def _patient_body() -> dict[str, Any]:
    return {
        "ins": valid_ins(), "birth_name": "Dupont", "given_name": "Marie",
        "birth_date": "1980-05-17", "sex": "F", "birthplace": "75056",
    }  # fmt: skip


def _check(response: Any, declared: dict[str, Any], what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text}"
    assert str(response.status_code) in declared, f"{what}: undeclared {response.status_code}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith(PROBLEM), what
        body = response.json()
        assert body["status"] == response.status_code and body["type"] and body["title"]


def test_admin_openapi_every_operation_valid_and_invalid(
    client: TestClient, gateway: Gateway
) -> None:
    document = client.get("/admin/openapi.json").json()
    assert document["openapi"].startswith("3.")
    full = _token(gateway)
    none_scope = _token(gateway, ("queue:read",))
    created = client.post("/admin/patients", json=_patient_body(), headers=full)
    assert created.status_code == 201, created.text
    patient = created.json()["address"]
    assert "activation_code" in created.json()  # no channel configured: shown to the operator
    account = client.post("/admin/accounts", json={"address": HOSTED}, headers=full)
    assert account.status_code == 201, account.text
    path_values = {
        "address": [patient, HOSTED, "nobody@patient.mssante.fr", "%00", "x" * 400, "a@b"],
        "password_id": ["1", "0", "999999", "-1", "abc", "9" * 30],
    }
    bodies: list[Any] = [None, {}, [], "text", {"unexpected": 1}, {"label": ""}, 12]
    calls = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = operation["responses"]
            secured = bool(operation.get("security"))
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            variants = [
                path.replace("{address}", a).replace("{password_id}", pid)
                for a in path_values["address"][: 6 if "address" in names else 1]
                for pid in path_values["password_id"][: 6 if "password_id" in names else 1]
            ]
            for url in variants:
                for headers in [{}, none_scope, full] if secured else [{}]:
                    for body in bodies if "requestBody" in operation else [None]:
                        kwargs: dict[str, Any] = {"headers": headers}
                        if body is not None:
                            kwargs["json"] = body
                        response = client.request(method.upper(), url, **kwargs)
                        what = f"{method.upper()} {url} {headers and 'token'} {body!r}"
                        _check(response, {**declared, "401": {}, "403": {}}, what)
                        if secured and not headers:
                            assert response.status_code == 401
                        calls += 1
    assert calls > 300
    broken = client.post(
        "/admin/patients", content=b"{not json", headers={**full, "Content-Type": "x"}
    )
    assert broken.status_code == 400 and broken.headers["content-type"].startswith(PROBLEM)
    unknown = client.get("/admin/nothing-here", headers=full)
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith(PROBLEM)


def test_admin_flow_scoped_and_audited(client: TestClient, gateway: Gateway) -> None:
    full = _token(gateway)
    reader = _token(gateway, ("patients:read",))
    body = _patient_body()
    assert client.post("/admin/patients", json=body, headers=reader).status_code == 403
    created = client.post("/admin/patients", json=body, headers=full)
    assert created.status_code == 201
    address = created.json()["address"]
    again = client.post("/admin/patients", json=body, headers=full)
    assert again.status_code == 409 and again.json()["code"] == "ins-exists"
    shown = client.get(f"/admin/patients/{address}", headers=reader).json()
    assert shown["status"] == "created" and shown["ins"] == body["ins"]
    code = client.post(f"/admin/patients/{address}/activation-code", headers=full)
    assert code.status_code == 200 and code.json()["activation_code"]
    assert client.post(f"/admin/patients/{address}/close", headers=full).status_code == 200
    assert client.get(f"/admin/patients/{address}", headers=reader).json()["status"] == "closed"
    assert client.post(f"/admin/patients/{address}/reopen", headers=full).status_code == 200
    exported = client.get(f"/admin/patients/{address}/export", headers=reader)
    assert exported.status_code == 200
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        assert "manifest.json" in archive.namelist()

    added = client.post(
        f"/admin/accounts/{HOSTED}/app-passwords", json={"label": "x"}, headers=full
    )
    assert added.status_code == 404  # no account yet
    assert client.post("/admin/accounts", json={"address": HOSTED}, headers=full).status_code == 201
    added = client.post(
        f"/admin/accounts/{HOSTED}/app-passwords", json={"label": "Thunderbird"}, headers=full
    )
    assert added.status_code == 201 and added.json()["password"]
    listed = client.get(f"/admin/accounts/{HOSTED}/app-passwords", headers=full).json()
    assert [row["label"] for row in listed["app_passwords"]] == ["Thunderbird"]
    assert "password" not in listed["app_passwords"][0]
    revoke = client.delete(
        f"/admin/accounts/{HOSTED}/app-passwords/{added.json()['id']}", headers=full
    )
    assert revoke.status_code == 204
    suspended = client.post(f"/admin/accounts/{HOSTED}/suspend", headers=full)
    assert suspended.json()["state"] == "suspended"
    assert client.get("/admin/audit/verify", headers=full).json()["intact"] is True

    with gateway.database.reading() as session:
        events = [
            (e.action, e.result, e.rule, e.actor_id)
            for e in session.scalars(select(AuditEvent).where(AuditEvent.channel == "admin"))
        ]
    actions = {action for action, *_ in events}
    assert {"space.create", "space.read", "space.close", "space.reopen", "space.export",
            "account.create", "app-password.add", "app-password.revoke",
            "account-suspend", "audit.verify"} <= actions  # fmt: skip
    assert any(result == "denied" and rule == "scope" for _a, result, rule, _i in events)
    assert all(actor.startswith("token:") for *_rest, actor in events)
