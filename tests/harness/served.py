"""A served demo home: ``caducee init --demo`` then ``caducee serve``, as a user runs them.

Clients reach it over real sockets with real TLS: the demo's remote peer (its
client certificate and DKIM key from ``demo/credentials.json``) on the operators'
port, the demo accounts on submission, IMAP and HTTP.

Ports: a free port is picked for each listener, then the gateway binds it. Another
program may take a port between the two; the gateway then exits with "address
already in use" and :meth:`ServedGateway.start` picks new ports and starts again
(three attempts), so no test sees that race.
"""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import dkim
from sqlalchemy import select

from caducee.config import load_settings
from caducee.gateway.runtime import Gateway, build_gateway
from caducee.mailboxes.accounts.store import Account as AccountRow
from caducee.mailboxes.accounts.store import Patient
from caducee.mailboxes.relay.outbound import RELAY_JOB
from caducee.storage.jobs import JobRow
from tests.harness.identities import Identity, add_patient, valid_ins
from tests.harness.paths import CADUCEE, IMAP_ONLY
from tests.harness.waiting import wait_until

LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "http")
START_ATTEMPTS = 3
LOOPBACK = "127.0.0.1"
PORT_TAKEN = "address already in use"
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


def free_port() -> int:
    """A port nobody listens on right now (see the module's note on the race)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def greets(port: int, prefix: bytes, host: str = LOOPBACK) -> bool:
    """Whether a server on ``host:port`` sends a greeting starting with ``prefix``."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.settimeout(2)
            return sock.recv(200).startswith(prefix)
    except OSError:
        return False


def answers_http(port: int, host: str = LOOPBACK) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


