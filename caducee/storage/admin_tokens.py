"""The operator's bearer tokens for the admin API: scoped, expiring, stored as SHA-256 only.

A token is ``cdt_`` + 43 URL-safe characters (256 random bits), shown once by
``caducee admin token create``. Only its SHA-256 is stored: with that much entropy a fast
hash is enough (no dictionary to try), and lookups stay one indexed query per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.storage.db import Base, UtcDateTime, utcnow

PREFIX = "cdt_"
SCOPES = (
    "patients:read",
    "patients:write",
    "accounts:read",
    "accounts:write",
    "queue:read",
    "queue:write",
    "trust:read",
    "trust:write",
    "directory:write",
    "audit:read",
)


class AdminToken(Base):
    """One operator token: its hash, scopes, validity."""

    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    label: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


class TokenError(ValueError):
    """A token request the operator must correct (unknown scope...)."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, label: str, scopes: Iterable[str], validity: timedelta
) -> tuple[AdminToken, str]:
    """A new token (row, clear text once); the caller commits."""
    wanted = sorted(set(scopes))
    unknown = [scope for scope in wanted if scope not in SCOPES]
    if unknown or not wanted:
        raise TokenError(f"scopes must be among {', '.join(SCOPES)} (got {', '.join(unknown)})")
    token = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = AdminToken(
        label=label[:100],
        token_hash=_digest(token),
        scopes=" ".join(wanted),
        created_at=now,
        expires_at=now + validity,
    )
    session.add(row)
    session.flush()
    return row, token


def verify_token(session: Session, token: str) -> AdminToken | None:
    """The live token row of ``token`` (usage recorded), or None."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    digest = _digest(token)
    row = session.scalar(select(AdminToken).where(AdminToken.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = utcnow()
    if row.revoked_at is not None or row.expires_at <= now:
        return None
    row.last_used_at = now
    return row


def list_tokens(session: Session) -> list[AdminToken]:
    """Every token, newest first (hashes are never shown)."""
    return list(session.scalars(select(AdminToken).order_by(AdminToken.id.desc())))


def revoke_token(session: Session, token_id: int) -> bool:
    """Revoke one token; False when unknown or already revoked."""
    row = session.get(AdminToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True
