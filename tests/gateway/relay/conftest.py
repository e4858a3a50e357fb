"""A real TLS SMTP sink (aiosmtpd) standing for another operator, and a relay wired to it.

The sink has its own CA and certificate (naming its domain), offers STARTTLS
and requires it, asks for a client certificate and verifies it against the
gateway's CA, checks the DKIM signature of what it receives (dkimpy, with our
public key instead of DNS) and records everything. It can be told to answer
250, 451 or 550 (to everyone, or per address), or be down.

The relay under test is built in-process on a ``caducee init --demo`` home
(SQLite or PostgreSQL), with a static route to the sink and an injectable
clock: tests drive attempts one by one and jump hours or days between them.
"""

from __future__ import annotations

import email
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import select, update

from caducee.config import Settings, load_settings
from caducee.directory.anchors import add_anchors
from caducee.directory.trust_models import add_trust_domain
from caducee.gateway import pki
from caducee.gateway.relay import RelayTiming, make_relay_handler
from caducee.gateway.runtime import Gateway, build_gateway
from caducee.mailboxes.accounts.store import find_account
from caducee.mailboxes.models import Folder, MailboxEntry, StoredMessage
from caducee.mailboxes.relay.models import RelayMessage, RelayRecipient
from caducee.mailboxes.relay.outbound import RELAY_JOB, queue_outbound
from caducee.storage.db import utcnow
from caducee.storage.jobs import JobRow
from caducee.storage.worker import WorkerPool
from tests.harness.served import free_port

SINK_DOMAIN = "labo-sink.mssante.fr"
OTHER_DOMAIN = "clinique-sink.mssante.fr"
HOSTED_SENDER = "claire.martin@hopital-demo.mssante.fr"
REMOTE_SENDER = "secretariat@labo-sink.mssante.fr"
SECRET = "Glycémie à jeun : 1,32 g/L — résultat confidentiel"


@dataclass
class Received:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    client_certificate: dict[str, Any]
    tls_version: str | None
    dkim_pass: bool


