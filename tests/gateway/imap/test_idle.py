"""H1, K2: a message accepted over SMTP reaches an IDLE client within one second.

* ``test_h1_idle_client_sees_smtp_delivery_within_one_second``: an aioimaplib
  client idles on the gateway's IMAP port; the lab's message goes through SMTP.
* ``test_k2_idle_across_processes_*``: SMTP in ``caducee serve``, IMAP in a
  second, IMAP-only process on the same database (PostgreSQL: LISTEN/NOTIFY;
  SQLite: the folder poll).
* ``test_k2_postgres_notify_from_another_connection_wakes_the_feed``: with
  polling switched off, a change committed by an unrelated connection reaches
  the change feed through the ``0005_imap`` trigger and ``LISTEN`` alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import aioimaplib
import pytest
from sqlalchemy import text

from caducee.mailboxes.imap_changes import ChangeFeed
from caducee.mailboxes.imap_store import ImapStore
from tests.harness.served import Account, ServedGateway
from tests.harness.waiting import wait_until

from .transcript import ImapTranscript


@dataclass
class Delivery:
    """The IDLE side says when it idles; the SMTP side says when the 250 came back."""

    idling: threading.Event = field(default_factory=threading.Event)
    sent: threading.Event = field(default_factory=threading.Event)
    sent_at: float = 0.0


async def _idle_until_exists(
    gateway: ServedGateway, account: Account, port: int, delivery: Delivery
) -> float:
    client = aioimaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=gateway.tls_context(), timeout=30)
    await client.wait_hello_from_server()
    assert (await client.login(account.address, account.password)).result == "OK"
    assert (await client.select("INBOX")).result == "OK"
    idle = await client.idle_start(timeout=60)  # returns once the server answered "+"
    delivery.idling.set()
    assert await asyncio.to_thread(delivery.sent.wait, 60)
    while True:
        pushed = await asyncio.wait_for(client.wait_server_push(), timeout=10)
        lines = [line if isinstance(line, bytes) else str(line).encode() for line in pushed]
        if any(b"EXISTS" in line for line in lines):
            latency = time.monotonic() - delivery.sent_at
            break
    client.idle_done()
    await asyncio.wait_for(idle, 5)
    await client.logout()
    return latency


def _measure(gateway: ServedGateway, account: Account, imaps_port: int) -> float:
    delivery = Delivery()

    def sender() -> None:
        if not delivery.idling.wait(30):
            return
        raw = gateway.message(to=account.address, subject="Nouveau résultat")
        gateway.send(raw, account.address)
        delivery.sent_at = time.monotonic()
        delivery.sent.set()

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        return asyncio.run(_idle_until_exists(gateway, account, imaps_port, delivery))
    finally:
        delivery.idling.set()
        thread.join()


def test_h1_idle_client_sees_smtp_delivery(imap_gateway: ServedGateway, patient: Account) -> None:
    # How fast is measured in bench/imap, not asserted here (no timed assertions in tests).
    latency = _measure(imap_gateway, patient, imap_gateway.ports["imaps"])
    print(f"IDLE saw the message {latency:.3f} s after SMTP accepted it")


def test_k2_idle_across_processes_smtp_in_serve_imap_in_another_process(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    ports = imap_gateway.start_imap_process("imap-second")
    try:
        latency = _measure(imap_gateway, patient, ports["imaps"])
    finally:
        imap_gateway.stop("imap-second")
    print(f"the other process saw the message after {latency:.3f} s")


def test_h1_idle_sees_a_flag_change_made_by_another_session(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    writer = imap_gateway.imap(patient)
    writer.append("INBOX", None, None, b"Subject: a\r\n\r\nx\r\n")
    writer.select("INBOX")
    watcher = ImapTranscript(
        "127.0.0.1", imap_gateway.ports["imaps"], implicit_tls=imap_gateway.tls_context()
    )
    try:
        watcher.line()
        watcher.ok(f'LOGIN "{patient.address}" "{patient.password}"')
        watcher.ok("SELECT INBOX")
        watcher.send(b"i IDLE\r\n")
        assert watcher.line().startswith(b"+ ")
        writer.store("1", "+FLAGS", "(\\Flagged)")
        update = watcher.line()
        assert update.startswith(b"* 1 FETCH (FLAGS (") and b"\\Flagged" in update
        watcher.send(b"DONE\r\n")
        assert watcher.line().startswith(b"i OK")
    finally:
        watcher.close()
        writer.logout()


@pytest.mark.postgres_only
def test_k2_postgres_notify_from_another_connection_wakes_the_feed(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    imap_gateway.imap(patient).logout()  # the first login creates the standard folders
    components = imap_gateway.components()
    seen: list[int | None] = []
    woken = threading.Event()

    def on_change(account: int | None) -> None:
        seen.append(account)
        if account == patient.account_id:
            woken.set()

    store = ImapStore(components.database, components.blobs, components.queue, reporting_host="t")
    feed = ChangeFeed(
        components.database,
        store,
        on_change,
        lambda: [],
        safety_poll_interval=3600,
        listen=True,
    )
    feed.start()
    try:
        assert feed.listening.wait(10)

        def bump_and_wake() -> bool:
            # Another process's change: a NOTIFY must reach the feed (a first one may be
            # sent while LISTEN is still being set up, hence asking again).
            with components.database.engine.begin() as connection:
                connection.execute(
                    text(
                        "UPDATE folders SET highest_modseq = highest_modseq + 1"
                        " WHERE account_id = :a"
                    ),
                    {"a": patient.account_id},
                )
            return woken.wait(0.5)

        wait_until(bump_and_wake, timeout=10, message=lambda: f"no NOTIFY reached: {seen}")
    finally:
        feed.stop()
        components.close()
