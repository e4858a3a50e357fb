"""E1–E4, G3 end to end: a report mailed by the demo peer operator lands in the patient's record.

The real ANS CDA N1 lab report (test INS 279035121518989) in an IHE_XDM.zip,
DKIM-signed by the peer, over mutual TLS, into the served demo gateway; its job
workers file it; the patient reads it through the FHIR API with an app password.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from caducee.mailboxes.delivery import FILE_DOCUMENTS_JOB
from caducee.storage.jobs import DONE, JobRow
from tests.harness.reports import (
    IMG_SAMPLE,
    N1_SAMPLE,
    OTHER_INS,
    XdmDocument,
    build_mail,
    img_v1,
    make_xdm,
    n1_xdm,
    xdm_part,
)
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until


def _fhir(gateway: ServedGateway, path: str) -> dict[str, Any]:
    return dict(gateway.http_get(f"/fhir/{path}", accept="application/fhir+json"))


def _send(gateway: ServedGateway, raw: bytes, to: str | None = None) -> None:
    recipient = to or gateway.credentials["patient"]["address"]
    with gateway.smtp() as client:
        assert client.sendmail(gateway.peer["professional"], [recipient], gateway.sign(raw)) == {}


def _mail(
    gateway: ServedGateway, xdm: bytes, *, to: str | None = None, receipt: bool = False
) -> bytes:
    return build_mail(
        [xdm_part(xdm)],
        sender=gateway.peer["professional"],
        to=to or gateway.credentials["patient"]["address"],
        receipt=receipt,
    )


def _wait_documents(gateway: ServedGateway, count: int, query: str = "") -> list[dict[str, Any]]:
    def listed() -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = _fhir(gateway, f"DocumentReference{query}").get("entry", [])
        return entries if len(entries) >= count else []

    return wait_until(listed, interval=0.3, message=f"fewer than {count} documents listed")


def _filing_done(gateway: ServedGateway) -> bool:
    """Every filing job of the home has finished (the record is as filing leaves it)."""
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            states = session.scalars(
                select(JobRow.state).where(JobRow.kind == FILE_DOCUMENTS_JOB)
            ).all()
    finally:
        components.close()
    return bool(states) and all(state == DONE for state in states)


def test_e1_e2_xdm_report_from_the_peer_appears_in_fhir(working_gateway: ServedGateway) -> None:
    _send(working_gateway, _mail(working_gateway, n1_xdm(N1_SAMPLE.read_bytes())))
    (entry,) = _wait_documents(working_gateway, 1)
    resource = entry["resource"]
    assert resource["resourceType"] == "DocumentReference"
    assert {"system": "http://loinc.org", "code": "11502-2"}.items() <= resource["type"]["coding"][
        0
    ].items()
    assert resource["date"].startswith("2021-04-01")
    authors = json.dumps(resource.get("author", [])) + json.dumps(resource.get("contained", []))
    assert "801234534765" in authors
    binary = resource["content"][0]["attachment"]["url"].rsplit("/", 1)[-1]
    assert binary


def test_e4_same_report_twice_filed_once_and_version_2_supersedes(
    working_gateway: ServedGateway,
) -> None:
    before = len(_wait_documents(working_gateway, 1))
    _send(working_gateway, _mail(working_gateway, n1_xdm(N1_SAMPLE.read_bytes())))
    v2 = IMG_SAMPLE.read_bytes()
    _send(
        working_gateway,
        _mail(
            working_gateway,
            make_xdm(
                [XdmDocument(content=img_v1(v2), unique_id="90E1C8EC-F951-4B26-A305-A34848818DD6")]
            ),
        ),
    )
    _wait_documents(working_gateway, before + 1)
    _send(
        working_gateway,
        _mail(
            working_gateway,
            make_xdm([XdmDocument(content=v2, unique_id="1.2.250.1.213.1.1.1.45.2024.2.1")]),
        ),
    )
    wait_until(lambda: _filing_done(working_gateway), message="filing jobs still pending")
    current = _fhir(working_gateway, "DocumentReference").get("entry", [])
    imaging = [
        e["resource"] for e in current if e["resource"]["type"]["coding"][0]["code"] == "18748-4"
    ]
    assert len(imaging) == 1, "only the current version is listed"
    assert len(current) == before + 1, "the N1 report sent again was not filed a second time"
    assert imaging[0].get("relatesTo"), "version 2 says which document it replaces"


def test_e3_other_ins_quarantined_and_904_mdn_queued(working_gateway: ServedGateway) -> None:
    other = working_gateway.add_patient(OTHER_INS)
    # The report names the demo patient's INS; the mailbox it is sent to has another INS.
    _send(
        working_gateway,
        _mail(working_gateway, n1_xdm(N1_SAMPLE.read_bytes()), to=other, receipt=True),
        to=other,
    )
    mdns = wait_until(
        lambda: [m for m in working_gateway.queued_mdns() if "904" in str(m["Subject"])],
        interval=0.3,
        message="no MDN with error 904 queued for the sender",
    )
    mdn = mdns[0]
    assert mdn.get_content_type() == "multipart/report"
    assert mdn.get_param("report-type") == "disposition-notification"
    assert str(mdn["Subject"]).startswith("[KO Intégration système !][904]")
    assert mdn["To"] is not None and working_gateway.peer["professional"] in str(mdn["To"])
