"""B5: a crash at any instant loses no acknowledged message and duplicates none.

Twenty client sessions send to the demo patient while the server is killed
with SIGKILL at a random instant; after a restart, every message that received
``250`` is in the patient's mailbox exactly once. Ten cycles.

With ``[smtp] processes = 2`` the SMTP worker process takes the operators' sessions and, on
SQLite, hands each delivery to the main process to commit: the cycles there kill either
process. A worker's ``250`` must still mean committed, whichever side dies.
"""

from __future__ import annotations

import os
import random
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from caducee.mailboxes.accounts.store import find_account
from caducee.mailboxes.models import Folder, MailboxEntry, StoredMessage
from tests.harness.processes import child_pids, running
from tests.harness.served import ServedGateway, prepare_demo
from tests.harness.waiting import wait_until

SESSIONS = 20
CYCLES = 10
WORKER_CYCLES = 6


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


def _kill_under_load(
    gateway: ServedGateway, rng: random.Random, cycle: int, kill: Callable[[], None]
) -> int:
    """Load, ``kill`` at a random point, check the mailbox against the acknowledgements."""
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
        lambda: len(acknowledged) >= wanted,
        timeout=60,
        interval=0.01,
        message=f"cycle {cycle}: the load delivered nothing before the kill",
    )
    kill()
    stop.set()
    for thread in threads:
        thread.join(30)
    if gateway.process is None:
        gateway.start()
    stored = _stored_message_ids(gateway)
    missing = [m for m in acknowledged if stored[m] == 0]
    duplicated = [m for m, n in stored.items() if n > 1]
    assert not missing, f"cycle {cycle}: {len(missing)} acknowledged messages lost"
    assert not duplicated, f"cycle {cycle}: {len(duplicated)} messages stored twice"
    return len(acknowledged)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_b5_sigkill_under_load_loses_and_duplicates_nothing(gateway: ServedGateway) -> None:
    rng = random.Random(5)

    def kill() -> None:
        assert gateway.stop("serve", signal.SIGKILL) == -signal.SIGKILL

    total = sum(_kill_under_load(gateway, rng, cycle, kill) for cycle in range(CYCLES))
    print(f"{total} messages acknowledged over {CYCLES} SIGKILL cycles")


@pytest.fixture
def with_smtp_worker(tmp_path: Path, pg_schemas: Any) -> Iterator[ServedGateway]:
    """A served demo home with ``[smtp] processes = 2``."""
    database_url = pg_schemas.new() if pg_schemas is not None else None
    served = prepare_demo(
        tmp_path / "home", database_url, extra_env={"CADUCEE_SMTP__PROCESSES": "2"}
    )
    served.start()
    try:
        yield served
    finally:
        workers = child_pids(served.process.pid) if served.process is not None else []
        served.stop_all()  # each process exits 0
        assert not [pid for pid in workers if running(pid)]


def _kill_either(gateway: ServedGateway, rng: random.Random, cycle: int) -> int:
    """One cycle: SIGKILL to the SMTP worker (even cycles) or to the main process (odd)."""
    assert gateway.process is not None
    main_pid = gateway.process.pid
    workers = wait_until(lambda: child_pids(main_pid), message="no SMTP worker process")

    def kill_main() -> None:
        assert gateway.stop("serve", signal.SIGKILL) == -signal.SIGKILL
        # its worker stops by itself: no process serves the port without the main one
        wait_until(lambda: not any(running(pid) for pid in workers), timeout=60)

    def kill_worker() -> None:
        os.kill(workers[0], signal.SIGKILL)  # the main process starts another

    return _kill_under_load(gateway, rng, cycle, kill_main if cycle % 2 else kill_worker)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_b5_sigkill_of_the_main_process_or_its_smtp_worker_loses_and_duplicates_nothing(
    with_smtp_worker: ServedGateway,
) -> None:
    rng = random.Random(19)
    total = sum(_kill_either(with_smtp_worker, rng, cycle) for cycle in range(WORKER_CYCLES))
    print(f"{total} messages acknowledged over {WORKER_CYCLES} SIGKILL cycles, either process")
