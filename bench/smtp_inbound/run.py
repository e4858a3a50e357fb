"""Caducée's inbound SMTP throughput against Postfix, in one run.

Run as root from the repository root::

    .venv/bin/python bench/smtp_inbound/run.py [--messages-small 3000] [--messages-large 300]
        [--sizes small,large] [--sessions 20] [--no-append]
        [--setups sqlite,postgresql,postgresql:2]

Both servers run on the loopback, one after the other (never at the same time), and are
driven by Postfix's own load generator ``smtp-source`` with the same options:

* **Postfix** is configured from scratch in a temporary folder (its own ``config_directory``,
  ``queue_directory``, ``data_directory``; the system instance and ``/etc/postfix`` are never
  touched) and delivers every recipient of the virtual domain ``bench.example`` into one
  Maildir. Postfix answers ``250`` once the message is queued, before the local delivery, so
  its figure is messages **delivered into the Maildir** per second: the clock starts when
  ``smtp-source`` starts and stops when ``Maildir/new`` holds all N messages.
* **Caducée** runs from a fresh ``caducee init --demo`` home with TLS and DKIM requirements
  off (``smtp-source`` speaks neither) and its job workers on, as in production (the
  filing of attachments competes for the CPU, as it does there). Caducée answers ``250`` only after
  its durable commit, so its figure is messages **acknowledged** per second: the clock stops
  when ``smtp-source`` exits (it aborts on any non-2xx reply). The count is then checked with
  inbound message rows in its database.

Two message sizes: 4 KiB (``smtp-source -l 4096``) and ~1 MiB (a multipart/mixed message with
a PDF attachment, sent with ``smtp-source -F``). The table is printed and, unless
``--no-append``, appended as a section of ``bench/RESULTS.md``.

``--setups`` runs Caducée several times against the same Postfix figure: on its SQLite file
(the default) or on PostgreSQL (a fresh schema per setup, dropped at the end), with
``[smtp] processes = N`` SMTP processes sharing the port (SO_REUSEPORT).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import platform
import pwd
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from latency import LatencyResult  # bench/smtp_inbound/latency.py, beside this script
from latency import measure as measure_latency

REPO = Path(__file__).resolve().parents[2]
RESULTS_FILE = REPO / "bench" / "RESULTS.md"
SBIN_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"]
)

POSTFIX_DOMAIN = "bench.example"
POSTFIX_SENDER = f"sender@{POSTFIX_DOMAIN}"
POSTFIX_RECIPIENT = f"bench@{POSTFIX_DOMAIN}"
SMALL_PAYLOAD = 4096
PDF_RAW_BYTES = 750 * 1024
POLL_SECONDS = 0.02
TARGET_RATIO = 1.0
DEFAULT_POSTGRESQL_URL = "postgresql://postgres@127.0.0.1:5432/test"


class BenchError(Exception):
    """The benchmark cannot go on; the message says why and what to do."""


# Small helpers ------------------------------------------------------------------------------


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(
    command: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; on failure raise :class:`BenchError` with its output."""
    try:
        result = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:.0f} s: {' '.join(command)}") from None
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise BenchError(f"exit {result.returncode}: {' '.join(command)}\n{tail_text(output, 20)}")
    return result


