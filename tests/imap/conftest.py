"""A real gateway for the IMAP tests: ``caducee init --demo``, ``caducee serve``, real TLS clients.

One gateway serves the whole IMAP test session (starting one costs seconds);
tests stay independent by creating their own accounts (:meth:`ImapGateway.new_patient`).
IMAP runs inside ``caducee serve`` once ``serve`` starts it; until then (or when a
test needs a second process) the IMAP-only entry point ``python -m
caducee.gateway.imap`` serves the same home and database.
"""

from __future__ import annotations

import imaplib
import json
import os
import random
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import dkim
import pytest

from caducee.config import load_settings
from caducee.gateway.runtime import Gateway, build_gateway

CADUCEE = [sys.executable, "-m", "caducee.gateway.cli"]
IMAP_ONLY = [sys.executable, "-m", "caducee.gateway.imap"]
PATIENT_DOMAIN = "patient.mssante.fr"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def greets(port: int, prefix: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.settimeout(2)
            return sock.recv(200).startswith(prefix)
    except OSError:
        return False


def wait_for(port: int, prefix: bytes, log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if greets(port, prefix):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing answered on {port}:\n" + log.read_text(errors="replace"))


def valid_ins() -> str:
    year, month, order = random.randint(30, 99), random.randint(1, 12), random.randint(0, 999_999)
    nir = f"2{year:02d}{month:02d}75{order:06d}"
    return nir + f"{97 - int(nir) % 97:02d}"


@dataclass
class Account:
    """A hosted account the tests log in as."""

    address: str
    password: str
    account_id: int


@dataclass
class ImapGateway:
    """A served demo home and what clients need to reach it."""

    home: Path
    env: dict[str, str]
    ports: dict[str, int]
    credentials: dict[str, Any]
    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    # -- processes ---------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        log = open(self.home / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        self.processes[name] = process
        return process

    def start(self) -> None:
        self._spawn("serve", [*CADUCEE, "serve", "--home", str(self.home)], self.env)
        wait_for(self.ports["smtp"], b"220", self.home / "serve.log")
        if not greets(self.ports["imap"], b"* OK"):
            self._spawn("imap", [*IMAP_ONLY, "--home", str(self.home)], self.env)
        wait_for(self.ports["imap"], b"* OK", self.home / "imap.log")

    def start_imap_process(self, name: str) -> dict[str, int]:
        """Another IMAP-only process on the same home and database, on its own ports."""
        ports = {"imap": free_port(), "imaps": free_port()}
        env = dict(self.env)
        env["CADUCEE_LISTENERS__IMAP"] = str(ports["imap"])
        env["CADUCEE_LISTENERS__IMAPS"] = str(ports["imaps"])
        self._spawn(name, [*IMAP_ONLY, "--home", str(self.home)], env)
        wait_for(ports["imap"], b"* OK", self.home / f"{name}.log")
        return ports

    def restart_imap(self) -> None:
        """Stop and start whichever process serves IMAP (UIDs must survive it)."""
        name = "imap" if "imap" in self.processes else "serve"
        self.stop(name)
        if name == "serve":
            self.start()
        else:
            self._spawn("imap", [*IMAP_ONLY, "--home", str(self.home)], self.env)
            wait_for(self.ports["imap"], b"* OK", self.home / "imap.log")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        process = self.processes.pop(name)
        process.send_signal(sig)
        return process.wait(timeout=60)

    # -- clients -----------------------------------------------------------------------

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.credentials["ca_cert"])

    def imap(self, account: Account, *, port: int | None = None) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL(
            "127.0.0.1", port or self.ports["imaps"], ssl_context=self.tls(), timeout=30
        )
        client.login(account.address, account.password)
        return client

    def components(self) -> Gateway:
        """The gateway's components in this process (close after use)."""
        previous = dict(os.environ)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("CADUCEE_")})
        try:
            return build_gateway(load_settings(self.home))
        finally:
            os.environ.clear()
            os.environ.update(previous)

    def new_patient(self) -> Account:
        """A fresh patient space with an app password (tests never share mailboxes)."""
        from caducee.mailboxes.accounts import (
            AccountKind,
            Patient,
            add_app_password,
            create_account,
        )

        components = self.components()
        ins = valid_ins()
        try:
            with components.database.transaction() as session:
                account = create_account(session, f"{ins}@{PATIENT_DOMAIN}", AccountKind.PATIENT)
                session.add(
                    Patient(
                        account_id=account.id,
                        ins=ins,
                        ins_oid="1.2.250.1.213.1.4.10",
                        birth_name="TEST",
                        given_name="PATIENT",
                        birth_date=date(1980, 1, 1),
                        sex="F",
                    )
                )
                password = add_app_password(session, account, "tests")
                return Account(account.address, password, account.id)
        finally:
            components.close()

    @property
    def professional(self) -> Account:
        data = self.credentials["professional"]
        return Account(data["address"], data["password"], 0)

    @property
    def peer(self) -> dict[str, str]:
        return dict(self.credentials["peer"])

    def message(
        self,
        to: str,
        *,
        subject: str = "Compte rendu",
        body: str = "Bonjour,\nvoici le compte rendu.\n",
        headers: dict[str, str] | None = None,
        message: EmailMessage | None = None,
    ) -> bytes:
        """A message from the peer's professional, DKIM-signed with the peer's key."""
        if message is None:
            message = EmailMessage()
            message.set_content(body)
        message["From"] = self.peer["professional"]
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain=self.peer["domain"])
        for name, value in (headers or {}).items():
            message[name] = value
        raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        signature = dkim.sign(
            raw,
            self.peer["dkim_selector"].encode(),
            self.peer["domain"].encode(),
            Path(self.peer["dkim_key"]).read_bytes(),
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        return signature.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n") + raw

    def send(self, raw: bytes, to: str) -> None:
        """Deliver over SMTP as the peer operator (mutual TLS), like a real report."""
        context = self.tls()
        context.load_cert_chain(self.peer["cert"], self.peer["key"])
        with smtplib.SMTP(
            "127.0.0.1", self.ports["smtp"], local_hostname="mx." + self.peer["domain"], timeout=30
        ) as client:
            client.starttls(context=context)
            refused = client.sendmail(self.peer["professional"], [to], raw)
            assert not refused


def _make_env(pg_url: str | None) -> tuple[dict[str, str], dict[str, int]]:
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
    env["CADUCEE_QUEUE__WORKERS"] = "0"
    if pg_url:
        env["CADUCEE_DATABASE__URL"] = pg_url
    return env, ports


@pytest.fixture(scope="session")
def imap_gateway(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any
) -> Iterator[ImapGateway]:
    """A demo gateway serving IMAP for the whole test session."""
    home = tmp_path_factory.mktemp("imap") / "home"
    env, ports = _make_env(pg_schemas.new() if pg_schemas is not None else None)
    init = subprocess.run(
        [*CADUCEE, "init", "--demo", "--home", str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    credentials = json.loads((home / "demo" / "credentials.json").read_text())
    gateway = ImapGateway(home=home, env=env, ports=ports, credentials=credentials)
    gateway.start()
    yield gateway
    for name in list(gateway.processes):
        gateway.stop(name)


@pytest.fixture
def patient(imap_gateway: ImapGateway) -> Account:
    """A fresh patient account for one test."""
    return imap_gateway.new_patient()
