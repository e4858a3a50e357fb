"""The demo home: a patient, a hosted professional, a pharmacy and a remote peer.

``caducee init --demo`` calls :func:`create_demo` once. It writes
``demo/credentials.json`` (the layout scripts and tests read; paths absolute,
file readable by its owner only). Passwords are generated for each home, never
shipped. The identities are the public ANS test values: the patient is the one
of the ANS CDA samples (test INS OID), so their reports file into her record.

The patient's space is created and activated through the lifecycle service, as a real
patient would (code + birth date, then a password and the first authenticator value), so
the webmail can be tried at once: ``patient.web_password`` and ``patient.totp_secret``
(base32, for any authenticator app) sign in at ``/webmail``. ``patient.password`` stays the
app password of IMAP and SMTP.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import date
from pathlib import Path
from typing import Any

from caducee.config import Settings
from caducee.directory.formats import SourceKind
from caducee.directory.service import NewEntry, add_entry
from caducee.directory.trust_models import add_trust_domain
from caducee.gateway import pki
from caducee.gateway.commands.init import DEMO_HOSTED_DOMAIN, DEMO_PEER_DOMAIN, DEMO_PEER_SELECTOR
from caducee.gateway.homefiles import HomeLayout
from caducee.mailboxes.accounts.lifecycle import (
    Actor,
    LifecycleError,
    LifecyclePolicy,
    QualifiedIdentity,
    complete_activation,
    create_space,
    password_problem,
    start_activation,
    totp_now,
)
from caducee.mailboxes.accounts.store import (
    AccountKind,
    add_app_password,
    create_account,
    find_account,
)
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.keyring import Keyring

DEMO_INS = "279035121518989"
TEST_INS_OID = "1.2.250.1.213.1.4.10"
HOSTED_PROFESSIONAL = f"claire.martin@{DEMO_HOSTED_DOMAIN}"
HOSTED_PROFESSIONAL_RPPS = "10099999012"
PEER_PROFESSIONAL = f"paul.bernard@{DEMO_PEER_DOMAIN}"
PEER_PROFESSIONAL_RPPS = "10099999020"
PHARMACY = f"pharmacie@{DEMO_HOSTED_DOMAIN}"
PHARMACY_FINESS = "750000001"
DEMO_BIRTH_DATE = date(1979, 3, 28)
DEMO_IDENTITY = QualifiedIdentity(
    ins=DEMO_INS,
    oid=TEST_INS_OID,
    birth_name="PAT-TROIS",
    given_name="DOMINIQUE",
    birth_date=DEMO_BIRTH_DATE,
    sex="F",
    birthplace="51215",
)


def _directory_entries() -> list[NewEntry]:
    return [
        NewEntry(
            address=HOSTED_PROFESSIONAL,
            bal_type="PER",
            national_id="8" + HOSTED_PROFESSIONAL_RPPS,
            family_name="MARTIN",
            given_name="Claire",
            profession_code="10",
            profession_label="Médecin",
            organisation_name="Hôpital démo",
            postal_code="75012",
            hosted=True,
            source=SourceKind.DEMO,
        ),
        NewEntry(
            address=PEER_PROFESSIONAL,
            bal_type="PER",
            national_id="8" + PEER_PROFESSIONAL_RPPS,
            family_name="BERNARD",
            given_name="Paul",
            profession_code="10",
            profession_label="Médecin",
            organisation_name="Laboratoire démo",
            postal_code="92100",
            hosted=False,
            source=SourceKind.DEMO,
        ),
        NewEntry(
            address=PHARMACY,
            bal_type="ORG",
            national_id="1" + PHARMACY_FINESS,
            family_name=None,
            given_name=None,
            profession_code="21",
            profession_label="Pharmacien",
            organisation_name="Pharmacie de l'hôpital démo",
            postal_code="75012",
            hosted=True,
            pharmacy=True,
            source=SourceKind.DEMO,
        ),
    ]


def _web_password() -> str:
    """A fresh password the lifecycle accepts (9+ characters, lower, upper, digit, special)."""
    while True:
        candidate = secrets.token_urlsafe(12) + "-" + secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ")
        candidate += secrets.choice("abcdefghijkmnopqrstuvwxyz") + secrets.choice("23456789")
        if password_problem(candidate) is None:
            return candidate


def _activated_patient(
    settings: Settings, database: Database, blobs: BlobStore
) -> tuple[str, str, str]:
    """Create and activate the demo patient's space; (address, web password, TOTP base32)."""
    policy = LifecyclePolicy.from_settings(settings)
    password = _web_password()
    with database.transaction() as session:
        created = create_space(session, DEMO_IDENTITY, policy, Actor.operator("demo"))
        enrolment = start_activation(
            session, blobs, created.address, created.code, DEMO_BIRTH_DATE, policy
        )
        if isinstance(enrolment, LifecycleError):
            raise enrolment
        secret = base64.b32decode(
            enrolment.secret_base32 + "=" * (-len(enrolment.secret_base32) % 8)
        )
        activated = complete_activation(
            session,
            blobs,
            created.address,
            created.code,
            DEMO_BIRTH_DATE,
            password,
            totp_now(secret),
            policy,
        )
        if isinstance(activated, LifecycleError):
            raise activated
    return created.address, password, enrolment.secret_base32


