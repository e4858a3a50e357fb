"""DKIM signing throughput: dkimpy's signer against ours (``caducee.gateway.dkim_sign``).

Both sign the same messages with the same 2048-bit RSA key, ``rsa-sha256``,
``relaxed/relaxed``, one message after the other in one process: the figure is
messages signed per second (single thread). Ours also runs with an Ed25519 key
(RFC 8463). Every signer's first signature is verified with dkimpy before the clock
starts, so a fast but wrong signer cannot win.

Run from the repository root: ``.venv/bin/python bench/dkim/run.py`` (about a
minute at the defaults); ``--no-append`` prints the section without appending it
to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from importlib.metadata import version
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from caducee.gateway.dkim_sign import DkimKey, sign_message

REPO = Path(__file__).resolve().parents[2]
RESULTS_FILE = REPO / "bench" / "RESULTS.md"
DOMAIN = "hopital-demo.mssante.fr"
SELECTOR = "caducee"


def build_message(size: int) -> bytes:
    """A realistic professional message: text body, plus a base64 PDF-like attachment if large."""
    message = EmailMessage()
    message["From"] = f"Dr Claire Martin <claire.martin@{DOMAIN}>"
    message["To"] = "dr.durand@labo-demo.mssante.fr"
    message["Subject"] = "Compte rendu de consultation"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=DOMAIN)
    text = "Cher confrère,\nveuillez trouver ci-joint le compte rendu.\n" * 8
    message.set_content(text)
    if size > 8192:
        attachment = os.urandom(size * 3 // 4)
        message.add_attachment(
            attachment, maintype="application", subtype="pdf", filename="compte-rendu.pdf"
        )
    else:
        message.set_content(text + "x" * max(0, size - len(text) - 400) + "\n")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def rate(sign: Callable[[bytes], bytes], message: bytes, count: int) -> float:
    """Messages signed per second."""
    start = time.perf_counter()
    for _ in range(count):
        sign(message)
    return count / (time.perf_counter() - start)


def check(signed: bytes, records: dict[bytes, bytes]) -> None:
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.rstrip(b".").lower())

    verifier = dkim.DKIM(signed)
    if not verifier.verify(idx=0, dnsfunc=lookup):
        raise SystemExit("a signature did not verify with dkimpy: benchmark aborted")


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if dirty:
            commit += " + uncommitted changes"
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, cryptography {version('cryptography')}, "
        f"dkimpy {version('dkimpy')}; Caducée commit {commit}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count-dkimpy", type=int, default=300, help="messages for dkimpy")
    parser.add_argument("--count-ours", type=int, default=3000, help="messages for our signer")
    parser.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    ours_rsa = DkimKey(SELECTOR, rsa_key)
    ours_ed = DkimKey("ed" + SELECTOR, ed_key)
    records = {f"{SELECTOR}._domainkey.{DOMAIN}".encode(): ours_rsa.dns_record().encode()}

    def dkimpy_sign(message: bytes) -> bytes:
        header = dkim.sign(
            message,
            SELECTOR.encode(),
            DOMAIN.encode(),
            rsa_pem,
            canonicalize=(b"relaxed", b"relaxed"),
        )
        return bytes(header) + message

    def our_rsa(message: bytes) -> bytes:
        return sign_message(message, domain=DOMAIN, keys=[ours_rsa])

    def our_ed(message: bytes) -> bytes:
        return sign_message(message, domain=DOMAIN, keys=[ours_ed])

    rows = []
    for label, size in (("4 KiB text", 4096), ("100 KiB attachment", 100 * 1024)):
        message = build_message(size)
        check(dkimpy_sign(message), records)
        check(our_rsa(message), records)
        theirs = rate(dkimpy_sign, message, args.count_dkimpy)
        mine = rate(our_rsa, message, args.count_ours)
        mine_ed = rate(our_ed, message, args.count_ours)
        rows.append((label, len(message), theirs, mine, mine_ed))
        print(
            f"{label}: dkimpy {theirs:.0f}/s, ours rsa {mine:.0f}/s, ours ed25519 {mine_ed:.0f}/s",
            file=sys.stderr,
        )

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## DKIM signing (bench/dkim) — {when}",
        "",
        f"- Machine: {machine()}",
        "- Same 2048-bit RSA key for both, `rsa-sha256`, `relaxed/relaxed`, one thread, "
        "messages signed one after the other; every signer's output verified by dkimpy first",
        f"- dkimpy: `dkim.sign()` × {args.count_dkimpy}; ours: "
        f"`caducee.gateway.dkim_sign.sign_message()` × {args.count_ours} (RSA), "
        f"and the same with an Ed25519 key (RFC 8463)",
        "- Command: `.venv/bin/python bench/dkim/run.py`",
        "",
        "| message | bytes | dkimpy msg/s | ours rsa-sha256 msg/s | ours/dkimpy "
        "| ours ed25519-sha256 msg/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, size, theirs, mine, mine_ed in rows:
        lines.append(
            f"| {label} | {size} | {theirs:.0f} | {mine:.0f} | {mine / theirs:.1f}× "
            f"| {mine_ed:.0f} |"
        )
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_append:
        with RESULTS_FILE.open("a") as results:
            results.write("\n" + section)
        print(f"appended to {RESULTS_FILE.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
