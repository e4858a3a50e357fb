"""Test material: small whitelists written the way the national file is, and certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NS = "https://listeblanche.mssante.fr/schema"
DN_A = "CN=mss.operateur-a.example,OU=111111111111111,O=OPERATEUR A,C=FR"
DN_B = "CN=mss.operateur-b.example,OU=222222222222222,O=OPERATEUR B,C=FR"


def domaine(
    name: str,
    dn: str = DN_A,
    *,
    description: str = "Domaine de test",
    date: str = "2025-01-02T03:04:05Z",
) -> str:
    """One ``Domaine`` element, as the national file writes it."""
    return (
        "<Domaine>"
        f"<Nom>{escape(name)}</Nom>"
        f"<Description>{escape(description)}</Description>"
        f"<DNCertificatOperateur>{escape(dn)}</DNCertificatOperateur>"
        "<ResponsableContact>01 02 03 04 05, resp@example.org</ResponsableContact>"
        "<SupportContact>01 02 03 04 05, support@example.org</SupportContact>"
        f"<DateMAJ>{escape(date)}</DateMAJ>"
        "</Domaine>"
    )


def whitelist(
    *entries: str,
    namespace: bool = True,
    generated: str = "2025-03-13T14:54:10Z",
    closed: bool = True,
) -> bytes:
    """A whitelist document holding ``entries`` (see :func:`domaine`)."""
    xmlns = f' xmlns="{NS}"' if namespace else ""
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<ListeBlancheMSSante{xmlns}>"
        f"<DateDeGeneration>{generated}</DateDeGeneration>"
        f"<ListeDomaines>{''.join(entries)}</ListeDomaines>"
    )
    if closed:
        text += "</ListeBlancheMSSante>"
    return text.encode("utf-8")


NOW = datetime.now(UTC)


def make_certificate(
    name: str,
    *,
    ca: bool | None = True,
    key_cert_sign: bool | None = True,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> x509.Certificate:
    """A self-signed certificate; ``ca=None`` leaves BasicConstraints out, as does
    ``key_cert_sign=None`` for KeyUsage."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tests Caducée"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=365))
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    if key_cert_sign is not None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(key, hashes.SHA256())


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