def create_demo(
    settings: Settings, database: Database, layout: HomeLayout, blobs: BlobStore | None = None
) -> dict[str, Any]:
    """Create the demo accounts and directory entries and write the credentials file.

    ``blobs`` holds the patient's encrypted TOTP secret; without it, the home's blob store
    (built from ``settings``) is used.
    """
    if blobs is None:
        blobs = BlobStore.from_settings(settings, Keyring(settings.path(settings.crypto.keyring)))
    with database.transaction() as session:
        for domain in (DEMO_HOSTED_DOMAIN, DEMO_PEER_DOMAIN):
            add_trust_domain(session, domain, source="demo", description="Caducée demo operator")
        for entry in _directory_entries():
            add_entry(session, entry)
    patient_address, web_password, totp_secret = _activated_patient(settings, database, blobs)
    with database.transaction() as session:
        patient_account = find_account(session, patient_address)
        assert patient_account is not None
        patient_account.display_name = "Dominique PAT-TROIS"
        patient_password = add_app_password(session, patient_account, "demo")
        professional = create_account(
            session, HOSTED_PROFESSIONAL, AccountKind.PROFESSIONAL, display_name="Dr Claire MARTIN"
        )
        professional_password = add_app_password(session, professional, "demo")
        pharmacy = create_account(
            session, PHARMACY, AccountKind.ORGANISATION, display_name="Pharmacie de l'hôpital démo"
        )
        pharmacy_password = add_app_password(session, pharmacy, "demo")
    listeners = settings.listeners
    credentials: dict[str, Any] = {
        "ports": {
            "smtp": listeners.smtp,
            "submission": listeners.submission,
            "submissions": listeners.submissions,
            "imap": listeners.imap,
            "imaps": listeners.imaps,
            "http": listeners.http,
        },
        "ca_cert": str(settings.path(settings.tls.ca_cert).resolve()),
        "patient": {
            "address": patient_address,
            "ins": DEMO_INS,
            "password": patient_password,
            "web_password": web_password,
            "totp_secret": totp_secret,
        },
        "professional": {
            "address": HOSTED_PROFESSIONAL,
            "national_id": "8" + HOSTED_PROFESSIONAL_RPPS,
            "password": professional_password,
        },
        "peer": {
            "domain": DEMO_PEER_DOMAIN,
            "cert": str((layout.peer / "client.pem").resolve()),
            "key": str((layout.peer / "client.key").resolve()),
            "dkim_selector": DEMO_PEER_SELECTOR,
            "dkim_key": str((layout.peer / "dkim.key").resolve()),
            "professional": PEER_PROFESSIONAL,
        },
        "pharmacy": {"address": PHARMACY, "password": pharmacy_password},
    }
    _write_credentials(layout.credentials, credentials)
    return credentials


def _write_credentials(path: Path, credentials: dict[str, Any]) -> None:
    pki.write_private(path, (json.dumps(credentials, indent=2, ensure_ascii=False) + "\n").encode())
