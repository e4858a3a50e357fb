"""F2 (patient side), E4, E5: the FHIR R4 API of the record, mounted as the lead mounts it.

The API is the one every caller uses (:func:`fhir_routes`); the professional and representative
side of it is in ``tests/mailboxes/test_fhir_access.py``."""

from __future__ import annotations

import base64
import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.requests import HTTPConnection
from starlette.testclient import TestClient

from caducee.gateway.http.app import build_http_app
from caducee.gateway.http.fhir_api import fhir_routes
from caducee.gateway.http.fhir_auth import AuthenticationThrottled, BasicAuthenticator, Principal
from caducee.gateway.http.patient_api import patient_routes
from caducee.gateway.runtime import Gateway
from caducee.mailboxes.accounts.store import AccountKind, add_app_password, create_account
from caducee.records.filing import set_hidden_from_professionals
from caducee.records.models import DocumentState, RecordDocument, VersionStatus
from caducee.storage import schema
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database, database_files
from caducee.storage.jobs import JobQueue
from caducee.storage.keyring import Keyring
from tests.harness.reports import (
    DEMO_INS,
    IMG_SAMPLE,
    N1_UID,
    OTHER_INS,
    Part,
    Record,
    add_patient,
    img_v1,
    make_settings,
    n1_xdm,
    pdf_part,
    with_ins,
    xdm_part,
)

FHIR_JSON = "application/fhir+json"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
UNKNOWN_PROFESSIONAL = "F2.unknown-professional"


@dataclass
class World:
    """A record with a known set of documents, and the API in front of it."""

    record: Record
    gateway: Gateway
    client: TestClient
    auth: httpx.BasicAuth
    ids: dict[str, str]
    n1_cda: bytes
    n1_pdf: bytes
    pdf: bytes
    other_pdf: bytes
    authenticator: BasicAuthenticator
    professional: httpx.BasicAuth

    def get(self, path: str, **options: Any) -> httpx.Response:
        options.setdefault("auth", self.auth)
        response: httpx.Response = self.client.get(path, **options)
        return response

    def search(self, query: str = "") -> dict[str, Any]:
        response = self.get(f"/fhir/DocumentReference{query}")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(FHIR_JSON)
        bundle: dict[str, Any] = response.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        return bundle

    def found(self, query: str = "") -> set[str]:
        return {entry["resource"]["id"] for entry in self.search(query).get("entry", [])}


def _database_url(tmp: Path, pg_schemas: Any, template: str) -> str:
    if pg_schemas is not None:
        url: str = pg_schemas.new()
        database = Database(url)
        schema.upgrade(database)
        database.dispose()
        return url
    target = f"sqlite:///{tmp / 'api.db'}"
    for source, copy in zip(database_files(template), database_files(target), strict=True):
        shutil.copyfile(source, copy)
    return target


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    pg_schemas: Any,
    _migrated_template: str,
    n1_cda: bytes,
    n1_pdf: bytes,
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("fhir")
    keyring = Keyring.create(tmp / "kek")
    database = Database(_database_url(tmp, pg_schemas, _migrated_template)).seal_with(keyring)
    blobs = BlobStore(tmp / "blobs", keyring)
    queue = JobQueue(database)
    settings = make_settings(tmp)
    account_id, address, password = add_patient(database, with_password=True)
    other_id, other_address, other_password = add_patient(database, ins=OTHER_INS)
    record = Record(database, blobs, queue, settings, account_id, address, password)
    ids: dict[str, str] = {}

    def only(message_id: int) -> RecordDocument:
        [document] = record.documents(message_id)
        return document

    ids["n1"] = only(record.mail([xdm_part(n1_xdm(n1_cda))])).public_id
    v2 = IMG_SAMPLE.read_bytes()
    ids["img_v1"] = only(record.mail([Part("v1.xml", img_v1(v2), "text/xml")])).public_id
    ids["img_v2"] = only(record.mail([Part("v2.xml", v2, "text/xml")])).public_id
    pdf = n1_pdf + b"\n% mailed on its own\n"  # not the CDA's rendition: filed on its own
    ids["pdf"] = only(record.mail([pdf_part(pdf, "resultats.pdf")], subject="PDF")).public_id
    wrong = with_ins(n1_cda, OTHER_INS)
    ids["quarantined"] = only(record.mail([xdm_part(n1_xdm(wrong, ins=OTHER_INS))])).public_id
    invisible = n1_cda.replace(N1_UID.encode(), b"1.2.250.1.999.42.1")
    archive = n1_xdm(invisible, unique_id="1.2.250.1.999.42.1", visibility=("INVISIBLE_PATIENT",))
    ids["invisible"] = only(record.mail([xdm_part(archive)])).public_id
    other = Record(database, blobs, queue, settings, other_id, other_address, other_password)
    other_pdf = n1_pdf + b"\n% for the other patient\n"
    ids["other"] = only(other.mail([pdf_part(other_pdf)], subject="Autre")).public_id
    with database.transaction() as session:
        professional = create_account(
            session, "claire.martin@hopital.mssante.fr", AccountKind.PROFESSIONAL
        )
        professional_password = add_app_password(session, professional, "tests")
    gateway = Gateway(
        settings=settings, database=database, keyring=keyring, blobs=blobs, queue=queue
    )
    authenticator = BasicAuthenticator(database)
    app = build_http_app(gateway, extra_routes=fhir_routes(gateway, authenticators=[authenticator]))
    with TestClient(app) as client:
        world = World(
            record=record,
            gateway=gateway,
            client=client,
            auth=httpx.BasicAuth(address, password),
            ids=ids,
            n1_cda=n1_cda,
            n1_pdf=n1_pdf,
            pdf=pdf,
            other_pdf=other_pdf,
            authenticator=authenticator,
            professional=httpx.BasicAuth("claire.martin@hopital.mssante.fr", professional_password),
        )
        yield world
    authenticator.close()  # the pollers of both identity services, before the schema goes
    gateway.close()
    database.dispose()


