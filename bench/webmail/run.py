"""The webmail's conversation list and message page with a 10,000-message mailbox (issue 17).

A demo home (SQLite by default, or ``--database`` for PostgreSQL) is seeded through the
mailbox store's own delivery (``MailDelivery``, as the SMTP stage calls it) with ``--messages``
messages from 500 professionals to the demo patient (one conversation per professional, so
20 messages a conversation at 10,000: each later message answers the professional's first
by ``In-Reply-To``, D1); ``caducee serve`` runs; an HTTP client signs
in as the patient (password and TOTP, as the sign-in form does) and times:

* the conversation list, first page and a page in the middle;
* a conversation page (the messages shown, the read receipt and audit written), for random
  conversations of the list.

The same is measured on a 100-message mailbox in the same run: the reference line that shows
what the size costs. Figures are client-side wall times (p50, p95) over loopback HTTP.

Run from the repository root: ``.venv/bin/python bench/webmail/run.py``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import httpx

from caducee.config import load_settings
from caducee.gateway.runtime import build_gateway
from caducee.mailboxes.accounts.lifecycle import totp_now
from caducee.mailboxes.accounts.store import Account
from caducee.mailboxes.delivery import Envelope, MailDelivery, Recipient, RecipientRole

ROOT = Path(__file__).resolve().parents[2]
CADUCEE = [sys.executable, "-m", "caducee.gateway.cli"]
LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "http")
PROFESSIONALS = [f"dr.praticien{n:03d}@hopital-demo.mssante.fr" for n in range(500)]


def log(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(ports: dict[str, int], database: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADUCEE_")}
    for name, port in ports.items():
        env[f"CADUCEE_LISTENERS__{name.upper()}"] = str(port)
    if database:
        env["CADUCEE_DATABASE__URL"] = database
    return env


def seed(home: Path, env: dict[str, str], count: int, patient: str) -> None:
    """``count`` messages to ``patient`` through the mailbox store's delivery, 500 per commit."""
    gateway = build_gateway(load_settings(home, environ=env))
    try:
        delivery = MailDelivery(gateway.blobs, gateway.queue)
        with gateway.database.reading() as session:
            account_id = session.query(Account.id).filter(Account.address == patient).scalar()
        start = datetime.now(UTC) - timedelta(days=count // 20 + 1)
        threads: dict[str, str] = {}  # professional -> first Message-ID: later ones answer it
        for first in range(0, count, 500):
            with gateway.database.transaction() as session:
                for number in range(first, min(first + 500, count)):
                    sender = PROFESSIONALS[number % len(PROFESSIONALS)]
                    message = EmailMessage()
                    message["From"] = sender
                    message["To"] = patient
                    message["Subject"] = f"Compte rendu de consultation n° {number}"
                    message["Date"] = format_datetime(start + timedelta(hours=number))
                    message["Message-ID"] = make_msgid(domain="hopital-demo.mssante.fr")
                    message.set_content("Bonjour,\n\nVoici le compte rendu.\n" * 20)
                    root = threads.setdefault(sender, str(message["Message-ID"]))
                    if root != message["Message-ID"]:
                        message["In-Reply-To"] = root
                        message["References"] = root
                    content = message.as_bytes()
                    delivery.deliver(
                        session,
                        Envelope(
                            content=content,
                            direction="inbound",
                            envelope_from=sender,
                            header_from=sender,
                            message_id=str(message["Message-ID"]),
                            thread_ids=(root,) if root != message["Message-ID"] else (),
                            reply_to=None,
                            ends_exchange=False,
                            sender_is_professional=True,
                            has_attachments=False,
                            recipients=(
                                Recipient(patient, int(account_id), RecipientRole.PATIENT),
                            ),
                        ),
                    )
    finally:
        gateway.close()


def serve(home: Path, env: dict[str, str], http_port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [*CADUCEE, "serve", "--home", str(home)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home / "serve.log").open("ab"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("caducee serve not ready")


class LoopbackBrowser(httpx.Client):
    """An HTTP client that keeps ``Secure`` cookies over loopback HTTP, as browsers do.

    The webmail's cookies are ``Secure``; Python's cookie jar never sends those over plain
    HTTP, while Chromium does for ``127.0.0.1`` (how the tests and this bench serve it).
    """

    def __init__(self, base: str) -> None:
        super().__init__(base_url=base, timeout=120, follow_redirects=True)
        self.kept: dict[str, str] = {}
        self.event_hooks = {"request": [self._attach], "response": [self._keep]}

    def _attach(self, request: httpx.Request) -> None:
        if self.kept:
            request.headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.kept.items())

    def _keep(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value:
                self.kept[name.strip()] = value
            else:
                self.kept.pop(name.strip(), None)


def signed_in(base: str, credentials: dict[str, str]) -> httpx.Client:
    client = LoopbackBrowser(base)
    page = client.get("/webmail/sign-in").text
    token = re.search(r'name="signin_token" value="([^"]+)"', page)
    secret = credentials["totp_secret"]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    answer = client.post(
        "/webmail/sign-in",
        data={
            "signin_token": token.group(1) if token else "",
            "address": credentials["address"],
            "password": credentials["web_password"],
            "code": totp_now(key, datetime.now(UTC)),
        },
    )
    if "/webmail/conversations" not in str(answer.url):
        raise RuntimeError(f"sign-in failed: {answer.status_code} {answer.url}")
    return client


def timed(client: httpx.Client, path: str) -> tuple[float, str]:
    started = time.perf_counter()
    answer = client.get(path)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise RuntimeError(f"GET {path}: {answer.status_code}")
    return elapsed, answer.text


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


def measure(count: int, requests: int, database: str | None) -> dict[str, tuple[float, float]]:
    root = Path(tempfile.mkdtemp(prefix="bench-webmail-"))
    home = root / "home"
    ports = {name: free_port() for name in LISTENERS}
    env = environment(ports, database)
    process = None
    try:
        subprocess.run(
            [*CADUCEE, "init", "--demo", "--home", str(home)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        credentials = json.loads((home / "demo" / "credentials.json").read_text())["patient"]
        started = time.monotonic()
        seed(home, env, count, credentials["address"])
        log(f"{count} messages seeded in {time.monotonic() - started:.0f} s")
        process = serve(home, env, ports["http"])
        client = signed_in(f"http://127.0.0.1:{ports['http']}", credentials)
        _, first = timed(client, "/webmail/conversations")
        shown = re.search(r"Page \d+ (?:sur|of) (\d+)", first)  # the pager's own text
        pages = int(shown.group(1)) if shown else 1
        middle = f"/webmail/conversations?page={max(1, pages // 2)}"
        hrefs = sorted(set(re.findall(r'href="(/webmail/conversations/\d+)"', first)))
        _, middle_text = timed(client, middle)
        hrefs += re.findall(r'href="(/webmail/conversations/\d+)"', middle_text)
        lists = [timed(client, "/webmail/conversations")[0] for _ in range(requests)]
        middles = [timed(client, middle)[0] for _ in range(requests)]
        conversations = [timed(client, random.choice(hrefs))[0] for _ in range(requests)]
        client.close()
        return {
            "conversation list, first page": percentiles(lists),
            f"conversation list, page {max(1, pages // 2)} of {pages}": percentiles(middles),
            "conversation page": percentiles(conversations),
        }
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--database", default=None, help="PostgreSQL URL (default: SQLite)")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args(argv)
    results = {
        100: measure(100, args.requests, args.database),
        args.messages: measure(args.messages, args.requests, args.database),
    }
    load1, _, _ = os.getloadavg()
    engine = "PostgreSQL" if args.database else "SQLite"
    lines = [
        f"## Webmail pages (bench/webmail) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, Python"
        f" {platform.python_version()}, {engine}; load average at the end {load1:.1f}."
        f" {args.requests} requests per line, one client, loopback HTTP, signed in as the demo"
        " patient; messages from 500 professionals (one conversation each).",
        "",
        "| mailbox | page | p50 ms | p95 ms |",
        "|---|---|---:|---:|",
    ]
    for count, pages in results.items():
        for name, (p50, p95) in pages.items():
            lines.append(f"| {count:,} messages | {name} | {p50:.1f} | {p95:.1f} |")
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_append:
        with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as out:
            out.write("\n" + section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
