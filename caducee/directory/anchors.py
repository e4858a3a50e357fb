"""Trust anchors: the CA certificates a peer operator's certificate must chain to (A5, B1).

In production the anchors are the IGC-Santé CAs, which are in no public trust
store and must be pinned explicitly; a development home uses the CA made by
``caducee init``. Whatever is stored here decides which TLS peers are believed,
so a certificate is accepted only when it can act as an anchor:

- it is a **CA** (BasicConstraints ``ca=True``; and, when it has a KeyUsage, one
  that allows signing certificates): a leaf certificate would be a mistake that
  OpenSSL silently ignores or, worse, that pins a single peer by accident;
- it is **within its validity period** (an expired anchor verifies nothing and
  only hides the missing renewal).

Anchors are keyed by the SHA-256 fingerprint of their DER encoding, so adding
the same file twice changes nothing. Only the certificate itself is stored
(re-encoded as PEM): any text around it, and any other PEM block of the file
(a private key pasted by mistake, for instance), is left out and reported.
Functions take a :class:`~sqlalchemy.orm.Session`; the caller owns the
transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.directory.trust_models import TrustAnchor
from caducee.storage.db import utcnow

MAX_PEM_BYTES = 1024 * 1024
MAX_SUBJECT_LENGTH = 500  # trust_anchors.subject
MIN_PREFIX_LENGTH = 4
CLOCK_SKEW = timedelta(minutes=5)

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_CERTIFICATE_LABELS = frozenset({b"CERTIFICATE", b"X509 CERTIFICATE"})
_HEX = frozenset("0123456789abcdef")


class AnchorError(ValueError):
    """A request about trust anchors that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class AnchorInfo:
    """What an operator needs to recognise a stored anchor."""

    fingerprint: str
    """SHA-256 of the DER certificate, 64 lower-case hex digits."""
    subject: str
    """RFC 4514 string."""
    not_after: datetime
    added_at: datetime | None = None

    @classmethod
    def of(cls, row: TrustAnchor) -> AnchorInfo:
        return cls(row.fingerprint, row.subject, row.not_after, row.added_at)


@dataclass(frozen=True)
class RefusedCertificate:
    """A certificate of the file that was not added, and why."""

    position: int
    """1-based rank of the PEM block in the file."""
    subject: str | None
    reason: str


@dataclass
class AnchorReport:
    """The outcome of adding the certificates of one PEM file."""

    added: list[AnchorInfo] = field(default_factory=list)
    already_present: list[AnchorInfo] = field(default_factory=list)
    refused: list[RefusedCertificate] = field(default_factory=list)
    ignored_blocks: list[str] = field(default_factory=list)
    """Labels of PEM blocks that are not certificates (e.g. ``PRIVATE KEY``); never stored."""

    @property
    def accepted(self) -> int:
        """Certificates now in the trust anchors (added or already there)."""
        return len(self.added) + len(self.already_present)


