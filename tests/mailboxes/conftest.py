"""Fixtures of the access tests: a patient record with flagged documents, professionals (known,
unknown, hosted with an app password, remote with a Pro Santé Connect token), a parent and a
minor, and the HTTP app mounted the way ``serve`` is to mount it (``access_routes``).

Mail and filing reuse the builders of ``tests/harness/reports.py`` (the real ANS samples). Directory
entries use valid RPPS numbers (Luhn); tokens are signed with a key made for the module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, update
from starlette.testclient import TestClient

from caducee.config.settings import GatewaySettings, Settings, SubmissionSettings
from caducee.directory.identifiers import luhn_check_digit
from caducee.directory.service import NewEntry, add_entry
from caducee.gateway.http.app import build_http_app
from caducee.gateway.http.patient_api import access_routes
from caducee.gateway.runtime import Gateway
from caducee.mailboxes.accounts.store import (
    Account,
    AccountKind,
    Patient,
    add_app_password,
    create_account,
)
from caducee.mailboxes.models import KnownProfessional
from caducee.records.models import RecordDocument
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue, JobRow
from caducee.storage.keyring import Keyring
from tests.harness.reports import (
    N1_UID,
    SENDER,
    Part,
    Record,
    add_patient,
    n1_xdm,
    pdf_part,
    valid_ins,
    xdm_part,
)

ISSUER = "https://auth.esante.test/realms/psc"
AUDIENCE = "caducee-access-tests"
FHIR_JSON = "application/fhir+json"


def rpps_national_id(payload: str) -> str:
    """``8`` + an 11-digit RPPS whose last digit is the Luhn key of the first ten."""
    assert len(payload) == 10
    return "8" + payload + luhn_check_digit(payload)


LABO_ID = rpps_national_id("1009990001")
"""The laboratory biologist who writes to the patient (``SENDER``), hosted here."""
DOCTOR = "dr.durand@cabinet-durand.mssante.fr"
DOCTOR_ID = rpps_national_id("1009990002")
"""A remote doctor (another operator), reading with a PSC token; never wrote to the patient."""
STRANGER = "dr.inconnu@clinique.mssante.fr"
STRANGER_ID = rpps_national_id("1009990003")
MINOR_INS = valid_ins("2100675123456")
PARENT_INS = valid_ins("1780575123457")
MINOR_BIRTH = date(2010, 6, 15)


@dataclass
class World:
    """Everything one access test needs, on a fresh database of the engine under test."""

    record: Record
    gateway: Gateway
    client: TestClient
    patient: httpx.BasicAuth
    labo: httpx.BasicAuth
    key: rsa.RSAPrivateKey
    ids: dict[str, str]
    minor_id: int
    parent_id: int
    today: list[date] = field(default_factory=lambda: [date.today()])
    _parent: httpx.BasicAuth | None = None

    @property
    def database(self) -> Database:
        return self.record.database

    @property
    def parent(self) -> httpx.BasicAuth:
        """The parent's credentials, made on first use (argon2id is slow on purpose)."""
        if self._parent is None:
            with self.database.transaction() as session:
                account = session.get(Account, self.parent_id)
                assert account is not None
                self._parent = httpx.BasicAuth(
                    account.address, add_app_password(session, account, "tests")
                )
        return self._parent

    def token(self, national_id: str, **overrides: Any) -> str:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": int(time.time()) + 300,
            "SubjectRefPro": {"codeNationalId": national_id},
        }
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "test-1"})

    def bearer(self, national_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(national_id)}"}

    def search(self, ins: str | None = None, **options: Any) -> httpx.Response:
        ins = ins or self.record_ins
        response: httpx.Response = self.client.get(
            "/fhir/DocumentReference", params={"patient.identifier": ins}, **options
        )
        return response

    @property
    def record_ins(self) -> str:
        return self.record.address.partition("@")[0]

    def found(self, response: httpx.Response) -> set[str]:
        assert response.status_code == 200, response.text
        bundle: dict[str, Any] = response.json()
        return {entry["resource"]["id"] for entry in bundle.get("entry", [])}

    def known_id(self, address: str) -> int:
        with self.database.transaction() as session:
            value = session.scalar(
                select(KnownProfessional.id).where(
                    KnownProfessional.patient_account_id == self.record.account_id,
                    KnownProfessional.professional_address == address,
                )
            )
        assert value is not None
        return int(value)

    def jobs(self, kind: str) -> list[dict[str, Any]]:
        with self.database.transaction() as session:
            rows = session.scalars(select(JobRow).where(JobRow.kind == kind).order_by(JobRow.id))
            return [dict(row.payload) for row in rows]


