"""IMAP benchmark: the same 10,000 messages in Caducée and in Dovecot, the same client, one run.

Both servers get an identical corpus (French lab-style mails, 1 in 10 with a
PDF-like base64 attachment, 1 in 100 with the Direct Project ``IHE_XDM.zip``)
in one mailbox, and are driven over implicit TLS (the development certificate
of the Caducée home for both) by one raw asyncio client that reads responses
without parsing them, so that client cost is the same on both sides.

* Dovecot: Debian's ``dovecot-imapd``, a fresh instance from a temporary
  configuration on a loopback high port (not the system instance), Maildir.
* Caducée: a fresh ``caducee init --demo`` home (SQLite unless
  ``--database-url``), the IMAP-only process ``python -m caducee.gateway.imap``;
  the corpus is stored through ``MailDelivery`` as SMTP stores mail (encrypted
  blobs and, since issue 15, each message's encrypted IMAP structure).

Each server first gets one warm-up pass (Dovecot builds its index and cache,
Caducée fills its in-process caches; the cold figures are reported too),
then every operation runs ``--repeat`` times and the median is kept.
The results table is appended to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "tests" / "samples"
XDM = SAMPLES / "DirectProject-nhin-d" / "samplexdm-xdmail.zip"
RESULTS = REPO / "bench" / "RESULTS.md"
USER = "bench@hopital-demo.mssante.fr"
WORDS = [
    "analyse",
    "résultat",
    "patient",
    "prélèvement",
    "glycémie",
    "hémoglobine",
    "cholestérol",
    "ordonnance",
    "consultation",
    "rendez-vous",
    "traitement",
    "posologie",
    "biologie",
    "radiologie",
    "compte",
    "rendu",
    "laboratoire",
    "médecin",
    "infirmier",
    "dossier",
    "examen",
    "contrôle",
    "bilan",
    "sanguin",
    "urinaire",
]
NEEDLE = "thyroïdienne"
_LITERAL = re.compile(rb"~?\{(\d+)\}\r\n$")


# -- corpus ----------------------------------------------------------------------------


def _qp(text: str) -> str:
    import quopri

    return quopri.encodestring(text.encode("utf-8")).decode("ascii")


def corpus(count: int, seed: int = 5) -> list[bytes]:
    """``count`` deterministic messages; 1 in 50 contains :data:`NEEDLE` in its body."""
    rng = random.Random(seed)
    xdm = base64.encodebytes(XDM.read_bytes()).decode("ascii")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    messages = []
    for n in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(150, 900))]
        if n % 50 == 7:
            words.insert(rng.randint(0, len(words)), NEEDLE)
        text = "\n".join(" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
        date = format_datetime(start + timedelta(minutes=37 * n))
        header = (
            f"From: Laboratoire {n % 40} <labo{n % 40}@labo-demo.mssante.fr>\r\n"
            f"To: {USER}\r\n"
            f"Subject: =?utf-8?q?R=C3=A9sultats_n=C2=B0{n}?=\r\n"
            f"Date: {date}\r\nMessage-ID: <bench-{n}@labo-demo.mssante.fr>\r\nMIME-Version: 1.0\r\n"
        )
        body_part = (
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            + _qp(text).replace("\n", "\r\n")
            + "\r\n"
        )
        if n % 10 == 3 or n % 100 == 42:
            if n % 100 == 42:
                name, kind, payload = "IHE_XDM.zip", "application/zip", xdm
            else:
                blob = rng.randbytes(rng.randint(20_000, 60_000))
                name, kind = f"compte-rendu-{n}.pdf", "application/pdf"
                payload = base64.encodebytes(b"%PDF-1.4\n" + blob).decode("ascii")
            message = (
                header
                + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
                + body_part
                + f"--b\r\nContent-Type: {kind}\r\nContent-Transfer-Encoding: base64\r\n"
                + f'Content-Disposition: attachment; filename="{name}"\r\n\r\n'
                + payload.replace("\n", "\r\n")
                + "--b--\r\n"
            )
        else:
            message = header + body_part
        messages.append(message.encode("utf-8"))
    return messages


# -- raw client ------------------------------------------------------------------------


class Client:
    """Sends one command and reads up to its tagged reply, literals included, without parsing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.count = 0

    @classmethod
    async def connect(cls, port: int, context: ssl.SSLContext) -> Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost", limit=1 << 22
        )
        client = cls(reader, writer)
        await reader.readline()
        return client

    async def line(self) -> bytes:
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        while (match := _LITERAL.search(line)) is not None:
            line += await self.reader.readexactly(int(match.group(1)))
            line += await self.reader.readline()
        return line

    async def command(self, text: str) -> tuple[bytes, int]:
        self.count += 1
        tag = f"b{self.count}".encode()
        self.writer.write(tag + b" " + text.encode() + b"\r\n")
        await self.writer.drain()
        received = 0
        while True:
            line = await self.line()
            received += len(line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text!r}: {line[:200]!r}")
                return line, received

    async def login(self) -> None:
        await self.command(f'LOGIN "{USER}" "{PASSWORD}"')

    async def close(self) -> None:
        try:
            self.writer.write(b"z LOGOUT\r\n")
            await self.writer.drain()
            self.writer.close()
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