def tail_text(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def tail_file(path: Path, lines: int) -> str:
    try:
        return tail_text(path.read_text(errors="replace"), lines)
    except OSError:
        return f"({path} unreadable)"


def find_tool(name: str) -> str:
    found = shutil.which(name, path=SBIN_PATH)
    if found is None:
        raise BenchError(
            f"'{name}' not found: install Postfix (apt-get install postfix), which ships "
            "postfix, postconf and smtp-source"
        )
    return found


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all sockets held open until every port is chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_banner(port: int, timeout: float, alive: Callable[[], bool]) -> None:
    """Wait until an SMTP server on the loopback port answers with its 220 greeting."""
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise BenchError(f"the server on port {port} exited before answering")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                banner = sock.recv(512)
                sock.sendall(b"QUIT\r\n")
            if banner.startswith(b"220"):
                return
            last_error = f"banner {banner!r}"
        except OSError as error:
            last_error = str(error)
        time.sleep(0.2)
    raise BenchError(f"no SMTP greeting on 127.0.0.1:{port} after {timeout:.0f} s ({last_error})")


# The 1 MiB message ----------------------------------------------------------------------------


def minimal_pdf(raw_bytes: int) -> bytes:
    """A valid one-page PDF whose size is about ``raw_bytes``: a text line and a noise image.

    The image is uncompressed random RGB (incompressible, like a scanned report), which pads
    the document to the wanted size. The bytes are the same on every run (fixed seed).
    """
    width = 640
    height = max(1, (raw_bytes - 1024) // (width * 3))
    pixels = random.Random(20260101).randbytes(width * height * 3)
    text = b"BT /F1 18 Tf 72 780 Td (Caducee benchmark - compte rendu de biologie) Tj ET\n"
    content = text + b"q 480 0 0 360 57 380 cm /Im1 Do Q\n"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
        b"/BitsPerComponent 8 /Length %d >>\nstream\n"
        % (width, height, len(pixels))
        + pixels
        + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def large_message(sender: str, recipient: str, pdf: bytes) -> bytes:
    """A multipart/mixed message (text + PDF), LF line endings, and no Message-ID.

    ``smtp-source -F`` sends each line of the file followed by CRLF (a CR already in the file
    would be sent as a bare CR), so the file must use bare LF. No Message-ID: the same file is
    sent N times and Caducée suppresses duplicates by Message-ID.
    """
    boundary = "=_caducee_bench_boundary_7f3a"
    encoded = base64.encodebytes(pdf).decode("ascii")  # 76-character lines, LF
    date = dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    lines = [
        f"From: {sender}",
        f"To: {recipient}",
        f"Date: {date}",
        "Subject: Compte rendu de biologie (benchmark)",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
        "",
        "This is a multi-part message in MIME format.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "Bonjour,",
        "",
        "Veuillez trouver ci-joint le compte rendu de biologie.",
        "",
        f"--{boundary}",
        'Content-Type: application/pdf; name="compte-rendu.pdf"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="compte-rendu.pdf"',
        "",
    ]
    text = "\n".join(lines) + "\n" + encoded + f"\n--{boundary}--\n"
    return text.encode("utf-8")


def wire_size(message_file: Path) -> int:
    """Bytes of the message as smtp-source sends it (every LF becomes CRLF)."""
    data = message_file.read_bytes()
    return len(data) + data.count(b"\n")


# Load generation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    name: str  # "small" or "large"
    label: str
    messages: int


@dataclass(frozen=True)
class Setup:
    """How Caducée runs: its database engine and its number of SMTP processes."""

    engine: str  # "sqlite" or "postgresql"
    processes: int

    @property
    def label(self) -> str:
        word = "process" if self.processes == 1 else "processes"
        engine = "SQLite" if self.engine == "sqlite" else "PostgreSQL"
        return f"{engine}, {self.processes} SMTP {word}"

    @property
    def slug(self) -> str:
        return f"{self.engine}-{self.processes}"


DEFAULT_SETUP = Setup("sqlite", 1)


def parse_setups(text: str) -> list[Setup]:
    """``sqlite,postgresql:2`` → setups; ``ENGINE[:PROCESSES]``, processes 1 by default."""
    setups = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        engine, _, count = item.partition(":")
        if engine not in {"sqlite", "postgresql"}:
            raise ValueError(f"unknown engine {engine!r} (sqlite or postgresql)")
        processes = int(count) if count else 1
        if not 1 <= processes <= 64:
            raise ValueError(f"processes must be 1 to 64, got {processes}")
        setups.append(Setup(engine, processes))
    if not setups:
        raise ValueError("no setup given")
    if len(set(setups)) != len(setups):
        raise ValueError("a setup is listed twice")
    return setups


class PgSchema:
    """A throw-away PostgreSQL schema for one Caducée home, dropped by :meth:`drop`.

    psycopg comes from the Caducée virtualenv this script runs in; it is imported only when
    a PostgreSQL setup is asked for, so a SQLite-only run needs nothing but the standard
    library.
    """

    def __init__(self, base_url: str, name: str) -> None:
        self.base_url = base_url
        self.name = name
        self.created = False

    @property
    def url(self) -> str:
        separator = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{separator}options={quote(f'-csearch_path={self.name}')}"

    def _connect(self) -> Any:
        import psycopg  # the venv's driver (see the class docstring)

        return psycopg.connect(self.base_url, autocommit=True, connect_timeout=10)

    def create(self) -> None:
        with self._connect() as connection:
            connection.execute(f'CREATE SCHEMA "{self.name}"')
        self.created = True

    def drop(self) -> None:
        if not self.created:
            return
        with self._connect() as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        self.created = False

    def scalar(self, query: str) -> int:
        with self._connect() as connection:
            connection.execute(f'SET search_path TO "{self.name}"')
            row = connection.execute(query).fetchone()
        return int(row[0]) if row else 0


def _stat_ticks(pid: int | str) -> tuple[int, int] | None:
    """(parent pid, user + system ticks of all threads) of a process, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12])


def process_tree(root: int) -> set[int]:
    """``root`` and its descendants still running."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat_ticks(entry.name)) is not None:
            parents[int(entry.name)] = stat[0]
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def _local_ports(pids: set[int]) -> set[int]:
    """Local TCP ports of the sockets the processes ``pids`` hold open (IPv4 and IPv6)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def postgres_backend_ticks(client_root: int) -> dict[int, int]:
    """CPU ticks of each PostgreSQL backend serving a connection of ``client_root``'s tree.

    On PostgreSQL part of the work per message moves from the gateway's processes into the
    database server's backends: the figure per message is printed beside the gateway's so
    that the comparison with SQLite (in-process) stays honest. A backend is recognised by
    its process title (``postgres: … 127.0.0.1(<client port>) …``) and the client port
    being one of the gateway's sockets, so that another user of the same server (another
    test run) is not counted. Backends that exit during the load are not counted (the
    gateway's pools keep their connections).
    """
    ports = _local_ports(process_tree(client_root))
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        at = title.find("(")
        close = title.find(")", at)
        if at < 0 or close < 0 or not title[at + 1 : close].isdigit():
            continue
        if int(title[at + 1 : close]) in ports and (stat := _stat_ticks(entry.name)) is not None:
            ticks[int(entry.name)] = stat[1]
    return ticks


def postgres_cpu_delta(before: dict[int, int], after: dict[int, int]) -> float:
    """Seconds of CPU the backends used between two :func:`postgres_backend_ticks`."""
    ticks = sum(value - before.get(pid, 0) for pid, value in after.items())
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadResult:
    messages: int
    seconds: float  # until the figure's end condition
    ack_seconds: float  # until smtp-source exited (every message answered 250)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def ack_rate(self) -> float:
        return self.messages / self.ack_seconds if self.ack_seconds > 0 else 0.0


@dataclass
class SmtpSource:
    binary: str
    sessions: int
    workdir: Path

    def command(
        self, port: int, sender: str, recipient: str, count: int, sessions: int, payload: list[str]
    ) -> list[str]:
        counts = ["-s", str(sessions), "-m", str(count)]
        envelope = ["-f", sender, "-t", recipient]
        return [self.binary, *counts, *payload, *envelope, f"127.0.0.1:{port}"]

    def drive(
        self,
        *,
        port: int,
        sender: str,
        recipient: str,
        count: int,
        payload: list[str],
        done: Callable[[], bool] | None,
        timeout: float,
        what: str,
        sessions: int | None = None,
    ) -> LoadResult:
        """Run smtp-source; return when it exited and ``done()`` holds (None: exit only)."""
        command = self.command(port, sender, recipient, count, sessions or self.sessions, payload)
        out_path = self.workdir / "smtp-source.out"
        with out_path.open("w+") as output:
            start = time.monotonic()
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
            ack: float | None = None
            try:
                while True:
                    now = time.monotonic()
                    if ack is None and process.poll() is not None:
                        ack = now - start
                        if process.returncode != 0:
                            output.seek(0)
                            raise BenchError(
                                f"{what}: smtp-source exited {process.returncode}: "
                                f"{tail_text(output.read().strip(), 5)}"
                            )
                    if ack is not None and (done is None or done()):
                        return LoadResult(count, now - start, ack)
                    if now - start > timeout:
                        state = "still sending" if ack is None else "sent, not all delivered"
                        raise BenchError(f"{what}: not finished after {timeout:.0f} s ({state})")
                    time.sleep(POLL_SECONDS)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)


# Postfix ------------------------------------------------------------------------------------


MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
# Benchmark instance written by bench/smtp_inbound/run.py; removed at the end of the run.
compatibility_level = 3.6
config_directory = {config}
queue_directory = {queue}
data_directory = {data}
syslog_name = postfix-bench
maillog_file = {log}
maillog_file_prefixes = {root}
myhostname = mx.bench.example
mydomain = bench.example
myorigin = $myhostname
mydestination =
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_client_restrictions = permit_mynetworks, reject
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtp_dns_support_level = disabled
default_process_limit = 200
message_size_limit = 25000000
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = static:Maildir/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
"""


@dataclass
class Postfix:
    """A throw-away Postfix instance living entirely under ``root``."""

    postfix: str
    root: Path
    port: int
    started: bool = False

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    @property
    def maildir_new(self) -> Path:
        return self.root / "mail" / "Maildir" / "new"

    @property
    def log_file(self) -> Path:
        return self.root / "postfix.log"

    def write_config(self) -> None:
        owner = pwd.getpwnam("postfix")
        for folder in (self.root, self.config, self.queue):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
        data = self.root / "data"
        mail = self.root / "mail"
        for folder in (data, mail):
            folder.mkdir(exist_ok=True)
            os.chown(folder, owner.pw_uid, owner.pw_gid)
            folder.chmod(0o700)
        (self.config / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (self.config / "main.cf").write_text(
            MAIN_CF.format(
                config=self.config,
                queue=self.queue,
                data=data,
                log=self.log_file,
                root=self.root,
                domain=POSTFIX_DOMAIN,
                mail=mail,
                uid=owner.pw_uid,
                gid=owner.pw_gid,
            )
        )

    def start(self) -> None:
        self.write_config()
        self.started = True  # from here on, always try to stop it
        result = run([self.postfix, "-c", str(self.config), "start"], timeout=120, check=False)
        if result.returncode != 0:
            raise BenchError(
                f"postfix -c {self.config} start failed (exit {result.returncode}):\n"
                f"{tail_text((result.stderr + result.stdout).strip(), 15)}\n"
                f"--- {self.log_file}\n{tail_file(self.log_file, 15)}"
            )
        wait_for_banner(self.port, 30, lambda: True)

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        pid = self.master_pid()
        result = run([self.postfix, "-c", str(self.config), "stop"], timeout=60, check=False)
        if result.returncode != 0:
            log(f"postfix stop: exit {result.returncode}: {result.stderr.strip()}")
        if pid is None:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        if pid_alive(pid):
            log("Postfix master still running after stop: postfix abort")
            run([self.postfix, "-c", str(self.config), "abort"], timeout=60, check=False)

    def log_tail(self) -> str:
        return f"--- {self.log_file}\n{tail_file(self.log_file, 15)}"

    def holds(self, count: int) -> Callable[[], bool]:
        """A check that the Maildir holds at least ``count`` messages."""
        return lambda: self.delivered() >= count

    def delivered(self) -> int:
        try:
            with os.scandir(self.maildir_new) as entries:
                return sum(1 for _ in entries)
        except FileNotFoundError:
            return 0


def process_tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system, all threads) of ``root`` and its descendants still running.

    With ``[smtp] processes`` above 1, ``caducee serve`` starts SMTP worker processes that
    share the port: their CPU belongs to the figure as much as the main process's.
    """
    ticks = (_stat_ticks(pid) for pid in process_tree(root))
    return sum(stat[1] for stat in ticks if stat is not None) / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Caducée ------------------------------------------------------------------------------------


LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "http")


@dataclass
class Caducee:
    """A fresh demo home and its ``caducee serve`` process."""

    binary: str
    root: Path
    ports: dict[str, int]
    workers: int | None = None  # None: the product's default ([queue] workers)
    profile: Path | None = None  # write a sampling profile of the server there
    setup: Setup = DEFAULT_SETUP
    pg: PgSchema | None = None  # the setup's PostgreSQL schema (None: the home's SQLite file)
    process: subprocess.Popen[bytes] | None = None
    patient: str = ""
    patient_password: str = ""
    sender: str = ""
    reinitialised: bool = False
    stderr_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.stderr_path = self.root / "serve.stderr.log"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CADUCEE_")}
        env.update(
            {
                "CADUCEE_SMTP__ALLOW_PLAINTEXT": "true",
                "CADUCEE_SMTP__REQUIRE_DKIM": "false",
            }
        )
        if self.workers is not None:
            env["CADUCEE_QUEUE__WORKERS"] = str(self.workers)
        if self.pg is not None:
            env["CADUCEE_DATABASE__URL"] = self.pg.url
        if self.setup.processes != 1:
            env["CADUCEE_SMTP__PROCESSES"] = str(self.setup.processes)
        for name in LISTENERS:
            env[f"CADUCEE_LISTENERS__{name.upper()}"] = str(self.ports[name])
        return env

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.pg is not None and not self.pg.created:
            self.pg.create()
        run(
            [self.binary, "init", "--demo", "--home", str(self.home)],
            timeout=300,
            env=self.environment(),
        )
        credentials = json.loads((self.home / "demo" / "credentials.json").read_text())
        self.patient = credentials["patient"]["address"]
        self.patient_password = credentials["patient"]["password"]
        self.sender = credentials["peer"]["professional"]

    def _serve(self) -> None:
        with self.stderr_path.open("wb") as stderr:
            command = [self.binary, "serve", "--home", str(self.home)]
            if self.profile is not None:
                sampler = Path(__file__).resolve().parent / "sample.py"
                command = [sys.executable, str(sampler), str(self.profile), "--", *command]
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=self.environment(),
                start_new_session=True,
            )
        try:
            self.wait_ready(90)
        except BenchError as error:
            raise BenchError(f"{error}\n--- caducee serve stderr\n{self.log_tail()}") from None

    def start(self) -> None:
        """Serve the home; if the schema moved since init (code edited meanwhile), init again."""
        try:
            self._serve()
        except BenchError as error:
            if "database schema is at" not in str(error):
                raise
            log("caducee serve: the schema changed since init; running init again, once")
            self.reinitialised = True
            self.stop()
            run(
                [self.binary, "init", "--demo", "--home", str(self.home)],
                timeout=300,
                env=self.environment(),
            )
            self._serve()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.ports['http']}/readyz"
        while time.monotonic() < deadline:
            if not self.alive():
                raise BenchError("caducee serve exited during start-up")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        else:
            raise BenchError(f"caducee serve not ready ({url}) after {timeout:.0f} s")
        wait_for_banner(self.ports["smtp"], max(5.0, deadline - time.monotonic()), self.alive)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 60 s; return the exit status."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log("caducee serve did not stop within 60 s of SIGTERM: SIGKILL")
                process.kill()
                process.wait(timeout=30)
        return process.returncode

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far, all threads.

        Less sensitive than a rate to what else runs on the machine: CPU per message shows a
        gain even when other load makes the throughput figures noisy.
        """
        if self.process is None:
            return 0.0
        return process_tree_cpu_seconds(self.process.pid)

    def postgres_ticks(self) -> dict[int, int]:
        """CPU ticks of the PostgreSQL backends serving this server (empty on SQLite)."""
        if self.pg is None or self.process is None:
            return {}
        return postgres_backend_ticks(self.process.pid)

    def stored(self) -> int:
        """Inbound message rows in the home's SQLite database (read-only).

        Not ``caducee mailbox list``: with the job workers on, a patient's copy of a
        message with a PDF waits for its filing job before it shows in the INBOX (E3), while
        its message row is written in the transaction that precedes the ``250``.
        """
        query = "SELECT count(*) FROM messages WHERE direction = 'inbound'"
        if self.pg is not None:
            return self.pg.scalar(query)
        url = f"file:{self.home / 'caducee.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(url, uri=True, timeout=60)) as db:
            row = db.execute(query).fetchone()
        return int(row[0])

    def jobs_due(self) -> int:
        """Jobs the workers still owe: running, or ready and due (read-only).

        A ``send-batch`` notification waits for its grouping window (minutes) and the
        lifecycle sweep for its period: neither is due during a run, so neither counts.
        """
        if self.pg is not None:
            return self.pg.scalar(
                "SELECT count(*) FROM jobs WHERE state = 'running'"
                " OR (state = 'ready' AND next_attempt_at <= now())"
            )
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        url = f"file:{self.home / 'caducee.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(url, uri=True, timeout=60)) as db:
            row = db.execute(
                "SELECT count(*) FROM jobs WHERE state = 'running'"
                " OR (state = 'ready' AND next_attempt_at <= ?)",
                (now,),
            ).fetchone()
        return int(row[0])

    def log_tail(self, lines: int = 20) -> str:
        return tail_file(self.stderr_path, lines)

    def log_problems(self) -> list[str]:
        """The warning and error lines of the server's JSON log."""
        problems = []
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return []
        for line in text.splitlines():
            try:
                level = str(json.loads(line).get("level", "")).lower()
            except (json.JSONDecodeError, AttributeError):
                level = "raw"  # a traceback or other non-JSON output
            if level in {"warning", "error", "critical", "raw"}:
                problems.append(line)
        return problems


# The run ------------------------------------------------------------------------------------


@dataclass
class Row:
    size: Size
    wire_bytes: int | None  # None: smtp-source -l (4096-byte body + its own 4 header lines)
    setup: Setup = DEFAULT_SETUP
    postfix: LoadResult | None = None
    caducee: LoadResult | None = None
    caducee_stored: int | None = None
    latency: LatencyResult | None = None
    caducee_cpu_ms: float | None = None  # server CPU (all threads) per message, during the load
    jobs_left: int | None = None  # jobs due or running when the load ended
    drain_seconds: float | None = None  # from the end of the load until no job was due
    caducee_cpu_drained_ms: float | None = None  # CPU per message, load and drain together
    postgres_cpu_ms: float | None = None  # PostgreSQL's processes, per message, during the load

    @property
    def ratio(self) -> float | None:
        if self.postfix is None or self.caducee is None or self.postfix.rate == 0:
            return None
        return self.caducee.rate / self.postfix.rate


def payload_for(size: Size, files: dict[str, Path]) -> list[str]:
    return ["-l", str(SMALL_PAYLOAD)] if size.name == "small" else ["-F", str(files[size.name])]


def bench_postfix(
    source: SmtpSource, postfix: Postfix, rows: list[Row], files: dict[str, Path], timeout: float
) -> None:
    postfix.start()
    log(f"Postfix {postfix_version()} listening on 127.0.0.1:{postfix.port} ({postfix.root})")
    for row in rows:
        size = row.size
        payload = payload_for(size, _only(files, "postfix"))
        # One message first: proves the set-up and warms the process pools.
        base = postfix.delivered()
        try:
            source.drive(
                port=postfix.port,
                sender=POSTFIX_SENDER,
                recipient=POSTFIX_RECIPIENT,
                count=1,
                sessions=1,
                payload=payload,
                done=postfix.holds(base + 1),
                timeout=60,
                what=f"Postfix probe ({size.label})",
            )
        except BenchError as error:
            raise BenchError(f"{error}\n{postfix.log_tail()}") from None
        base = postfix.delivered()
        log(f"Postfix, {size.label}: {size.messages} messages, {source.sessions} sessions")
        try:
            row.postfix = source.drive(
                port=postfix.port,
                sender=POSTFIX_SENDER,
                recipient=POSTFIX_RECIPIENT,
                count=size.messages,
                payload=payload,
                done=postfix.holds(base + size.messages),
                timeout=timeout,
                what=f"Postfix ({size.label})",
            )
        except BenchError as error:
            raise BenchError(f"{error}\n{postfix.log_tail()}") from None
        log(
            f"  delivered to Maildir: {row.postfix.rate:.1f} msg/s ({row.postfix.seconds:.2f} s); "
            f"acknowledged: {row.postfix.ack_rate:.1f} msg/s ({row.postfix.ack_seconds:.2f} s)"
        )


def _only(files: dict[str, Path], target: str) -> dict[str, Path]:
    """The message files of one target, keyed by size name."""
    prefix = f"{target}-"
    return {k.removeprefix(prefix): v for k, v in files.items() if k.startswith(prefix)}


def drain(caducee: Caducee, row: Row, cpu_before: float, timeout: float) -> None:
    """Wait until the job workers owe nothing, and charge their CPU to the load.

    The rate stops at the last ``250``; the notification and filing jobs the load queued may
    still be waiting then. A change that makes the workers cheaper (issue 19: batched job
    transactions) shows here, and one that only defers their work cannot hide in the rate.
    """
    started = time.monotonic()
    row.jobs_left = left = caducee.jobs_due()
    while left and time.monotonic() - started < timeout:
        time.sleep(POLL_SECONDS * 5)
        left = caducee.jobs_due()
    row.drain_seconds = time.monotonic() - started
    row.caducee_cpu_drained_ms = (caducee.cpu_seconds() - cpu_before) * 1000 / row.size.messages
    status = "" if not left else f", {left} STILL DUE after {timeout:.0f} s"
    log(
        f"  jobs due at the end of the load: {row.jobs_left}, drained in "
        f"{row.drain_seconds:.2f} s{status}; CPU with the drain "
        f"{row.caducee_cpu_drained_ms:.1f} ms per message"
    )


def bench_caducee(
    source: SmtpSource,
    caducee: Caducee,
    rows: list[Row],
    files: dict[str, Path],
    timeout: float,
    latency_messages: int = 0,
) -> None:
    caducee.start()
    log(
        f"caducee serve ready ({caducee.setup.label}), SMTP on "
        f"127.0.0.1:{caducee.ports['smtp']} ({caducee.home})"
    )
    expected = 0
    for row in rows:
        size = row.size
        payload = payload_for(size, _only(files, "caducee"))
        try:
            source.drive(
                port=caducee.ports["smtp"],
                sender=caducee.sender,
                recipient=caducee.patient,
                count=1,
                sessions=1,
                payload=payload,
                done=None,
                timeout=60,
                what=f"Caducée probe ({size.label})",
            )
        except BenchError as error:
            hint = (
                "Caducée refused a single message: check the message file's line endings "
                "(smtp-source -F appends CRLF to every line, so the file must use bare LF) "
                "and the refusal logged below."
                if size.name == "large"
                else "Caducée refused a single smtp-source message (see the log below)."
            )
            raise BenchError(
                f"{error}\n{hint}\n--- caducee serve stderr\n{caducee.log_tail()}"
            ) from None
        expected += 1
        log(f"Caducée, {size.label}: {size.messages} messages, {source.sessions} sessions")
        cpu_before = caducee.cpu_seconds()
        pg_before = caducee.postgres_ticks()
        try:
            row.caducee = source.drive(
                port=caducee.ports["smtp"],
                sender=caducee.sender,
                recipient=caducee.patient,
                count=size.messages,
                payload=payload,
                done=None,
                timeout=timeout,
                what=f"Caducée ({size.label})",
            )
        except BenchError as error:
            state = "running" if caducee.alive() else "EXITED"
            raise BenchError(
                f"{error}\n--- caducee serve ({state}) stderr\n{caducee.log_tail()}"
            ) from None
        row.caducee_cpu_ms = (caducee.cpu_seconds() - cpu_before) * 1000 / size.messages
        if caducee.pg is not None:
            pg_seconds = postgres_cpu_delta(pg_before, caducee.postgres_ticks())
            row.postgres_cpu_ms = pg_seconds * 1000 / size.messages
        expected += size.messages
        pg_cpu = row.postgres_cpu_ms
        pg_text = f" (+ PostgreSQL {pg_cpu:.1f} ms)" if pg_cpu is not None else ""
        log(
            f"  acknowledged (250 after commit): {row.caducee.rate:.1f} msg/s "
            f"({row.caducee.seconds:.2f} s), {row.caducee_cpu_ms:.1f} ms CPU per message{pg_text}"
        )
        drain(caducee, row, cpu_before, timeout)
        stored = caducee.stored()
        row.caducee_stored = stored - (expected - size.messages)
        check = "OK" if stored == expected else f"MISMATCH (expected {expected})"
        log(f"  inbound message rows in the database: {stored} {check}")
        if size.name == "small" and latency_messages:
            rate = row.caducee.rate / 2
            count = latency_messages
            log(f"Caducée latency at half that load: {count} × 4 KiB at {rate:.1f} msg/s")
            row.latency = measure_latency(
                smtp_port=caducee.ports["smtp"],
                imaps_port=caducee.ports["imaps"],
                sender=caducee.sender,
                recipient=caducee.patient,
                password=caducee.patient_password,
                rate=rate,
                messages=count,
            )
            expected += count
            log(f"  {row.latency.summary()}")


def postfix_version() -> str:
    try:
        result = run([find_tool("postconf"), "-d", "-h", "mail_version"], timeout=30)
        return result.stdout.strip()
    except BenchError:
        return "unknown"


def machine() -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = next(
        (int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")),
        0,
    )
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    nproc = run(["nproc"], timeout=10, check=False).stdout.strip() or str(os.cpu_count())
    distro = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    return {
        "cpus": nproc,
        "memory": f"{total_kib / 1024 / 1024:.1f} GiB",
        "cpu": model,
        "kernel": platform.release(),
        "os": distro,
        "python": platform.python_version(),
    }


def filesystem_of(path: Path) -> str:
    """``fstype (device)`` of the mount holding ``path`` (both servers' files live there)."""
    best: tuple[int, str] = (-1, "unknown")
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1].replace("\\040", " ")
            inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > best[0]:
                best = (len(mount), f"{fields[2]} ({fields[0]})")
    return best[1]


def git_commit() -> str:
    head = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], timeout=30, check=False)
    commit = head.stdout.strip() or "unknown"
    status = run(["git", "-C", str(REPO), "status", "--porcelain"], timeout=60, check=False)
    if status.stdout.strip():
        commit += " + uncommitted changes"
    return commit


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| size | messages | Postfix msg/s (delivered to Maildir) "
        "| Caducée msg/s (acknowledged after commit) | Caducée/Postfix | target ≥ 1.0 |",
        "|---|---:|---:|---:|---:|---|",
    ]
    labelled = any(row.setup != DEFAULT_SETUP for row in rows)
    for row in rows:
        label = f"{row.size.label} ({row.setup.label})" if labelled else row.size.label
        postfix = f"{row.postfix.rate:.1f}" if row.postfix else "—"
        caducee = f"{row.caducee.rate:.1f}" if row.caducee else "—"
        ratio = row.ratio
        ratio_text = f"{ratio:.2f}" if ratio is not None else "—"
        met = "—" if ratio is None else ("met" if ratio >= TARGET_RATIO else "not met")
        lines.append(
            f"| {label} | {row.size.messages} | {postfix} | {caducee} | {ratio_text} | {met} |"
        )
    return lines