def denied_rule(response: httpx.Response) -> str:
    """The rule a 403 ``OperationOutcome`` names."""
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    assert issue["code"] == "forbidden"
    rule: str = issue["details"]["coding"][0]["code"]
    assert rule in issue["diagnostics"]
    return rule


@pytest.fixture(scope="module")
def oidc_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="test-1", use="sig", alg="RS256")
    path = tmp_path_factory.mktemp("oidc") / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return key, path


def access_settings(tmp_path: Path, jwks: Path) -> Settings:
    return Settings(
        home=tmp_path,
        gateway=GatewaySettings(test_mode=True, hostname="mx.caducee.test"),
        submission=SubmissionSettings(
            oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks_file=str(jwks)
        ),
    )


def _directory(database: Database) -> None:
    with database.transaction() as session:
        for address, national_id, family in (
            (SENDER, LABO_ID, "LABORATOIRE"),
            (DOCTOR, DOCTOR_ID, "DURAND"),
            (STRANGER, STRANGER_ID, "INCONNU"),
        ):
            add_entry(
                session,
                NewEntry(
                    address=address,
                    bal_type="PER",
                    national_id=national_id,
                    family_name=family,
                    given_name="Camille",
                    profession_code="10",
                    profession_label="Médecin",
                    hosted=address == SENDER,
                ),
            )


def _flag(database: Database, public_id: str, **flags: bool) -> None:
    with database.transaction() as session:
        session.execute(
            update(RecordDocument).where(RecordDocument.public_id == public_id).values(**flags)
        )


@pytest.fixture
def world(
    database: Database,
    tmp_path: Path,
    oidc_key: tuple[rsa.RSAPrivateKey, Path],
    n1_cda: bytes,
    n1_pdf: bytes,
) -> Iterator[World]:
    settings = access_settings(tmp_path, oidc_key[1])
    keyring = Keyring.create(tmp_path / "kek")
    blob_store = BlobStore(tmp_path / "blobs", keyring)
    queue = JobQueue(database)
    _directory(database)
    account_id, address, password = add_patient(database, with_password=True)
    patient_record = Record(database, blob_store, queue, settings, account_id, address, password)
    ids: dict[str, str] = {}

    def only(message_id: int) -> str:
        [document] = patient_record.documents(message_id)
        return document.public_id

    ids["n1"] = only(patient_record.mail([xdm_part(n1_xdm(n1_cda))]))
    masked_uid = "1.2.250.1.999.42.2"
    masked = n1_xdm(
        n1_cda.replace(N1_UID.encode(), masked_uid.encode()),
        unique_id=masked_uid,
        visibility=("MASQUE_PS",),
    )
    ids["masked"] = only(patient_record.mail([xdm_part(masked)]))
    invisible_uid = "1.2.250.1.999.42.3"
    invisible = n1_xdm(
        n1_cda.replace(N1_UID.encode(), invisible_uid.encode()),
        unique_id=invisible_uid,
        visibility=("INVISIBLE_PATIENT",),
    )
    ids["invisible"] = only(patient_record.mail([xdm_part(invisible)]))
    ids["pdf"] = only(patient_record.mail([pdf_part(n1_pdf + b"\n% alone\n", "resultats.pdf")]))

    minor_id, minor_address, _ = add_patient(database, ins=MINOR_INS, birthplace=None)
    parent_id, _, _ = add_patient(database, ins=PARENT_INS)
    with database.transaction() as session:
        minor = session.get(Patient, minor_id)
        assert minor is not None
        minor.birth_date = MINOR_BIRTH
        labo = create_account(session, SENDER, AccountKind.PROFESSIONAL)
        labo_password = add_app_password(session, labo, "tests")
    minor_record = Record(database, blob_store, queue, settings, minor_id, minor_address, "")
    ids["minor"] = only(minor_record.mail([pdf_part(n1_pdf + b"\n% minor\n", "vaccins.pdf")]))
    ids["minor_secret"] = only(
        minor_record.mail([Part("contraception.pdf", n1_pdf + b"\n% secret\n", "application/pdf")])
    )
    _flag(database, ids["minor_secret"], hidden_from_representatives=True)

    gateway = Gateway(
        settings=settings, database=database, keyring=keyring, blobs=blob_store, queue=queue
    )
    today = [date.today()]
    app = build_http_app(gateway, extra_routes=access_routes(gateway, today=lambda: today[0]))
    with TestClient(app) as client:
        yield World(
            record=patient_record,
            gateway=gateway,
            client=client,
            patient=httpx.BasicAuth(address, password),
            labo=httpx.BasicAuth(SENDER, labo_password),
            key=oidc_key[0],
            ids=ids,
            minor_id=minor_id,
            parent_id=parent_id,
            today=today,
        )
    gateway.close()  # its identity service's poller, before the schema goes
