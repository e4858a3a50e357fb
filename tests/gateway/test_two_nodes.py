"""K2/B5 on two nodes: two ``caducee serve`` processes share one PostgreSQL and one S3 store.

Each node holds nothing but its home folder's configuration, keys and certificates
(a copy of the first node's: what an operator deploys on a second host). The nodes
listen on separate loopback addresses (127.0.0.2 and 127.0.0.3) with a server
certificate naming both, as one issued for a service behind two addresses would.

Mail is sent through one node and read over IMAP through the other; then both nodes
take load and the first is killed with SIGKILL: every message acknowledged by either
node is in the patient's mailbox exactly once, and the survivor finishes every job
the dead node had claimed (filing of the PDF reports) once their leases run out.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, or_, select

from caducee.gateway import pki
from caducee.storage.jobs import DONE, READY, JobRow
from tests.harness.s3 import MotoServer, start_moto
from tests.harness.served import (
    LISTENERS,
    Account,
    ServedGateway,
    free_port,
    prepare_demo,
)
from tests.harness.waiting import wait_until

NODE_ADDRESSES = ("127.0.0.2", "127.0.0.3")
LEASE_SECONDS = 5
SESSIONS_PER_NODE = 4

pytestmark = pytest.mark.postgres_only


def _node_certificate(home: Path) -> None:
    """Replace the home's server certificate by one naming both node addresses."""
    ca = pki.load(home / "tls" / "ca.pem", home / "tls" / "ca.key")
    server = pki.issue(
        ca,
        "mx.caducee.localhost",
        organisation="Caducée development operator",
        dns_names=["mx.caducee.localhost", "localhost"],
        ip_addresses=list(NODE_ADDRESSES),
    )
    pki.save(server, home / "tls" / "server.pem", home / "tls" / "server.key")


def _second_node(first: ServedGateway, home: Path) -> ServedGateway:
    """A copy of the first node's home on the other address and ports, same database and bucket."""
    shutil.copytree(first.home, home, ignore=shutil.ignore_patterns("*.log"))
    env = dict(first.env)
    env["CADUCEE_LISTENERS__HOST"] = NODE_ADDRESSES[1]
    ports = {name: free_port() for name in LISTENERS}
    for name, port in ports.items():
        env[f"CADUCEE_LISTENERS__{name.upper()}"] = str(port)
    credentials = dict(first.credentials)
    return ServedGateway(home=home, env=env, ports=ports, credentials=credentials)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from start_moto(tmp_path_factory.mktemp("moto-nodes"))


@pytest.fixture
def nodes(
    tmp_path: Path, pg_schemas: Any, s3_server: MotoServer
) -> Iterator[tuple[ServedGateway, ServedGateway]]:
    assert pg_schemas is not None
    env = {
        **s3_server.env(s3_server.new_bucket()),
        "CADUCEE_BLOBS__INLINE_MAX_BYTES": "0",  # every body is an object of the shared bucket
        "CADUCEE_LISTENERS__HOST": NODE_ADDRESSES[0],
        "CADUCEE_QUEUE__LEASE_SECONDS": str(LEASE_SECONDS),
        "CADUCEE_IDENTITY__FREE_FAILURES_PER_ACCOUNT_IP": "3",
        "CADUCEE_IDENTITY__FAILURE_DELAY_SECONDS": "120",
    }
    first = prepare_demo(tmp_path / "node-a", pg_schemas.new(), workers=1, extra_env=env)
    _node_certificate(first.home)
    second = _second_node(first, tmp_path / "node-b")
    first.start()
    try:
        second.start()
        try:
            yield first, second
        finally:
            second.stop_all()
    finally:
        first.stop_all()


def _message_id(raw: bytes) -> str:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return str(parsed["Message-ID"])


def _ids_over_imap(node: ServedGateway) -> Counter[str]:
    """The Message-IDs of the patient's INBOX, read over IMAP from ``node``."""
    patient = node.credentials["patient"]
    client = node.imap(Account(patient["address"], patient["password"]))
    try:
        client.select("INBOX", readonly=True)
        status, data = client.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert status == "OK", data
        found: Counter[str] = Counter()
        for item in data:
            if isinstance(item, tuple):
                header = email.message_from_bytes(item[1], policy=email.policy.default)
                found[str(header["Message-ID"])] += 1
        return found
    finally:
        client.logout()


def _unfinished_jobs(node: ServedGateway) -> dict[str, int]:
    """Jobs not done, by state, kind and last error.

    A job waiting to retry is not done; a periodic job scheduled for later (the lifecycle
    sweep) is not work left behind.
    """
    components = node.components()
    try:
        with components.database.reading() as session:
            rows = session.execute(
                select(JobRow.state, JobRow.kind, JobRow.last_error, func.count())
                .where(JobRow.state != DONE)
                .where(
                    or_(
                        JobRow.state != READY,
                        JobRow.next_attempt_at <= datetime.now(UTC),
                        JobRow.last_error.is_not(None),
                    )
                )
                .group_by(JobRow.state, JobRow.kind, JobRow.last_error)
            ).all()
    finally:
        components.close()
    return {f"{state} {kind} {error}": count for state, kind, error, count in rows}


