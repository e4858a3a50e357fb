"""The directory's JSON API (A3): search, lookup, problem+json refusals, red list."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from caducee.directory.importer import import_file
from caducee.directory.service import NewEntry, add_entry, set_red_list
from caducee.gateway.http.directory_api import PROBLEM_JSON, directory_routes
from caducee.storage.db import Database


@pytest.fixture
def client(database: Database, ps_sample: Path) -> TestClient:
    import_file(database, ps_sample)
    with database.transaction() as session:
        add_entry(
            session,
            NewEntry(
                address="z.benhouchame@medecin.mssante.fr",
                bal_type="PER",
                national_id="810106476764",
                family_name="BENHOUCHAME",
                given_name="Zakaria",
                profession_code="10",
                profession_label="Médecin",
            ),
        )
    return TestClient(Starlette(routes=directory_routes(database)))


def test_a3_search_api(client: TestClient) -> None:
    response = client.get("/api/directory/search", params={"q": "Benhou"})
    assert response.status_code == 200
    body = response.json()
    assert [item["kind"] for item in body["items"]] == ["activity", "mailbox"]
    assert body["has_more"] is False and body["next_offset"] is None
    mailbox = body["items"][1]
    assert mailbox["address"] == "z.benhouchame@medecin.mssante.fr"
    assert mailbox["bal_type"] == "PER"
    assert mailbox["profession"] == {"code": "10", "label": "Médecin"}


def test_search_api_filters_and_pages(client: TestClient) -> None:
    first = client.get(
        "/api/directory/search", params={"profession": "28", "limit": "2", "offset": "0"}
    ).json()
    assert len(first["items"]) == 2 and first["has_more"] and first["next_offset"] == 2
    second = client.get(
        "/api/directory/search", params={"profession": "28", "limit": "2", "offset": "2"}
    ).json()
    assert {item["national_id"] for item in first["items"]}.isdisjoint(
        item["national_id"] for item in second["items"]
    )
    only = client.get("/api/directory/search", params={"q": "benhou", "kind": "mailbox"}).json()[
        "items"
    ]
    assert [item["kind"] for item in only] == ["mailbox"]
    by_place = client.get("/api/directory/search", params={"postal_code": "01500"}).json()
    assert len(by_place["items"]) == 2


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": "0"}, "limit must be between 1 and 100"),
        ({"limit": "many"}, "limit must be an integer"),
        ({"offset": "-3"}, "offset must be between"),
        ({"colour": "blue"}, "unknown parameter 'colour'"),
        ({"kind": "robot"}, "kind must be"),
        ({"profession": "astronaute"}, "unknown profession"),
        ({"postal_code": "75-012"}, "postal code"),
    ],
)
def test_search_api_problems(client: TestClient, params: dict[str, str], words: str) -> None:
    response = client.get("/api/directory/search", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert set(problem) == {"type", "title", "status", "detail"}
    assert problem["status"] == 400 and words in problem["detail"]


def test_search_api_rejects_repeated_parameters(client: TestClient) -> None:
    response = client.get("/api/directory/search?q=a&q=b")
    assert response.status_code == 400 and "given 2 times" in response.json()["detail"]


def test_entries_api_by_address_and_national_id(client: TestClient) -> None:
    response = client.get("/api/directory/entries/Z.Benhouchame@medecin.mssante.fr")
    assert response.status_code == 200
    assert response.json()["national_id"] == "810106476764"
    response = client.get("/api/directory/entries/810106476764")
    assert response.status_code == 200
    body = response.json()
    assert body["national_id"] == "810106476764"
    assert [item["kind"] for item in body["items"]] == ["mailbox", "activity"]


def test_a3_entries_api_hides_red_listed_and_unknown(
    client: TestClient, database: Database
) -> None:
    with database.transaction() as session:
        set_red_list(session, "z.benhouchame@medecin.mssante.fr")
    for path in ("z.benhouchame@medecin.mssante.fr", "nobody@medecin.mssante.fr"):
        response = client.get(f"/api/directory/entries/{path}")
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["title"] == "Not in the directory"
    body = client.get("/api/directory/entries/810106476764").json()
    assert [item["kind"] for item in body["items"]] == ["activity"]
    search = client.get("/api/directory/search", params={"q": "benhou"}).json()
    assert [item["kind"] for item in search["items"]] == ["activity"]
