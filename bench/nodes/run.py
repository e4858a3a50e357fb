"""Inbound SMTP throughput on PostgreSQL: one node against two, 1,000 mailboxes against 1,000,000.

Issue 18's two figures, measured in one run on one machine:

* **nodes**: the same load sent to one ``caducee serve`` and then split over two nodes (separate
  processes on 127.0.0.2 and 127.0.0.3, one PostgreSQL database, one blob folder);
* **scale**: the same load on one node when the patient directory holds 1,000 mailboxes and
  when it holds 1,000,000 (seeded with ``COPY``, names sealed as the product seals them),
  recipients drawn at random among them.

The load generator is a separate Python process (aiosmtplib, one message of 4 KiB per
connection, ``--sessions`` at once, plaintext as in ``bench/smtp_inbound``); its CPU time is
reported as a share of the two cores so the reader sees what the servers had left. Every
figure is messages acknowledged (``250`` after the durable commit) per second.

Run from the repository root: ``.venv/bin/python bench/nodes/run.py`` (PostgreSQL at
``--database``, default ``postgresql://postgres@127.0.0.1:5432/test``; a schema of its own is
created and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import psycopg

from caducee.config import load_settings
from caducee.storage.keyring import Keyring
from caducee.storage.sealed import ColumnSealer

ROOT = Path(__file__).resolve().parents[2]
CADUCEE = [sys.executable, "-m", "caducee.gateway.cli"]
LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "http")
PATIENT_DOMAIN = "patient.mssante.fr"
NODE_HOSTS = ("127.0.0.2", "127.0.0.3")


def log(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def valid_ins(number: int) -> str:
    """A valid 15-character INS (a woman born in Paris), distinct for each ``number``."""
    nir13 = f"2{30 + number // 12_000_000 % 70:02d}{number // 1_000_000 % 12 + 1:02d}75" + (
        f"{number % 1_000_000:06d}"
    )
    return nir13 + f"{97 - int(nir13) % 97:02d}"


# -- the home and its nodes ---------------------------------------------------------------


@dataclass
class Node:
    host: str
    ports: dict[str, int]
    process: subprocess.Popen[bytes]


def environment(database_url: str, host: str, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADUCEE_")}
    env.update(
        {
            "CADUCEE_DATABASE__URL": database_url,
            "CADUCEE_SMTP__ALLOW_PLAINTEXT": "true",
            "CADUCEE_SMTP__REQUIRE_DKIM": "false",
            "CADUCEE_LISTENERS__HOST": host,
        }
    )
    for name, port in ports.items():
        env[f"CADUCEE_LISTENERS__{name.upper()}"] = str(port)
    return env


def start_node(home: Path, database_url: str, host: str) -> Node:
    ports = {name: free_port(host) for name in LISTENERS}
    stderr = (home / f"serve-{host}.log").open("ab")
    process = subprocess.Popen(
        [*CADUCEE, "serve", "--home", str(home)],
        env=environment(database_url, host, ports),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"caducee serve on {host} exited; see {stderr.name}")
        try:
            url = f"http://{host}:{ports['http']}/readyz"
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return Node(host, ports, process)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"caducee serve on {host} not ready")


def stop_node(node: Node) -> None:
    if node.process.poll() is None:
        node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()


@contextmanager
def nodes(home: Path, database_url: str, count: int) -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        for host in NODE_HOSTS[:count]:
            started.append(start_node(home, database_url, host))
        yield started
    finally:
        for node in started:
            stop_node(node)


# -- seeding mailboxes --------------------------------------------------------------------


def seed_patients(home: Path, database_url: str, schema: str, first: int, total: int) -> list[str]:
    """``total`` patient accounts numbered from ``first`` (beside the demo's); their addresses."""
    settings = load_settings(home, environ={"CADUCEE_DATABASE__URL": database_url})
    sealer = ColumnSealer(Keyring(settings.path(settings.crypto.keyring)))
    plain = database_url.split("?", 1)[0].replace("+psycopg", "")
    addresses = [f"{valid_ins(n)}@{PATIENT_DOMAIN}" for n in range(first, first + total)]
    with psycopg.connect(plain, autocommit=False) as connection:
        connection.execute(f"SET search_path TO {schema}")
        start = int(connection.execute("SELECT coalesce(max(id), 0) FROM accounts").fetchone()[0])
        with connection.cursor().copy(
            "COPY accounts (id, address, kind, state, created_at) FROM STDIN"
        ) as copy:
            now = datetime.now(UTC)
            for offset, address in enumerate(addresses, start=1):
                copy.write_row((start + offset, address, "patient", "active", now))
        with connection.cursor().copy(
            "COPY patients (account_id, ins, ins_oid, birth_name, given_name, birth_date, sex)"
            " FROM STDIN"
        ) as copy:
            for offset, address in enumerate(addresses, start=1):
                copy.write_row(
                    (
                        start + offset,
                        address.split("@", 1)[0],
                        "1.2.250.1.213.1.4.10",
                        sealer.seal(f"PATIENT{offset}", "patients.birth_name"),
                        sealer.seal("CAMILLE", "patients.given_name"),
                        "1980-01-01",
                        "F",
                    )
                )
        connection.execute(
            "SELECT setval(pg_get_serial_sequence('accounts', 'id'),"
            " (SELECT max(id) FROM accounts))"
        )
        connection.commit()
        connection.execute("ANALYZE accounts")
        connection.execute("ANALYZE patients")
        connection.commit()
    return addresses


# -- the load -----------------------------------------------------------------------------


def message(sender: str, recipient: str, body: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = "Compte rendu"
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = make_msgid(domain="bench.invalid")
    mail.set_content(body)
    return mail.as_bytes()


async def _drive(
    targets: list[tuple[str, int]], sender: str, recipients: list[str], total: int, sessions: int
) -> int:
    body = ("Résultats normaux. " * 220)[:4096]
    sent = 0
    failures = 0
    counter = iter(range(total))

    async def session(index: int) -> None:
        nonlocal sent, failures
        host, port = targets[index % len(targets)]
        for _ in counter:
            recipient = random.choice(recipients)
            try:
                await aiosmtplib.send(
                    message(sender, recipient, body),
                    sender=sender,
                    recipients=[recipient],
                    hostname=host,
                    port=port,
                    start_tls=False,
                    use_tls=False,
                    timeout=120,
                )
                sent += 1
            except aiosmtplib.SMTPException:
                failures += 1

    await asyncio.gather(*(session(i) for i in range(sessions)))
    if failures:
        raise RuntimeError(f"{failures} message(s) refused")
    return sent


def _load_process(args: tuple[Any, ...], results: Any) -> None:
    started_cpu = time.process_time()
    started = time.monotonic()
    sent = asyncio.run(_drive(*args))
    results.put((sent, time.monotonic() - started, time.process_time() - started_cpu))


def load(
    targets: list[tuple[str, int]], sender: str, recipients: list[str], total: int, sessions: int
) -> dict[str, float]:
    """Send ``total`` messages; msg/s and the load generator's share of the machine's cores."""
    results: Any = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(
        target=_load_process, args=((targets, sender, recipients, total, sessions), results)
    )
    process.start()
    sent, elapsed, cpu = results.get(timeout=3600)
    process.join()
    cores = os.cpu_count() or 1
    return {
        "messages": sent,
        "seconds": elapsed,
        "per_second": sent / elapsed,
        "generator_share": cpu / (elapsed * cores),
    }


# -- the run ------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--mailboxes", type=int, default=1_000_000)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args(argv)

    schema = f"bench_nodes_{secrets.token_hex(4)}"
    plain = args.database.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    url = f"postgresql+psycopg://{plain.split('://', 1)[1]}?options=-csearch_path%3D{schema}"
    root = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    home = root / "home"
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        env = environment(url, "127.0.0.1", {})
        subprocess.run([*CADUCEE, "init", "--demo", "--home", str(home)], env=env, check=True)
        credentials = json.loads((home / "demo" / "credentials.json").read_text())
        sender = credentials["peer"]["professional"]
        small = seed_patients(home, url, schema, 0, 1000)
        log(f"seeded 1,000 mailboxes; {args.messages} messages per line")

        def one_line(name: str, count: int, recipients: list[str]) -> None:
            with nodes(home, url, count) as running:
                targets = [(node.host, node.ports["smtp"]) for node in running]
                load(targets, sender, recipients, min(200, args.messages), args.sessions)  # warm
                result = load(targets, sender, recipients, args.messages, args.sessions)
            log(f"{name}: {result['per_second']:.1f} msg/s")
            rows.append((name, result))

        one_line("one node, 1,000 mailboxes", 1, small)
        one_line("two nodes, 1,000 mailboxes", 2, small)
        started = time.monotonic()
        large = small + seed_patients(home, url, schema, 1000, args.mailboxes - 1000)
        log(f"seeded {args.mailboxes:,} mailboxes in {time.monotonic() - started:.0f} s")
        one_line(f"one node, {args.mailboxes:,} mailboxes", 1, large)
        one_line("one node, 1,000 mailboxes (again)", 1, small)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")
    section = report(rows, args)
    print(section)
    if not args.no_append:
        with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as results:
            results.write("\n" + section)
    return 0


def report(rows: list[tuple[str, dict[str, float]]], args: argparse.Namespace) -> str:
    load1, _, _ = os.getloadavg()
    lines = [
        f"## Nodes and scale (bench/nodes) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" PostgreSQL; load average at the end {load1:.1f}. {args.messages} messages of 4 KiB"
        f" per line, {args.sessions} sessions, one message per connection, plaintext, filing"
        " workers on. Figures are messages acknowledged (250 after commit) per second; the load"
        " generator's share is its CPU time over (elapsed × cores).",
        "",
        "| line | msg/s | seconds | load generator's share of the cores |",
        "|---|---:|---:|---:|",
    ]
    for name, result in rows:
        lines.append(
            f"| {name} | {result['per_second']:.1f} | {result['seconds']:.1f} |"
            f" {result['generator_share']:.0%} |"
        )
    figures = dict(rows)
    one = figures.get("one node, 1,000 mailboxes")
    two = figures.get("two nodes, 1,000 mailboxes")
    big = next((r for n, r in rows if n.startswith("one node, 1,000,000")), None)
    if one and two:
        lines.append(f"\nTwo nodes / one node: {two['per_second'] / one['per_second']:.2f}×.")
    if one and big:
        lines.append(
            f"1,000,000 mailboxes / 1,000 mailboxes: {big['per_second'] / one['per_second']:.2f}×."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