def gateway_env(
    database_url: str | None = None, *, workers: int = 0
) -> tuple[dict[str, str], dict[str, int]]:
    """This process's environment without CADUCEE_ settings, plus free ports and the database."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CADUCEE_") or k == "CADUCEE_TEST_DATABASE_URL"
    }
    ports = {name: free_port() for name in LISTENERS}
    for name, port in ports.items():
        env[f"CADUCEE_LISTENERS__{name.upper()}"] = str(port)
    env["CADUCEE_QUEUE__WORKERS"] = str(workers)
    env["CADUCEE_QUEUE__POLL_INTERVAL"] = "0.2"
    if database_url:
        env["CADUCEE_DATABASE__URL"] = database_url
    return env, ports


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run ``caducee ARGS`` as a user would; its standard output, or AssertionError."""
    result = subprocess.run(
        [*CADUCEE, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@dataclass
class Account:
    """A hosted account a test logs in as."""

    address: str
    password: str
    account_id: int = 0


@dataclass
class ServedGateway:
    """A served home and what clients need to reach it."""

    home: Path
    env: dict[str, str]
    ports: dict[str, int]
    credentials: dict[str, Any]
    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    # -- processes -----------------------------------------------------------------------

    @property
    def process(self) -> subprocess.Popen[str] | None:
        """The ``caducee serve`` process, if it runs."""
        return self.processes.get("serve")

    def start(self) -> None:
        """Serve the home; on a port taken since it was picked, pick new ports and retry."""
        for _attempt in range(START_ATTEMPTS):
            if self._started("serve", [*CADUCEE, "serve", "--home", str(self.home)], self.env):
                return
            for name in self.ports:
                self.ports[name] = free_port()
                self.env[f"CADUCEE_LISTENERS__{name.upper()}"] = str(self.ports[name])
        raise AssertionError("gateway did not start: " + self.log("serve"))

    @property
    def host(self) -> str:
        """The address the listeners bind (``[listeners] host``; several nodes use several)."""
        return self.env.get("CADUCEE_LISTENERS__HOST", LOOPBACK)

    def _started(self, name: str, command: list[str], env: dict[str, str]) -> bool:
        """Spawn ``command`` and wait for its listeners; False if a port was taken."""
        log_path = self.home / f"{name}.log"
        log_path.write_text("")
        with log_path.open("a") as log:
            process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
            )
        self.processes[name] = process
        prefix = "CADUCEE_LISTENERS__"
        ports = {
            key.removeprefix(prefix).lower(): int(value)
            for key, value in env.items()
            if key.startswith(prefix) and value.isdigit()
        }

        def ready() -> str:
            if process.poll() is not None:
                return "exited"
            if name == "serve" and not (
                "Caducée gateway running" in self.log(name)
                and greets(ports["smtp"], b"220", self.host)
                and answers_http(ports["http"], self.host)
            ):
                return ""
            if ports.get("imap") and not greets(ports["imap"], b"* OK", self.host):
                return ""
            return "ready"

        outcome = wait_until(
            ready,
            timeout=60,
            interval=0.1,
            message=lambda: f"{name} did not start: {self.log(name)}",
        )
        if outcome == "ready":
            return True
        del self.processes[name]
        if PORT_TAKEN in self.log(name).lower():
            return False  # another program took a port between picking and binding
        raise AssertionError(f"{name} exited: {self.log(name)}")

    def log(self, name: str = "serve") -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str = "serve", sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` to a process of this home and wait for it; its exit code."""
        process = self.processes.pop(name)
        process.send_signal(sig)
        return process.wait(timeout=60)

    def restart(self) -> None:
        """Stop ``caducee serve`` with SIGTERM (it must exit 0) and start it again."""
        assert self.stop() == 0
        self.start()

    def stop_all(self) -> None:
        """SIGTERM every process; each must exit 0 (a clean shutdown is part of the product)."""
        codes = {name: self.stop(name) for name in list(self.processes)}
        assert all(code == 0 for code in codes.values()), codes

    def start_imap_process(self, name: str) -> dict[str, int]:
        """Another IMAP-only process on the same home and database, on its own ports."""
        for _attempt in range(START_ATTEMPTS):
            ports = {"imap": free_port(), "imaps": free_port()}
            env = dict(self.env)
            for listener, port in ports.items():
                env[f"CADUCEE_LISTENERS__{listener.upper()}"] = str(port)
            if self._started(name, [*IMAP_ONLY, "--home", str(self.home)], env):
                return ports
        raise AssertionError(f"{name} did not start: " + self.log(name))

    # -- clients -------------------------------------------------------------------------

    @property
    def peer(self) -> dict[str, str]:
        """The demo's remote operator: domain, professional, client certificate, DKIM key."""
        return dict(self.credentials["peer"])

    @property
    def professional(self) -> Account:
        data = self.credentials["professional"]
        return Account(data["address"], data["password"])

    def tls_context(self, *, client_cert: bool = False) -> ssl.SSLContext:
        """Trusts the home's CA; with the peer's client certificate when asked."""
        context = ssl.create_default_context(cafile=self.credentials["ca_cert"])
        if client_cert:
            context.load_cert_chain(self.peer["cert"], self.peer["key"])
        return context

    def smtp(self, *, client_cert: bool = True, starttls: bool = True) -> smtplib.SMTP:
        """The peer operator's MTA on the operators' port (mutual TLS by default)."""
        client = smtplib.SMTP(
            self.host,
            self.ports["smtp"],
            local_hostname="mx." + self.peer["domain"],
            timeout=30,
        )
        client.ehlo()
        if starttls:
            client.starttls(context=self.tls_context(client_cert=client_cert))
            client.ehlo()
        return client

    def submit(self, who: str, *, implicit: bool = False, login: bool = True) -> smtplib.SMTP:
        """A submission client for a demo account (``patient``, ``professional``, ...)."""
        context = self.tls_context()
        client: smtplib.SMTP
        if implicit:
            client = smtplib.SMTP_SSL(
                self.host, self.ports["submissions"], context=context, timeout=30
            )
        else:
            client = smtplib.SMTP(self.host, self.ports["submission"], timeout=30)
            client.starttls(context=context)
        if login:
            client.login(self.credentials[who]["address"], self.credentials[who]["password"])
        return client

    def imap(self, account: Account, *, port: int | None = None) -> imaplib.IMAP4_SSL:
        """A logged-in IMAP client (implicit TLS) for ``account``."""
        client = imaplib.IMAP4_SSL(
            self.host, port or self.ports["imaps"], ssl_context=self.tls_context(), timeout=30
        )
        client.login(account.address, account.password)
        return client

    def http_get(self, path: str, who: str = "patient", *, accept: str = "application/json") -> Any:
        """GET ``path`` over HTTP with a demo account's Basic credentials; the parsed JSON."""
        account = self.credentials[who]
        token = base64.b64encode(f"{account['address']}:{account['password']}".encode()).decode()
        request = urllib.request.Request(
            f"http://{self.host}:{self.ports['http']}{path}",
            headers={"Authorization": f"Basic {token}", "Accept": accept},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return json.loads(response.read())

    def message(
        self,
        *,
        sender: str | None = None,
        to: str | None = None,
        subject: str = "Compte rendu",
        body: str = "Bonjour,\nvoici le compte rendu.\n",
        headers: dict[str, str] | None = None,
        sign: bool = True,
        attachment: tuple[str, bytes, str] | None = None,
        message: EmailMessage | None = None,
    ) -> bytes:
        """A message from the peer's professional (or ``sender``), DKIM-signed by the peer."""
        if message is None:
            message = EmailMessage()
            message.set_content(body)
        message["From"] = sender or self.peer["professional"]
        message["To"] = to or self.credentials["patient"]["address"]
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain=self.peer["domain"])
        for name, value in (headers or {}).items():
            message[name] = value
        if attachment is not None:
            name, data, mime = attachment
            maintype, subtype = mime.split("/")
            message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        return self.sign(raw) if sign else raw

    def sign(self, raw: bytes) -> bytes:
        """``raw`` with a DKIM signature of the peer operator's domain prepended."""
        signature = dkim.sign(
            raw,
            self.peer["dkim_selector"].encode(),
            self.peer["domain"].encode(),
            Path(self.peer["dkim_key"]).read_bytes(),
            include_headers=SIGNED_HEADERS,
        )
        return bytes(signature).replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n") + raw

    def send(self, raw: bytes, to: str | None = None, *, sender: str | None = None) -> None:
        """Deliver ``raw`` over SMTP as the peer operator, like a real report; all accepted."""
        recipient = to or self.credentials["patient"]["address"]
        with self.smtp() as client:
            refused = client.sendmail(sender or self.peer["professional"], [recipient], raw)
            assert not refused, refused

    # -- looking inside --------------------------------------------------------------------

    def cli(self, *args: str) -> str:
        """``caducee ARGS --home HOME`` as a user runs it; its output."""
        return run_cli(self.env, *args, "--home", str(self.home))

    def mailbox(self, address: str | None = None) -> list[dict[str, Any]]:
        """``caducee mailbox list ADDRESS --json``: what the mailbox holds."""
        output = self.cli(
            "mailbox", "list", address or self.credentials["patient"]["address"], "--json"
        )
        return [json.loads(line) for line in output.splitlines() if line.strip()]

    def components(self) -> Gateway:
        """The gateway's components in this process, to look inside (close after use)."""
        previous = dict(os.environ)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("CADUCEE_")})
        try:
            return build_gateway(load_settings(self.home))
        finally:
            os.environ.clear()
            os.environ.update(previous)

    def queued_mdns(self) -> list[EmailMessage]:
        """The MDNs (receipts) waiting in the relay queue, parsed."""
        components = self.components()
        try:
            with components.database.transaction() as session:
                jobs = session.scalars(select(JobRow).where(JobRow.kind == RELAY_JOB)).all()
                return [
                    email.message_from_bytes(
                        components.blobs.read(session, job.payload["blob_id"]),
                        _class=EmailMessage,
                        policy=email.policy.default,
                    )
                    for job in jobs
                    if job.payload.get("purpose") == "mdn"
                ]
        finally:
            components.close()

    def add_patient(self, ins: str, state: str = "active") -> str:
        """A patient space for ``ins`` in this home's database; its address."""
        components = self.components()
        try:
            created = add_patient(
                components.database,
                Identity(ins=ins, birth_name="TEST", given_name="PATIENT", birth_date=_BIRTH),
                state=state,
            )
        finally:
            components.close()
        return created.address

    def patient_ids(self, address: str) -> tuple[int, str]:
        """The account id and INS of the patient space at ``address`` in this home."""
        components = self.components()
        try:
            with components.database.reading() as session:
                row = session.execute(
                    select(AccountRow.id, Patient.ins)
                    .join(Patient, Patient.account_id == AccountRow.id)
                    .where(AccountRow.address == address)
                ).one()
            return int(row.id), str(row.ins)
        finally:
            components.close()

    def new_patient(self) -> Account:
        """A fresh patient space with an app password (tests never share mailboxes)."""
        components = self.components()
        try:
            created = add_patient(
                components.database,
                Identity(
                    ins=valid_ins(), birth_name="TEST", given_name="PATIENT", birth_date=_BIRTH
                ),
                with_password=True,
            )
        finally:
            components.close()
        return Account(created.address, created.password, created.account_id)


_BIRTH = datetime(1980, 1, 1).date()


def init_home(home: Path, env: dict[str, str], *, demo: bool = True) -> dict[str, Any]:
    """``caducee init [--demo]``; the demo credentials (empty without ``demo``)."""
    run_cli(env, "init", *(["--demo"] if demo else []), "--home", str(home))
    if not demo:
        return {"ca_cert": str(home / "tls" / "ca.pem")}
    return dict(json.loads((home / "demo" / "credentials.json").read_text()))


def prepare_demo(
    home: Path,
    database_url: str | None,
    *,
    workers: int = 0,
    extra_env: dict[str, str] | None = None,
    demo: bool = True,
) -> ServedGateway:
    """An initialised home on free ports, not started yet (a test may change it first)."""
    env, ports = gateway_env(database_url, workers=workers)
    env.update(extra_env or {})
    credentials = init_home(home, env, demo=demo)
    return ServedGateway(home=home, env=env, ports=ports, credentials=credentials)


def serve_demo(
    home: Path,
    database_url: str | None,
    *,
    workers: int = 0,
    extra_env: dict[str, str] | None = None,
) -> Iterator[ServedGateway]:
    """A served demo home for as long as the generator is not closed; stopped with SIGTERM."""
    served = prepare_demo(home, database_url, workers=workers, extra_env=extra_env)
    served.start()
    try:
        yield served
    finally:
        served.stop_all()


@dataclass
class InProcessImap:
    """An IMAP listener built in the test's process, and what to release after it."""

    listener: Any
    port: int
    close: Any


def in_process_imap_listener(served: ServedGateway, **limits: float) -> InProcessImap:
    """An IMAP STARTTLS listener on a free port, built in this process on the served home.

    For tests that need a listener with short limits (``login_timeout``,
    ``max_session_seconds``…) without restarting the served gateway. Returns the listener
    (start and stop it in the test's event loop), its port and ``close()`` for the rest.
    """
    from caducee.gateway.imap.config import CaduceeImapConfig
    from caducee.gateway.imap.events import MailboxEvents
    from caducee.gateway.imap.server import ImapListener
    from caducee.gateway.imap.session import ImapBackend, Login
    from caducee.gateway.tls import server_context
    from caducee.mailboxes.imap_store import ImapStore

    components = served.components()
    store = ImapStore(
        components.database, components.blobs, components.queue, reporting_host="test"
    )
    backend = ImapBackend(store, MailboxEvents(), components.identity, workers=1)
    tls = server_context(components.settings)
    port = free_port()
    config = CaduceeImapConfig(
        host="127.0.0.1", port=port, hostname="test", ssl_context=tls, max_append_len=1000
    )
    listener = ImapListener(
        host="127.0.0.1",
        port=port,
        implicit_tls=False,
        config=config,
        login=Login(backend),
        tls=tls,
        **limits,  # type: ignore[arg-type]
    )

    def close() -> None:
        backend.close()
        components.close()

    return InProcessImap(listener, port, close)