@dataclass
class SinkHandler:
    """aiosmtpd hooks: answer as told, record what arrives."""

    dkim_records: dict[bytes, bytes]
    answer: str = "250"
    per_address: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    connections: int = 0

    def _refusal(self, address: str) -> str | None:
        code = self.per_address.get(address.lower(), self.answer)
        if code == "451":
            return "451 4.3.0 Mailbox temporarily unavailable, try again later"
        if code == "550":
            return "550 5.1.1 No such user here"
        return None

    async def handle_EHLO(
        self,
        server: SmtpServer,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if session.ssl is None:
            self.connections += 1
        return responses

    async def handle_RCPT(
        self,
        server: SmtpServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self._refusal(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        records = self.dkim_records

        def lookup(name: bytes, timeout: int = 5) -> bytes | None:
            return records.get(name.rstrip(b".").lower())

        try:
            verified = bool(dkim.verify(content, dnsfunc=lookup))
        except Exception:
            verified = False
        ssl_info = session.ssl or {}
        ssl_object = ssl_info.get("ssl_object")
        self.received.append(
            Received(
                mail_from=str(envelope.mail_from or ""),
                rcpt_tos=list(envelope.rcpt_tos),
                content=content,
                client_certificate=dict(ssl_info.get("peercert") or {}),
                tls_version=ssl_object.version() if ssl_object is not None else None,
                dkim_pass=verified,
            )
        )
        return "250 2.0.0 Queued"


class Sink:
    """The other operator's MX: aiosmtpd in a thread, on a fixed port, restartable."""

    def __init__(
        self,
        *,
        cert: Path,
        key: Path,
        client_ca: Path,
        dkim_records: dict[bytes, bytes],
        starttls: bool = True,
    ) -> None:
        self.port = free_port()
        self.handler = SinkHandler(dkim_records)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        context.verify_mode = ssl.CERT_REQUIRED  # the relay must present its certificate
        context.load_verify_locations(cafile=str(client_ca))
        self.context = context if starttls else None
        self.controller: Controller | None = None

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.context is not None:
            kwargs = {"tls_context": self.context, "require_starttls": True}
        for attempt in range(5):  # the port may linger briefly after a stop (busy CI machine)
            controller = Controller(
                self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=30, **kwargs
            )
            try:
                controller.start()
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.5)
                continue
            self.controller = controller
            return

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def received(self) -> list[Received]:
        return self.handler.received


class Clock:
    """The relay's idea of now; tests move it forward."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class RelayBench:
    """A demo gateway, its relay handler, a sink and the keys to check what the sink got."""

    home: Path
    settings: Settings
    gateway: Gateway
    clock: Clock
    timing: RelayTiming
    sink: Sink
    dkim_records: dict[bytes, bytes]
    sink_ca: pki.Issued
    tmp: Path

    def handler(self) -> Any:
        return make_relay_handler(self.gateway, clock=self.clock, timing=self.timing)

    def queue(
        self,
        recipients: list[str],
        *,
        sender: str = HOSTED_SENDER,
        purpose: str = "submission",
        content: bytes | None = None,
    ) -> int:
        raw = content or message(sender or "MAILER-DAEMON@mx.caducee.localhost", recipients)
        with self.gateway.database.transaction() as session:
            return queue_outbound(
                session,
                self.gateway.blobs,
                self.gateway.queue,
                envelope_from=sender,
                recipients=recipients,
                content=raw,
                purpose=purpose,
            )

    def attempt(self, *, rounds: int = 1) -> int:
        """Make every waiting relay job due (the clock may be ahead) and run them once each."""
        ran = 0
        pool = WorkerPool(
            self.gateway.queue, {RELAY_JOB: self.handler()}, workers=0, poll_interval=1
        )
        for _ in range(rounds):
            with self.gateway.database.transaction() as session:
                session.execute(
                    update(JobRow)
                    .where(JobRow.kind == RELAY_JOB, JobRow.state == "ready")
                    .values(next_attempt_at=utcnow() - timedelta(seconds=1))
                )
            while pool.run_once("test-worker"):
                ran += 1
        return ran

    def job(self, job_id: int) -> JobRow:
        with self.gateway.database.reading() as session:
            row = session.get(JobRow, job_id)
            assert row is not None
            session.expunge(row)
            return row

    def relay_message(self, job_id: int) -> RelayMessage:
        with self.gateway.database.reading() as session:
            row = session.get(RelayMessage, job_id)
            assert row is not None
            session.expunge(row)
            return row

    def relay_attempts(self, job_id: int) -> int:
        with self.gateway.database.reading() as session:
            row = session.get(RelayMessage, job_id)
            return row.attempts if row is not None else 0

    def recipients(self, job_id: int) -> dict[str, RelayRecipient]:
        with self.gateway.database.reading() as session:
            rows = list(
                session.scalars(select(RelayRecipient).where(RelayRecipient.job_id == job_id))
            )
            for row in rows:
                session.expunge(row)
        return {row.address: row for row in rows}

    def inbox(self, address: str = HOSTED_SENDER) -> list[EmailMessage]:
        """The messages of the INBOX of a hosted account, parsed."""
        with self.gateway.database.reading() as session:
            account = find_account(session, address)
            assert account is not None
            blob_ids = list(
                session.scalars(
                    select(StoredMessage.blob_id)
                    .join(MailboxEntry, MailboxEntry.message_id == StoredMessage.id)
                    .join(Folder, Folder.id == MailboxEntry.folder_id)
                    .where(Folder.account_id == account.id, Folder.name == "INBOX")
                    .order_by(MailboxEntry.uid)
                )
            )
            raws = [self.gateway.blobs.read(session, blob_id) for blob_id in blob_ids]
        return [parse(raw) for raw in raws]

    def relay_jobs(self) -> list[JobRow]:
        with self.gateway.database.reading() as session:
            rows = list(
                session.scalars(select(JobRow).where(JobRow.kind == RELAY_JOB).order_by(JobRow.id))
            )
            for row in rows:
                session.expunge(row)
        return rows


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def message(sender: str, recipients: list[str], *, subject: str = "Compte rendu") -> bytes:
    """A message as the submission service would queue it (no signature yet)."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ", ".join(recipients)
    mail["Subject"] = subject
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = make_msgid(domain="hopital-demo.mssante.fr")
    mail.set_content(f"Bonjour,\n{SECRET}\n")
    return mail.as_bytes(policy=policy.SMTP)


def sink_certificate(
    ca: pki.Issued,
    folder: Path,
    *,
    names: list[str],
    expired: bool = False,
) -> tuple[Path, Path]:
    if expired:
        issued = pki.issue(
            ca,
            f"mx.{names[0]}",
            organisation="Labo sink",
            dns_names=names,
            not_before=datetime.now(UTC) - timedelta(days=10),
            days=2,
        )
    else:
        issued = pki.issue(ca, f"mx.{names[0]}", organisation="Labo sink", dns_names=names)
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "sink.pem", folder / "sink.key"
    pki.save(issued, cert, key)
    return cert, key


def build_bench(
    home: Path,
    tmp: Path,
    *,
    sink_ca_trusted: bool = True,
    expired: bool = False,
    names: list[str] | None = None,
    starttls: bool = True,
    timing: RelayTiming | None = None,
) -> RelayBench:
    sink_ca = pki.create_ca("Sink operator CA", "Labo sink")
    cert, key = sink_certificate(
        sink_ca, tmp / "sink", names=names or [SINK_DOMAIN], expired=expired
    )
    base = load_settings(home)
    dkim_key = base.path(base.dkim.private_key).read_bytes()
    record = pki.dkim_dns_record(dkim_key).encode("ascii")
    records = {
        f"{base.dkim.selector}._domainkey.{domain}".encode(): record
        for domain in (*base.gateway.hosted_domains, base.gateway.hostname)
    }
    sink = Sink(
        cert=cert,
        key=key,
        client_ca=base.path(base.tls.ca_cert),
        dkim_records=records,
        starttls=starttls,
    )
    route = f"127.0.0.1:{sink.port}"
    settings = base.model_copy(
        update={
            "relay": base.relay.model_copy(
                update={"routes": {SINK_DOMAIN: route, OTHER_DOMAIN: route}}
            )
        }
    )
    gateway = build_gateway(settings, handlers={})
    with gateway.database.transaction() as session:
        for domain in (SINK_DOMAIN, OTHER_DOMAIN):
            add_trust_domain(session, domain, source="test")
        if sink_ca_trusted:
            add_anchors(session, pki.cert_pem(sink_ca.certificate))
    return RelayBench(
        home=home,
        settings=settings,
        gateway=gateway,
        clock=Clock(),
        timing=timing
        or RelayTiming(
            retry=timedelta(hours=120),
            delay_warning=timedelta(hours=4),
            backoff_base=60,
            backoff_max=3600,
            timeout=5,
            jitter=0,
        ),
        sink=sink,
        dkim_records=records,
        sink_ca=sink_ca,
        tmp=tmp,
    )


@pytest.fixture
def bench(demo_home: Path, tmp_path: Path) -> Iterator[RelayBench]:
    """Relay + sink answering 250, with the sink's CA among our trust anchors."""
    built = build_bench(demo_home, tmp_path)
    built.sink.start()
    yield built
    built.sink.stop()
    built.gateway.close()
