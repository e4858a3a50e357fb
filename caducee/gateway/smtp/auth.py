"""Authentication on the submission ports (C1): app passwords and OIDC tokens, rate-limited.

aiosmtpd calls an ``auth_<MECHANISM>`` method of the handler; ours parse the
mechanism's exchange, then verify off the event loop (argon2id is slow on
purpose). Failures are counted per account and per client address; past the
limit the answer is ``454 4.7.0`` until the window passes, so guessing is
slow and the account's owner is not locked out for good.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Session
from sqlalchemy import select

from caducee.config import Settings
from caducee.directory.models import DirectoryEntry
from caducee.gateway.smtp.oidc import TokenError, TokenVerifier
from caducee.mailboxes.accounts import Account, AccountState, check_app_password
from caducee.storage.db import Database

INVALID = "535 5.7.8 Authentication credentials invalid"
THROTTLED = "454 4.7.0 Too many failed authentications; try again later"


@dataclass(frozen=True)
class AuthenticatedUser:
    """Who is submitting: their account and how they proved it."""

    account_id: int
    address: str
    kind: str
    mechanism: str

    @property
    def login(self) -> bytes:
        return self.address.encode()


class FailureLimiter:
    """Counts failed authentications per key over a sliding window."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str) -> deque[float]:
        stamps = self._failures[key]
        cutoff = time.monotonic() - self.window
        while stamps and stamps[0] < cutoff:
            stamps.popleft()
        return stamps

    def blocked(self, key: str) -> bool:
        return len(self._recent(key)) >= self.limit

    def fail(self, key: str) -> None:
        self._recent(key).append(time.monotonic())

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)


def _client_ip(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class Authenticator:
    """Checks credentials against accounts and the directory; keeps the failure counts."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.database = database
        self.tokens = TokenVerifier(settings)
        window = settings.submission.failure_window_seconds
        self.per_account = FailureLimiter(settings.submission.max_failures_per_account, window)
        self.per_ip = FailureLimiter(settings.submission.max_failures_per_ip, window)

    def _password(self, address: str, password: str) -> AuthenticatedUser | None:
        with self.database.transaction() as session:
            account = check_app_password(session, address, password)  # active accounts only
            if account is None:
                return None
            return AuthenticatedUser(account.id, account.address, account.kind, "password")

    def _token(self, token: str, user: str | None) -> AuthenticatedUser | None:
        try:
            claims = self.tokens.claims(token)
        except TokenError:
            return None
        national_id = self.tokens.national_id(claims)
        if national_id is None:
            return None
        with self.database.reading() as session:
            rows = session.execute(
                select(Account.id, Account.address, Account.kind)
                .join(DirectoryEntry, DirectoryEntry.address == Account.address)
                .where(
                    DirectoryEntry.national_id == national_id,
                    DirectoryEntry.hosted.is_(True),
                    Account.state == AccountState.ACTIVE.value,
                )
                .order_by(Account.id)
            ).all()
        accounts = [AuthenticatedUser(row.id, row.address, row.kind, "oidc") for row in rows]
        if user:
            accounts = [a for a in accounts if a.address == user.strip().lower()]
        return accounts[0] if accounts else None

    async def verify(
        self, session: Session, user: str, secret: str, *, token: bool
    ) -> AuthenticatedUser | str:
        """The authenticated user, or the SMTP reply refusing them."""
        ip_key = _client_ip(session)
        account_key = user.strip().lower()
        if self.per_ip.blocked(ip_key) or (account_key and self.per_account.blocked(account_key)):
            return THROTTLED
        if token:
            result = await asyncio.to_thread(self._token, secret, user or None)
        else:
            result = await asyncio.to_thread(self._password, user, secret)
        if result is None:
            self.per_ip.fail(ip_key)
            if account_key:
                self.per_account.fail(account_key)
            return INVALID
        self.per_account.clear(result.address)
        return result


def _b64(text: str | bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _result(outcome: AuthenticatedUser | str) -> AuthResult:
    if isinstance(outcome, AuthenticatedUser):
        return AuthResult(success=True, auth_data=outcome)
    return AuthResult(success=False, handled=False, message=outcome)


async def _initial(server: SMTP, args: list[str]) -> bytes | None:
    """The mechanism's initial response, from the command line or a challenge."""
    if len(args) > 1:
        return _b64(args[1]) if args[1] != "=" else b""
    answer: Any = await server.challenge_auth("")
    if answer is MISSING:
        return None
    return bytes(answer)


class AuthMechanisms:
    """The ``auth_*`` methods aiosmtpd finds on a handler (mixed into the submission handler)."""

    authenticator: Authenticator

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        data = await _initial(server, args)
        if data is None:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode")
        parts = data.split(b"\x00")
        if len(parts) != 3:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode")
        user, password = parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
        assert server.session is not None
        return _result(await self.authenticator.verify(server.session, user, password, token=False))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        user_raw: Any = _b64(args[1]) if len(args) > 1 else await server.challenge_auth("Username:")
        if user_raw is MISSING or user_raw is None:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode")
        password_raw: Any = await server.challenge_auth("Password:")
        if password_raw is MISSING:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode")
        user = bytes(user_raw).decode("utf-8", "replace")
        password = bytes(password_raw).decode("utf-8", "replace")
        assert server.session is not None
        return _result(await self.authenticator.verify(server.session, user, password, token=False))

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        data = await _initial(server, args)
        fields = dict(
            part.split("=", 1)
            for part in (data or b"").decode("utf-8", "replace").split("\x01")
            if "=" in part
        )
        token = fields.get("auth", "").removeprefix("Bearer ").strip()
        if not token:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode")
        assert server.session is not None
        outcome = await self.authenticator.verify(
            server.session, fields.get("user", ""), token, token=True
        )
        return _result(outcome)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        data = await _initial(server, args)
        text = (data or b"").decode("utf-8", "replace")
        head, _, rest = text.partition("\x01")
        user = next((p[2:] for p in head.split(",") if p.startswith("a=")), "")
        fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
        token = fields.get("auth", "").removeprefix("Bearer ").strip()
        if not token:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode")
        assert server.session is not None
        outcome = await self.authenticator.verify(server.session, user, token, token=True)
        return _result(outcome)