def _outcome(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    assert issue["severity"] == "error" and issue["code"] == code and issue["diagnostics"]
    return body


# ---------------------------------------------------------------------------------------------
# Search


def test_f2_search_returns_the_patient_s_filed_current_documents(world: World) -> None:
    bundle = world.search()
    assert bundle["total"] == 3
    assert {e["resource"]["id"] for e in bundle["entry"]} == {
        world.ids["n1"],
        world.ids["img_v2"],
        world.ids["pdf"],
    }
    dates = [entry["resource"]["date"] for entry in bundle["entry"]]
    assert dates == sorted(dates, reverse=True)
    for entry in bundle["entry"]:
        assert entry["fullUrl"].endswith(f"/fhir/DocumentReference/{entry['resource']['id']}")
        assert entry["search"] == {"mode": "match"}


def test_f2_search_by_type(world: World) -> None:
    n1, img = world.ids["n1"], world.ids["img_v2"]
    assert world.found("?type=http://loinc.org|11502-2") == {n1}
    assert world.found("?type=18748-4") == {img}
    assert world.found("?type=urn:oid:2.16.840.1.113883.6.1|18748-4") == {img}
    assert world.found("?type=http://snomed.info/sct|18748-4") == set()
    assert world.found("?type=11502-2,18748-4") == {n1, img}
    assert world.found("?type=11502-2&type=18748-4") == set()


def test_f2_search_by_date(world: World) -> None:
    n1, img, pdf = world.ids["n1"], world.ids["img_v2"], world.ids["pdf"]
    assert world.found("?date=ge2021-01-01") == {n1, img, pdf}
    assert world.found("?date=ge2021-02-01") == {n1, pdf}
    assert world.found("?date=lt2021-02") == {img}
    assert world.found("?date=2021-04-01") == {n1}
    assert world.found("?date=ge2021-01-01&date=lt2022") == {n1, img}
    assert world.found("?date=gt2021") == {pdf}
    assert world.found("?date=ne2021") == {pdf}
    assert world.found("?date=le2021-01-08T11:17:00%2B01:00") == {img}
    assert world.found("?date=lt2021-01-08T10:17:00Z") == set()


def test_f2_search_by_author(world: World) -> None:
    n1, img = world.ids["n1"], world.ids["img_v2"]
    assert world.found("?author=801234534765") == {n1}
    assert world.found("?author=01234534765") == {n1}  # the RPPS alone
    assert world.found("?author=urn:oid:1.2.250.1.71.4.2.1|801234560801") == {img}
    assert world.found("?author.identifier=801234560801,801234534765") == {n1, img}
    assert world.found("?author=899999999999") == set()


def test_f2_search_pages(world: World) -> None:
    first = world.search("?_count=2")
    assert first["total"] == 3 and len(first["entry"]) == 2
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert "_offset=2" in links["next"] and "previous" not in links
    second = world.search("?_count=2&_offset=2")
    assert len(second["entry"]) == 1
    links = {link["relation"]: link["url"] for link in second["link"]}
    assert "next" not in links and "_offset=0" in links["previous"]
    assert {e["resource"]["id"] for e in first["entry"] + second["entry"]} == world.found()
    assert "entry" not in world.search("?_count=0") and world.search("?_count=0")["total"] == 3


def test_e4_superseded_versions_only_on_request(world: World) -> None:
    assert world.found("?status=superseded") == {world.ids["img_v1"]}
    assert world.found("?status=current,superseded") >= {world.ids["img_v1"], world.ids["img_v2"]}


# ---------------------------------------------------------------------------------------------
# Read


def test_f2_document_reference_mapping(world: World) -> None:
    response = world.get(f"/fhir/DocumentReference/{world.ids['n1']}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    resource = response.json()
    assert resource["resourceType"] == "DocumentReference"
    assert resource["masterIdentifier"] == {
        "system": "urn:ietf:rfc:3986",
        "value": f"urn:oid:{N1_UID}",
    }
    assert resource["identifier"][0]["value"].startswith("urn:uuid:")
    assert resource["status"] == "current"
    assert resource["type"]["coding"] == [
        {"system": "http://loinc.org", "code": "11502-2", "display": "CR d'examens biologiques"}
    ]
    assert resource["subject"] == {
        "identifier": {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "279035121518989"}
    }
    assert resource["date"] == "2021-04-01T12:47:45Z"
    [practitioner, organisation] = resource["contained"]
    assert practitioner["resourceType"] == "Practitioner"
    assert {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "801234534765"}.items() <= (
        practitioner["identifier"][0].items()
    )
    assert practitioner["identifier"][1]["value"] == "01234534765"
    assert organisation["identifier"] == [
        {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1120459876"}
    ]
    assert resource["author"] == [{"reference": "#author"}, {"reference": "#organisation"}]
    assert resource["securityLabel"] == [
        {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}
            ]
        }
    ]
    document, rendition = resource["content"]
    attachment = document["attachment"]
    assert attachment["contentType"] == "text/xml"
    assert attachment["url"].endswith(f"/fhir/Binary/{world.ids['n1']}")
    assert attachment["size"] == len(world.n1_cda)
    assert (
        attachment["hash"]
        == base64.b64encode(hashlib.sha1(world.n1_cda, usedforsecurity=False).digest()).decode()
    )
    assert attachment["creation"] == "2021-04-01T12:47:45Z" and attachment["title"]
    assert document["format"]["code"] == "urn:ihe:iti:xds-sd:pdf:2008"
    assert rendition["attachment"]["contentType"] == "application/pdf"
    assert rendition["attachment"]["url"].endswith(f"/fhir/Binary/{world.ids['n1']}-rendition")
    [related, message] = resource["context"]["related"]
    assert related["identifier"]["value"].startswith("mid:")
    assert message["identifier"]["value"].isdigit()


def test_e4_replacement_relates_to_the_version_it_replaces(world: World) -> None:
    new = world.get(f"/fhir/DocumentReference/{world.ids['img_v2']}").json()
    assert new["relatesTo"] == [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{world.ids['img_v1']}"}}
    ]
    old = world.get(f"/fhir/DocumentReference/{world.ids['img_v1']}").json()
    assert old["status"] == "superseded" and "relatesTo" not in old


def test_e2_document_from_the_mail_only(world: World) -> None:
    resource = world.get(f"/fhir/DocumentReference/{world.ids['pdf']}").json()
    assert "type" not in resource and "masterIdentifier" not in resource
    assert resource["author"] == [
        {
            "identifier": {"system": "urn:ietf:rfc:3986", "value": "mailto:labo@labo.mssante.fr"},
            "display": "labo@labo.mssante.fr",
        }
    ]
    assert resource["content"][0]["attachment"]["title"] == "resultats.pdf"


def test_e5_patient_hiding_shows_as_masque_ps(world: World) -> None:
    public_id = world.ids["pdf"]
    with world.record.database.transaction() as session:
        set_hidden_from_professionals(session, world.record.account_id, public_id, True)
    try:
        labels = world.get(f"/fhir/DocumentReference/{public_id}").json()["securityLabel"]
        assert {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "MASQUE_PS"}]} in (
            labels
        )
    finally:
        with world.record.database.transaction() as session:
            set_hidden_from_professionals(session, world.record.account_id, public_id, False)


