"""Issue 12, J2: one correlatable log line per SMTP transaction, as Postfix users expect
(queue id, client, peer domain, recipient count, size, status, rule), with no subject, no
body and no patient identifier (a patient's address holds the INS: never logged)."""

from __future__ import annotations

import json
from typing import Any

from caducee.directory.identifiers import ins_key
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

DEMO_INS = "279035121518989"
SUBJECT = "Quinquagenaire bilan thyroidien Zorglub"
BODY = "Xerophtalmie probable, controle dans un mois.\n"


def _transactions(gateway: ServedGateway) -> list[dict[str, Any]]:
    return [
        entry
        for line in gateway.log().splitlines()
        if line.startswith("{")
        for entry in [json.loads(line)]
        if entry.get("message") == "smtp transaction"
    ]


def _at_least(gateway: ServedGateway, count: int) -> list[dict[str, Any]] | None:
    found = _transactions(gateway)
    return found if len(found) >= count else None


def test_j2_one_line_per_transaction_with_counts_and_no_identifier(
    gateway: ServedGateway,
) -> None:
    patient = gateway.credentials["patient"]["address"]
    assert DEMO_INS in patient  # what must never reach the log
    raw = gateway.message(subject=SUBJECT, body=BODY)

    # An accepted transaction.
    with gateway.smtp() as client:
        client.mail(gateway.peer["professional"])
        assert client.rcpt(patient)[0] == 250
        code, reply = client.data(raw)
        assert code == 250, reply
        queue_id = reply.decode().rsplit(" ", 1)[-1]

    # A refused one: its only recipient is a patient address whose INS key is wrong.
    nir13 = "1800175123456"
    wrong_key = f"{(int(ins_key(nir13)) + 1) % 97:02d}"
    with gateway.smtp() as client:
        client.mail(gateway.peer["professional"])
        assert client.rcpt(f"{nir13}{wrong_key}@patient.mssante.fr")[0] == 550
        assert client.docmd("DATA")[0] == 503

    lines = wait_until(
        lambda: _at_least(gateway, 2),
        timeout=15,
        message=lambda: "transaction lines missing: " + gateway.log()[-4000:],
    )
    assert len(lines) == 2, lines
    accepted, refused = lines
    assert accepted["queue_id"] == queue_id
    assert accepted["status"] == "accepted"
    assert accepted["code"] == 250
    assert accepted["client"] == "127.0.0.1"
    assert accepted["listener"] == "operators"
    assert accepted["peer_domain"] == gateway.peer["domain"]
    assert accepted["sender_domain"] == gateway.peer["domain"]
    assert accepted["recipients"] == 1
    assert accepted["size"] == len(raw)
    assert "rule" not in accepted

    assert refused["status"] == "refused"
    assert refused["queue_id"] and refused["queue_id"] != queue_id
    assert refused["client"] == "127.0.0.1"
    assert refused["peer_domain"] == gateway.peer["domain"]
    assert refused["recipients"] == 0
    assert refused["refused_recipients"] == 1
    assert refused["rule"].startswith("A")  # an addressing rule (INS key)

    log = gateway.log()
    assert DEMO_INS not in log
    assert nir13 not in log
    assert SUBJECT.split()[-1] not in log
    assert "Xerophtalmie" not in log


def test_j2_refused_mail_command_is_one_refused_line(gateway: ServedGateway) -> None:
    before = len(_transactions(gateway))
    with gateway.submit("patient") as client:
        code, _reply = client.mail("someone.else@hopital-demo.mssante.fr")
        assert code == 553

    lines = wait_until(
        lambda: _at_least(gateway, before + 1),
        timeout=15,
        message=lambda: "transaction line missing: " + gateway.log()[-4000:],
    )
    line = lines[-1]
    assert line["listener"] == "submission"
    assert line["status"] == "refused"
    assert line["code"] == 553
    assert line["rule"] == "C2.sender-alignment"
    assert line["recipients"] == 0
    assert DEMO_INS not in gateway.log()
