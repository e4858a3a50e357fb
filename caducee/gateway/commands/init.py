"""``caducee init --home DIR [--demo]``: make a working home folder.

Each step creates one artefact only when it is missing, so running init twice
changes nothing and says so. With ``--demo`` the home also gets a demo
directory, patient, professional, pharmacy and a remote peer operator whose
certificate and DKIM key let anyone play that operator (K1).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from caducee.config import load_settings
from caducee.config.settings import env_value
from caducee.directory.anchors import add_anchors
from caducee.gateway import pki
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.home import open_database
from caducee.gateway.homefiles import HomeLayout
from caducee.storage import schema
from caducee.storage.keyring import ACTIVE_FILE, Keyring

DEMO_HOSTED_DOMAIN = "hopital-demo.mssante.fr"
DEMO_PEER_DOMAIN = "labo-demo.mssante.fr"
DEMO_PEER_SELECTOR = "labo2026"


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("init", help="create a gateway home (config, keys, database)")
    add_home_argument(parser)
    parser.add_argument(
        "--demo", action="store_true", help="also create the demo directory, accounts and peer"
    )
    parser.set_defaults(handler=run)


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


DEFAULT_DATABASE_URL = "sqlite:///caducee.db"
DATABASE_URL_ENV = "CADUCEE_DATABASE__URL"


def initial_database_url(environ: Mapping[str, str]) -> tuple[str, bool]:
    """The database URL a new home is made with, as it goes into ``caducee.toml``.

    The one the environment sets (``CADUCEE_DATABASE__URL``, read like every
    override), else SQLite in the home. A password in the URL is left out of the
    file (secrets stay in the environment, ``PGPASSWORD`` or ``~/.pgpass``); the
    second value says whether one was left out.
    """
    raw = environ.get(DATABASE_URL_ENV, "").strip()
    value = env_value(raw) if raw else ""
    if not isinstance(value, str) or not value:
        return DEFAULT_DATABASE_URL, False
    try:
        url = make_url(value)
    except ArgumentError:
        return value, False  # load_settings reports the bad URL in one sentence
    if url.password is None:
        return value, False
    without = URL.create(
        url.drivername,
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    return without.render_as_string(hide_password=False), True


def render_config(
    *, demo: bool, peer_dkim_record: str | None, database_url: str = DEFAULT_DATABASE_URL
) -> str:
    """The caducee.toml of a new home: only what differs from the defaults."""
    lines = [
        "# Caducée gateway configuration; every field is described in",
        "# config/caducee.example.toml of the source tree.",
        "version = 1",
        "",
        "[gateway]",
        'hostname = "mx.caducee.localhost"',
    ]
    if demo:
        lines += [f"hosted_domains = [{_toml_string(DEMO_HOSTED_DOMAIN)}]", "test_mode = true"]
    else:
        lines += ["hosted_domains = []", "test_mode = false"]
    lines += [
        "",
        "[database]",
        f"url = {_toml_string(database_url)}",
        "",
        "[listeners]",
        'host = "127.0.0.1"',
        "smtp = 2525",
        "submission = 2587",
        "submissions = 2465",
        "imap = 2143",
        "imaps = 2993",
        "http = 8080",
        "",
        "[dkim]",
        'selector = "caducee"',
        'private_key = "dkim/caducee.key"',
    ]
    if peer_dkim_record is not None:
        lines += [
            "",
            "[dkim.key_table]",
            f"{_toml_string(f'{DEMO_PEER_SELECTOR}._domainkey.{DEMO_PEER_DOMAIN}')}"
            f" = {_toml_string(peer_dkim_record)}",
        ]
    return "\n".join(lines) + "\n"


class Steps:
    """Collects what init created, to report it (or that nothing changed)."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def did(self, what: str) -> None:
        self.created.append(what)