@pytest.mark.parametrize("which", ["other", "quarantined", "invisible", "unknown", "bad id!"])
def test_f2_404_for_what_is_not_the_patient_s(world: World, which: str) -> None:
    public_id = world.ids.get(which, "0" * 32 if which == "unknown" else which)
    _outcome(world.get(f"/fhir/DocumentReference/{public_id}"), 404, "not-found")
    _outcome(world.get(f"/fhir/Binary/{public_id}"), 404, "not-found")


def test_f2_quarantined_and_invisible_documents_exist_but_are_not_shown(world: World) -> None:
    states = {d.public_id: d for d in world.record.documents()}
    assert states[world.ids["quarantined"]].state == DocumentState.QUARANTINED
    assert states[world.ids["invisible"]].hidden_from_patient
    assert states[world.ids["img_v1"]].status == VersionStatus.SUPERSEDED


# ---------------------------------------------------------------------------------------------
# Binary


def test_f2_binary_is_the_original_bytes(world: World) -> None:
    response = world.get(f"/fhir/Binary/{world.ids['pdf']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content == world.pdf
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"] == "attachment"
    cda = world.get(f"/fhir/Binary/{world.ids['n1']}")
    assert cda.content == world.n1_cda and cda.headers["content-type"].startswith("text/xml")
    rendition = world.get(f"/fhir/Binary/{world.ids['n1']}-rendition")
    assert rendition.content == world.n1_pdf
    assert rendition.headers["content-type"] == "application/pdf"
    _outcome(world.get(f"/fhir/Binary/{world.ids['pdf']}-rendition"), 404, "not-found")


def test_f2_binary_as_a_fhir_resource(world: World) -> None:
    response = world.get(f"/fhir/Binary/{world.ids['pdf']}", headers={"Accept": FHIR_JSON})
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "Binary" and body["contentType"] == "application/pdf"
    assert base64.b64decode(body["data"]) == world.pdf


def test_f2_superseded_version_bytes_still_readable(world: World) -> None:
    response = world.get(f"/fhir/Binary/{world.ids['img_v1']}")
    assert response.status_code == 200
    assert response.content == img_v1(IMG_SAMPLE.read_bytes())


# ---------------------------------------------------------------------------------------------
# Authentication and errors


def test_f2_401_without_credentials(world: World) -> None:
    response = world.client.get("/fhir/DocumentReference")
    _outcome(response, 401, "login")
    assert response.headers["www-authenticate"] == 'Basic realm="Caducee", charset="UTF-8"'


@pytest.mark.parametrize(
    "header",
    [
        "Basic " + base64.b64encode(b"279035121518989@patient.mssante.fr:wrong").decode(),
        "Basic " + base64.b64encode(b"nobody@patient.mssante.fr:wrong").decode(),
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Bearer abc",
    ],
)
def test_f2_401_with_wrong_credentials(world: World, header: str) -> None:
    response = world.client.get(
        f"/fhir/Binary/{world.ids['pdf']}", headers={"Authorization": header}
    )
    _outcome(response, 401, "login")
    assert response.headers["www-authenticate"].startswith("Basic realm=")
    assert world.pdf[:20] not in response.content


def test_f2_a_professional_names_the_record_and_the_access_table_decides(world: World) -> None:
    """One API for every caller: a professional's search must name the record (400), and a
    professional unknown to the patient is refused with the rule's id (403), on every route."""
    _outcome(world.get("/fhir/DocumentReference", auth=world.professional), 400, "required")
    named = {"patient.identifier": DEMO_INS}
    for path in (
        "/fhir/DocumentReference",
        f"/fhir/DocumentReference/{world.ids['n1']}",
        f"/fhir/Binary/{world.ids['pdf']}",
    ):
        response = world.get(path, params=named, auth=world.professional)
        body = _outcome(response, 403, "forbidden")
        [coding] = body["issue"][0]["details"]["coding"]
        assert coding == {"system": "urn:caducee:access-rule", "code": UNKNOWN_PROFESSIONAL}
    assert world.pdf[:20] not in response.content


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?date=yesterday", "invalid"),
        ("?date=2021-13-01", "invalid"),
        ("?date=sa2021", "not-supported"),
        ("?_count=-1", "invalid"),
        ("?_offset=x", "invalid"),
        ("?type=", "invalid"),
        ("?type=http://loinc.org|", "invalid"),
        ("?status=deleted", "invalid"),
        ("?author=http://example.org|123", "invalid"),
        ("?patient=123", "not-supported"),
    ],
)
def test_f2_400_for_bad_search_parameters(world: World, query: str, code: str) -> None:
    _outcome(world.get(f"/fhir/DocumentReference{query}"), 400, code)


