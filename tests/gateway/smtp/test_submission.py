"""Submission by local users (C1–C4, D2, D3) on the served demo home, with real clients."""

from __future__ import annotations

import json
import smtplib
import ssl
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from caducee.mailboxes.relay.outbound import RELAY_JOB
from caducee.storage.jobs import JobRow
from tests.harness.paths import CADUCEE
from tests.harness.served import ServedGateway, serve_demo

from .transcript import Transcript

ISSUER = "https://auth.esante.example/realms/psc"
AUDIENCE = "caducee-demo"


@pytest.fixture(scope="module")
def oidc_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="test-1", use="sig", alg="RS256")
    path = tmp_path_factory.mktemp("oidc") / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return key, path


@pytest.fixture(scope="module")
def submission_gateway(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any, oidc_key: tuple[Any, Path]
) -> Iterator[ServedGateway]:
    yield from serve_demo(
        tmp_path_factory.mktemp("submission") / "home",
        pg_schemas.new() if pg_schemas is not None else None,
        extra_env={
            "CADUCEE_SUBMISSION__OIDC_ISSUER": ISSUER,
            "CADUCEE_SUBMISSION__OIDC_AUDIENCE": AUDIENCE,
            "CADUCEE_SUBMISSION__OIDC_JWKS_FILE": str(oidc_key[1]),
            "CADUCEE_IDENTITY__FREE_FAILURES_PER_ACCOUNT_IP": "3",
        },
    )


def _message(
    gateway: ServedGateway, who: str, to: str, subject: str, **headers: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = gateway.credentials[who]["address"]
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="example.test")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("Bonjour\n")
    return message


def _send(
    gateway: ServedGateway,
    who: str,
    to: str,
    subject: str,
    *,
    implicit: bool = False,
    **headers: str,
) -> dict[str, Any]:
    with gateway.submit(who, implicit=implicit) as client:
        try:
            return dict(client.send_message(_message(gateway, who, to, subject, **headers)))
        except smtplib.SMTPRecipientsRefused as refused:
            return dict(refused.recipients)


def _token(key: Any, national_id: str, **overrides: Any) -> str:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 300,
        "SubjectRefPro": {"codeNationalId": national_id},
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "test-1"})


# C1 ---------------------------------------------------------------------------------------


def test_c1_no_auth_before_tls_and_538_if_tried(submission_gateway: ServedGateway) -> None:
    t = Transcript("127.0.0.1", submission_gateway.ports["submission"])
    t.reply()
    ehlo = t.command("EHLO client.example", r"250-")
    assert "AUTH" not in ehlo and "STARTTLS" in ehlo
    t.command("AUTH PLAIN AHVzZXIAcGFzcw==", r"538 5\.7\.11 ")
    t.command("MAIL FROM:<x@hopital-demo.mssante.fr>", r"530 5\.7\.0 ")
    t.close()


def test_c1_app_password_plain_and_login_on_both_ports(submission_gateway: ServedGateway) -> None:
    with submission_gateway.submit("professional") as client:
        assert client.esmtp_features.get("auth") is not None
    with submission_gateway.submit("patient", implicit=True) as client:
        client.noop()
    context = ssl.create_default_context(cafile=submission_gateway.credentials["ca_cert"])
    with smtplib.SMTP("127.0.0.1", submission_gateway.ports["submission"]) as client:
        client.starttls(context=context)
        client.ehlo()
        creds = submission_gateway.credentials["pharmacy"]
        code, _ = client.docmd("AUTH", "LOGIN")
        assert code == 334
        client.docmd(__import__("base64").b64encode(creds["address"].encode()).decode())
        code, text = client.docmd(
            __import__("base64").b64encode(creds["password"].encode()).decode()
        )
        assert code == 235, text


def test_c1_wrong_password_535_then_rate_limited_454(submission_gateway: ServedGateway) -> None:
    import base64

    context = ssl.create_default_context(cafile=submission_gateway.credentials["ca_cert"])
    address = submission_gateway.credentials["pharmacy"]["address"]
    wrong = base64.b64encode(f"\x00{address}\x00not-the-password".encode()).decode()
    answers = []
    for _ in range(4):  # one AUTH per connection (smtplib.login would try several mechanisms)
        with smtplib.SMTP("127.0.0.1", submission_gateway.ports["submission"]) as client:
            client.starttls(context=context)
            client.ehlo()
            code, text = client.docmd("AUTH", f"PLAIN {wrong}")
            answers.append((code, text[:5]))
    assert answers[:3] == [(535, b"5.7.8")] * 3
    assert answers[3] == (454, b"4.7.0")


def test_c1_xoauth2_and_oauthbearer_with_an_oidc_token(
    submission_gateway: ServedGateway, oidc_key: tuple[Any, Path]
) -> None:
    professional = submission_gateway.credentials["professional"]
    token = _token(oidc_key[0], professional["national_id"])
    context = ssl.create_default_context(cafile=submission_gateway.credentials["ca_cert"])
    import base64

    for mechanism, initial in (
        ("XOAUTH2", f"user={professional['address']}\x01auth=Bearer {token}\x01\x01"),
        ("OAUTHBEARER", f"n,a={professional['address']},\x01auth=Bearer {token}\x01\x01"),
    ):
        with smtplib.SMTP("127.0.0.1", submission_gateway.ports["submission"]) as client:
            client.starttls(context=context)
            client.ehlo()
            code, text = client.docmd(
                "AUTH", f"{mechanism} {base64.b64encode(initial.encode()).decode()}"
            )
            assert code == 235, (mechanism, text)
    expired = _token(oidc_key[0], professional["national_id"], exp=int(time.time()) - 10)
    wrong_audience = _token(oidc_key[0], professional["national_id"], aud="someone-else")
    for bad in (expired, wrong_audience, token[:-4] + "AAAA"):
        with smtplib.SMTP("127.0.0.1", submission_gateway.ports["submission"]) as client:
            client.starttls(context=context)
            client.ehlo()
            # a throw-away user name, so these failures do not throttle the real account
            initial = f"user=nobody@hopital-demo.mssante.fr\x01auth=Bearer {bad}\x01\x01"
            code, _ = client.docmd("AUTH", f"XOAUTH2 {base64.b64encode(initial.encode()).decode()}")
            assert code == 535