def details(rows: list[Row]) -> list[str]:
    lines = []
    labelled = any(row.setup != DEFAULT_SETUP for row in rows)
    seen_postfix: set[str] = set()
    for row in rows:
        wire = (
            f"{row.wire_bytes} bytes on the wire"
            if row.wire_bytes is not None
            else f"`-l {SMALL_PAYLOAD}` body + From/To/Date/Message-Id"
        )
        setup = f", {row.setup.label}" if labelled else ""
        parts = [f"{row.size.label} ({wire}){setup}"]
        if row.postfix and row.size.name not in seen_postfix:
            seen_postfix.add(row.size.name)
            parts.append(
                f"Postfix {row.postfix.seconds:.2f} s to the last Maildir file, "
                f"smtp-source done after {row.postfix.ack_seconds:.2f} s "
                f"({row.postfix.ack_rate:.1f} msg/s acknowledged)"
            )
        if row.caducee:
            stored = (
                f", {row.caducee_stored} stored (message rows)"
                if row.caducee_stored is not None
                else ""
            )
            parts.append(f"Caducée {row.caducee.seconds:.2f} s{stored}")
            if row.caducee_cpu_ms is not None:
                parts.append(f"Caducée CPU {row.caducee_cpu_ms:.1f} ms per message")
            if row.postgres_cpu_ms is not None:
                parts.append(f"PostgreSQL CPU {row.postgres_cpu_ms:.1f} ms per message")
            if row.caducee_cpu_drained_ms is not None and row.drain_seconds is not None:
                parts.append(
                    f"{row.jobs_left} jobs due at the last 250, drained in "
                    f"{row.drain_seconds:.1f} s; CPU with the drain "
                    f"{row.caducee_cpu_drained_ms:.1f} ms per message"
                )
        if row.latency is not None:
            parts.append(f"Caducée latency at half its rate: {row.latency.summary()}")
        lines.append("- " + "; ".join(parts))
    return lines


