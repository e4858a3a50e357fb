"""The trust space (A5): operator domains allowed to exchange mail, and trust anchors.

The national whitelist lists a domain once per operator certificate DN, so a
domain may appear on several rows; a domain is in the trust space when any row
names it. Domains are stored as lower-case IDNA A-labels (``xn--…``) so that
comparison with what arrives in SMTP is exact; the Unicode form is kept for
display.
"""

from __future__ import annotations

import functools
from datetime import datetime

import idna
from sqlalchemy import BigInteger, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.storage.db import Base, UtcDateTime, utcnow

BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class TrustDomain(Base):
    """One (domain, operator) line of the trust space."""

    __tablename__ = "trust_domains"
    __table_args__ = (
        UniqueConstraint("domain", "operator_dn", name="uq_trust_domains_domain_operator"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(String(253), index=True)
    display_name: Mapped[str] = mapped_column(String(253))
    operator_dn: Mapped[str] = mapped_column(String(500), default="")
    description: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    imported_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class TrustAnchor(Base):
    """A CA certificate that peers' certificates must chain to (IGC-Santé in production)."""

    __tablename__ = "trust_anchors"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(String(500))
    not_after: Mapped[datetime] = mapped_column(UtcDateTime())
    pem: Mapped[str] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class DomainError(ValueError):
    """A string that is not a usable domain name."""


@functools.lru_cache(maxsize=4096)
def to_ascii_domain(domain: str) -> str:
    """The lower-case A-label form of a domain, Unicode or not (IDN, A5).

    Cached: UTS #46 processing costs far more than an SMTP command, and the
    same few domains come back in every session.
    """
    cleaned = domain.strip().rstrip(".")
    if not cleaned:
        raise DomainError("empty domain")
    try:
        return idna.encode(cleaned, uts46=True).decode("ascii").lower()
    except idna.IDNAError as error:
        raise DomainError(f"not a valid domain name: {error}") from None


def is_trusted_domain(session: Session, domain: str) -> bool:
    """True when ``domain`` belongs to the trust space."""
    try:
        ascii_domain = to_ascii_domain(domain)
    except DomainError:
        return False
    return (
        session.scalar(select(TrustDomain.id).where(TrustDomain.domain == ascii_domain).limit(1))
        is not None
    )


def trusted_domains(session: Session) -> set[str]:
    """Every domain of the trust space (A-labels)."""
    return set(session.scalars(select(TrustDomain.domain).distinct()))


def add_trust_domain(
    session: Session,
    domain: str,
    *,
    source: str,
    operator_dn: str = "",
    description: str | None = None,
) -> TrustDomain:
    """Add one domain by hand (or for the demo); idempotent per (domain, operator)."""
    ascii_domain = to_ascii_domain(domain)
    existing = session.scalar(
        select(TrustDomain).where(
            TrustDomain.domain == ascii_domain, TrustDomain.operator_dn == operator_dn
        )
    )
    if existing is not None:
        return existing
    row = TrustDomain(
        domain=ascii_domain,
        display_name=idna.decode(ascii_domain),
        operator_dn=operator_dn,
        description=description,
        source=source,
    )
    session.add(row)
    return row


def anchor_bundle(session: Session) -> str:
    """All trust anchors as one PEM bundle, oldest first."""
    return "".join(session.scalars(select(TrustAnchor.pem).order_by(TrustAnchor.id)))
