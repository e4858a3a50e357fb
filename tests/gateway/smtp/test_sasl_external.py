"""C1: APP mailboxes sign in on the submission ports with a client certificate (SASL EXTERNAL).

A served demo home with two hosted APP mailboxes (a lab's software, and one to suspend).
Client certificates are issued by the home's CA (a trust anchor of the demo home) and bound
with ``caducee account certificate add``. Persons keep signing in with passwords on the same
ports; EXTERNAL is advertised only to a session that presented a verified certificate.
"""

from __future__ import annotations

import base64
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from caducee.directory.service import NewEntry, add_entry
from caducee.gateway import pki
from caducee.mailboxes.accounts.store import AccountKind, create_account
from caducee.storage.audit import AuditEvent
from tests.harness.paths import CADUCEE
from tests.harness.served import ServedGateway, prepare_demo

DOMAIN = "hopital-demo.mssante.fr"
LAB = f"labo-resultats@{DOMAIN}"
ROBOT = f"automate@{DOMAIN}"


@dataclass
class Certs:
    bound: tuple[Path, Path]
    robot: tuple[Path, Path]
    unbound: tuple[Path, Path]
    spare: tuple[Path, Path]


def _issue(home: Path, root: Path, name: str) -> tuple[Path, Path]:
    ca = pki.load(home / "tls" / "ca.pem", home / "tls" / "ca.key")
    issued = pki.issue(ca, f"{name}.{DOMAIN}", organisation="Laboratoire", dns_names=[])
    cert, key = root / f"{name}.pem", root / f"{name}.key"
    pki.save(issued, cert, key)
    return cert, key


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any
) -> Iterator[tuple[ServedGateway, Certs]]:
    root = tmp_path_factory.mktemp("external")
    gateway = prepare_demo(root / "home", pg_schemas.new() if pg_schemas is not None else None)
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            for address, name in ((LAB, "Résultats"), (ROBOT, "Automate")):
                add_entry(
                    session,
                    NewEntry(address=address, bal_type="APP", organisation_name=name, hosted=True),
                    hosted_domains=[DOMAIN],
                )
                create_account(session, address, AccountKind.ORGANISATION)
    finally:
        components.close()
    certs = Certs(
        bound=_issue(gateway.home, root, "lab"),
        robot=_issue(gateway.home, root, "robot"),
        unbound=_issue(gateway.home, root, "stranger"),
        spare=_issue(gateway.home, root, "spare"),
    )
    gateway.cli("account", "certificate", "add", LAB, str(certs.bound[0]))
    gateway.cli("account", "certificate", "add", ROBOT, str(certs.robot[0]))
    gateway.start()
    try:
        yield gateway, certs
    finally:
        gateway.stop_all()


def _client(
    gateway: ServedGateway, cert: tuple[Path, Path] | None, *, implicit: bool = False
) -> smtplib.SMTP:
    context = ssl.create_default_context(cafile=gateway.credentials["ca_cert"])
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    client: smtplib.SMTP
    if implicit:
        client = smtplib.SMTP_SSL(
            "127.0.0.1", gateway.ports["submissions"], context=context, timeout=30
        )
    else:
        client = smtplib.SMTP("127.0.0.1", gateway.ports["submission"], timeout=30)
        client.starttls(context=context)
    client.ehlo("client.example")
    return client


def _external(client: smtplib.SMTP, authzid: str = "") -> tuple[int, bytes]:
    response = base64.b64encode(authzid.encode()).decode() if authzid else "="
    return client.docmd("AUTH", f"EXTERNAL {response}")


