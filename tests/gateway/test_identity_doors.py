"""One identity service on every door (C1, C2, F4; issue 12), on a served gateway.

* One failure limiter: 50 wrong HTTP Basic guesses from one address get 401s, then 429s
  (problem+json, ``Retry-After``), never a 500; the right password from another address
  still works (the source address is bound to 127.0.0.2: Linux loopback needs no setup).
* Every access audited in one vocabulary: IMAP LOGIN and SMTP AUTH (``login``, channel
  ``imap``/``smtp``), the first read of a message body in an IMAP session (``message.read``),
  not a headers-only fetch; ``caducee audit list --patient`` and ``/api/patient/history``
  show them.
* The verified-credential cache never accepts a revoked app password.
* RFC 4616: ``AUTH PLAIN`` naming another mailbox as authorization identity is refused,
  unless that mailbox is delegated (``caducee account delegate``, C2).
"""

from __future__ import annotations

import base64
import http.client
import imaplib
import json
import smtplib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.harness.served import Account, ServedGateway, serve_demo
from tests.harness.waiting import wait_until

HISTORY = "/api/patient/history"


def _basic(address: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{address}:{password}".encode()).decode()


def _get(
    gateway: ServedGateway, path: str, authorization: str, *, source: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(
        "127.0.0.1", gateway.ports["http"], timeout=30, source_address=(source, 0)
    )
    try:
        connection.request("GET", path, headers={"Authorization": authorization})
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


def _audit(gateway: ServedGateway, address: str) -> list[dict[str, Any]]:
    output = gateway.cli("audit", "list", "--patient", address, "--limit", "500", "--json")
    return [json.loads(line) for line in output.splitlines() if line.strip()]


STRICT = {
    "CADUCEE_IDENTITY__FREE_FAILURES_PER_ACCOUNT_IP": "3",
    "CADUCEE_IDENTITY__FREE_FAILURES_PER_IP": "20",
    "CADUCEE_IDENTITY__FAILURE_DELAY_SECONDS": "60",
}


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any) -> Iterator[ServedGateway]:
    """A served demo whose delays start at 60 s (no test depends on a delay passing)."""
    home = tmp_path_factory.mktemp("strict") / "home"
    url = pg_schemas.new() if pg_schemas is not None else None
    yield from serve_demo(home, url, extra_env=STRICT)


def test_c1_http_guesses_get_429_never_500_and_another_address_still_signs_in(
    strict: ServedGateway,
) -> None:
    patient = strict.new_patient()
    wrong = _basic(patient.address, "wrong-password-guess")
    guesser = "127.0.0.5"
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: _get(strict, HISTORY, wrong, source=guesser), range(50)))
    statuses = [status for status, _, _ in answers]
    assert 500 not in statuses
    assert set(statuses) <= {401, 429}
    assert statuses.count(429) >= 30, statuses
    _status, headers, body = next(answer for answer in answers if answer[0] == 429)
    assert headers["content-type"].startswith("application/problem+json")
    assert int(headers["retry-after"]) >= 1
    assert json.loads(body)["status"] == 429

    # The right password from the guessing address waits too; from another address it works.
    right = _basic(patient.address, patient.password)
    assert _get(strict, HISTORY, right, source=guesser)[0] == 429
    assert _get(strict, HISTORY, right, source="127.0.0.2")[0] == 200

    # Every failure is audited: wrong passwords and refusals while delayed.
    events = [e for e in _audit(strict, patient.address) if e["action"] == "login"]
    failed = [e for e in events if e["result"] == "failed" and e["channel"] == "http"]
    throttled = [e for e in events if e["rule"] == "C1.throttled"]
    assert len(failed) + len(throttled) >= 51
    assert len(failed) <= 20 and throttled
    log = strict.log()
    assert patient.password not in log and "wrong-password-guess" not in log


def test_c1_a_hospital_nat_is_not_locked_out_by_one_guesser(strict: ServedGateway) -> None:
    nat = "127.0.0.3"
    colleague, newcomer = strict.new_patient(), strict.new_patient()
    colleague_auth = _basic(colleague.address, colleague.password)
    assert _get(strict, HISTORY, colleague_auth, source=nat)[0] == 200
    for number in range(25):  # one user behind the NAT sprays guesses over many addresses
        _get(strict, HISTORY, _basic(f"guess{number}@patient.mssante.fr", "x"), source=nat)
    newcomer_auth = _basic(newcomer.address, newcomer.password)
    assert _get(strict, HISTORY, newcomer_auth, source=nat)[0] == 429  # the address is delayed
    assert _get(strict, HISTORY, colleague_auth, source=nat)[0] == 200  # but not its known users
    assert _get(strict, HISTORY, newcomer_auth, source="127.0.0.2")[0] == 200