# C2 ---------------------------------------------------------------------------------------


def test_c2_sender_must_belong_to_the_account(submission_gateway: ServedGateway) -> None:
    with submission_gateway.submit("professional") as client:
        code, text = client.mail("someone.else@hopital-demo.mssante.fr")
        assert (code, text[:5]) == (553, b"5.7.1")
    message = _message(
        submission_gateway,
        "professional",
        submission_gateway.credentials["patient"]["address"],
        "spoof",
    )
    message.replace_header("From", "someone.else@hopital-demo.mssante.fr")
    with (
        submission_gateway.submit("professional") as client,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        client.sendmail(
            submission_gateway.credentials["professional"]["address"],
            [submission_gateway.credentials["patient"]["address"]],
            message.as_bytes(policy=message.policy.clone(linesep="\r\n")),
        )
    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (553, b"5.7.1")


# C4, D2, D3 -------------------------------------------------------------------------------


def test_c4_patient_may_answer_only_a_professional_who_wrote(
    submission_gateway: ServedGateway,
) -> None:
    gateway = submission_gateway
    patient = gateway.credentials["patient"]["address"]
    professional = gateway.credentials["professional"]["address"]
    refused = _send(gateway, "patient", professional, "Bonjour docteur")
    code, text = refused[professional]
    assert (code, text[:5]) == (550, b"5.7.1")
    assert b"Vous pouvez seulement repondre" in text and b"You can only reply" in text
    assert _send(gateway, "professional", patient, "Vos resultats") == {}
    assert _send(gateway, "patient", professional, "Merci", implicit=True) == {}
    assert [m["subject"] for m in gateway.mailbox(professional)][-1] == "Merci"
    assert _send(gateway, "professional", patient, "[FIN]") == {}
    assert _send(gateway, "patient", professional, "Encore une question")[professional][0] == 550
    assert _send(gateway, "professional", patient, "Nouveau message") == {}
    assert _send(gateway, "patient", professional, "Question") == {}


def test_c4_reply_to_decides_the_address_the_patient_answers(
    submission_gateway: ServedGateway,
) -> None:
    gateway = submission_gateway
    patient = gateway.credentials["patient"]["address"]
    pharmacy = gateway.credentials["pharmacy"]["address"]
    assert _send(gateway, "professional", patient, "Ordonnance", Reply_To=pharmacy) == {}
    assert _send(gateway, "patient", pharmacy, "Question sur l'ordonnance") == {}


def test_c4_never_another_patient_nor_outside_the_trust_space(
    submission_gateway: ServedGateway,
) -> None:
    gateway = submission_gateway
    other = "180017512345675@patient.mssante.fr"
    assert _send(gateway, "patient", other, "x")[other][0] == 550
    outside = "ami@gmail.com"
    refused = _send(gateway, "patient", outside, "x")
    assert refused[outside][0] == 550 and b"trust space" in refused[outside][1]
    assert _send(gateway, "professional", outside, "x")[outside][0] == 550


def test_c4_declared_pharmacy_exception(submission_gateway: ServedGateway, tmp_path: Path) -> None:
    gateway = submission_gateway
    result = subprocess.run(
        [
            *CADUCEE,
            "patient",
            "declare-pharmacy",
            gateway.credentials["patient"]["address"],
            gateway.credentials["pharmacy"]["address"],
            "--home",
            str(gateway.home),
        ],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (
        _send(gateway, "patient", gateway.credentials["pharmacy"]["address"], "Renouvellement")
        == {}
    )
    refused = subprocess.run(
        [
            *CADUCEE,
            "patient",
            "declare-pharmacy",
            gateway.credentials["patient"]["address"],
            gateway.credentials["professional"]["address"],
            "--home",
            str(gateway.home),
        ],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "not a pharmacy" in refused.stderr


def test_c5_recipient_of_another_operator_is_queued_for_relay(
    submission_gateway: ServedGateway,
) -> None:
    gateway = submission_gateway
    remote = gateway.peer["professional"]
    assert _send(gateway, "professional", remote, "Avis") == {}
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            jobs = session.scalars(select(JobRow).where(JobRow.kind == RELAY_JOB)).all()
            payloads = [job.payload for job in jobs]
    finally:
        components.close()
    assert any(p["recipients"] == [remote] and p["purpose"] == "submission" for p in payloads)


def test_d2_local_delivery_records_the_contact(submission_gateway: ServedGateway) -> None:
    gateway = submission_gateway
    patient = gateway.credentials["patient"]["address"]
    before = len(gateway.mailbox(patient))
    assert _send(gateway, "professional", patient, "Compte rendu de consultation") == {}
    listed = gateway.mailbox(patient)
    assert len(listed) == before + 1 and listed[-1]["subject"] == "Compte rendu de consultation"