def _message(sender: str, to: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Résultats disponibles"
    message["Message-ID"] = make_msgid(domain=DOMAIN)
    message.set_content("Bonjour,\nles résultats sont disponibles.\n")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def _certificate_logins(gateway: ServedGateway, result: str) -> int:
    components = gateway.components()
    try:
        with components.database.reading() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(AuditEvent)
                    .where(
                        AuditEvent.action == "login",
                        AuditEvent.rule == "C1.certificate",
                        AuditEvent.result == result,
                    )
                )
                or 0
            )
    finally:
        components.close()


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_c1_external_with_a_bound_certificate_sends_as_the_app_mailbox(
    served: tuple[ServedGateway, Certs], implicit: bool
) -> None:
    gateway, certs = served
    before = _certificate_logins(gateway, "ok")
    remote = gateway.peer["professional"]
    with _client(gateway, certs.bound, implicit=implicit) as client:
        assert "EXTERNAL" in client.esmtp_features["auth"].split()
        code, reply = _external(client)
        assert code == 235, reply
        assert client.mail(LAB)[0] == 250
        assert client.rcpt(remote)[0] == 250
        code, reply = client.data(_message(LAB, remote))
        assert code == 250, reply
    assert _certificate_logins(gateway, "ok") == before + 1


def test_c1_external_authorization_identity_must_be_the_bound_mailbox(
    served: tuple[ServedGateway, Certs],
) -> None:
    gateway, certs = served
    with _client(gateway, certs.bound) as client:
        code, reply = _external(client, ROBOT)
        assert code == 535, reply
        assert b"5.7.8" in reply
    with _client(gateway, certs.bound) as client:
        code, reply = _external(client, LAB.upper())
        assert code == 235, reply


def test_c1_without_a_certificate_external_is_not_offered_and_passwords_still_work(
    served: tuple[ServedGateway, Certs],
) -> None:
    gateway, _certs = served
    for implicit in (False, True):
        with _client(gateway, None, implicit=implicit) as client:
            mechanisms = client.esmtp_features["auth"].split()
            assert "EXTERNAL" not in mechanisms
            assert "PLAIN" in mechanisms
            code, reply = _external(client)
            assert code in (504, 535), reply
            professional = gateway.credentials["professional"]
            code, reply = client.login(professional["address"], professional["password"])
            assert code == 235, reply


def test_c1_a_certificate_of_the_ca_that_is_not_bound_is_refused(
    served: tuple[ServedGateway, Certs],
) -> None:
    gateway, certs = served
    before = _certificate_logins(gateway, "failed")
    with _client(gateway, certs.unbound) as client:
        assert "EXTERNAL" in client.esmtp_features["auth"].split()
        code, reply = _external(client)
        assert code == 535, reply
        assert b"5.7.8" in reply
    assert _certificate_logins(gateway, "failed") == before + 1


def test_c1_a_suspended_account_is_refused_with_its_certificate(
    served: tuple[ServedGateway, Certs],
) -> None:
    gateway, certs = served
    gateway.cli("account", "suspend", ROBOT)
    try:
        with _client(gateway, certs.robot) as client:
            code, reply = _external(client)
            assert code == 535, reply
    finally:
        gateway.cli("account", "resume", ROBOT)
    with _client(gateway, certs.robot) as client:
        code, reply = _external(client)
        assert code == 235, reply


def test_c1_certificates_are_listed_and_revoked(served: tuple[ServedGateway, Certs]) -> None:
    gateway, certs = served
    added = gateway.cli("account", "certificate", "add", ROBOT, str(certs.spare[0]))
    certificate_id = added.split()[1]
    listed = gateway.cli("account", "certificate", "list", ROBOT, "--json")
    assert len(listed.strip().splitlines()) == 2
    with _client(gateway, certs.spare) as client:
        assert _external(client)[0] == 235
    gateway.cli("account", "certificate", "revoke", ROBOT, certificate_id)
    with _client(gateway, certs.spare) as client:
        assert _external(client)[0] == 535


def test_c1_only_app_mailboxes_may_bind_a_certificate(
    served: tuple[ServedGateway, Certs],
) -> None:
    gateway, certs = served
    professional = gateway.credentials["professional"]["address"]
    result = subprocess.run(
        [
            *CADUCEE,
            "account",
            "certificate",
            "add",
            professional,
            str(certs.unbound[0]),
            "--home",
            str(gateway.home),
        ],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "not an APP mailbox" in result.stdout + result.stderr
    assert gateway.cli("account", "certificate", "list", professional) == ""
