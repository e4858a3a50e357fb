"""G1 on a served gateway: mail over SMTP tells the patient by SMS, and says nothing of it.

Since issue 19 a delivery collects the patient's ``new-message`` event into their
notification batch in its own transaction, instead of queueing a ``notify-patient`` job per
message: the SMS must still come, once the grouping window is over, with counts only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from caducee.mailboxes.delivery import NOTIFY_PATIENT_JOB
from caducee.mailboxes.notifications.patients import NotificationSettings, update_preferences
from caducee.storage.jobs import JobRow
from tests.harness.served import Account, ServedGateway, prepare_demo
from tests.harness.waiting import wait_until

PHONE = "+33698765432"
SUBJECT = "Compte rendu de biologie 4417"
_MESSAGES = re.compile(r"(\d+) nouveaux? messages?")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any) -> Iterator[ServedGateway]:
    home = tmp_path_factory.mktemp("notify-on-delivery") / "home"
    url = pg_schemas.new() if pg_schemas is not None else None
    gateway = prepare_demo(
        home,
        url,
        workers=2,
        extra_env={
            "CADUCEE_NOTIFICATIONS__SMS_SENDER": "file",
            "CADUCEE_NOTIFICATIONS__GROUPING_WINDOW_SECONDS": "2",
        },
    )
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop_all()


def _sms_to(served: ServedGateway, phone: str) -> list[str]:
    path = served.home / "notifications" / "sms.jsonl"
    if not path.exists():
        return []
    sent = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [sms["text"] for sms in sent if sms["to"] == phone]


def _give_phone(served: ServedGateway, patient: Account) -> None:
    components = served.components()
    try:
        with components.database.transaction() as session:
            update_preferences(
                session,
                patient.account_id,
                {"phone": PHONE},
                NotificationSettings.from_settings(components.settings),
                actor_kind="patient",
                actor_id=f"account:{patient.account_id}",
                channel="http",
            )
    finally:
        components.close()


def _new_message_jobs(served: ServedGateway, account_id: int) -> int:
    components = served.components()
    try:
        with components.database.reading() as session:
            payloads = session.scalars(
                select(JobRow.payload).where(JobRow.kind == NOTIFY_PATIENT_JOB)
            ).all()
    finally:
        components.close()
    return sum(
        1
        for payload in payloads
        if payload.get("event") == "new-message" and payload.get("account_id") == account_id
    )


def test_g1_mail_over_smtp_reaches_the_patient_as_a_content_free_sms(
    served: ServedGateway,
) -> None:
    patient = served.new_patient()
    _give_phone(served, patient)
    for _ in range(2):
        served.send(served.message(to=patient.address, subject=SUBJECT), to=patient.address)

    def told() -> int:
        return sum(
            int(match.group(1))
            for text in _sms_to(served, PHONE)
            if (match := _MESSAGES.search(text))
        )

    wait_until(lambda: told() >= 2, message=lambda: f"SMS so far: {_sms_to(served, PHONE)}")
    assert told() == 2  # each message counted once, in one SMS or two
    _, ins = served.patient_ids(patient.address)
    for text in _sms_to(served, PHONE):
        assert text.startswith("Votre espace santé : ")
        for secret in (SUBJECT, "biologie", ins, patient.address, served.peer["professional"]):
            assert secret not in text
    # the deliveries collected their events themselves: no job was queued for them
    assert _new_message_jobs(served, patient.account_id) == 0