def test_f2_unknown_route_and_method_are_operation_outcomes(world: World) -> None:
    _outcome(world.get("/fhir/Patient"), 404, "not-found")
    response = world.client.post("/fhir/DocumentReference", auth=world.auth, json={})
    _outcome(response, 405, "not-supported")


def test_f2_credentials_checked_once_then_cached(world: World) -> None:
    authenticator = BasicAuthenticator(world.record.database, ttl_seconds=60, clock=lambda: now)
    now = 0.0
    app = build_http_app(
        world.gateway, extra_routes=fhir_routes(world.gateway, authenticators=[authenticator])
    )
    try:
        with TestClient(app) as client:
            for _ in range(3):
                assert client.get("/fhir/DocumentReference", auth=world.auth).status_code == 200
            assert authenticator.checks == 1
            now = 61.0
            assert client.get("/fhir/DocumentReference", auth=world.auth).status_code == 200
            assert authenticator.checks == 2
            wrong = httpx.BasicAuth(world.record.address, "wrong")
            for _ in range(2):
                assert client.get("/fhir/DocumentReference", auth=wrong).status_code == 401
            assert authenticator.checks == 4  # failures are never cached
    finally:
        authenticator.close()


class _Throttling:
    """An authenticator whose every credential is refused as throttled (the limiter's answer)."""

    async def authenticate(self, request: HTTPConnection) -> Principal | None:
        if request.headers.get("authorization"):
            raise AuthenticationThrottled(7)
        return None