def report(
    rows: list[Row],
    args: argparse.Namespace,
    info: dict[str, str],
    version: str,
    commit: str,
    notes: list[str],
) -> str:
    now = dt.datetime.now().astimezone()
    lines = [
        f"## SMTP inbound (bench/smtp_inbound) — {now:%Y-%m-%d %H:%M %Z}",
        "",
        f"- Machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"kernel {info['kernel']}, {info['os']}, Python {info['python']}; "
        f"temporary folder on {info['filesystem']}",
        f"- Postfix {version}; Caducée commit {commit}",
        f"- Load: `smtp-source -s {args.sessions}` (one message per connection, no TLS), "
        "4 KiB = `-l 4096`, 1 MiB = `-F` multipart/mixed with a 750 KiB PDF (base64); "
        "one probe message per size before timing",
        "- Postfix: fresh instance in a temporary folder, virtual domain into one Maildir; "
        "figure = messages delivered to `Maildir/new` per second (Postfix answers 250 before "
        "delivery)",
        f"- Caducée: fresh `caducee init --demo` home ({setups_text(args.setup_list)}), "
        "`ALLOW_PLAINTEXT=true`, "
        f"`REQUIRE_DKIM=false`, {workers_text(args.workers)}; figure = messages acknowledged "
        "per second (250 only after the durable commit), count checked in the messages table",
        f"- Command: `{' '.join(['.venv/bin/python', 'bench/smtp_inbound/run.py', *args.argv])}`",
        "",
        *table(rows),
        "",
        *details(rows),
    ]
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def setups_text(setups: list[Setup]) -> str:
    """Where Caducée's rows lived and how many SMTP processes served, for the section."""
    if setups == [DEFAULT_SETUP]:
        return "SQLite"
    texts = []
    for setup in setups:
        where = "SQLite file" if setup.engine == "sqlite" else "PostgreSQL, a fresh schema"
        texts.append(f"{where}, `[smtp] processes = {setup.processes}`")
    return "; then ".join(texts)