def test_c1_imap_failures_count_on_every_door_for_that_address_only(
    strict: ServedGateway,
) -> None:
    patient = strict.new_patient()

    def wrong_login(_: int) -> str:
        try:
            strict.imap(Account(patient.address, "wrong")).logout()
        except imaplib.IMAP4.error as refused:
            return str(refused)
        return "ok"

    with ThreadPoolExecutor(max_workers=5) as pool:
        assert "ok" not in list(pool.map(wrong_login, range(5)))
    assert "try again later" in wrong_login(0)
    right = _basic(patient.address, patient.password)
    assert _get(strict, HISTORY, right)[0] == 429  # IMAP's failures delay HTTP from there
    assert _get(strict, HISTORY, right, source="127.0.0.2")[0] == 200


def _append_two(client: imaplib.IMAP4_SSL) -> None:
    for subject in ("first", "second"):
        message = (
            f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n\r\n"
            f"body of the {subject} message\r\n"
        ).encode()
        status, _ = client.append("INBOX", None, None, message)
        assert status == "OK"


def test_f4_imap_login_and_first_body_read_are_audited(gateway: ServedGateway) -> None:
    patient = gateway.new_patient()
    client = gateway.imap(patient)
    try:
        _append_two(client)
        client.select("INBOX")
        client.fetch("2", "(BODY.PEEK[HEADER] FLAGS)")  # headers only: not a read
        client.fetch("1", "(BODY[])")
        client.fetch("1", "(BODY[TEXT])")  # the same message again in this session
    finally:
        client.logout()

    def audited() -> list[dict[str, Any]] | None:
        events = _audit(gateway, patient.address)
        reads = [e for e in events if e["action"] == "message.read" and e["channel"] == "imap"]
        return events if reads else None

    events = wait_until(audited, timeout=15, message="no IMAP read in the audit trail")
    logins = [e for e in events if e["action"] == "login" and e["channel"] == "imap"]
    assert logins and logins[0]["result"] == "ok" and logins[0]["rule"] == "C1.app-password"
    assert logins[0]["actor"] == f"patient:account:{patient.account_id}"
    reads = [e for e in events if e["action"] == "message.read"]
    assert len(reads) == 1, "one event for the first body read of one message"
    assert reads[0]["subject"] == patient.account_id

    history = _get(gateway, HISTORY, _basic(patient.address, patient.password), source="127.0.0.4")
    assert history[0] == 200
    shown = json.loads(history[2])
    text = json.dumps(shown)
    assert "message.read" in text and "imap" in text


def test_c1_a_revoked_app_password_is_refused_at_once_despite_the_cache(
    gateway: ServedGateway,
) -> None:
    patient = gateway.new_patient()
    for _ in range(2):  # the second login is answered from the verified-credential cache
        gateway.imap(patient).logout()
    [row] = [
        json.loads(line)
        for line in gateway.cli("account", "app-password", "list", patient.address, "--json")
        .strip()
        .splitlines()
    ]
    gateway.cli("account", "app-password", "revoke", patient.address, str(row["id"]))
    with pytest.raises(imaplib.IMAP4.error):
        gateway.imap(patient)


def _plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def _auth_plain(gateway: ServedGateway, authzid: str, who: str) -> tuple[int, bytes, Any]:
    client = gateway.submit(who, login=False)
    client.ehlo()
    account = gateway.credentials[who]
    code, text = client.docmd(
        "AUTH", "PLAIN " + _plain(authzid, account["address"], account["password"])
    )
    return code, text, client


def test_c2_foreign_authorization_identity_refused_unless_delegated(
    gateway: ServedGateway,
) -> None:
    pharmacy = gateway.credentials["pharmacy"]["address"]
    professional = gateway.credentials["professional"]["address"]
    code, _, client = _auth_plain(gateway, pharmacy, "professional")
    client.close()
    assert code == 535

    code, _, client = _auth_plain(gateway, professional, "professional")  # own: fine
    client.quit()
    assert code == 235

    assert "may send as" in gateway.cli("account", "delegate", pharmacy, "--to", professional)
    code, _, client = _auth_plain(gateway, pharmacy, "professional")
    try:
        assert code == 235
        assert client.mail(pharmacy)[0] == 250
    finally:
        client.quit()

    gateway.cli("account", "delegate", pharmacy, "--to", professional, "--revoke")
    code, _, client = _auth_plain(gateway, pharmacy, "professional")
    client.close()
    assert code == 535


def test_f4_smtp_auth_is_audited(gateway: ServedGateway) -> None:
    gateway.submit("patient").quit()
    wrong = smtplib.SMTP("127.0.0.1", gateway.ports["submission"], timeout=30)
    wrong.starttls(context=gateway.tls_context())
    with pytest.raises(smtplib.SMTPAuthenticationError):
        wrong.login(gateway.credentials["patient"]["address"], "wrong")
    wrong.close()
    events = _audit(gateway, gateway.credentials["patient"]["address"])
    smtp = [
        (e["result"], e["rule"])
        for e in events
        if e["action"] == "login" and e["channel"] == "smtp"
    ]
    assert ("ok", "C1.app-password") in smtp and ("failed", "C1.app-password") in smtp
