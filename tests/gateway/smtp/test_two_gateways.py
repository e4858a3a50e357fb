"""C3–C5, D2, D3 end to end: two operators on loopback, each with its own CA, trusting each other.

Gateway A is the demo home (patient space ``279035121518989@patient.mssante.fr``).
Gateway B is another operator hosting ``clinique-b.mssante.fr``, with its own
development CA. Each trusts the other's domains and CA (``caducee trust``), knows
the other's DKIM key and routes the other's domains to the other's SMTP port.
Everything travels over real sockets with real mutual TLS and DKIM.
"""

from __future__ import annotations

import email
import json
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from caducee.directory.service import NewEntry, add_entry
from caducee.gateway import pki
from caducee.mailboxes.accounts.store import AccountKind, add_app_password, create_account
from caducee.mailboxes.models import StoredMessage
from tests.harness.reports import N1_SAMPLE, OTHER_INS, build_mail, n1_xdm, xdm_part
from tests.harness.served import ServedGateway, gateway_env, run_cli
from tests.harness.waiting import wait_until

B_DOMAIN = "clinique-b.mssante.fr"
B_PROFESSIONAL = f"jeanne.durand@{B_DOMAIN}"
B_RPPS = "10099999038"


def _dkim_record(home: Path) -> str:
    return pki.dkim_dns_record((home / "dkim" / "caducee.key").read_bytes())


def _toml_table(values: dict[str, str]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in values.items()) + "}"


@pytest.fixture(scope="module")
def operators(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any
) -> Iterator[tuple[ServedGateway, ServedGateway]]:
    root = tmp_path_factory.mktemp("two")
    env_a, ports_a = gateway_env(pg_schemas.new() if pg_schemas is not None else None, workers=2)
    env_b, ports_b = gateway_env(pg_schemas.new() if pg_schemas is not None else None, workers=2)
    home_a, home_b = root / "a", root / "b"
    run_cli(env_a, "init", "--demo", "--home", str(home_a))
    run_cli(env_b, "init", "--home", str(home_b))

    # B hosts clinique-b.mssante.fr and no patients; its server (and relay client)
    # certificate names its domain, issued by B's own CA.
    ca_b = pki.load(home_b / "tls" / "ca.pem", home_b / "tls" / "ca.key")
    server_b = pki.issue(
        ca_b,
        "mx.clinique-b.mssante.fr",
        organisation="Clinique B",
        dns_names=["mx.clinique-b.mssante.fr", "localhost", B_DOMAIN],
        ip_addresses=["127.0.0.1"],
    )
    pki.save(server_b, home_b / "tls" / "server.pem", home_b / "tls" / "server.key")
    env_b["CADUCEE_GATEWAY__HOSTED_DOMAINS"] = json.dumps([B_DOMAIN])
    env_b["CADUCEE_GATEWAY__PATIENT_DOMAIN"] = "patients.clinique-b.invalid"
    env_b["CADUCEE_GATEWAY__HOSTNAME"] = "mx.clinique-b.mssante.fr"

    # Each trusts the other: domains, CA, DKIM key, route.
    run_cli(env_a, "trust", "add-domain", B_DOMAIN, "--home", str(home_a))
    run_cli(env_a, "trust", "add-anchor", str(home_b / "tls" / "ca.pem"), "--home", str(home_a))
    for domain in ("patient.mssante.fr", "hopital-demo.mssante.fr"):
        run_cli(env_b, "trust", "add-domain", domain, "--home", str(home_b))
    run_cli(env_b, "trust", "add-anchor", str(home_a / "tls" / "ca.pem"), "--home", str(home_b))
    env_a["CADUCEE_DKIM__KEY_TABLE"] = _toml_table(
        {f"caducee._domainkey.{B_DOMAIN}": _dkim_record(home_b)}
    )
    env_b["CADUCEE_DKIM__KEY_TABLE"] = _toml_table(
        {
            "caducee._domainkey.patient.mssante.fr": _dkim_record(home_a),
            "caducee._domainkey.hopital-demo.mssante.fr": _dkim_record(home_a),
        }
    )
    env_a["CADUCEE_RELAY__ROUTES"] = _toml_table({B_DOMAIN: f"127.0.0.1:{ports_b['smtp']}"})
    env_b["CADUCEE_RELAY__ROUTES"] = _toml_table(
        {
            "patient.mssante.fr": f"127.0.0.1:{ports_a['smtp']}",
            "hopital-demo.mssante.fr": f"127.0.0.1:{ports_a['smtp']}",
        }
    )

    credentials_a = json.loads((home_a / "demo" / "credentials.json").read_text())
    a = ServedGateway(home=home_a, env=env_a, ports=ports_a, credentials=credentials_a)
    b = ServedGateway(
        home=home_b,
        env=env_b,
        ports=ports_b,
        credentials={"ca_cert": str(home_b / "tls" / "ca.pem")},
    )

    # B's professional: hosted at B, listed in both directories (A's B3 rule needs it).
    entry = NewEntry(
        address=B_PROFESSIONAL,
        bal_type="PER",
        national_id="8" + B_RPPS,
        family_name="DURAND",
        given_name="Jeanne",
        profession_code="10",
        profession_label="Médecin",
    )
    components_b = b.components()
    try:
        with components_b.database.transaction() as session:
            add_entry(session, entry, hosted_domains=[B_DOMAIN])
            account = create_account(session, B_PROFESSIONAL, AccountKind.PROFESSIONAL)
            b.credentials["professional"] = {
                "address": B_PROFESSIONAL,
                "password": add_app_password(session, account, "test"),
            }
    finally:
        components_b.close()
    components_a = a.components()
    try:
        with components_a.database.transaction() as session:
            add_entry(session, entry)
    finally:
        components_a.close()

    a.start()
    b.start()
    yield a, b
    for gateway in (a, b):
        gateway.stop_all()


