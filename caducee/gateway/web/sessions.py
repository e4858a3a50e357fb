"""Server-side webmail sessions: a random token in the browser, its hash in the database (H2).

Why server-side: the patient can list their signed-in browsers and revoke one, and a session
ends at once everywhere (no signed cookie that stays valid until it expires). The cookie
carries 32 random bytes; the table keeps only their SHA-256 (``token_hash``), so a copy of
the database does not sign anyone in. Each session has its own CSRF token (synchronizer
pattern): every state-changing form carries it and :func:`csrf_matches` compares it in
constant time.

A session ends after :data:`IDLE` without a request, after :data:`ABSOLUTE` whatever
happens, when revoked, or when the account may no longer sign in (suspended, closed: the
rule of every door, :func:`~caducee.mailboxes.accounts.store.may_sign_in`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.mailboxes.accounts.store import BIG_ID, Account, may_sign_in
from caducee.storage.db import Base, UtcDateTime, utcnow

IDLE = timedelta(minutes=30)
"""A session unused this long is over (the patient signs in again)."""
ABSOLUTE = timedelta(hours=12)
"""No session lives longer than this, used or not."""
TOUCH_EVERY = timedelta(seconds=60)
"""``last_seen_at`` is written at most this often (a page view is not a write each time)."""
MAX_USER_AGENT = 200


class WebSession(Base):
    """One signed-in browser of one account."""

    __tablename__ = "webmail_sessions"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int] = mapped_column(
        BIG_ID, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    user_agent: Mapped[str | None] = mapped_column(String(MAX_USER_AGENT))


@dataclass(frozen=True)
class Signed:
    """The session a request presented: who, and the CSRF token its forms must carry."""

    session_id: int
    public_id: str
    account_id: int
    address: str
    kind: str
    display_name: str | None
    csrf_token: str


@dataclass(frozen=True)
class SessionView:
    """One line of the patient's list of sessions."""

    public_id: str
    created_at: datetime
    last_seen_at: datetime
    user_agent: str | None
    current: bool


def token_hash(token: str) -> str:
    """What the table keeps of a session token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_token() -> str:
    """A fresh session token (256 bits)."""
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a form's CSRF token with the session's."""
    if not given or len(given) > 128:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def open_session(
    session: Session, account_id: int, user_agent: str | None, now: datetime | None = None
) -> str:
    """Create a session for ``account_id``; the token to put in the cookie (shown once)."""
    moment = now or utcnow()
    token = new_token()
    session.add(
        WebSession(
            public_id=secrets.token_hex(16),
            token_hash=token_hash(token),
            csrf_token=secrets.token_urlsafe(32),
            account_id=account_id,
            created_at=moment,
            last_seen_at=moment,
            expires_at=moment + ABSOLUTE,
            user_agent=(user_agent or "")[:MAX_USER_AGENT] or None,
        )
    )
    session.flush()
    return token


def find_session(session: Session, token: str, now: datetime | None = None) -> Signed | None:
    """The live session of ``token`` (touched when due), or None if over or unknown."""
    if not token or len(token) > 128:
        return None
    moment = now or utcnow()
    row = session.execute(
        select(WebSession, Account)
        .join(Account, Account.id == WebSession.account_id)
        .where(WebSession.token_hash == token_hash(token))
    ).first()
    if row is None:
        return None
    web, account = row
    if (
        web.revoked_at is not None
        or web.expires_at <= moment
        or web.last_seen_at + IDLE <= moment
        or not may_sign_in(account.state)
    ):
        return None
    if moment - web.last_seen_at >= TOUCH_EVERY:
        web.last_seen_at = moment
    return Signed(
        session_id=web.id,
        public_id=web.public_id,
        account_id=account.id,
        address=account.address,
        kind=account.kind,
        display_name=account.display_name,
        csrf_token=web.csrf_token,
    )


def live_sessions(
    session: Session, account_id: int, current: int, now: datetime | None = None
) -> list[SessionView]:
    """The account's sessions that are still valid, newest first."""
    moment = now or utcnow()
    rows = session.scalars(
        select(WebSession)
        .where(
            WebSession.account_id == account_id,
            WebSession.revoked_at.is_(None),
            WebSession.expires_at > moment,
            WebSession.last_seen_at > moment - IDLE,
        )
        .order_by(WebSession.last_seen_at.desc())
        .limit(100)
    ).all()
    return [
        SessionView(
            row.public_id, row.created_at, row.last_seen_at, row.user_agent, row.id == current
        )
        for row in rows
    ]


def revoke(session: Session, account_id: int, public_id: str, now: datetime | None = None) -> bool:
    """End one of the account's sessions; False when the account has no such live session."""
    result = session.execute(
        update(WebSession)
        .where(
            WebSession.account_id == account_id,
            WebSession.public_id == public_id,
            WebSession.revoked_at.is_(None),
        )
        .values(revoked_at=now or utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


def revoke_session_id(session: Session, session_id: int, now: datetime | None = None) -> None:
    """End a session by its row id (sign-out)."""
    session.execute(
        update(WebSession)
        .where(WebSession.id == session_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
