"""A5/B1 trust anchors: only valid CA certificates, keyed by fingerprint, usable by ``ssl``."""

from __future__ import annotations

import ssl
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from caducee.directory.anchors import (
    AnchorError,
    add_anchors,
    list_anchors,
    remove_anchor,
    verify_bundle,
)
from caducee.directory.trust_models import TrustAnchor
from caducee.storage.db import Database

from .samples import NOW, make_certificate, pem


def anchor_count(database: Database) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(TrustAnchor)) or 0


def test_b1_ca_certificate_is_added_with_its_fingerprint(database: Database) -> None:
    ca = make_certificate("AC de test")
    with database.transaction() as session:
        report = add_anchors(session, b"Bag Attributes: text before\n" + pem(ca))
    assert len(report.added) == 1 and not report.refused and not report.already_present
    with database.transaction() as session:
        row = session.scalars(select(TrustAnchor)).one()
        assert row.fingerprint == ca.fingerprint(hashes.SHA256()).hex()
        assert len(row.fingerprint) == 64
        assert row.subject == "CN=AC de test,O=Tests Caducée,C=FR"
        assert row.not_after == ca.not_valid_after_utc
        assert x509.load_pem_x509_certificate(row.pem.encode()) == ca
        assert "Bag Attributes" not in row.pem
        listed = list_anchors(session)
    assert [info.fingerprint for info in listed] == [row.fingerprint]


def test_b1_adding_the_same_anchor_twice_is_idempotent(database: Database) -> None:
    ca = make_certificate("AC de test")
    with database.transaction() as session:
        add_anchors(session, pem(ca))
    with database.transaction() as session:
        report = add_anchors(session, pem(ca, ca))
    assert report.added == [] and len(report.already_present) == 2
    assert anchor_count(database) == 1


@pytest.mark.parametrize(
    ("certificate", "reason"),
    [
        (make_certificate("Feuille", ca=False), "CA=false"),
        (make_certificate("Sans contraintes", ca=None), "no BasicConstraints"),
        (make_certificate("Sans keyCertSign", key_cert_sign=False), "KeyUsage"),
        (
            make_certificate(
                "AC expirée",
                not_before=NOW - timedelta(days=800),
                not_after=NOW - timedelta(days=1),
            ),
            "expired on",
        ),
        (make_certificate("AC future", not_before=NOW + timedelta(days=2)), "not valid before"),
    ],
    ids=["leaf", "no-basic-constraints", "no-key-cert-sign", "expired", "not-yet-valid"],
)
def test_b1_unusable_certificates_are_refused(
    database: Database, certificate: x509.Certificate, reason: str
) -> None:
    with database.transaction() as session:
        report = add_anchors(session, pem(certificate))
    assert report.added == []
    assert len(report.refused) == 1
    assert reason in report.refused[0].reason
    assert report.refused[0].subject is not None
    assert anchor_count(database) == 0


def test_b1_a_file_of_several_blocks_keeps_only_the_good_certificates(
    database: Database,
) -> None:
    root = make_certificate("Racine")
    intermediate = make_certificate("Intermédiaire")
    leaf = make_certificate("Feuille", ca=False)
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    garbled = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with database.transaction() as session:
        report = add_anchors(session, pem(root) + key + pem(leaf, intermediate) + garbled)
    assert [info.subject.split(",")[0] for info in report.added] == [
        "CN=Racine",
        "CN=Intermédiaire",
    ]
    assert [r.position for r in report.refused] == [3, 5]
    assert report.ignored_blocks == ["PRIVATE KEY"]
    with database.transaction() as session:
        stored = "".join(session.scalars(select(TrustAnchor.pem)))
    assert "PRIVATE KEY" not in stored


def test_b1_no_certificate_at_all_is_an_error(database: Database) -> None:
    with database.transaction() as session, pytest.raises(AnchorError, match="no PEM"):
        add_anchors(session, b"not a certificate")


def test_b1_remove_by_fingerprint_prefix(database: Database) -> None:
    first, second = make_certificate("Un"), make_certificate("Deux")
    with database.transaction() as session:
        add_anchors(session, pem(first, second))
    digest = first.fingerprint(hashes.SHA256()).hex()
    with database.transaction() as session:
        with pytest.raises(AnchorError, match="at least"):
            remove_anchor(session, "ab")
        with pytest.raises(AnchorError, match="no trust anchor"):
            remove_anchor(session, "0000000000000000000000")
    colon_form = ":".join(digest[i : i + 2] for i in range(0, 16, 2)).upper()
    with database.transaction() as session:
        removed = remove_anchor(session, colon_form)
    assert removed.fingerprint == digest
    with database.transaction() as session:
        assert [a.subject for a in list_anchors(session)] == ["CN=Deux,O=Tests Caducée,C=FR"]


def test_b1_verify_bundle_loads_in_ssl_and_leaves_expired_anchors_out(
    database: Database,
) -> None:
    valid = make_certificate("Valide")
    expired = make_certificate(
        "Expirée", not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1)
    )
    with database.transaction() as session:
        add_anchors(session, pem(valid))
        session.add(
            TrustAnchor(
                fingerprint=expired.fingerprint(hashes.SHA256()).hex(),
                subject="CN=Expirée",
                not_after=expired.not_valid_after_utc,
                pem=pem(expired).decode(),
            )
        )
    with database.transaction() as session:
        bundle = verify_bundle(session)
    assert bundle == pem(valid).decode()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=bundle)
    assert context.cert_store_stats()["x509_ca"] == 1
