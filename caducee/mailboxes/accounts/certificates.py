"""Client certificates bound to hosted accounts (C1): SASL EXTERNAL for APP mailboxes.

An applicative mailbox (a lab's or hospital's software, directory ``bal_type`` APP) signs in
on the submission ports with a TLS client certificate rather than a password: the operator
binds the certificate's SHA-256 fingerprint to the account (``caducee account certificate
add ADDRESS CERT.pem``), the TLS layer verifies the certificate against the trust anchors,
and ``AUTH EXTERNAL`` signs in the account bound to it. Only the fingerprint is kept (and
the subject and expiry, for the operator's listing); revoking deletes the binding.
Which accounts may bind a certificate (APP only) is the gateway's check (it reads the
directory); this module only stores and finds bindings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import BigInteger, ForeignKey, Integer, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.mailboxes.accounts.store import Account
from caducee.storage.db import Base, UtcDateTime, utcnow

BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class CertificateError(Exception):
    """The certificate cannot be read or bound (the message says why, for the operator)."""


class AccountCertificate(Base):
    """A client certificate (by SHA-256 fingerprint of its DER) bound to one account."""

    __tablename__ = "account_certificates"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(String(400))
    not_after: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


@dataclass(frozen=True)
class CertificateInfo:
    """What the operator sees of a bound certificate (never the certificate itself)."""

    id: int
    fingerprint: str
    subject: str
    not_after: datetime | None
    created_at: datetime

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "subject": self.subject,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "created_at": self.created_at.isoformat(),
        }


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, lower-case hex."""
    return hashlib.sha256(der).hexdigest()


def read_pem(pem: str) -> tuple[bytes, str, datetime | None]:
    """``(der, subject, not_after)`` of the first certificate of a PEM text."""
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode("ascii", "replace"))
    except ValueError as error:
        raise CertificateError(f"not a PEM certificate: {error}") from None
    der = certificate.public_bytes(Encoding.DER)
    return der, certificate.subject.rfc4514_string()[:400], certificate.not_valid_after_utc


def bind_certificate(session: Session, account: Account, pem: str) -> tuple[CertificateInfo, bool]:
    """Bind the certificate in ``pem`` to ``account``; ``(info, created)``.

    A certificate bound to another account is refused: one certificate, one account.
    """
    der, subject, not_after = read_pem(pem)
    digest = fingerprint(der)
    row = session.scalars(
        select(AccountCertificate).where(AccountCertificate.fingerprint == digest)
    ).first()
    if row is not None and row.account_id != account.id:
        raise CertificateError("this certificate is already bound to another account")
    created = row is None
    if row is None:
        row = AccountCertificate(
            account_id=account.id, fingerprint=digest, subject=subject, not_after=not_after
        )
        session.add(row)
        session.flush()
    return _info(row), created


def account_certificates(session: Session, account_id: int) -> list[CertificateInfo]:
    """The certificates bound to an account, oldest first."""
    rows = session.scalars(
        select(AccountCertificate)
        .where(AccountCertificate.account_id == account_id)
        .order_by(AccountCertificate.id)
    )
    return [_info(row) for row in rows]


def revoke_certificate(session: Session, account_id: int, certificate_id: int) -> bool:
    """Remove one binding of the account; False when it has no such certificate."""
    result = session.execute(
        delete(AccountCertificate).where(
            AccountCertificate.id == certificate_id,
            AccountCertificate.account_id == account_id,
        )
    )
    return bool(getattr(result, "rowcount", 0))


def certificate_account(session: Session, digest: str) -> Account | None:
    """The account a certificate fingerprint is bound to, if any."""
    return session.scalars(
        select(Account)
        .join(AccountCertificate, AccountCertificate.account_id == Account.id)
        .where(AccountCertificate.fingerprint == digest)
    ).first()


def _info(row: AccountCertificate) -> CertificateInfo:
    return CertificateInfo(int(row.id), row.fingerprint, row.subject, row.not_after, row.created_at)
