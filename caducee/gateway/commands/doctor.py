"""``caducee doctor --home DIR``: is this gateway fit to run? (K3)

Checks the configuration, the database and its migrations, the certificates
(and how long they have left), the keys, the blob folder (or the S3 bucket:
reachable and listable with the configured credentials) and the listeners'
ports. Prints one line per check; exits 0 when all is well, 1 with the list of
problems otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from caducee.config import ConfigError, Settings, load_settings
from caducee.gateway.commands import Subcommands, add_home_argument
from caducee.storage import schema
from caducee.storage.blob_backends import BlobBackendError, S3Backend, make_backend
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.keyring import Keyring, KeyringError


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "doctor", help="check config, database, certificates, keys, ports"
    )
    add_home_argument(parser)
    parser.set_defaults(handler=run)


@dataclass
class Report:
    """Lines of the report and the problems among them."""

    problems: list[str] = field(default_factory=list)

    def ok(self, what: str) -> None:
        print(f"ok       {what}")

    def problem(self, what: str) -> None:
        print(f"PROBLEM  {what}")
        self.problems.append(what)


def _check_database(settings: Settings, report: Report) -> Database | None:
    # Without the column keys (caducee.gateway.home.open_database) on purpose: the doctor reads
    # the schema and blob rows, never a sealed column, and must work while the keyring is broken.
    database = Database(settings.database_url, pool_size=1)
    try:
        current = schema.current_revision(database)
    except Exception as error:
        report.problem(f"database: cannot connect ({type(error).__name__}: {error})")
        database.dispose()
        return None
    head = schema.head_revision()
    if current == head:
        report.ok(f"database: {database.dialect}, schema at {head}")
    else:
        report.problem(
            f"database: schema at {current or 'nothing'}, expected {head} (run caducee init)"
        )
    return database


def _check_certificate(
    label: str, cert_path: Path, key_path: Path | None, settings: Settings, report: Report
) -> None:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as error:
        report.problem(f"{label}: cannot read {cert_path} ({error})")
        return
    now = datetime.now(UTC)
    expiry = certificate.not_valid_after_utc
    if expiry <= now:
        report.problem(f"{label}: expired on {expiry:%Y-%m-%d}")
        return
    if certificate.not_valid_before_utc > now:
        report.problem(f"{label}: not valid before {certificate.not_valid_before_utc:%Y-%m-%d}")
        return
    if expiry - now < timedelta(days=settings.tls.expiry_warning_days):
        report.problem(
            f"{label}: expires on {expiry:%Y-%m-%d}, within {settings.tls.expiry_warning_days} days"
        )
        return
    if key_path is not None:
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as error:
            report.problem(f"{label}: cannot read its key {key_path} ({error})")
            return
        ours = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        theirs = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if ours != theirs:
            report.problem(f"{label}: the key {key_path} does not match the certificate")
            return
        if key_path.stat().st_mode & 0o077:
            report.problem(f"{label}: the key {key_path} is readable by other users (chmod 600)")
            return
    report.ok(f"{label}: valid until {expiry:%Y-%m-%d}")


def _check_keyring(settings: Settings, database: Database | None, report: Report) -> None:
    try:
        keyring = Keyring(settings.path(settings.crypto.keyring))
        report.ok(f"key-encryption key: {keyring.active_id} active")
    except KeyringError as error:
        report.problem(f"key-encryption key: {error}")
        return
    if database is None:
        return
    try:
        with database.transaction() as session:
            in_use = BlobStore(settings.path(settings.blobs.path), keyring).kek_ids_in_use(session)
        for key_id in sorted(in_use):
            keyring.key(key_id)
    except KeyringError as error:
        report.problem(f"key-encryption key: {error}")
    except Exception as error:  # schema problems were reported above
        report.problem(f"key-encryption key: cannot list the keys in use ({type(error).__name__})")


def _check_dkim(settings: Settings, report: Report) -> None:
    dkim = settings.path(settings.dkim.private_key)
    try:
        serialization.load_pem_private_key(dkim.read_bytes(), password=None)
        report.ok(f"DKIM key: {dkim.name} (selector {settings.dkim.selector})")
    except (OSError, ValueError, TypeError) as error:
        report.problem(f"DKIM key: cannot read {dkim} ({error})")


def _check_blobs(settings: Settings, report: Report) -> None:
    if settings.blobs.backend == "s3":
        backend = make_backend(settings)
        assert isinstance(backend, S3Backend)
        try:
            backend.check()
        except BlobBackendError as error:
            report.problem(f"blob store: {error}")
        else:
            report.ok(f"blob store: {backend.describe()}")
        return
    folder = settings.path(settings.blobs.path)
    if folder.is_dir() and os.access(folder, os.W_OK):
        report.ok(f"blob folder: {folder}")
    else:
        report.problem(f"blob folder: {folder} is missing or not writable")


def _is_our_http(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2) as response:
            return bool(json.loads(response.read()).get("service") == "caducee")
    except (OSError, ValueError):
        return False


def _is_our_smtp(host: str, port: int, *, implicit_tls: bool = False) -> bool:
    """True when the port greets like a Caducée SMTP server (through TLS for implicit TLS)."""
    try:
        greeting = _greeting(host, port, implicit_tls=implicit_tls)
    except OSError:
        return False
    return greeting.startswith("220 ") and "Caducée" in greeting


def _is_our_smtps(host: str, port: int) -> bool:
    return _is_our_smtp(host, port, implicit_tls=True)


def _greeting(host: str, port: int, *, implicit_tls: bool) -> str:
    with socket.create_connection((host, port), timeout=2) as raw:
        connection: socket.socket = raw
        if implicit_tls:
            # Only identifying the greeter here; certificates are checked above.
            probe = ssl.create_default_context()
            probe.check_hostname = False
            probe.verify_mode = ssl.CERT_NONE
            connection = probe.wrap_socket(raw, server_hostname=host)
        return connection.recv(512).decode("utf-8", "replace")


def _is_our_imap(host: str, port: int, *, implicit_tls: bool = False) -> bool:
    try:
        greeting = _greeting(host, port, implicit_tls=implicit_tls)
    except OSError:
        return False
    return greeting.startswith("* OK") and "Caducee IMAP" in greeting


def _is_our_imaps(host: str, port: int) -> bool:
    return _is_our_imap(host, port, implicit_tls=True)


def _never_ours(host: str, port: int) -> bool:
    """Listeners this gateway does not run yet cannot be told apart from strangers."""
    return False


def _port_state(host: str, port: int, is_ours: Callable[[str, int], bool]) -> str | None:
    """None when the port is usable (free, or served by this gateway), else the reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return None
        except OSError:
            pass
    if is_ours(host, port):
        return None
    return "in use by another program"