def workers_text(workers: int | None) -> str:
    """How the job workers ran, for the section."""
    if workers is None:
        return "job workers on (the default `[queue] workers`)"
    if workers == 0:
        return "`QUEUE__WORKERS=0` (job workers off)"
    return f"`QUEUE__WORKERS={workers}`"


def append_results(section: str) -> None:
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError), RESULTS_FILE.open("x") as new:
        new.write("# Caducée benchmark results\n")
    with RESULTS_FILE.open("a+") as results:
        results.seek(0, os.SEEK_END)
        size = results.tell()
        prefix = ""
        if size:
            results.seek(max(0, size - 2))
            ending = results.read()
            prefix = "" if ending.endswith("\n\n") else ("\n" if ending.endswith("\n") else "\n\n")
        results.seek(0, os.SEEK_END)
        results.write(prefix + section)


def profile_path(profile: Path | None, setup: Setup, setups: int) -> Path | None:
    """Where the sampler writes this setup's profile (one file per setup when several)."""
    if profile is None:
        return None
    profile = profile.resolve()
    if setups == 1:
        return profile
    return profile.with_name(f"{profile.stem}-{setup.slug}{profile.suffix}")


def caducee_binary(explicit: str | None) -> str:
    candidates = [explicit] if explicit else []
    candidates += [str(Path(sys.executable).parent / "caducee"), str(REPO / ".venv/bin/caducee")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("caducee")
    if found is None:
        raise BenchError("'caducee' not found: run 'make install' (or pass --caducee PATH)")
    return found


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Caducée's inbound SMTP throughput against Postfix (smtp-source load)."
    )
    parser.add_argument("--messages-small", type=int, default=3000, help="4 KiB messages (3000)")
    parser.add_argument("--messages-large", type=int, default=300, help="1 MiB messages (300)")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions (20)")
    parser.add_argument(
        "--sizes", default="small,large", help="comma-separated: small, large (both)"
    )
    parser.add_argument(
        "--no-append", action="store_true", help="print only; do not append to RESULTS.md"
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="limit of one timed load, seconds (600)"
    )
    parser.add_argument("--caducee", help="the caducee command (default: the venv's)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Caducée's job workers ([queue] workers; default: the product's default, on)",
    )
    parser.add_argument(
        "--latency-messages",
        type=int,
        default=300,
        help="4 KiB messages of the latency probe at half Caducée's rate (300; 0: none)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write a sampling profile of caducee serve to this file (sample.py)",
    )
    parser.add_argument(
        "--setups",
        default="sqlite:1",
        help="Caducée setups, each ENGINE[:SMTP PROCESSES], run in turn against the same "
        "Postfix figure, e.g. sqlite,postgresql,postgresql:2 (sqlite:1)",
    )
    parser.add_argument(
        "--postgresql-url",
        default=DEFAULT_POSTGRESQL_URL,
        help=f"PostgreSQL of the postgresql setups; each gets a fresh schema, dropped at the "
        f"end ({DEFAULT_POSTGRESQL_URL})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    try:
        args.setup_list = parse_setups(args.setups)
    except ValueError as error:
        parser.error(f"--setups: {error}")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in {"small", "large"}]
    if unknown or not sizes:
        parser.error(f"--sizes: expected small and/or large, got {args.sizes!r}")
    if min(args.messages_small, args.messages_large, args.sessions) < 1:
        parser.error("--messages-small, --messages-large and --sessions must be at least 1")
    args.size_list = sizes
    args.argv = argv
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        return bench(args)
    except BenchError as error:
        print(f"\nbench/smtp_inbound: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nbench/smtp_inbound: interrupted", file=sys.stderr)
        return 130