def fingerprint(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint of a certificate, lower-case hex without separators."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def subject_of(certificate: x509.Certificate) -> str:
    """The RFC 4514 subject, shortened to what the table holds."""
    try:
        subject = certificate.subject.rfc4514_string()
    except ValueError:
        return "(unreadable subject)"
    if len(subject) > MAX_SUBJECT_LENGTH:
        return subject[: MAX_SUBJECT_LENGTH - 1] + "…"
    return subject


def refusal_reason(certificate: x509.Certificate, now: datetime | None = None) -> str | None:
    """Why ``certificate`` cannot be a trust anchor, or None when it can."""
    now = now or utcnow()
    try:
        extensions = certificate.extensions
    except ValueError as error:
        return f"its extensions cannot be read: {error}"
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "not a CA certificate: it has no BasicConstraints extension"
    try:
        key_usage: x509.KeyUsage | None = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    if not constraints.ca:
        return "not a CA certificate: BasicConstraints says CA=false (a leaf certificate)"
    if key_usage is not None and not key_usage.key_cert_sign:
        return "not a CA certificate: its KeyUsage does not allow signing certificates"
    not_after = certificate.not_valid_after_utc
    if not_after <= now:
        return f"expired on {not_after:%Y-%m-%d %H:%M:%S} UTC"
    not_before = certificate.not_valid_before_utc
    if not_before > now + CLOCK_SKEW:
        return f"not valid before {not_before:%Y-%m-%d %H:%M:%S} UTC"
    return None


def _pem_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(label, whole block) for every PEM block of ``data``, in order."""
    return [(match.group(1), match.group(0)) for match in _PEM_BLOCK.finditer(data)]


def add_anchors(session: Session, pem: bytes | str, *, now: datetime | None = None) -> AnchorReport:
    """Add every acceptable CA certificate of a PEM text; idempotent per fingerprint.

    Raises :class:`AnchorError` when the text holds no certificate at all or is
    larger than :data:`MAX_PEM_BYTES`.
    """
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    if len(data) > MAX_PEM_BYTES:
        raise AnchorError(f"the PEM file is larger than {MAX_PEM_BYTES} bytes")
    now = now or utcnow()
    report = AnchorReport()
    blocks = _pem_blocks(data)
    if not any(label in _CERTIFICATE_LABELS for label, _block in blocks):
        raise AnchorError("no PEM certificate (-----BEGIN CERTIFICATE-----) found")
    seen: set[str] = set()
    for position, (label, block) in enumerate(blocks, start=1):
        if label not in _CERTIFICATE_LABELS:
            report.ignored_blocks.append(label.decode("ascii"))
            continue
        try:
            certificate = x509.load_pem_x509_certificate(block)
        except ValueError:
            report.refused.append(
                RefusedCertificate(position, None, "not a readable X.509 certificate")
            )
            continue
        subject = subject_of(certificate)
        reason = refusal_reason(certificate, now)
        if reason is not None:
            report.refused.append(RefusedCertificate(position, subject, reason))
            continue
        digest = fingerprint(certificate)
        existing = session.scalar(select(TrustAnchor).where(TrustAnchor.fingerprint == digest))
        if existing is not None:
            report.already_present.append(AnchorInfo.of(existing))
            continue
        if digest in seen:
            report.already_present.append(
                AnchorInfo(digest, subject, certificate.not_valid_after_utc, now)
            )
            continue
        row = TrustAnchor(
            fingerprint=digest,
            subject=subject,
            not_after=certificate.not_valid_after_utc,
            pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            added_at=now,
        )
        session.add(row)
        seen.add(digest)
        report.added.append(AnchorInfo.of(row))
    return report


def add_anchor_file(session: Session, path: Path, *, now: datetime | None = None) -> AnchorReport:
    """:func:`add_anchors` on the content of a file; unreadable files raise AnchorError."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as error:
        raise AnchorError(f"cannot read {path}: {error.strerror or error}") from None
    return add_anchors(session, data, now=now)


def list_anchors(session: Session) -> list[AnchorInfo]:
    """Every stored anchor, oldest first."""
    rows = session.scalars(select(TrustAnchor).order_by(TrustAnchor.id))
    return [AnchorInfo.of(row) for row in rows]


def normalise_prefix(prefix: str) -> str:
    """A fingerprint prefix as stored: lower-case hex, ``:`` separators and ``sha256:`` dropped."""
    cleaned = prefix.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(cleaned) < MIN_PREFIX_LENGTH or not set(cleaned) <= _HEX:
        raise AnchorError(
            f"a fingerprint prefix is at least {MIN_PREFIX_LENGTH} hexadecimal digits"
        )
    return cleaned


def remove_anchor(session: Session, fingerprint_prefix: str) -> AnchorInfo:
    """Remove the one anchor whose fingerprint starts with the prefix, and return it.

    Raises :class:`AnchorError` when no anchor, or more than one, matches.
    """
    prefix = normalise_prefix(fingerprint_prefix)
    rows = list(
        session.scalars(
            select(TrustAnchor).where(TrustAnchor.fingerprint.startswith(prefix)).limit(2)
        )
    )
    if not rows:
        raise AnchorError(f"no trust anchor has a fingerprint starting with {prefix}")
    if len(rows) > 1:
        raise AnchorError(f"several trust anchors match {prefix}: give more digits")
    info = AnchorInfo.of(rows[0])
    session.delete(rows[0])
    return info


def verify_bundle(session: Session, *, now: datetime | None = None) -> str:
    """The PEM bundle for ``ssl.SSLContext.load_verify_locations(cadata=...)``.

    Expired anchors are left out (they can verify nothing, and OpenSSL could pick
    one over its renewal). The result is empty when there is no usable anchor; the
    caller must then refuse to verify rather than pass an empty ``cadata``.
    """
    now = now or utcnow()
    rows = session.scalars(
        select(TrustAnchor.pem).where(TrustAnchor.not_after > now).order_by(TrustAnchor.id)
    )
    return "".join(pem if pem.endswith("\n") else pem + "\n" for pem in rows)