def _check_ports(settings: Settings, report: Report) -> None:
    listeners = settings.listeners
    host = listeners.host
    ports = {
        "smtp": listeners.smtp,
        "submission": listeners.submission,
        "submissions": listeners.submissions,
        "imap": listeners.imap,
        "imaps": listeners.imaps,
        "http": listeners.http,
    }
    for name, port in ports.items():
        if not port:
            report.ok(f"listener {name}: disabled")
            continue
        probes = {
            "http": _is_our_http,
            "smtp": _is_our_smtp,
            "submission": _is_our_smtp,
            "submissions": _is_our_smtps,
            "imap": _is_our_imap,
            "imaps": _is_our_imaps,
        }
        reason = _port_state(host, port, is_ours=probes.get(name, _never_ours))
        if reason is None:
            report.ok(f"listener {name}: {host}:{port} available")
        else:
            report.problem(f"listener {name}: {host}:{port} {reason}")


def run(args: argparse.Namespace) -> int:
    report = Report()
    try:
        settings = load_settings(Path(args.home))
        report.ok(f"config: {settings.home / 'caducee.toml'}")
    except ConfigError as error:
        report.problem(f"config: {error}")
        print(f"\n{len(report.problems)} problem(s).")
        return 1
    database = _check_database(settings, report)
    try:
        _check_certificate(
            "CA certificate", settings.path(settings.tls.ca_cert), None, settings, report
        )
        _check_certificate(
            "server certificate",
            settings.path(settings.tls.cert),
            settings.path(settings.tls.key),
            settings,
            report,
        )
        _check_keyring(settings, database, report)
        _check_dkim(settings, report)
        _check_blobs(settings, report)
        _check_ports(settings, report)
    finally:
        if database is not None:
            database.dispose()
    if report.problems:
        print(f"\n{len(report.problems)} problem(s).")
        return 1
    print("\nAll is well.")
    return 0