def _ensure_tls(layout: HomeLayout, hostname: str, hosted: list[str], steps: Steps) -> pki.Issued:
    settings_cert = layout.root / "tls" / "server.pem"
    settings_key = layout.root / "tls" / "server.key"
    if layout.ca_cert.exists() and layout.ca_key.exists():
        ca = pki.load(layout.ca_cert, layout.ca_key)
    else:
        ca = pki.create_ca("Caducée development CA", "Caducée development trust space")
        pki.save(ca, layout.ca_cert, layout.ca_key)
        steps.did("development CA (tls/ca.pem)")
    if not (settings_cert.exists() and settings_key.exists()):
        server = pki.issue(
            ca,
            hostname,
            organisation="Caducée development operator",
            dns_names=[hostname, "localhost", *hosted],
            ip_addresses=["127.0.0.1", "::1"],
        )
        pki.save(server, settings_cert, settings_key)
        steps.did("server certificate (tls/server.pem)")
    return ca


def _ensure_dkim(path: Path, steps: Steps) -> None:
    if not path.exists():
        pki.write_private(path, pki.key_pem(pki.create_dkim_key()))
        steps.did(f"DKIM key ({path.name})")


def _ensure_peer(layout: HomeLayout, ca: pki.Issued, steps: Steps) -> str:
    """The demo remote operator's client certificate and DKIM key; returns its DNS record."""
    cert, key, dkim_key = (
        layout.peer / "client.pem",
        layout.peer / "client.key",
        layout.peer / "dkim.key",
    )
    if not (cert.exists() and key.exists()):
        peer = pki.issue(
            ca, f"mx.{DEMO_PEER_DOMAIN}", organisation="Labo démo", dns_names=[DEMO_PEER_DOMAIN]
        )
        pki.save(peer, cert, key)
        steps.did("demo peer certificate (demo/peer/client.pem)")
    _ensure_dkim(dkim_key, steps)
    return pki.dkim_dns_record(dkim_key.read_bytes())


def run(args: argparse.Namespace) -> int:
    layout = HomeLayout(Path(args.home).resolve())
    steps = Steps()
    if not layout.root.exists():
        layout.root.mkdir(parents=True, mode=0o700)
        steps.did(f"home folder {layout.root}")
    config_existed = layout.config.exists()
    if config_existed and args.demo and not layout.credentials.exists():
        raise CommandError(
            f"{layout.root} was initialised without --demo; create a new home for the demo"
        )
    hosted = [DEMO_HOSTED_DOMAIN] if args.demo else []
    ca = _ensure_tls(layout, "mx.caducee.localhost", hosted, steps)
    peer_record = _ensure_peer(layout, ca, steps) if args.demo else None
    if not config_existed:
        database_url, password_left_out = initial_database_url(os.environ)
        layout.config.write_text(
            render_config(demo=args.demo, peer_dkim_record=peer_record, database_url=database_url),
            "utf-8",
        )
        os.chmod(layout.config, 0o600)
        steps.did("configuration (caducee.toml)")
        if password_left_out:
            print(
                "Note: the database password was not written to caducee.toml; give it with "
                f"{DATABASE_URL_ENV}, PGPASSWORD or ~/.pgpass."
            )
    settings = load_settings(layout.root)
    _ensure_dkim(settings.path(settings.dkim.private_key), steps)
    keyring_folder = settings.path(settings.crypto.keyring)
    if not (keyring_folder / ACTIVE_FILE).exists():
        Keyring.create(keyring_folder)
        steps.did("key-encryption key (keys/kek)")
    blobs = settings.path(settings.blobs.path)
    if not blobs.exists():
        blobs.mkdir(parents=True, mode=0o700)
        steps.did("blob folder")
    database = open_database(settings, pool_size=5)
    try:
        if schema.current_revision(database) != schema.head_revision():
            schema.upgrade(database)
            steps.did(f"database schema at {schema.head_revision()}")
        with database.transaction() as session:
            report = add_anchors(session, pki.cert_pem(ca.certificate))
        if report.added:
            steps.did("trust anchor: the development CA")
        if args.demo and not layout.credentials.exists():
            from caducee.gateway.demo import create_demo

            create_demo(settings, database, layout)
            steps.did(f"demo accounts and directory ({layout.credentials})")
    finally:
        database.dispose()
    if steps.created:
        print(f"Initialised {layout.root}:")
        for item in steps.created:
            print(f"  created {item}")
    else:
        print(f"{layout.root} is already initialised; nothing changed.")
    if args.demo or layout.credentials.exists():
        print(f"Demo credentials: {layout.credentials}")
    return 0
