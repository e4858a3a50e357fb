"""K2/J1 served end to end: a gateway whose blobs live in S3-compatible object storage.

The store is a real S3 API server (moto in server mode, a subprocess, over HTTP).
A mail accepted over SMTP is read by the patient over IMAP; its body is an object
of the bucket, encrypted (the object's bytes never hold the body in clear); the
sweep deletes an orphaned object and keeps the live ones.
"""

from __future__ import annotations

import email
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from caducee.storage.blobs import BlobRow
from tests.harness.paths import CADUCEE
from tests.harness.s3 import MotoServer, start_moto
from tests.harness.served import Account, ServedGateway, prepare_demo
from tests.harness.waiting import wait_until


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from start_moto(tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="module")
def bucket(s3_server: MotoServer) -> str:
    return s3_server.new_bucket()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any, s3_server: MotoServer, bucket: str
) -> Iterator[ServedGateway]:
    home = tmp_path_factory.mktemp("s3") / "home"
    url = pg_schemas.new() if pg_schemas is not None else None
    env = {**s3_server.env(bucket), "CADUCEE_BLOBS__INLINE_MAX_BYTES": "0"}
    gateway = prepare_demo(home, url, extra_env=env)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop_all()


def _objects(server: MotoServer, bucket: str) -> dict[str, bytes]:
    client = server.client()
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listed
    }


def _message_blob_ids(served: ServedGateway) -> set[str]:
    components = served.components()
    try:
        with components.database.reading() as session:
            return set(session.scalars(select(BlobRow.id).where(BlobRow.data.is_(None))))
    finally:
        components.close()


def test_k2_j1_mail_accepted_over_smtp_is_read_over_imap_from_the_bucket(
    served: ServedGateway, s3_server: MotoServer, bucket: str
) -> None:
    marker = f"Kaliémie 4,1 mmol/L marqueur {uuid.uuid4().hex}"
    patient = served.credentials["patient"]
    served.send(served.message(subject="Ionogramme", body=f"Bonjour,\n{marker}\n"))
    client = served.imap(Account(patient["address"], patient["password"]))
    try:
        client.select("INBOX", readonly=True)

        def fetched() -> bytes | None:
            _, found = client.search(None, "ALL")
            for number in found[0].split():
                _, parts = client.fetch(number, "(BODY.PEEK[])")
                raw = parts[0][1] if parts and isinstance(parts[0], tuple) else b""
                body = email.message_from_bytes(raw).get_payload(decode=True)
                if isinstance(body, bytes) and marker.encode() in body:
                    return raw
            return None

        wait_until(fetched, message="the mail never reached the patient's INBOX")
    finally:
        client.logout()
    objects = _objects(s3_server, bucket)
    ids = _message_blob_ids(served)
    assert ids and {f"blobs/{blob_id}" for blob_id in ids} <= set(objects)
    for key, data in objects.items():
        assert data.startswith(b"CADB\x01"), key
        assert marker.encode() not in data and b"Kali" not in data
        assert "Kaliémie".encode() not in data


def test_k2_sweep_removes_an_orphan_and_keeps_live_objects(
    served: ServedGateway, s3_server: MotoServer, bucket: str
) -> None:
    served.send(served.message(subject="Compte rendu", body="Bonjour,\nun autre message.\n"))
    live = wait_until(lambda: _message_blob_ids(served))
    orphan = uuid.uuid4().hex
    s3_server.client().put_object(Bucket=bucket, Key=f"blobs/{orphan}", Body=b"CADB\x01orphan")
    dry = served.cli("blobs", "sweep", "--older-than", "0")
    assert orphan in dry and "Nothing was deleted (dry run)" in dry
    assert f"blobs/{orphan}" in _objects(s3_server, bucket)
    kept = served.cli("blobs", "sweep")  # default grace period: a fresh orphan is spared
    assert orphan not in kept
    deleted = served.cli("blobs", "sweep", "--delete", "--older-than", "0")
    assert f"deleted  {orphan}" in deleted and "Deleted 1 orphaned object(s)" in deleted
    remaining = set(_objects(s3_server, bucket))
    assert f"blobs/{orphan}" not in remaining
    assert {f"blobs/{blob_id}" for blob_id in live} <= remaining
    assert "SECRET" not in deleted and "caducee-test-secret" not in dry


def test_k2_doctor_checks_the_bucket(served: ServedGateway, bucket: str) -> None:
    # only the blob-store line matters here: other checks may report (ports in use…)
    report = subprocess.run(
        [*CADUCEE, "doctor", "--home", str(served.home)],
        env=served.env,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert f"ok       blob store: bucket '{bucket}'" in report
    assert "caducee-test-secret" not in report