def bench(args: argparse.Namespace) -> int:
    postfix_bin = find_tool("postfix")
    smtp_source_bin = find_tool("smtp-source")
    find_tool("postconf")
    caducee_bin = caducee_binary(args.caducee)
    if os.geteuid() != 0:
        raise BenchError("run as root: a Postfix instance's master process needs root")
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        raise BenchError("no 'postfix' user: apt-get install postfix") from None

    sizes = {
        "small": Size("small", "4 KiB", args.messages_small),
        "large": Size("large", "1 MiB + PDF", args.messages_large),
    }
    info = machine()
    info["filesystem"] = filesystem_of(Path(tempfile.gettempdir()).resolve())
    version = postfix_version()
    commit = git_commit()
    root = Path(tempfile.mkdtemp(prefix="caducee-bench-smtp-"))
    root.chmod(0o755)  # Postfix's unprivileged processes must traverse it
    ports = free_ports(len(LISTENERS) + 1)
    postfix = Postfix(postfix_bin, root / "postfix", ports[0])
    run_id = f"{os.getpid()}_{int(time.time())}"
    servers = [
        Caducee(
            caducee_bin,
            root / f"caducee-{setup.slug}" if setup != DEFAULT_SETUP else root / "caducee",
            dict(zip(LISTENERS, ports[1:], strict=True)),
            workers=args.workers,
            profile=profile_path(args.profile, setup, len(args.setup_list)),
            setup=setup,
            pg=PgSchema(args.postgresql_url, f"caducee_bench_{run_id}_{setup.processes}")
            if setup.engine == "postgresql"
            else None,
        )
        for setup in args.setup_list
    ]
    source = SmtpSource(smtp_source_bin, args.sessions, root)
    notes: list[str] = []
    exit_statuses: dict[Setup, int | None] = {}
    problems: dict[Setup, list[str]] = {}
    rows: list[Row] = []
    try:
        log(f"work folder {root}")
        pdf = minimal_pdf(PDF_RAW_BYTES)
        files: dict[str, Path] = {"postfix-large": root / "postfix-large.eml"}
        files["postfix-large"].write_bytes(large_message(POSTFIX_SENDER, POSTFIX_RECIPIENT, pdf))
        postfix_rows = []
        for name in args.size_list:
            size = sizes[name]
            wire = None if name == "small" else wire_size(files["postfix-large"])
            postfix_rows.append(Row(size, wire))
        try:
            bench_postfix(source, postfix, postfix_rows, files, args.timeout)
        finally:
            postfix.stop()
        log("Postfix stopped")
        for caducee in servers:
            setup_rows = [
                Row(row.size, row.wire_bytes, caducee.setup, postfix=row.postfix)
                for row in postfix_rows
            ]
            rows += setup_rows
            # The home is made just before serving it: the product code may change meanwhile
            # (other engineers edit it), and init and serve must agree on the schema.
            log(f"caducee init --demo ({caducee.setup.label}) ...")
            caducee.init()
            files["caducee-large"] = caducee.root / "caducee-large.eml"
            files["caducee-large"].write_bytes(large_message(caducee.sender, caducee.patient, pdf))
            for row in setup_rows:
                if row.wire_bytes is not None:
                    row.wire_bytes = wire_size(files["caducee-large"])
            try:
                bench_caducee(
                    source, caducee, setup_rows, files, args.timeout, args.latency_messages
                )
            finally:
                exit_statuses[caducee.setup] = caducee.stop()
            log(f"caducee serve stopped (exit {exit_statuses[caducee.setup]})")
    finally:
        with contextlib.suppress(Exception):
            postfix.stop()
        for caducee in servers:
            with contextlib.suppress(Exception):
                caducee.stop()
            if caducee.pg is not None:
                try:
                    caducee.pg.drop()
                except Exception as error:  # report it; do not hide the run's own error
                    log(f"could not drop PostgreSQL schema {caducee.pg.name}: {error}")
            problems[caducee.setup] = caducee.log_problems()
            if problems[caducee.setup]:
                print(
                    f"\ncaducee serve ({caducee.setup.label}) logged "
                    f"{len(problems[caducee.setup])} warning/error line(s); last ones:\n"
                    + "\n".join(problems[caducee.setup][-10:]),
                    file=sys.stderr,
                )
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    for caducee in servers:
        setup = caducee.setup
        found = problems.get(setup, [])
        prefix = "" if setup == DEFAULT_SETUP else f"{setup.label}: "
        if found:
            notes.append(
                f"{prefix}caducee serve logged {len(found)} warning/error line(s), last: "
                f"`{found[-1][:300]}`"
            )
        if caducee.reinitialised:
            notes.append(
                f"{prefix}the Caducée code changed during the run (schema moved between init "
                "and serve); the home was initialised again before serving"
            )
        status = exit_statuses.get(setup)
        if status not in (0, None):
            notes.append(f"{prefix}caducee serve exited {status} on SIGTERM")
    for row in rows:
        if row.caducee is not None and row.caducee_stored != row.size.messages:
            notes.append(
                f"{row.size.label} ({row.setup.label}): Caducée acknowledged "
                f"{row.size.messages} messages but "
                f"the database holds {row.caducee_stored} new inbound messages"
            )
    section = report(rows, args, info, version, commit, notes)
    print()
    print(section)
    if args.no_append:
        log("--no-append: RESULTS.md left as it is")
    else:
        append_results(section)
        log(f"appended to {RESULTS_FILE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
