"""The admin API's trust space, directory imports and relay queue (issue 16; A5, A3, C5, G4).

Each operation is called as an operator's script would, with a scoped token, against a real
database (both engines): dry runs change nothing and say what would change; an import that
would remove more than ``[lifecycle] import_removal_share`` answers 409 problem+json until
``confirm=true``; the queue shows codes and domains (never an address), retries, bounces
with a DSN to the sender, and deletes. Every call lands in the audit trail.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
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
from caducee.gateway import pki
from caducee.gateway.http.admin_api import admin_routes
from caducee.gateway.runtime import Gateway, build_gateway
from caducee.mailboxes.listing import list_messages
from caducee.mailboxes.relay.outbound import queue_outbound
from caducee.storage.admin_tokens import create_token
from caducee.storage.audit import AuditEvent
from caducee.storage.db import Database
from caducee.storage.keyring import Keyring
from tests.directory.samples import SAMPLE_NAME
from tests.directory.trust.samples import domaine, whitelist

PROBLEM = "application/problem+json"
HOSTED = "dr.martin@hopital.test"
REMOTE = "dr.remote@autre-operateur.test"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
WHITELIST = SAMPLES / "ansforge-MSS-liste-blanche" / "listeblanchemssante.xml"
PS_SAMPLE = SAMPLES / "cyrilvincent-skema" / SAMPLE_NAME


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
    yield built
    built.close()


@pytest.fixture
def client(gateway: Gateway) -> TestClient:
    return TestClient(Starlette(routes=admin_routes(gateway)), raise_server_exceptions=False)


def _token(gateway: Gateway, *scopes: str) -> dict[str, str]:
    with gateway.database.transaction() as session:
        _row, token = create_token(session, "test", scopes, timedelta(days=1))
    return {"Authorization": f"Bearer {token}"}


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code
    return body


def _audited(gateway: Gateway, action: str) -> list[tuple[str, str | None]]:
    with gateway.database.reading() as session:
        rows = session.execute(
            select(AuditEvent.result, AuditEvent.rule).where(AuditEvent.action == action)
        ).all()
    return [(result, rule) for result, rule in rows]


def _trusted(client: TestClient, headers: dict[str, str], domain: str) -> bool:
    response = client.get(f"/admin/trust/domains/{domain}", headers=headers)
    assert response.status_code == 200, response.text
    return bool(response.json()["trusted"])


def test_a5_trust_import_over_http_dry_run_and_removal_confirmation(
    client: TestClient, gateway: Gateway
) -> None:
    read = _token(gateway, "trust:read")
    write = _token(gateway, "trust:write")
    published = WHITELIST.read_bytes()
    url = "/admin/trust/import"

    _problem(client.post(url, content=published, headers=read), 403, "insufficient-scope")
    dry = client.post(f"{url}?dry_run=true", content=published, headers=write)
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True and dry.json()["applied"] is False
    assert dry.json()["added"] == 614 and dry.json()["removed"] == 0
    assert client.get("/admin/trust", headers=read).json()["domains"] == {}  # nothing changed
    assert not _trusted(client, read, "UC-CMP.mssante.fr")

    done = client.post(url, content=published, headers=write)
    assert done.status_code == 200 and done.json()["applied"] is True
    assert done.json()["added"] == 614
    assert _trusted(client, read, "UC-CMP.mssante.fr")

    one = whitelist(domaine("seul.mssante.fr"))
    dry = client.post(f"{url}?dry_run=true", content=one, headers=write)
    assert dry.status_code == 200 and dry.json()["removed"] == 614
    refused = _problem(client.post(url, content=one, headers=write), 409, "confirmation-required")
    assert "614" in refused["detail"] and "confirm=true" in refused["detail"]
    assert _trusted(client, read, "UC-CMP.mssante.fr")  # the refusal changed nothing
    confirmed = client.post(f"{url}?confirm=true", content=one, headers=write)
    assert confirmed.status_code == 200 and confirmed.json()["removed"] == 614
    assert not _trusted(client, read, "UC-CMP.mssante.fr")
    assert _trusted(client, read, "seul.mssante.fr")

    _problem(client.post(url, content=b"<not-xml", headers=write), 422, "nothing-imported")
    _problem(client.post(url, content=b"", headers=write), 422, "empty-body")
    _problem(client.post(f"{url}?dry_run=maybe", content=one, headers=write), 422, "invalid-query")
    assert _audited(gateway, "trust.import.dry-run") == [("ok", None), ("ok", None)]
    assert ("ok", None) in _audited(gateway, "trust.import")
    assert ("denied", "confirmation-required") in _audited(gateway, "trust.import")
    assert ("denied", "scope") in _audited(gateway, "trust.import")


def test_a3_directory_import_over_http_dry_run_and_removal_confirmation(
    client: TestClient, gateway: Gateway
) -> None:
    write = _token(gateway, "directory:write")
    url = "/admin/directory/import"
    full = PS_SAMPLE.read_bytes()

    dry = client.post(f"{url}?dry_run=true", content=full, headers=write)
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True and dry.json()["added"] == 22
    done = client.post(url, content=full, headers=write)
    assert done.status_code == 200 and done.json()["added"] == 22  # the dry run added nothing

    smaller = b"".join(full.splitlines(keepends=True)[:3])
    dry = client.post(f"{url}?dry_run=true", content=smaller, headers=write)
    assert dry.status_code == 200
    removed = dry.json()["removed"]
    assert removed > 10
    refused = _problem(
        client.post(url, content=smaller, headers=write), 409, "confirmation-required"
    )
    assert str(removed) in refused["detail"]
    again = client.post(f"{url}?dry_run=true", content=full, headers=write)
    assert again.json()["unchanged"] == 22 and again.json()["removed"] == 0  # nothing removed
    merged = client.post(f"{url}?mode=merge", content=smaller, headers=write)
    assert merged.status_code == 200 and merged.json()["removed"] == 0  # merge never removes
    confirmed = client.post(f"{url}?confirm=true", content=smaller, headers=write)
    assert confirmed.status_code == 200 and confirmed.json()["removed"] == removed

    _problem(client.post(f"{url}?kind=mss", content=full, headers=write), 422, "import-refused")
    _problem(client.post(f"{url}?mode=all", content=full, headers=write), 422, "invalid-query")
    _problem(client.post(url, content=b"garbage\n", headers=write), 422, "import-refused")
    assert [r for r, _ in _audited(gateway, "directory.import.dry-run")] == ["ok"] * 3
    assert ("denied", "confirmation-required") in _audited(gateway, "directory.import")


def _relay_job(gateway: Gateway, sender: str) -> int:
    message = EmailMessage()
    message["From"] = sender or "MAILER-DAEMON@hopital.test"
    message["To"] = REMOTE
    message["Subject"] = "Compte rendu confidentiel"
    message.set_content("Bonjour.\n")
    with gateway.database.transaction() as session:
        return queue_outbound(
            session, gateway.blobs, gateway.queue, envelope_from=sender, recipients=[REMOTE],
            content=message.as_bytes(), purpose="message" if sender else "dsn",
        )  # fmt: skip


def test_c5_g4_relay_queue_over_http_show_retry_bounce_delete(
    client: TestClient, gateway: Gateway
) -> None:
    with gateway.database.transaction() as session:
        add_entry(
            session,
            NewEntry(
                address=HOSTED, bal_type="PER", national_id="810099999012", family_name="MARTIN",
                given_name="Paul", profession_code="10", profession_label="Médecin",
                organisation_name="Hôpital", postal_code="75012", hosted=True,
                source=SourceKind.DEMO,
            ),
        )  # fmt: skip
    accounts = _token(gateway, "accounts:write")
    assert client.post("/admin/accounts", json={"address": HOSTED}, headers=accounts).is_success
    read = _token(gateway, "queue:read")
    write = _token(gateway, "queue:write")
    job = _relay_job(gateway, HOSTED)

    listed = client.get("/admin/queue/relay", headers=read)
    assert listed.status_code == 200
    assert [entry["id"] for entry in listed.json()["jobs"]] == [job]
    shown = client.get(f"/admin/queue/relay/{job}", headers=read)
    assert shown.status_code == 200
    assert shown.json()["recipients"] == [
        {"domain": "autre-operateur.test", "state": "queued", "attempts": 0,
         "reply_code": None, "status": None, "last_attempt": None}
    ]  # fmt: skip
    assert REMOTE not in listed.text + shown.text and "confidentiel" not in shown.text

    _problem(
        client.post(f"/admin/queue/relay/{job}/retry", headers=read), 403, "insufficient-scope"
    )
    retried = client.post(f"/admin/queue/relay/{job}/retry", headers=write)
    assert retried.status_code == 200 and retried.json()["state"] == "ready"

    bounced = client.post(f"/admin/queue/relay/{job}/bounce", headers=write)
    assert bounced.status_code == 200, bounced.text
    assert bounced.json() == {"id": job, "failed": 1, "dsn_sent": True}
    shown = client.get(f"/admin/queue/relay/{job}", headers=read).json()
    assert shown["state"] == "done"
    assert shown["recipients"][0]["state"] == "failed"
    assert shown["recipients"][0]["status"] == "5.0.0"
    with gateway.database.reading() as session:
        inbox = list_messages(session, gateway.blobs, HOSTED)
    assert len(inbox) == 1 and inbox[0].sender == "<>"  # the failure DSN, under the null sender
    assert inbox[0].subject == "Message non distribué / Undelivered message"
    _problem(
        client.post(f"/admin/queue/relay/{job}/bounce", headers=write), 409, "nothing-to-bounce"
    )
    _problem(client.post(f"/admin/queue/relay/{job}/retry", headers=write), 409, "nothing-to-retry")

    silent = _relay_job(gateway, "")  # a DSN itself: bounced without a DSN about it
    bounced = client.post(f"/admin/queue/relay/{silent}/bounce", headers=write)
    assert bounced.json() == {"id": silent, "failed": 1, "dsn_sent": False}

    assert client.delete(f"/admin/queue/relay/{job}", headers=write).status_code == 204
    _problem(client.get(f"/admin/queue/relay/{job}", headers=read), 404, "not-found")
    _problem(client.get("/admin/queue/relay/abc", headers=read), 404, "not-found")
    _problem(client.get("/admin/queue/relay?all=perhaps", headers=read), 422, "invalid-query")
    assert _audited(gateway, "queue.bounce").count(("ok", None)) == 2
    assert ("denied", "nothing-to-bounce") in _audited(gateway, "queue.bounce")
    assert ("ok", None) in _audited(gateway, "queue.delete")


def test_a5_trust_anchors_added_and_removed_over_http(client: TestClient, gateway: Gateway) -> None:
    read, write = _token(gateway, "trust:read"), _token(gateway, "trust:write")
    ca = pki.create_ca("Autorité de test", "Opérateur de test")
    pem = pki.cert_pem(ca.certificate)
    url = "/admin/trust/anchors"

    _problem(client.post(url, content=pem, headers=read), 403, "insufficient-scope")
    added = client.post(url, content=pem, headers=write)
    assert added.status_code == 200, added.text
    [anchor] = added.json()["added"]
    again = client.post(url, content=pem, headers=write)
    assert again.status_code == 200 and again.json()["added"] == []
    assert [item["fingerprint"] for item in again.json()["already_present"]] == [
        anchor["fingerprint"]
    ]
    listed = client.get("/admin/trust", headers=read).json()["anchors"]
    assert anchor["fingerprint"] in [item["fingerprint"] for item in listed]
    _problem(client.post(url, content=b"pas un certificat", headers=write), 422, "no-certificate")

    prefix = anchor["fingerprint"][:8]  # the CLI accepts a prefix; HTTP wants the whole digest
    _problem(client.delete(f"{url}/{prefix}", headers=write), 422, "invalid-fingerprint")
    removed = client.delete(f"{url}/{anchor['fingerprint']}", headers=write)
    assert removed.status_code == 204, removed.text
    _problem(client.delete(f"{url}/{anchor['fingerprint']}", headers=write), 404, "not-found")
    listed = client.get("/admin/trust", headers=read).json()["anchors"]
    assert anchor["fingerprint"] not in [item["fingerprint"] for item in listed]
    assert [result for result, _rule in _audited(gateway, "trust.anchor.add")].count("ok") >= 1
    assert _audited(gateway, "trust.anchor.remove")
