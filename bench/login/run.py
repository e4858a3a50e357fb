"""IMAP LOGIN latency with concurrent clients: the verified-credential cache at work (C1).

A fresh ``caducee init --demo`` home (SQLite unless ``--database-url``), the IMAP-only
process ``python -m caducee.gateway.imap``, and ``--clients`` concurrent clients over
implicit TLS, each doing ``--rounds`` times: connect and handshake (not timed), ``LOGIN``
(timed, from sending the command to its tagged ``OK``), ``LOGOUT``. All log in as the demo
patient with its app password, as the mail clients of one household or one practice would.

Two runs: with the cache (the default settings) and without it
(``[identity] credential_cache_seconds = 0``: argon2id on every login). Printed as a table
and appended to ``bench/RESULTS.md`` with the machine and the date.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "RESULTS.md"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def one_login(port: int, context: ssl.SSLContext, user: str, password: str) -> float:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        await reader.readline()
        started = time.perf_counter()
        writer.write(f'a LOGIN "{user}" "{password}"\r\n'.encode())
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed")
            if line.startswith(b"a "):
                elapsed = time.perf_counter() - started
                if not line.startswith(b"a OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                break
        writer.write(b"z LOGOUT\r\n")
        await writer.drain()
        return elapsed
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def measure(
    port: int, context: ssl.SSLContext, user: str, password: str, clients: int, rounds: int
) -> tuple[float, list[float]]:
    first = await one_login(port, context, user, password)

    async def client() -> list[float]:
        return [await one_login(port, context, user, password) for _ in range(rounds)]

    results = await asyncio.gather(*(client() for _ in range(clients)))
    return first, [value for batch in results for value in batch]


def run_server(home: Path, env: dict[str, str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
    port = env["CADUCEE_LISTENERS__IMAPS"]
    process = subprocess.Popen(
        [sys.executable, "-m", "caducee.gateway.imap", "--home", str(home)],
        env={**env, **extra},
        stdout=subprocess.DEVNULL,
        stderr=open(home / "imap.log", "ab"),  # noqa: SIM115 - closed with the process
    )
    wait_port(int(port))
    return process


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {memory:.1f} GiB RAM, kernel {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    rows: list[tuple[str, float, float, float, int]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="caducee-login-bench-") as work:
        home = Path(work) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CADUCEE_")}
        port = free_port()
        env.update(
            {
                "CADUCEE_LISTENERS__IMAP": "0",
                "CADUCEE_LISTENERS__IMAPS": str(port),
                "CADUCEE_QUEUE__WORKERS": "0",
                "CADUCEE_LOGGING__LEVEL": "WARNING",
            }
        )
        if args.database_url:
            env["CADUCEE_DATABASE__URL"] = args.database_url
        subprocess.run(
            [sys.executable, "-m", "caducee.gateway.cli", "init", "--demo", "--home", str(home)],
            env=env,
            check=True,
            capture_output=True,
        )
        credentials = json.loads((home / "demo" / "credentials.json").read_text())
        user, password = credentials["patient"]["address"], credentials["patient"]["password"]
        context = ssl.create_default_context(cafile=credentials["ca_cert"])
        context.check_hostname = False
        for label, extra in (
            ("with the verified-credential cache", {}),
            (
                "argon2id on every login (cache off)",
                {"CADUCEE_IDENTITY__CREDENTIAL_CACHE_SECONDS": "0"},
            ),
        ):
            process = run_server(home, env, extra)
            try:
                first, values = asyncio.run(
                    measure(port, context, user, password, args.clients, args.rounds)
                )
            finally:
                process.terminate()
                process.wait(timeout=30)
            rows.append((label, first, statistics.median(values), p95(values), len(values)))
    load_after = os.getloadavg()[0]
    engine = "PostgreSQL" if args.database_url else "SQLite"
    lines = [
        f"## IMAP LOGIN (bench/login) — {datetime.now(UTC):%Y-%m-%d}",
        "",
        f"Machine: {machine()}. Caducée IMAP-only process, {engine}, implicit TLS; "
        f"{args.clients} concurrent clients × {args.rounds} logins each (connect and TLS "
        "not timed). Dovecot is not part of this run (see bench/imap for its harness). "
        f"Load average {load_before:.1f} before, {load_after:.1f} after (the machine is "
        "shared: the clients run on it too).",
        "",
        "| run | first login (ms) | LOGIN p50 (ms) | LOGIN p95 (ms) | logins |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {first * 1000:.1f} | {p50 * 1000:.1f} | {high * 1000:.1f} | {count} |"
            for label, first, p50, high, count in rows
        ),
        "",
    ]
    print("\n".join(lines))
    if not args.no_record:
        with RESULTS.open("a", encoding="utf-8") as results:
            results.write("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
