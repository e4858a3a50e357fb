"""A real gateway for the SMTP tests: ``caducee init --demo``, then ``caducee serve`` (subprocess).

Clients connect over real sockets with real TLS, as the demo's remote peer
(its client certificate and DKIM key from ``demo/credentials.json``).
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import dkim
import pytest

from caducee.config import load_settings
from caducee.gateway.runtime import Gateway, build_gateway

CADUCEE = [sys.executable, "-m", "caducee.gateway.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningGateway:
    """A served demo home and what clients need to reach it."""

    home: Path
    env: dict[str, str]
    ports: dict[str, int]
    credentials: dict[str, Any]
    process: subprocess.Popen[str] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Serve the home; on a port taken since it was picked, pick new ports and retry."""
        for _attempt in range(3):
            if self._start_once():
                return
            for name in self.ports:
                self.ports[name] = free_port()
                self.env[f"CADUCEE_LISTENERS__{name.upper()}"] = str(self.ports[name])
        raise AssertionError("gateway did not start: " + (self.home / "serve.log").read_text())

    def _start_once(self) -> bool:
        log = self.home / "serve.log"
        log.write_text("")
        self.process = subprocess.Popen(
            [*CADUCEE, "serve", "--home", str(self.home)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(log, "a"),  # noqa: SIM115 - closed with the process
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                if "address already in use" in log.read_text():
                    return False  # another program took a port between picking and binding
                raise AssertionError("gateway did not start: " + log.read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.ports["submissions"]), timeout=1):
                    pass
                with socket.create_connection(("127.0.0.1", self.ports["smtp"]), timeout=1) as s:
                    if s.recv(100).startswith(b"220"):
                        return True
            except OSError:
                time.sleep(0.1)
        raise AssertionError("gateway did not start: " + log.read_text())

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        self.process = None
        return code

    # -- clients -----------------------------------------------------------------------

    @property
    def peer(self) -> dict[str, str]:
        return dict(self.credentials["peer"])

    def tls_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.credentials["ca_cert"])
        if client_cert:
            context.load_cert_chain(self.peer["cert"], self.peer["key"])
        return context

    def smtp(self, *, client_cert: bool = True, starttls: bool = True) -> smtplib.SMTP:
        client = smtplib.SMTP(
            "127.0.0.1", self.ports["smtp"], local_hostname="mx.labo-demo.mssante.fr", timeout=30
        )
        client.ehlo()
        if starttls:
            client.starttls(context=self.tls_context(client_cert=client_cert))
            client.ehlo()
        return client

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
    ) -> bytes:
        """A message from the peer's professional, DKIM-signed with the peer's key."""
        sender = sender or self.peer["professional"]
        message = EmailMessage()
        message["From"] = sender
        message["To"] = to or self.credentials["patient"]["address"]
        message["Subject"] = subject
        message["Date"] = format_datetime(time_now())
        message["Message-ID"] = make_msgid(domain="labo-demo.mssante.fr")
        for name, value in (headers or {}).items():
            message[name] = value
        message.set_content(body)
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
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        return signature.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n") + raw

    def submit(self, who: str, *, implicit: bool = False, login: bool = True) -> smtplib.SMTP:
        """A logged-in submission client for the demo patient, professional or pharmacy."""
        context = ssl.create_default_context(cafile=self.credentials["ca_cert"])
        client: smtplib.SMTP
        if implicit:
            client = smtplib.SMTP_SSL(
                "127.0.0.1", self.ports["submissions"], context=context, timeout=30
            )
        else:
            client = smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=30)
            client.starttls(context=context)
        if login:
            client.login(self.credentials[who]["address"], self.credentials[who]["password"])
        return client

    def mailbox(self, address: str | None = None) -> list[dict[str, Any]]:
        """``caducee mailbox list --json`` as a user would run it."""
        result = subprocess.run(
            [
                *CADUCEE,
                "mailbox",
                "list",
                address or self.credentials["patient"]["address"],
                "--json",
                "--home",
                str(self.home),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def components(self) -> Gateway:
        """The gateway's components in this process, to look inside (close after use)."""
        previous = dict(os.environ)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("CADUCEE_")})
        try:
            return build_gateway(load_settings(self.home))
        finally:
            os.environ.clear()
            os.environ.update(previous)


def time_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _make_env(pg_url: str | None, workers: int = 0) -> tuple[dict[str, str], dict[str, int]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CADUCEE_") or k == "CADUCEE_TEST_DATABASE_URL"
    }
    ports = {
        name: free_port() for name in ("smtp", "submission", "submissions", "imap", "imaps", "http")
    }
    for name, port in ports.items():
        env[f"CADUCEE_LISTENERS__{name.upper()}"] = str(port)
    env["CADUCEE_QUEUE__WORKERS"] = str(workers)
    env["CADUCEE_QUEUE__POLL_INTERVAL"] = "0.2"
    if pg_url:
        env["CADUCEE_DATABASE__URL"] = pg_url
    return env, ports


def serve_demo(
    tmp_path_factory: pytest.TempPathFactory,
    pg_schemas: Any,
    *,
    workers: int = 0,
    extra_env: dict[str, str] | None = None,
) -> Iterator[RunningGateway]:
    """``caducee init --demo`` and ``caducee serve`` on free ports; stopped with SIGTERM."""
    home = tmp_path_factory.mktemp("smtp") / "home"
    env, ports = _make_env(pg_schemas.new() if pg_schemas is not None else None, workers)
    env.update(extra_env or {})
    init = subprocess.run(
        [*CADUCEE, "init", "--demo", "--home", str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    credentials = json.loads((home / "demo" / "credentials.json").read_text())
    running = RunningGateway(home=home, env=env, ports=ports, credentials=credentials)
    running.start()
    yield running
    if running.process is not None:
        assert running.stop() == 0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any) -> Iterator[RunningGateway]:
    """A demo gateway serving for the whole test module (job workers off)."""
    yield from serve_demo(tmp_path_factory, pg_schemas)


@pytest.fixture(scope="module")
def working_gateway(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any
) -> Iterator[RunningGateway]:
    """A demo gateway whose job workers run (filing, receipts)."""
    yield from serve_demo(tmp_path_factory, pg_schemas, workers=2)


def add_patient(gateway: RunningGateway, ins: str, state: str = "active") -> str:
    """Create a patient space directly in the database (no CLI for it yet)."""
    from caducee.mailboxes.accounts import AccountKind, Patient, create_account

    components = gateway.components()
    address = f"{ins}@patient.mssante.fr"
    try:
        with components.database.transaction() as session:
            account = create_account(session, address, AccountKind.PATIENT)
            account.state = state
            session.add(
                Patient(
                    account_id=account.id,
                    ins=ins,
                    ins_oid="1.2.250.1.213.1.4.10",
                    birth_name="TEST",
                    given_name="PATIENT",
                    birth_date=date(1980, 1, 1),
                    sex="M",
                )
            )
    finally:
        components.close()
    return address