def _load(
    node: ServedGateway,
    stop: threading.Event,
    acknowledged: list[str],
    pdf: bytes,
    number: int,
) -> None:
    """One client session after another on ``node`` until told to stop or the node dies."""
    patient = node.credentials["patient"]["address"]
    sender = node.peer["professional"]
    sequence = 0
    while not stop.is_set():
        try:
            with node.smtp() as client:
                while not stop.is_set():
                    sequence += 1
                    attachment = ("cr.pdf", pdf, "application/pdf") if sequence % 3 == 0 else None
                    raw = node.message(
                        subject=f"charge {node.host} {number}-{sequence}",
                        body="x\n",
                        attachment=attachment,
                    )
                    client.sendmail(sender, [patient], raw)
                    acknowledged.append(_message_id(raw))
        except (smtplib.SMTPException, OSError):
            if node.process is None or node.process.poll() is not None:
                return  # the node was killed: this client's work is over
            time.sleep(0.05)


@pytest.mark.timeout(600)
def test_k2_b5_two_nodes_share_mail_and_jobs_and_survive_a_sigkill(
    nodes: tuple[ServedGateway, ServedGateway], n1_pdf: bytes
) -> None:
    first, second = nodes
    assert (first.host, second.host) == NODE_ADDRESSES

    # Sent through one node, read through the other.
    raw = first.message(subject="Par le premier nœud")
    first.send(raw)
    wait_until(
        lambda: _ids_over_imap(second)[_message_id(raw)] == 1,
        timeout=30,
        message="the message accepted by node A is not readable through node B",
    )

    # Both nodes under load; node A killed after some acknowledgements.
    acknowledged: dict[str, list[str]] = {first.host: [], second.host: []}
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_load, args=(node, stop, acknowledged[node.host], n1_pdf, n), daemon=True
        )
        for node in (first, second)
        for n in range(SESSIONS_PER_NODE)
    ]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: len(acknowledged[first.host]) >= 40 and len(acknowledged[second.host]) >= 10,
        timeout=120,
        interval=0.01,
        message="the load delivered too little before the kill",
    )
    assert first.stop("serve", signal.SIGKILL) == -signal.SIGKILL
    after_kill = len(acknowledged[second.host])
    wait_until(
        lambda: len(acknowledged[second.host]) >= after_kill + 10,
        timeout=60,
        message="node B stopped accepting mail when node A died",
    )
    stop.set()
    for thread in threads:
        thread.join(60)

    # Node B finishes what node A had claimed (after the lease) and what was queued.
    wait_until(
        lambda: not _unfinished_jobs(second),
        timeout=LEASE_SECONDS * 12 + 60,
        message=lambda: f"jobs left unfinished by the survivor: {_unfinished_jobs(second)}",
    )

    stored = _ids_over_imap(second)
    every = [raw_id for ids in acknowledged.values() for raw_id in ids]
    missing = [message_id for message_id in every if stored[message_id] == 0]
    duplicated = [message_id for message_id, count in stored.items() if count > 1]
    assert not missing, f"{len(missing)} of {len(every)} acknowledged messages lost"
    assert not duplicated, f"{len(duplicated)} messages stored twice"
    print(
        f"node A acknowledged {len(acknowledged[first.host])}, node B "
        f"{len(acknowledged[second.host])}; {sum(stored.values())} in the INBOX"
    )


def _auth_reply(node: ServedGateway, password: str) -> int:
    """The SMTP code one AUTH PLAIN as the demo professional gets on ``node``."""
    with node.submit("professional", login=False) as client:
        client.ehlo()
        client.user = node.credentials["professional"]["address"]
        client.password = password
        try:
            code, _reply = client.auth("PLAIN", client.auth_plain)
        except smtplib.SMTPAuthenticationError as refused:
            return int(refused.smtp_code)
        return code


def test_c1_k2_failed_sign_ins_on_one_node_delay_the_same_attempts_on_the_other(
    nodes: tuple[ServedGateway, ServedGateway],
) -> None:
    first, second = nodes
    for _ in range(3):  # the third failure spends the free ones: a block of two minutes
        assert _auth_reply(first, "pas-le-bon-mot-de-passe") == 535
    assert _auth_reply(first, "pas-le-bon-mot-de-passe") == 454
    wait_until(
        lambda: _auth_reply(second, "pas-le-bon-mot-de-passe") == 454,
        message="the second node still checks passwords the first node blocked",
    )
    # the right password is not checked either while the block runs (no oracle)
    assert _auth_reply(second, second.credentials["professional"]["password"]) == 454
