"""The harness's pytest fixtures (a plugin: ``tests/conftest.py`` loads it).

A served gateway costs a few seconds to start, so the served fixtures are shared by a
module (``gateway``, ``working_gateway``) or by the whole run (``imap_gateway``); tests
stay independent by making their own patient spaces (``patient``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caducee.records.readers.cda import decode_base64_lenient
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue, RetryPolicy
from caducee.storage.keyring import Keyring
from tests.harness.browser import browser_context, chromium  # noqa: F401 - fixtures
from tests.harness.identities import add_patient
from tests.harness.reports import N1_SAMPLE, Record, make_settings
from tests.harness.served import Account, ServedGateway, serve_demo


def _database_url(pg_schemas: Any) -> str | None:
    """A new PostgreSQL schema when the run targets PostgreSQL; None: the home's SQLite."""
    return pg_schemas.new() if pg_schemas is not None else None


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any) -> Iterator[ServedGateway]:
    """A served demo home for one test module, job workers off."""
    home = tmp_path_factory.mktemp("served") / "home"
    yield from serve_demo(home, _database_url(pg_schemas))


@pytest.fixture(scope="module")
def working_gateway(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any
) -> Iterator[ServedGateway]:
    """A served demo home whose job workers run (filing, receipts, relay)."""
    home = tmp_path_factory.mktemp("working") / "home"
    yield from serve_demo(home, _database_url(pg_schemas), workers=2)


@pytest.fixture(scope="session")
def imap_gateway(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any
) -> Iterator[ServedGateway]:
    """A served demo home for the IMAP tests of the whole run."""
    home = tmp_path_factory.mktemp("imap") / "home"
    yield from serve_demo(home, _database_url(pg_schemas))


@pytest.fixture
def patient(imap_gateway: ServedGateway) -> Account:
    """A fresh patient space with an app password, for one test."""
    return imap_gateway.new_patient()


@pytest.fixture(scope="session")
def n1_cda() -> bytes:
    """The ANS CDA R2 level 1 lab report (LOINC 11502-2) of the demo patient."""
    return N1_SAMPLE.read_bytes()


@pytest.fixture(scope="session")
def n1_pdf(n1_cda: bytes) -> bytes:
    """The real PDF the N1 sample carries in its ``nonXMLBody``."""
    match = re.search(rb"<text[^>]*representation=\"B64\"[^>]*>(.*?)</text>", n1_cda, re.S)
    assert match is not None
    pdf = decode_base64_lenient(match.group(1))
    assert pdf is not None and pdf.startswith(b"%PDF-")
    return pdf


@pytest.fixture
def queue(database: Database) -> JobQueue:
    """A job queue with a 60 s lease, 3 attempts and back-off without jitter (10 s, 20 s…)."""
    return JobQueue(
        database,
        lease_seconds=60,
        max_attempts=3,
        retry=RetryPolicy(base_seconds=10, max_seconds=100, jitter=0),
    )


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    """An encrypted blob folder with its own key-encryption key."""
    return BlobStore(tmp_path / "blobs", Keyring.create(tmp_path / "kek"))


@pytest.fixture
def record(database: Database, blobs: BlobStore, tmp_path: Path) -> Iterator[Record]:
    """The demo patient's mailbox (identity of the ANS samples), policy ``auto``, test mode."""
    account_id, address, password = add_patient(database)
    yield Record(
        database=database,
        blobs=blobs,
        queue=JobQueue(database),
        settings=make_settings(tmp_path),
        account_id=account_id,
        address=address,
        password=password,
    )
