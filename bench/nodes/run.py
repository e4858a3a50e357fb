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


def snapshot(root: Path, revision: str, overlay: list[str]) -> tuple[Path, str]:
    """A copy of the package at ``revision`` (plus ``overlay`` files from the working tree).

    Every process of the run imports this copy, this one included (for sealing the seeded
    names), never the working tree: the tree is shared
    with people editing it, and a half-edited module or a migration added halfway through a
    run would stop a node from starting or measure something else. ``overlay`` brings in a
    change not committed yet (the run says so). Returns the folder and a description of
    the code measured.
    """
    source = root / "source"
    source.mkdir()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "caducee"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    for name in overlay:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, target)
    sys.path.insert(0, str(source))
    return source, commit + (f" + working-tree {', '.join(overlay)}" if overlay else "")


def environment(
    source: Path, database_url: str, host: str, ports: dict[str, int]
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADUCEE_")}
    env.update(
        {
            "PYTHONPATH": str(source),
            "CADUCEE_DATABASE__URL": database_url,
            "CADUCEE_SMTP__ALLOW_PLAINTEXT": "true",
            "CADUCEE_SMTP__REQUIRE_DKIM": "false",
            "CADUCEE_LISTENERS__HOST": host,
        }
    )
    for name, port in ports.items():
        env[f"CADUCEE_LISTENERS__{name.upper()}"] = str(port)
    return env


def start_node(source: Path, home: Path, database_url: str, host: str) -> Node:
    """Start ``caducee serve`` on ``host``; try new ports when one was taken meanwhile.

    The ports are free when chosen but not reserved: other people's tests on this machine
    bind 127.0.0.2 too, so a node may lose one before it binds it.
    """
    for _ in range(5):
        node = _start_node(source, home, database_url, host)
        if node is not None:
            return node
    raise RuntimeError(f"caducee serve on {host}: ports taken five times over")


def _start_node(source: Path, home: Path, database_url: str, host: str) -> Node | None:
    ports = {name: free_port(host) for name in LISTENERS}
    log_path = home / f"serve-{host}.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    stderr = log_path.open("ab")
    process = subprocess.Popen(
        [*CADUCEE, "serve", "--home", str(home)],
        env=environment(source, database_url, host, ports),
        cwd=source,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr.close()
            # The home (and this log) is removed when the run ends: show the log's tail now.
            tail = log_path.read_bytes()[start:].decode(errors="replace")[-4000:]
            if "address already in use" in tail:
                return None
            raise RuntimeError(f"caducee serve on {host} exited:\n{tail}")
        try:
            url = f"http://{host}:{ports['http']}/readyz"
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return Node(host, ports, process)
        except OSError:
            time.sleep(0.2)
    stop_node(Node(host, ports, process))
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
def nodes(source: Path, home: Path, database_url: str, count: int) -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        for host in NODE_HOSTS[:count]:
            started.append(start_node(source, home, database_url, host))
        yield started
    finally:
        for node in started:
            stop_node(node)


# -- seeding mailboxes --------------------------------------------------------------------


def seed_patients(home: Path, database_url: str, schema: str, first: int, total: int) -> list[str]:
    """``total`` open patient spaces numbered from ``first`` (beside the demo's); their addresses.

    The rows ``create_space`` and its activation leave: the account (display name sealed),
    the patient (names sealed), the space (active) and the four standard folders. Without
    the folders, each first delivery to a mailbox would create them, which a mailbox pays
    once in its life: with 1,000,000 mailboxes every message of the run would pay it, with
    1,000 only the first ones, and the comparison would measure that instead of the scale.
    """
    # From the run's copy of the package (see snapshot), not the working tree.
    from caducee.config import load_settings
    from caducee.mailboxes.models import STANDARD_FOLDERS
    from caducee.storage.keyring import Keyring
    from caducee.storage.sealed import ColumnSealer

    settings = load_settings(home, environ={"CADUCEE_DATABASE__URL": database_url})
    sealer = ColumnSealer(Keyring(settings.path(settings.crypto.keyring)))
    plain = database_url.split("?", 1)[0].replace("+psycopg", "")
    addresses = [f"{valid_ins(n)}@{PATIENT_DOMAIN}" for n in range(first, first + total)]
    with psycopg.connect(plain, autocommit=False) as connection:
        connection.execute(f"SET search_path TO {schema}")
        start = int(connection.execute("SELECT coalesce(max(id), 0) FROM accounts").fetchone()[0])
        now = datetime.now(UTC)
        with connection.cursor().copy(
            "COPY accounts (id, address, kind, state, display_name, created_at) FROM STDIN"
        ) as copy:
            for offset, address in enumerate(addresses, start=1):
                name = sealer.seal(f"Camille PATIENT{offset}", "accounts.display_name")
                copy.write_row((start + offset, address, "patient", "active", name, now))
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
        with connection.cursor().copy(
            "COPY patient_spaces (account_id, status, created_at, activated_at, opened_at,"
            " opened_by) FROM STDIN"
        ) as copy:
            for offset in range(1, total + 1):
                copy.write_row((start + offset, "active", now, now, now, "patient"))
        validity = int(now.timestamp())
        with connection.cursor().copy(
            "COPY folders (account_id, name, special_use, uid_validity, uid_next,"
            " highest_modseq, subscribed) FROM STDIN"
        ) as copy:
            for offset in range(1, total + 1):
                for name, special_use in STANDARD_FOLDERS:
                    copy.write_row((start + offset, name, special_use, validity, 1, 1, True))
        connection.execute(
            "SELECT setval(pg_get_serial_sequence('accounts', 'id'),"
            " (SELECT max(id) FROM accounts))"
        )
        connection.commit()
        # Rows as a live directory has them: old, vacuumed, on disk. Fresh from COPY, the
        # first read of each row would set its hint bits (a page write) and autovacuum would
        # start on the new rows, both during the measured load and only in the large line.
        connection.autocommit = True
        for table in ("accounts", "patients", "patient_spaces", "folders"):
            connection.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
        connection.execute("CHECKPOINT")
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


# -- CPU accounting -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends(database: str, application: str) -> list[int]:
    """The PostgreSQL server processes serving the run's nodes (by ``application_name``)."""
    with psycopg.connect(database, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchall()
    return [int(row[0]) for row in rows]


@dataclass
class CpuMeter:
    """CPU spent by the nodes and by their PostgreSQL backends between start and stop.

    Throughput on a machine others use too moves with their load; the CPU each message
    cost the servers does much less, and tells a slower product from a busier machine.
    """

    database: str
    application: str
    nodes: list[Node]
    _before: dict[int, float] | None = None

    def _now(self) -> dict[int, float]:
        pids = [node.process.pid for node in self.nodes]
        pids += backends(self.database, self.application)
        return {pid: cpu_seconds(pid) for pid in pids}

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> tuple[float, float]:
        """(nodes' CPU seconds, PostgreSQL backends' CPU seconds) since :meth:`start`."""
        assert self._before is not None
        after = self._now()
        node_pids = {node.process.pid for node in self.nodes}
        spent = {pid: cpu - self._before.get(pid, 0.0) for pid, cpu in after.items()}
        # A backend that ended meanwhile is lost; one that started counts whole (small).
        on_nodes = sum(cpu for pid, cpu in spent.items() if pid in node_pids)
        return on_nodes, sum(cpu for pid, cpu in spent.items() if pid not in node_pids)


# -- the run ------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--mailboxes", type=int, default=1_000_000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="how many times the large line and the 1,000 line after it are run, alternately",
    )
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--revision", default="HEAD", help="the commit whose package is measured")
    parser.add_argument(
        "--overlay",
        action="append",
        default=[],
        help="a file of the working tree (e.g. caducee/x.py) measured instead of the commit's",
    )
    args = parser.parse_args(argv)

    schema = f"bench_nodes_{secrets.token_hex(4)}"
    plain = args.database.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    application = f"bench-nodes-{schema}"
    url = (
        f"postgresql+psycopg://{plain.split('://', 1)[1]}?options=-csearch_path%3D{schema}"
        f"&application_name={application}"
    )
    root = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    home = root / "home"
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        source, version = snapshot(root, args.revision, args.overlay)
        env = environment(source, url, "127.0.0.1", {})
        subprocess.run(
            [*CADUCEE, "init", "--demo", "--home", str(home)], env=env, cwd=source, check=True
        )
        credentials = json.loads((home / "demo" / "credentials.json").read_text())
        sender = credentials["peer"]["professional"]
        small = seed_patients(home, url, schema, 0, 1000)
        log(f"seeded 1,000 mailboxes; {args.messages} messages per line")

        def one_line(name: str, count: int, recipients: list[str]) -> None:
            with nodes(source, home, url, count) as running:
                targets = [(node.host, node.ports["smtp"]) for node in running]
                load(targets, sender, recipients, min(200, args.messages), args.sessions)  # warm
                meter = CpuMeter(plain, application, running)
                meter.start()
                result = load(targets, sender, recipients, args.messages, args.sessions)
                on_nodes, on_database = meter.stop()
            result["node_ms"] = 1000 * on_nodes / result["messages"]
            result["database_ms"] = 1000 * on_database / result["messages"]
            result["load"] = os.getloadavg()[0]
            log(
                f"{name}: {result['per_second']:.1f} msg/s, CPU per message: nodes"
                f" {result['node_ms']:.1f} ms, PostgreSQL {result['database_ms']:.1f} ms;"
                f" load average {result['load']:.1f}"
            )
            rows.append((name, result))

        one_line("one node, 1,000 mailboxes", 1, small)
        one_line("two nodes, 1,000 mailboxes", 2, small)
        started = time.monotonic()
        large = small + seed_patients(home, url, schema, 1000, args.mailboxes - 1000)
        log(f"seeded {args.mailboxes:,} mailboxes in {time.monotonic() - started:.0f} s")
        for round_ in range(1, args.rounds + 1):
            suffix = f", round {round_}" if args.rounds > 1 else ""
            one_line(f"one node, {args.mailboxes:,} mailboxes{suffix}", 1, large)
            one_line(f"one node, 1,000 mailboxes (again{suffix})", 1, small)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")
    section = report(rows, args, version)
    print(section)
    if not args.no_append:
        with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as results:
            results.write("\n" + section)
    return 0


def report(rows: list[tuple[str, dict[str, float]]], args: argparse.Namespace, version: str) -> str:
    load1, _, _ = os.getloadavg()
    lines = [
        f"## Nodes and scale (bench/nodes) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" PostgreSQL; code {version}; load average at the end {load1:.1f}."
        f" {args.messages} messages of 4 KiB per line, {args.sessions} sessions, one message per"
        " connection, plaintext, filing workers on. Figures are messages acknowledged (250"
        " after commit) per second; the load generator's share is its CPU time over"
        " (elapsed × cores).",
        "",
        "| line | msg/s | seconds | nodes' CPU ms/msg | PostgreSQL CPU ms/msg"
        " | load generator's share of the cores | load average after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in rows:
        lines.append(
            f"| {name} | {result['per_second']:.1f} | {result['seconds']:.1f} |"
            f" {result['node_ms']:.1f} | {result['database_ms']:.1f} |"
            f" {result['generator_share']:.0%} | {result['load']:.1f} |"
        )
    one = [r for n, r in rows if n.startswith("one node, 1,000 mailboxes")]
    two = [r for n, r in rows if n.startswith("two nodes")]
    big = [r for n, r in rows if n.startswith(f"one node, {args.mailboxes:,} mailboxes")]

    def mean(results: list[dict[str, float]], key: str) -> float:
        return sum(r[key] for r in results) / len(results)

    if one and two:
        ratio = two[0]["per_second"] / one[0]["per_second"]
        lines.append(f"\nTwo nodes / one node (the line before it): {ratio:.2f}× in msg/s.")
    if one and big:
        lines.append(
            f"{args.mailboxes:,} mailboxes / 1,000 mailboxes (means of the one-node lines):"
            f" {mean(big, 'per_second') / mean(one, 'per_second'):.2f}× in msg/s,"
            f" {mean(big, 'node_ms') / mean(one, 'node_ms'):.2f}× in the nodes' CPU per message."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
