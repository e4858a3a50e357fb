"""Patient spaces end to end on a served gateway (I1, I2, I3): the acceptance of issue 16.

create (CLI) → activation code (file SMS sender) → activate over HTTP (code, birth date,
password, TOTP) → mail over SMTP → export (mbox = IMAP, documents = FHIR DocumentReferences,
the Bundle is FHIR R4 JSON) → close (550 5.2.1, IMAP and HTTP refused) → reopen (mail
accepted, old mail back). Opposition, automatic opening, and the admin API over HTTP.
"""

from __future__ import annotations

import base64
import imaplib
import json
import mailbox
import re
import smtplib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from caducee.mailboxes.accounts.lifecycle import totp_now
from caducee.mailboxes.accounts.store import Account as AccountRow
from caducee.mailboxes.delivery import FILE_DOCUMENTS_JOB
from caducee.storage.jobs import READY, RUNNING, JobRow
from tests.harness.identities import valid_ins
from tests.harness.served import Account, ServedGateway, prepare_demo, run_cli
from tests.harness.waiting import wait_until

PHONE = "+33612345678"
PASSWORD = "Correct-Horse-9"
BIRTH = "1980-05-17"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any) -> Iterator[ServedGateway]:
    home = tmp_path_factory.mktemp("lifecycle") / "home"
    url = pg_schemas.new() if pg_schemas is not None else None
    gateway = prepare_demo(
        home, url, workers=2, extra_env={"CADUCEE_NOTIFICATIONS__SMS_SENDER": "file"}
    )
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop_all()


def _sms(served: ServedGateway) -> list[dict[str, str]]:
    path = served.home / "notifications" / "sms.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _create(served: ServedGateway, env: dict[str, str] | None = None) -> tuple[str, str]:
    ins = valid_ins()
    before = len(_sms(served))
    output = run_cli(
        env or served.env, "patient", "create", "--ins", ins, "--birth-name", "Dupont",
        "--given-name", "Marie", "--birth-date", BIRTH, "--sex", "F", "--birthplace", "75056",
        "--phone", PHONE, "--home", str(served.home),
    )  # fmt: skip
    assert "activation code sent by sms" in output
    assert "activation code:" not in output  # delivered, so not printed
    sent = _sms(served)[before:]
    assert len(sent) == 1 and sent[0]["to"] == PHONE
    code = sent[0]["text"].split(" : ", 1)[1].split()[0]
    return f"{ins}@patient.mssante.fr", code