def _send(gateway: ServedGateway, who: str, to: str, subject: str) -> dict[str, Any]:
    message = EmailMessage()
    message["From"] = gateway.credentials[who]["address"]
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="two.test")
    message.set_content("Bonjour\n")
    with gateway.submit(who) as client:
        try:
            return dict(client.send_message(message))
        except __import__("smtplib").SMTPRecipientsRefused as refused:
            return dict(refused.recipients)


def _warnings(*gateways: ServedGateway) -> str:
    """The last warnings and errors each gateway logged: what a failed wait shows."""
    lines = []
    for gateway in gateways:
        logged = [
            line
            for line in gateway.log().splitlines()
            if '"level": "warning"' in line or '"level": "error"' in line
        ]
        lines.append(f"{gateway.home.name}: " + ("\n".join(logged[-20:]) or "(none)"))
    return "\n".join(lines)


def _wait_for(gateway: ServedGateway, address: str, subject: str) -> dict[str, Any]:
    def arrived() -> dict[str, Any] | None:
        return next((m for m in gateway.mailbox(address) if m["subject"] == subject), None)

    return wait_until(
        arrived,
        timeout=60,
        interval=0.5,
        message=lambda: f"{subject!r} did not reach {address}\n{_warnings(gateway)}",
    )


def _raw_message(gateway: ServedGateway, subject: str) -> email.message.EmailMessage:
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            for stored in session.scalars(select(StoredMessage).order_by(StoredMessage.id.desc())):
                raw = components.blobs.read(session, stored.blob_id)
                parsed = email.message_from_bytes(raw, policy=default_policy)
                if str(parsed["Subject"]) == subject:
                    assert isinstance(parsed, email.message.EmailMessage)
                    return parsed
    finally:
        components.close()
    raise AssertionError(f"{subject!r} not stored")


def test_c5_two_operators_conversation_with_end_of_exchange(
    operators: tuple[ServedGateway, ServedGateway],
) -> None:
    a, b = operators
    patient = a.credentials["patient"]["address"]

    # A professional on B writes to a patient on A.
    assert _send(b, "professional", patient, "Résultats de votre examen") == {}
    _wait_for(a, patient, "Résultats de votre examen")

    # The patient replies: accepted, relayed to B, DKIM verifies there.
    assert _send(a, "patient", B_PROFESSIONAL, "Merci docteur") == {}
    _wait_for(b, B_PROFESSIONAL, "Merci docteur")
    arrived = _raw_message(b, "Merci docteur")
    results = " ".join(str(v) for v in arrived.get_all("Authentication-Results", []))
    assert "dkim=pass header.d=patient.mssante.fr" in results

    # The professional ends the exchange: the patient's next reply is refused.
    assert _send(b, "professional", patient, "[FIN]") == {}
    _wait_for(a, patient, "[FIN]")
    refused = _send(a, "patient", B_PROFESSIONAL, "Encore une question")
    assert refused[B_PROFESSIONAL][0] == 550
    assert refused[B_PROFESSIONAL][1].startswith(b"5.7.1")

    # The professional writes again: the patient may reply again.
    assert _send(b, "professional", patient, "Suite de la consultation") == {}
    _wait_for(a, patient, "Suite de la consultation")
    assert _send(a, "patient", B_PROFESSIONAL, "Question de suivi") == {}
    _wait_for(b, B_PROFESSIONAL, "Question de suivi")


def test_e3_g3_integration_error_904_reaches_the_sender_on_the_other_operator(
    operators: tuple[ServedGateway, ServedGateway],
) -> None:
    """A report for another patient is quarantined on A; the 904 MDN travels back to B."""
    a, b = operators
    other_patient = a.add_patient(OTHER_INS)
    mail = build_mail(
        [xdm_part(n1_xdm(N1_SAMPLE.read_bytes()))],  # names the demo patient's INS
        sender=B_PROFESSIONAL,
        to=other_patient,
        receipt=True,
    )
    with b.submit("professional") as client:
        assert client.sendmail(B_PROFESSIONAL, [other_patient], mail) == {}

    def receipt_subject() -> str | None:
        subjects = [m["subject"] for m in b.mailbox(B_PROFESSIONAL)]
        return next((s for s in subjects if s.startswith("[KO Intégration système !][904]")), None)

    subject = wait_until(
        receipt_subject,
        timeout=90,
        interval=0.5,
        message=lambda: f"no 904 receipt reached B's sender\n{_warnings(a, b)}",
    )
    receipt = _raw_message(b, subject)
    assert receipt.get_content_type() == "multipart/report"
    assert receipt.get_param("report-type") == "disposition-notification"