def test_c1_throttled_sign_in_is_429_in_each_api_s_form(world: World) -> None:
    """The authentication middleware refuses before any handler: an OperationOutcome on /fhir,
    problem+json on /api/patient, both with Retry-After; the public routes do not look."""
    throttling = [_Throttling()]
    routes = [
        *fhir_routes(world.gateway, authenticators=throttling),
        *patient_routes(world.gateway, authenticators=throttling),
    ]
    with TestClient(build_http_app(world.gateway, extra_routes=routes)) as client:
        fhir = client.get(f"/fhir/Binary/{world.ids['pdf']}", auth=world.auth)
        _outcome(fhir, 429, "throttled")
        assert fhir.headers["retry-after"] == "7"
        assert world.pdf[:20] not in fhir.content
        api = client.get("/api/patient/history", auth=world.auth)
        assert api.status_code == 429
        assert api.headers["content-type"].startswith("application/problem+json")
        assert api.headers["retry-after"] == "7" and api.json()["status"] == 429
        assert client.get("/fhir/metadata", auth=world.auth).status_code == 200


# ---------------------------------------------------------------------------------------------
# Metadata


def test_f2_capability_statement(world: World) -> None:
    response = world.client.get("/fhir/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(FHIR_JSON)
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {p["name"] for p in resources["DocumentReference"]["searchParam"]} >= {
        "type",
        "date",
        "author",
    }
    assert resources["Binary"]["interaction"] == [{"code": "read"}]
    assert {p["name"] for p in resources["DocumentReference"]["searchParam"]} >= {
        "patient.identifier",
        "_reason",
    }
    services = statement["rest"][0]["security"]["service"]
    assert {service["coding"][0]["code"] for service in services} == {"Basic", "OAuth"}


def test_f2_openapi_served(world: World) -> None:
    response = world.client.get("/fhir/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    validate(document)  # a valid OpenAPI 3.0 document (openapi-spec-validator, via schemathesis)
    assert set(document["paths"]) == {
        "/metadata",
        "/openapi.json",
        "/DocumentReference",
        "/DocumentReference/{id}",
        "/Binary/{id}",
    }
    schemes = document["components"]["securitySchemes"]
    assert schemes["basic"]["scheme"] == "basic" and schemes["bearer"]["scheme"] == "bearer"
    read = document["paths"]["/DocumentReference/{id}"]["get"]
    assert {p["name"] for p in read["parameters"]} == {
        "id",
        "patient.identifier",
        "_reason",
        "_purposeOfUse",
    }
    assert {"401", "403", "404"} <= set(read["responses"])
    assert document["servers"][0]["url"].endswith("/fhir")
