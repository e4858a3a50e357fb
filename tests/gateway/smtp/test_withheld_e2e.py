"""E5, E3 end to end: what the rules hide never reaches the patient's INBOX; the operator sees it.

Reports mailed by the demo peer operator (DKIM-signed, mutual TLS) to the served demo gateway;
its job workers file them and decide the patient's copy (hold until filed); the patient reads
over IMAP and FHIR, the operator runs ``caducee quarantine``.
"""

from __future__ import annotations

import json
import re
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from tests.harness.reports import N1_SAMPLE, OTHER_INS, build_mail, n1_xdm, with_ins, xdm_part
from tests.harness.served import Account, ServedGateway
from tests.harness.waiting import wait_until


def _send(gateway: ServedGateway, xdm: bytes, message_id: str, *, receipt: bool = False) -> None:
    patient = gateway.credentials["patient"]["address"]
    raw = build_mail(
        [xdm_part(xdm)],
        sender=gateway.peer["professional"],
        to=patient,
        receipt=receipt,
        message_id=message_id,
    )
    with gateway.smtp() as client:
        assert client.sendmail(gateway.peer["professional"], [patient], gateway.sign(raw)) == {}


def _quarantine(gateway: ServedGateway) -> list[dict[str, Any]]:
    output = gateway.cli("quarantine", "list", "--json")
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def _inbox(gateway: ServedGateway) -> dict[str, bytes]:
    """Message-ID → BODYSTRUCTURE of every message in the demo patient's INBOX (IMAP)."""
    patient = gateway.credentials["patient"]
    client = gateway.imap(Account(patient["address"], patient["password"]))
    try:
        client.select("INBOX", readonly=True)
        status, data = client.fetch("1:*", "(BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        if status != "OK" or data == [None]:
            return {}
    finally:
        client.logout()
    found: dict[str, bytes] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        header = item[1].decode("ascii", "replace")
        match = re.search(r"<[^>]+>", header)
        if match:
            found[match.group(0)] = item[0]
    return found


def _documents_text(gateway: ServedGateway) -> str:
    bundle = gateway.http_get("/fhir/DocumentReference", accept="application/fhir+json")
    return json.dumps(bundle)


def test_e5_invisible_patient_xdm_withheld_from_imap_and_fhir_operator_sees_it(
    working_gateway: ServedGateway, tmp_path: Path
) -> None:
    """Acceptance: the patient's IMAP copy has no zip, FHIR lists nothing, the operator sees it."""
    unique_id = "1.2.250.1.999.13.2.1"
    message_id = make_msgid(domain=working_gateway.peer["domain"])
    before = [i for i in _quarantine(working_gateway) if i["kind"] == "withheld-part"]
    xdm = n1_xdm(N1_SAMPLE.read_bytes(), unique_id=unique_id, visibility=["INVISIBLE_PATIENT"])
    _send(working_gateway, xdm, message_id)

    structure = wait_until(
        lambda: _inbox(working_gateway).get(message_id),
        interval=0.3,
        message="the patient's copy was never released",
    )
    assert b'"APPLICATION" "ZIP"' not in structure.upper()
    assert b"IHE_XDM" not in structure.upper()
    assert b'"TEXT" "PLAIN"' in structure.upper()
    assert unique_id not in _documents_text(working_gateway)

    withheld = [i for i in _quarantine(working_gateway) if i["kind"] == "withheld-part"]
    [item] = [i for i in withheld if i not in before]
    assert item["rule"] == "E5.invisible-patient"
    assert item["content_type"] == "application/zip" and item["size"] > 0
    assert set(item) >= {"id", "kind", "account", "message", "content_type", "size", "rule"}
    assert "IHE_XDM" not in json.dumps(item), "no file names or content in the listing"
    target = tmp_path / "part.zip"
    shown = working_gateway.cli("quarantine", "show", item["id"], "--output", str(target))
    assert item["id"] in shown
    assert target.read_bytes() == xdm


def test_e3_cda_for_another_ins_never_reaches_the_inbox_quarantined_904(
    working_gateway: ServedGateway,
) -> None:
    """Acceptance: nothing of it reaches the patient's INBOX; quarantined; 904 MDN queued."""
    message_id = make_msgid(domain=working_gateway.peer["domain"])
    before = len([m for m in working_gateway.queued_mdns() if "904" in str(m["Subject"])])
    held_before = [i for i in _quarantine(working_gateway) if i["kind"] == "withheld-message"]
    cda = with_ins(N1_SAMPLE.read_bytes(), OTHER_INS)
    _send(
        working_gateway,
        n1_xdm(cda, ins=OTHER_INS, unique_id="1.2.250.1.999.13.2.2"),
        message_id,
        receipt=True,
    )
    wait_until(
        lambda: (
            len([m for m in working_gateway.queued_mdns() if "904" in str(m["Subject"])]) > before
        ),
        interval=0.3,
        message="no MDN with error 904 queued for the sender",
    )
    items = wait_until(
        lambda: [
            i
            for i in _quarantine(working_gateway)
            if i["kind"] == "withheld-message" and i not in held_before
        ],
        interval=0.3,
        message="the message was not withheld",
    )
    [withheld] = items
    in_quarantine = _quarantine(working_gateway)
    assert any(
        i["kind"] == "quarantined"
        and i["message"] == withheld["message"]
        and i["error_code"] == 904
        for i in in_quarantine
    )
    assert any(
        i["kind"] == "withheld-part"
        and i["message"] == withheld["message"]
        and i["rule"] == "E3.904"
        for i in in_quarantine
    )
    assert message_id not in _inbox(working_gateway), "nothing of it reaches the INBOX"