PASSWORD = "bench-" + base64.b32encode(os.urandom(10)).decode().lower()


# -- servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    version: str = ""
    notes: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None


INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")


def raise_inotify_limit(needed: int) -> int | None:
    """Dovecot runs one process per IMAP client, each with an inotify instance; with
    more clients than ``max_user_instances`` (128 by default) IDLE falls back to a
    30 s poll. Raise the limit for the run if allowed; return the value to restore."""
    try:
        current = int(INOTIFY.read_text())
        if current < needed:
            INOTIFY.write_text(str(needed))
            return current
    except (OSError, ValueError):
        pass
    return None


def start_dovecot(work: Path, messages: list[bytes], home: Path, idlers: int) -> Server:
    root = work / "dovecot"
    maildir = root / "mail" / USER / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    for n, message in enumerate(messages):
        (maildir / "cur" / f"{now - len(messages) + n}.M{n}P1.bench:2,").write_bytes(message)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    (root / "run").mkdir(exist_ok=True)
    port = free_port()
    notes = ["Maildir, fresh index"]
    idle_fallback = ""
    try:
        inotify_ok = int(INOTIFY.read_text()) >= idlers + 50
    except (OSError, ValueError):
        inotify_ok = False
    if not inotify_ok:
        idle_fallback = "mailbox_idle_check_interval = 1 secs"
        notes.append("inotify limit too low: IDLE polls every second")
    config = root / "dovecot.conf"
    config.write_text(
        f"""base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
listen = 127.0.0.1
protocols = imap
ssl = required
ssl_cert = <{home}/tls/server.pem
ssl_key = <{home}/tls/server.key
ssl_min_protocol = TLSv1.2
default_internal_user = dovecot
default_login_user = dovenull
default_process_limit = 400
default_client_limit = 2000
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u/Maildir
mail_uid = nobody
mail_gid = nogroup
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/mail/%u
}}
protocol imap {{
  mail_max_userip_connections = 1000
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
  process_min_avail = 2
}}
service imap {{
  process_limit = 400
}}
{idle_fallback}
"""
    )
    (root / "state").mkdir(exist_ok=True)
    subprocess.run(["chown", "-R", "nobody:nogroup", str(root / "mail")], check=True)
    os.chmod(root, 0o755)  # noqa: S103 - Dovecot's unprivileged users must traverse it
    version = subprocess.run(
        ["dovecot", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    process = subprocess.Popen(
        ["dovecot", "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(port)
    return Server("Dovecot", port, process, f"Dovecot {version}", notes)


def start_caducee(
    work: Path, messages: list[bytes], database_url: str | None
) -> tuple[Server, Path]:
    home = work / "caducee"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADUCEE_")}
    imaps = free_port()
    env.update(
        {
            "CADUCEE_LISTENERS__IMAP": "0",
            "CADUCEE_LISTENERS__IMAPS": str(imaps),
            "CADUCEE_QUEUE__WORKERS": "0",
            # Every bench client comes from 127.0.0.1 (as Dovecot's mail_max_userip_connections).
            "CADUCEE_IMAP__MAX_CONNECTIONS_PER_IP": "1000",
        }
    )
    if database_url:
        env["CADUCEE_DATABASE__URL"] = database_url
    subprocess.run(
        [sys.executable, "-m", "caducee.gateway.cli", "init", "--demo", "--home", str(home)],
        env=env,
        check=True,
        capture_output=True,
    )
    started = time.monotonic()
    load = subprocess.run(
        [sys.executable, __file__, "--load-caducee", str(home)],
        env=env,
        input=json.dumps({"password": PASSWORD}).encode() + b"\n" + _pack(messages),
        capture_output=True,
    )
    if load.returncode != 0:
        raise RuntimeError(load.stderr.decode(errors="replace"))
    loaded = time.monotonic() - started
    process = subprocess.Popen(
        [sys.executable, "-m", "caducee.gateway.imap", "--home", str(home)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "imap.log", "ab"),  # noqa: SIM115 - closed with the process
    )
    wait_port(imaps, 180)  # a loaded 2-core machine can take a minute to import and open
    engine = "PostgreSQL" if database_url else "SQLite"
    return (
        Server(
            "Caducée",
            imaps,
            process,
            "Caducée (pymap 0.36.7)",
            [f"{engine}, stored through MailDelivery in {loaded:.1f} s"],
        ),
        home,
    )


def _pack(messages: list[bytes]) -> bytes:
    return b"".join(len(m).to_bytes(4, "big") + m for m in messages)


def load_caducee(home: Path) -> None:
    """Runs in a child process (with the home's environment): store the corpus for USER."""
    from caducee.config import load_settings
    from caducee.gateway.runtime import build_gateway
    from caducee.mailboxes.accounts.passwords import hash_password
    from caducee.mailboxes.accounts.store import AccountKind, AppPassword, create_account
    from caducee.mailboxes.delivery import Envelope, MailDelivery, Recipient, RecipientRole

    raw = sys.stdin.buffer.read()
    header, _, packed = raw.partition(b"\n")
    password = json.loads(header)["password"]
    messages = []
    offset = 0
    while offset < len(packed):
        size = int.from_bytes(packed[offset : offset + 4], "big")
        messages.append(packed[offset + 4 : offset + 4 + size])
        offset += 4 + size
    gateway = build_gateway(load_settings(home))
    try:
        with gateway.database.transaction() as session:
            account = create_account(session, USER, AccountKind.PROFESSIONAL)
            session.add(
                AppPassword(
                    account_id=account.id, label="bench", password_hash=hash_password(password)
                )
            )
            account_id = account.id
        delivery = MailDelivery(gateway.blobs, gateway.queue)
        recipient = Recipient(USER, account_id, RecipientRole.PROFESSIONAL)
        for start in range(0, len(messages), 200):
            sealed = [gateway.blobs.seal(m) for m in messages[start : start + 200]]
            with gateway.database.transaction() as session:
                for n, (message, blob) in enumerate(
                    zip(messages[start : start + 200], sealed, strict=True)
                ):
                    delivery.deliver(
                        session,
                        Envelope(
                            content=message,
                            direction="inbound",
                            envelope_from=f"labo{(start + n) % 40}@labo-demo.mssante.fr",
                            header_from=None,
                            message_id=None,
                            thread_ids=(),
                            reply_to=None,
                            ends_exchange=False,
                            sender_is_professional=False,
                            has_attachments=False,
                            recipients=(recipient,),
                        ),
                        blob,
                    )
    finally:
        gateway.close()


# -- operations ------------------------------------------------------------------------


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


async def run_operations(
    server: Server, context: ssl.SSLContext, repeat: int, idlers: int, count: int
) -> dict[str, float]:
    results: dict[str, float] = {}
    client = await Client.connect(server.port, context)
    await client.login()
    results["cold: SELECT + FETCH 1:* (FLAGS ENVELOPE)"] = await timed(
        lambda: _select_fetch(client)
    )
    await client.command("UID SEARCH TEXT warmup-nothing")  # Dovecot builds, Caducée warms

    async def median(label: str, action: Callable[[], Awaitable[object]]) -> None:
        samples = [await timed(action) for _ in range(repeat)]
        results[label] = statistics.median(samples)

    await median(f"SELECT INBOX ({count:,} messages)", lambda: client.command("SELECT INBOX"))
    await median("FETCH 1:* (FLAGS ENVELOPE)", lambda: client.command("FETCH 1:* (FLAGS ENVELOPE)"))
    await median(
        "UID FETCH 1:* BODY.PEEK[] (all bodies)",
        lambda: client.command("UID FETCH 1:* BODY.PEEK[]"),
    )
    rng = random.Random(11)
    picks = [rng.randint(1, count) for _ in range(200)]

    async def one_by_one() -> None:
        for uid in picks:
            await client.command(f"UID FETCH {uid} (BODY.PEEK[] FLAGS)")

    await median("200 × UID FETCH n (BODY.PEEK[] FLAGS), one by one", one_by_one)
    await median(
        f'UID SEARCH TEXT "{NEEDLE}"',
        lambda: client.command(
            f"UID SEARCH CHARSET UTF-8 TEXT {{{len(NEEDLE.encode())}+}}\r\n{NEEDLE}"
        ),
    )
    await client.close()
    samples = [await idle_round(server, context, idlers) for _ in range(max(1, repeat))]
    results[f"{idlers} IDLE clients: APPEND → EXISTS at all"] = statistics.median(samples)
    return results


async def _select_fetch(client: Client) -> None:
    await client.command("SELECT INBOX")
    await client.command("FETCH 1:* (FLAGS ENVELOPE)")


async def idle_round(server: Server, context: ssl.SSLContext, idlers: int) -> float:
    clients: list[Client] = []
    for _ in range(0, idlers, 20):
        batch = await asyncio.gather(
            *(Client.connect(server.port, context) for _ in range(min(20, idlers - len(clients))))
        )
        await asyncio.gather(*(c.login() for c in batch))
        clients.extend(batch)
    await asyncio.gather(*(c.command("SELECT INBOX") for c in clients))
    for client in clients:
        client.writer.write(b"i IDLE\r\n")
    await asyncio.gather(*(c.writer.drain() for c in clients))
    for client in clients:
        line = await client.line()
        assert line.startswith(b"+"), line

    async def until_exists(client: Client) -> float:
        while True:
            line = await client.line()
            if line.endswith(b"EXISTS\r\n"):
                return time.perf_counter()

    waits = [asyncio.ensure_future(until_exists(c)) for c in clients]
    await asyncio.sleep(0.5)
    writer = await Client.connect(server.port, context)
    await writer.login()
    message = b"Subject: idle\r\nFrom: a@labo-demo.mssante.fr\r\n\r\nnouveau\r\n"
    sent = time.perf_counter()
    await writer.command(f"APPEND INBOX {{{len(message)}+}}\r\n" + message.decode())
    arrivals = await asyncio.wait_for(asyncio.gather(*waits), 60)
    latency = max(arrivals) - sent
    for client in clients:
        client.writer.write(b"DONE\r\n")
    await asyncio.gather(*(c.close() for c in clients))
    await writer.close()
    return latency


# -- report ----------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    except OSError:
        memory = 0.0
    release = ""
    os_release = Path("/etc/os-release")
    if os_release.exists():
        for line in os_release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                release = line.split("=", 1)[1].strip('"')
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {memory:.1f} GiB RAM, kernel {platform.release()}, "
        f"{release}, Python {platform.python_version()}"
    )


def report(
    count: int,
    corpus_bytes: int,
    dovecot: Server,
    caducee: Server,
    results: dict[str, dict[str, float]],
    args: argparse.Namespace,
) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## IMAP (bench/imap) — {now}",
        "",
        f"- Machine: {machine()}",
        f"- {dovecot.version} ({', '.join(dovecot.notes)}); {caducee.version} "
        f"({', '.join(caducee.notes)})",
        f"- Corpus: {count} messages, {corpus_bytes / 1e6:.1f} MB (1 in 10 with a 20–60 KB "
        "base64 attachment, 1 in 100 with IHE_XDM.zip), one mailbox; implicit TLS for both; "
        "raw asyncio client; median of "
        f"{args.repeat} runs after a warm-up pass (the cold line is the first pass)",
        f"- Command: `.venv/bin/python bench/imap/run.py --messages {count}"
        + (" --database-url …" if args.database_url else "")
        + "`",
        "",
        "| operation | Dovecot (s) | Caducée (s) | Caducée speed / Dovecot | target ≥ 0.5 |",
        "|---|---:|---:|---:|---|",
    ]
    for label in results["Dovecot"]:
        ours = results["Caducée"][label]
        theirs = results["Dovecot"][label]
        ratio = theirs / ours if ours else float("inf")
        lines.append(
            f"| {label} | {theirs:.3f} | {ours:.3f} | {ratio:.2f} | "
            f"{'met' if ratio >= 0.5 else 'not met'} |"
        )
    return "\n".join(lines) + "\n"


async def measure(
    server: Server, context: ssl.SSLContext, args: argparse.Namespace
) -> dict[str, float]:
    return await run_operations(server, context, args.repeat, args.idlers, args.messages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--idlers", type=int, default=200)
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL for Caducée")
    parser.add_argument("--no-append", action="store_true", help="print, do not append")
    parser.add_argument("--load-caducee", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_caducee:
        load_caducee(args.load_caducee)
        return 0
    if shutil.which("dovecot") is None:
        print("dovecot is not installed (apt-get install dovecot-imapd)", file=sys.stderr)
        return 1
    messages = corpus(args.messages)
    work = Path(tempfile.mkdtemp(prefix="caducee-bench-imap-"))
    os.chmod(work, 0o755)  # noqa: S103 - Dovecot's unprivileged users must traverse it
    servers: list[Server] = []
    restore = raise_inotify_limit(args.idlers + 200)
    try:
        caducee, home = start_caducee(work, messages, args.database_url)
        servers.append(caducee)
        dovecot = start_dovecot(work, messages, home, args.idlers)
        servers.append(dovecot)
        context = ssl.create_default_context(cafile=str(home / "tls" / "ca.pem"))
        results: dict[str, dict[str, float]] = {}
        for server in (dovecot, caducee):
            print(f"== {server.name}", flush=True)
            results[server.name] = asyncio.run(measure(server, context, args))
            for label, value in results[server.name].items():
                print(f"   {label}: {value:.3f} s", flush=True)
        text = report(len(messages), sum(map(len, messages)), dovecot, caducee, results, args)
        print(text)
        if not args.no_append:
            with RESULTS.open("a", encoding="utf-8") as handle:
                handle.write("\n" + text)
    except Exception:
        for log in (work / "dovecot" / "dovecot.log", work / "caducee" / "imap.log"):
            if log.exists():
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
        if restore is not None:
            INOTIFY.write_text(str(restore))
    return 0


if __name__ == "__main__":
    sys.exit(main())
