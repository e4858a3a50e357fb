"""The admin API against its own OpenAPI document, on a served gateway, with schemathesis.

Every operation of ``GET /admin/openapi.json`` gets generated requests (bodies, paths and
query values from its schemas, valid ones and ones that break them) with an operator token
holding every scope, sent over a real socket to ``caducee serve``. No answer may be a 5xx,
and every answer must conform to the document: a declared status, a declared content type,
a body matching its schema (issue 16).

Half of the generated cases are pointed at things that exist (the demo patient and
professional, a space just created, a waiting relay job), so success answers (JSON, the
export zip, the opposition PDF, 204s) are checked too, not only refusals.

Bounded and repeatable: a fixed number of examples per operation, derandomized (the same
requests on every run), no example database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from caducee.storage.admin_tokens import SCOPES
from tests.harness.identities import valid_ins
from tests.harness.served import ServedGateway, serve_demo

EXAMPLES_PER_OPERATION = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any) -> Iterator[ServedGateway]:
    home: Path = tmp_path_factory.mktemp("admin-schemathesis") / "home"
    yield from serve_demo(home, pg_schemas.new() if pg_schemas is not None else None)


def _operator_token(served: ServedGateway) -> str:
    scopes = [arg for scope in SCOPES for arg in ("--scope", scope)]
    return served.cli("admin", "token", "create", *scopes).strip().splitlines()[-1]


def _relay_job(served: ServedGateway) -> int:
    """A relay job waiting (workers are off): the demo professional writes to the peer."""
    professional = served.credentials["professional"]["address"]
    raw = served.message(sender=professional, to=served.peer["professional"], sign=False)
    with served.submit("professional") as client:
        assert not client.sendmail(professional, [served.peer["professional"]], raw)
    listed = served.cli("queue", "list", "--json").splitlines()
    return int(json.loads(listed[-1])["id"])


def _created_space(served: ServedGateway) -> str:
    ins = valid_ins()
    served.cli(
        "patient", "create", "--ins", ins, "--birth-name", "Martin", "--given-name",
        "Paul", "--birth-date", "1975-02-03", "--sex", "M", "--birthplace", "75056",
    )  # fmt: skip
    return f"{ins}@patient.mssante.fr"


def _pointed(case: Any, address: str, job_id: int, real: bool) -> Any:
    if real and "address" in case.path_parameters:
        case.path_parameters["address"] = address
    if real and "job_id" in case.path_parameters:
        case.path_parameters["job_id"] = job_id
    return case


def test_k3_admin_openapi_no_5xx_and_every_answer_conforms(served: ServedGateway) -> None:
    base_url = f"http://127.0.0.1:{served.ports['http']}"
    schema = schemathesis.openapi.from_url(f"{base_url}/admin/openapi.json")
    headers = {"Authorization": f"Bearer {_operator_token(served)}"}
    addresses = st.sampled_from(
        [
            served.credentials["patient"]["address"],
            served.credentials["professional"]["address"],
            _created_space(served),
        ]
    )
    job_ids = st.just(_relay_job(served))
    operations = sorted(  # deletions last, so the other operations find things to act on
        (result.ok() for result in schema.get_all_operations()),
        key=lambda operation: operation.method.upper() == "DELETE",
    )
    assert len(operations) >= 30  # every operation of the document, none skipped
    called: dict[str, int] = {}

    def fuzz(operation: Any) -> None:
        generated = st.one_of(  # valid requests, and requests that break the schema
            operation.as_strategy(), operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        )
        cases = st.builds(_pointed, generated, addresses, job_ids, st.booleans())

        @given(case=cases)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)
            called[operation.label] = called.get(operation.label, 0) + 1

        run()

    for operation in operations:
        fuzz(operation)

    assert set(called) == {operation.label for operation in operations}