def _post(served: ServedGateway, path: str, body: Any, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{served.ports['http']}{path}",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        data = response.read()
        kind = response.headers.get("Content-Type", "")
    return json.loads(data) if kind.startswith("application/json") else data


def _get(served: ServedGateway, path: str, auth: str) -> tuple[int, bytes, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{served.ports['http']}{path}",
        headers={"Authorization": auth, "Accept": "application/fhir+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def _basic(address: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{address}:{password}".encode()).decode()


def _activate(served: ServedGateway, address: str, code: str) -> None:
    enrolment = _post(
        served, "/api/enrolment/start", {"address": address, "code": code, "birth_date": BIRTH}
    )
    secret = enrolment["totp_secret"]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    done = _post(
        served,
        "/api/enrolment/complete",
        {"address": address, "code": code, "birth_date": BIRTH, "password": PASSWORD,
         "totp": totp_now(key)},
    )  # fmt: skip
    assert done["status"] == "active"


def _show(served: ServedGateway, address: str) -> dict[str, Any]:
    return dict(json.loads(served.cli("patient", "show", address, "--json")))


def _refusal(served: ServedGateway, address: str) -> tuple[int, bytes] | None:
    raw = served.message(to=address, subject="Nouveau message")
    with served.smtp() as client:
        try:
            refused = client.sendmail(served.peer["professional"], [address], raw)
        except smtplib.SMTPRecipientsRefused as error:
            code, text = error.recipients[address]
            return code, text
    assert not refused
    return None


def _filing_done(served: ServedGateway) -> bool:
    components = served.components()
    try:
        with components.database.reading() as session:
            waiting = session.scalar(
                select(func.count())
                .select_from(JobRow)
                .where(JobRow.kind == FILE_DOCUMENTS_JOB, JobRow.state.in_((READY, RUNNING)))
            )
        return waiting == 0
    finally:
        components.close()


def _imap_count(served: ServedGateway, account: Account) -> int:
    client = served.imap(account)
    try:
        total = 0
        _status, folders = client.list()
        for line in folders:
            assert isinstance(line, bytes)
            name = line.decode().rsplit(' "/" ', 1)[-1]
            status, data = client.status(name, "(MESSAGES)")
            assert status == "OK"
            total += int(data[0].decode().rsplit("MESSAGES ", 1)[1].rstrip(")"))
        return total
    finally:
        client.logout()


R4_BUNDLE_TYPES = {
    "document", "message", "transaction", "transaction-response", "batch", "batch-response",
    "history", "searchset", "collection",
}  # fmt: skip
R4_DOCUMENT_STATUSES = {"current", "superseded", "entered-in-error"}
R4_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _check_fhir_r4_bundle(bundle: dict[str, Any]) -> list[bytes]:
    """The Bundle holds to the R4 rules a reader relies on; the Binaries' decoded content."""
    assert bundle["resourceType"] == "Bundle" and bundle["type"] in R4_BUNDLE_TYPES
    assert datetime.fromisoformat(bundle["timestamp"]).tzinfo is not None  # an instant
    binaries = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"].startswith("https://")
        assert entry["fullUrl"].endswith(f"/{resource['resourceType']}/{resource['id']}")
        assert R4_ID.fullmatch(resource["id"])
        if resource["resourceType"] == "DocumentReference":
            assert resource["status"] in R4_DOCUMENT_STATUSES
            assert {"reference", "identifier"} & set(resource["subject"])  # a Reference
            assert resource["content"] and all(
                c["attachment"]["contentType"] for c in resource["content"]
            )
        else:
            assert resource["resourceType"] == "Binary" and resource["contentType"]
            binaries.append(base64.b64decode(resource["data"], validate=True))
    return binaries


def test_i1_i2_i3_create_activate_receive_export_close_reopen(
    served: ServedGateway, tmp_path: Path
) -> None:
    address, code = _create(served)
    assert _show(served, address)["status"] == "created"
    refusal = _refusal(served, address)  # I1: not open yet, and said so (not "closed")
    assert refusal == (550, b"5.2.1 This patient's space is not open yet (awaiting activation)")
    _activate(served, address, code)
    assert _show(served, address)["status"] == "active"
    password = served.cli("account", "app-password", "add", address, "--label", "imap")
    account = Account(address, password.strip().splitlines()[-1])

    served.send(served.message(to=address, subject="Premier"), to=address)
    served.send(
        served.message(
            to=address, subject="Compte rendu",
            attachment=("compte-rendu.pdf", b"%PDF-1.4\n%%EOF\n", "application/pdf"),
        ),
        to=address,
    )  # fmt: skip
    assert wait_until(lambda: _imap_count(served, account) == 2)
    wait_until(lambda: _filing_done(served), timeout=60)

    status, body, _kind = _get(
        served, "/fhir/DocumentReference", _basic(account.address, account.password)
    )
    assert status == 200
    fhir_total = int(json.loads(body)["total"])
    assert fhir_total >= 1  # the PDF report was filed

    output = tmp_path / "export.zip"
    served.cli("patient", "export", address, "--output", str(output))
    with zipfile.ZipFile(output) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        bundle = json.loads(archive.read("fhir/bundle.json"))
        documents = [name for name in archive.namelist() if name.startswith("documents/")]
        mboxes = [name for name in archive.namelist() if name.endswith(".mbox")]
        archive.extractall(tmp_path / "unzipped")
    in_mbox = sum(len(mailbox.mbox(str(tmp_path / "unzipped" / name))) for name in mboxes)
    assert in_mbox == _imap_count(served, account) == 2
    assert len(documents) == fhir_total == len(manifest["documents"])
    binaries = _check_fhir_r4_bundle(bundle)
    kinds = [entry["resource"]["resourceType"] for entry in bundle["entry"]]
    assert kinds.count("DocumentReference") == kinds.count("Binary") == fhir_total
    with zipfile.ZipFile(output) as archive:  # the files as filed are the Bundle's Binaries
        assert sorted(archive.read(name) for name in documents) == sorted(binaries)

    served.cli("patient", "close", address)
    refusal = _refusal(served, address)
    assert refusal == (550, b"5.2.1 This patient's space is closed")
    with pytest.raises(imaplib.IMAP4.error):
        served.imap(account)
    status, _body, kind = _get(served, "/fhir/DocumentReference", _basic(address, account.password))
    assert status == 401 and kind.startswith("application/")

    served.cli("patient", "reopen", address)
    assert _refusal(served, address) is None  # mail accepted again
    assert wait_until(lambda: _imap_count(served, account) == 3)  # old mail back, and the new


def test_i1_opposition_never_opens_and_the_proof_downloads(served: ServedGateway) -> None:
    address, code = _create(served)
    proof = _post(
        served, "/api/enrolment/oppose", {"address": address, "code": code, "birth_date": BIRTH}
    )
    assert isinstance(proof, bytes) and proof.startswith(b"%PDF-")
    assert _show(served, address)["status"] == "opposed"
    refusal = _refusal(served, address)
    assert refusal == (550, b"5.2.1 This patient declined the space; it receives no mail")
    served.cli("patient", "run-due")
    assert _show(served, address)["status"] == "opposed"
    token = served.cli("admin", "token", "create", "--scope", "patients:read").splitlines()[-1]
    status, body, kind = _get(
        served, f"/admin/patients/{address}/opposition-proof", f"Bearer {token}"
    )
    assert status == 200 and kind == "application/pdf" and body.startswith(b"%PDF-")
    with pytest.raises(urllib.error.HTTPError):  # the code served once
        _post(served, "/api/enrolment/start", {"address": address, "code": code,
                                                "birth_date": BIRTH})  # fmt: skip


def test_i1_space_opens_by_itself_after_the_configured_delay(served: ServedGateway) -> None:
    env = {**served.env, "CADUCEE_LIFECYCLE__OPEN_AFTER_DAYS": "0.00002"}  # about 1.7 s
    address, _code = _create(served, env)  # created, and its opening job scheduled
    wait_until(lambda: _show(served, address)["status"] == "active", timeout=60)
    assert _show(served, address)["opened_by"] == "automatic"
    assert _refusal(served, address) is None


def test_a2_test_ins_refused_once_test_mode_is_off(tmp_path: Path, pg_schemas: Any) -> None:
    """The demo patient (test INS OID) gets mail in test mode, and none once it is switched off."""
    url = pg_schemas.new() if pg_schemas is not None else None
    gateway = prepare_demo(tmp_path / "home", url)
    patient = gateway.credentials["patient"]["address"]
    gateway.start()
    try:
        assert _refusal(gateway, patient) is None  # test mode (the demo's): accepted
        gateway.stop()
        gateway.env["CADUCEE_GATEWAY__TEST_MODE"] = "false"
        gateway.start()
        refusal = _refusal(gateway, patient)
        assert refusal == (
            550, b"5.2.1 This patient's space uses a test INS; this gateway is not in test mode"
        )  # fmt: skip
    finally:
        gateway.stop_all()


def _notices(served: ServedGateway, address: str) -> list[str]:
    return [m["subject"] for m in served.mailbox(address) if m["folder"] == "INBOX"]


def test_i4_idle_professional_flagged_told_then_disabled_after_the_configured_delays(
    served: ServedGateway,
) -> None:
    """Delays of about 1.7 s each, from the environment as an operator would configure them."""
    env = {
        **served.env,
        "CADUCEE_LIFECYCLE__IDLE_FLAG_DAYS": "0.00002",
        "CADUCEE_LIFECYCLE__IDLE_DISABLE_DAYS": "0.00002",
    }
    professional = served.professional
    served.imap(professional).logout()  # a sign-in: the idle time counts from now
    notice = "Boîte aux lettres inutilisée / Unused mailbox"

    def sweep() -> str:
        return run_cli(env, "account", "idle-sweep", "--home", str(served.home))

    wait_until(lambda: sweep() and notice in _notices(served, professional.address), timeout=60)
    wait_until(lambda: sweep() and _state(served, professional.address) == "suspended", timeout=60)
    assert _notices(served, professional.address).count(notice) == 1  # told once
    with pytest.raises(imaplib.IMAP4.error):  # disabled: refused on the door
        served.imap(professional)
    served.cli("account", "resume", professional.address)
    served.imap(professional).logout()


def _state(served: ServedGateway, address: str) -> str | None:
    components = served.components()
    try:
        with components.database.reading() as session:
            return session.scalar(select(AccountRow.state).where(AccountRow.address == address))
    finally:
        components.close()
