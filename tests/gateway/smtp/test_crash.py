"""B5: a crash at any instant loses no acknowledged message and duplicates none.

Twenty client sessions send to the demo patient while the server is killed
with SIGKILL at a random instant; after a restart, every message that received
``250`` is in the patient's mailbox exactly once. Ten cycles.
"""

from __future__ import annotations

import random
import signal
import smtplib
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import select

from caducee.mailboxes.accounts.store import find_account
from caducee.mailboxes.models import Folder, MailboxEntry, StoredMessage
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

SESSIONS = 20
CYCLES = 10


def _client(
    gateway: ServedGateway, stop: threading.Event, acknowledged: list[str], number: int
) -> None:
    patient = gateway.credentials["patient"]["address"]
    sender = gateway.peer["professional"]
    sequence = 0
    while not stop.is_set():
        try:
            with gateway.smtp() as client:
                while not stop.is_set():
                    sequence += 1
                    message = gateway.message(subject=f"charge {number}-{sequence}", body="x\n")
                    message_id = next(
                        line.split(b" ", 1)[1].decode()
                        for line in message.split(b"\r\n")
                        if line.startswith(b"Message-ID:")
                    )
                    client.sendmail(sender, [patient], message)
                    acknowledged.append(message_id)
        except (smtplib.SMTPException, OSError):
            time.sleep(0.05)


def _stored_message_ids(gateway: ServedGateway) -> Counter[str]:
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            account = find_account(session, gateway.credentials["patient"]["address"])
            assert account is not None
            rows = session.scalars(
                select(StoredMessage.message_id_header)
                .join(MailboxEntry, MailboxEntry.message_id == StoredMessage.id)
                .join(Folder, Folder.id == MailboxEntry.folder_id)
                .where(Folder.account_id == account.id)
            ).all()
    finally:
        components.close()
    return Counter(row for row in rows if row)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_b5_sigkill_under_load_loses_and_duplicates_nothing(gateway: ServedGateway) -> None:
    rng = random.Random(5)
    acknowledged_total = 0
    for cycle in range(CYCLES):
        acknowledged: list[str] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=_client, args=(gateway, stop, acknowledged, n), daemon=True)
            for n in range(SESSIONS)
        ]
        for thread in threads:
            thread.start()
        # Kill at a random point of the load: after a random number of acknowledgements.
        wanted = rng.randint(5, 80)
        wait_until(
            lambda: len(acknowledged) >= wanted,  # noqa: B023 - waited on within the cycle
            timeout=60,
            interval=0.01,
            message=f"cycle {cycle}: the load delivered nothing before the kill",
        )
        assert gateway.stop("serve", signal.SIGKILL) == -signal.SIGKILL
        stop.set()
        for thread in threads:
            thread.join(30)
        gateway.start()
        stored = _stored_message_ids(gateway)
        missing = [m for m in acknowledged if stored[m] == 0]
        duplicated = [m for m, n in stored.items() if n > 1]
        assert not missing, f"cycle {cycle}: {len(missing)} acknowledged messages lost"
        assert not duplicated, f"cycle {cycle}: {len(duplicated)} messages stored twice"
        acknowledged_total += len(acknowledged)
    print(f"{acknowledged_total} messages acknowledged over {CYCLES} SIGKILL cycles")
