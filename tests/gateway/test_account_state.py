"""One account-state rule on every door (C1, I1–I2): a suspended account signs in nowhere.

``caducee account suspend`` refuses the account on SMTP AUTH, IMAP LOGIN and HTTP Basic
alike, each in its protocol's form and with the text a wrong password gets (a client learns
nothing of the state); ``resume`` restores all three. A success remembered by the HTTP
credential cache before the suspension is not used after it.
"""

from __future__ import annotations

import imaplib
import smtplib
import urllib.error

import pytest

from tests.harness.served import Account, ServedGateway


def _doors(gateway: ServedGateway) -> dict[str, str]:
    """What each door answers the demo patient: 'ok' or the refusal."""
    patient = gateway.credentials["patient"]
    answers: dict[str, str] = {}
    try:
        with gateway.submit("patient"):
            answers["smtp"] = "ok"
    except smtplib.SMTPAuthenticationError as refused:
        answers["smtp"] = f"{refused.smtp_code} {refused.smtp_error.decode()}"
    try:
        gateway.imap(Account(patient["address"], patient["password"])).logout()
        answers["imap"] = "ok"
    except imaplib.IMAP4.error as refused:
        answers["imap"] = f"NO {refused}"
    try:
        gateway.http_get("/fhir/DocumentReference", accept="application/fhir+json")
        answers["http"] = "ok"
    except urllib.error.HTTPError as refused:
        answers["http"] = str(refused.code)
    return answers


def _wrong_password_answers(gateway: ServedGateway) -> dict[str, str]:
    wrong = dict(gateway.credentials)
    wrong["patient"] = {**gateway.credentials["patient"], "password": "not-the-password"}
    other = ServedGateway(gateway.home, gateway.env, gateway.ports, wrong)
    return _doors(other)


def test_c1_suspended_account_refused_on_every_door_then_resumed(gateway: ServedGateway) -> None:
    address = gateway.credentials["patient"]["address"]
    assert _doors(gateway) == {"smtp": "ok", "imap": "ok", "http": "ok"}  # HTTP now cached

    assert "suspended" in gateway.cli("account", "suspend", address)
    refused = _doors(gateway)
    assert refused["smtp"].startswith("535 5.7.8")
    assert refused["imap"].startswith("NO")
    assert refused["http"] == "401"
    assert refused == _wrong_password_answers(gateway), "the state is not disclosed"

    assert "active" in gateway.cli("account", "resume", address)
    assert _doors(gateway) == {"smtp": "ok", "imap": "ok", "http": "ok"}


def test_f4_suspension_and_resumption_are_audited(gateway: ServedGateway) -> None:
    address = gateway.credentials["pharmacy"]["address"]
    gateway.cli("account", "suspend", address)
    gateway.cli("account", "resume", address)
    listed = gateway.cli("audit", "list")
    assert "account-suspend" in listed and "account-resume" in listed


def test_i2_closed_or_unknown_account_is_not_suspended_here(gateway: ServedGateway) -> None:
    with pytest.raises(AssertionError, match="no hosted account"):
        gateway.cli("account", "suspend", "nobody@hopital-demo.mssante.fr")
