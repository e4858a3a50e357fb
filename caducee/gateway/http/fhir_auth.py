"""Who is calling the FHIR and patient APIs: HTTP Basic with a mailbox address and an app password
(C1), or a Pro Santé Connect bearer token for professionals (F2).

Patients' FHIR clients authenticate like their mail clients: the mailbox address and one of
its app passwords, checked by the identity service every door shares
(:mod:`caducee.mailboxes.accounts.identity`): argon2id in a worker thread, off the event loop, a
verified-credential cache (an HMAC of the credentials under a secret drawn at start-up,
used only while the account's sign-in fingerprint is unchanged: a suspended or closed
account, or a revoked or added app password, is checked again at once), and the failure
limiter: past a few failures for an account from one client address, or many from one
address, attempts are refused with :class:`AuthenticationThrottled` (HTTP 429 with
``Retry-After``) until a growing delay passes. Failures are never cached. Fresh checks
(not cache hits) and every failure are ``login`` audit events (F4, channel ``http``).

:class:`Authenticator` is the seam for other ways in: professionals' OpenID Connect tokens
(:class:`OidcAuthenticator`, F2) are another implementation, the webmail's session cookie (H2)
can be one; they are tried in order by the Starlette authentication backend
(:mod:`caducee.gateway.http.fhir_auth_backend`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from caducee.config import Settings
from caducee.directory.service import find_by_national_id
from caducee.gateway.runtime import Gateway
from caducee.mailboxes.accounts.identity import IdentityService, Principal
from caducee.mailboxes.accounts.identity.oidc import TokenError, TokenVerifier
from caducee.mailboxes.accounts.store import Account, AccountKind, AccountState
from caducee.storage.audit import Action, ActorKind, Result, record_event
from caducee.storage.db import Database

REALM = "Caducee"
MAX_ADDRESS_LENGTH = 320
MAX_PASSWORD_LENGTH = 256


__all__ = ["Principal"]


class AuthenticationFailed(Exception):
    """Credentials were presented and are wrong; the caller answers 401."""


class AuthenticationThrottled(AuthenticationFailed):
    """Too many failures for these credentials from this address; the caller answers 429."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed sign-ins")
        self.retry_after = retry_after


def client_address(request: HTTPConnection) -> str:
    """The client's IP address as the connection shows it (the limiter's key)."""
    return request.client.host if request.client is not None else "unknown"


class Authenticator(Protocol):
    """One way of proving who is calling."""

    async def authenticate(self, request: HTTPConnection) -> Principal | None:
        """The caller, ``None`` when the request carries no credentials of this kind.

        Raises :class:`AuthenticationFailed` when it carries wrong ones.
        """
        ...


def basic_credentials(header: str) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic`` value; ``None`` if not Basic.

    Raises :class:`AuthenticationFailed` for a Basic value that cannot be decoded.
    """
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("malformed Basic credentials") from None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        text = decoded.decode("latin-1")
    user, separator, password = text.partition(":")
    if not separator or not user or not password:
        raise AuthenticationFailed("malformed Basic credentials")
    if len(user) > MAX_ADDRESS_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
        raise AuthenticationFailed("credentials too long")
    return user.strip(), password


class BasicAuthenticator:
    """HTTP Basic against the app passwords of hosted accounts, through the identity service.

    ``identity`` is the process's shared service (:attr:`caducee.gateway.runtime.Gateway.identity`);
    without it (tests), a service of its own with a ``ttl_seconds`` cache on ``clock``, which
    :meth:`close` stops (its shared-failures poller would otherwise outlive the database).
    """

    def __init__(
        self,
        database: Database,
        *,
        identity: IdentityService | None = None,
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self._own_identity = identity is None
        if identity is None:
            defaults = Settings()
            cache = {"credential_cache_seconds": ttl_seconds}
            settings = defaults.model_copy(
                update={"identity": defaults.identity.model_copy(update=cache)}
            )
            identity = IdentityService(settings, database, clock=clock)
        self.identity = identity

    def close(self) -> None:
        """Stop the identity service made here; a shared one is its owner's to close."""
        if self._own_identity:
            self.identity.close()

    @property
    def checks(self) -> int:
        """How many argon2 checks ran (for tests and metrics)."""
        return self.identity.checks

    async def authenticate(self, request: HTTPConnection) -> Principal | None:
        header = request.headers.get("authorization")
        if not header:
            return None
        credentials = basic_credentials(header)
        if credentials is None:
            return None
        user, password = credentials
        outcome = await self.identity.sign_in(
            user, password, ip=client_address(request), channel="http", audit_cached=False
        )
        if outcome.throttled is not None:
            raise AuthenticationThrottled(outcome.throttled.retry_after_seconds)
        if outcome.principal is None:
            raise AuthenticationFailed("wrong credentials")
        return outcome.principal


def basic_authenticator(gateway: Gateway) -> BasicAuthenticator:
    """HTTP Basic on the identity service every door of the process shares (one limiter, one
    credential cache), for the FHIR and patient APIs."""
    return BasicAuthenticator(gateway.database, identity=gateway.identity)


@dataclass(frozen=True)
class TokenPrincipal(Principal):
    """A professional proved by an OIDC token: their national id, and a hosted account if any.

    ``account_id`` is 0 when the professional has no mailbox here (a remote professional of
    another operator reading the record of a patient they wrote to).
    """

    national_id: str = field(default="", repr=False)


class OidcAuthenticator:
    """``Authorization: Bearer <access token>`` of the configured issuer (Pro Santé Connect).

    A verified token is remembered, under its SHA-256, until it expires (at most
    ``max_entries``): the first sight of a token is the login event (F4, rule ``C1.oidc``).
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        database: Database,
        *,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = verifier
        self.database = database
        self.max_entries = max_entries
        self.clock = clock
        self._cache: OrderedDict[bytes, tuple[float, TokenPrincipal]] = OrderedDict()

    def _login(
        self, session: Session, result: Result, national_id: str | None, account: int
    ) -> None:
        record_event(
            session,
            actor_kind=ActorKind.PROFESSIONAL.value if national_id else ActorKind.UNKNOWN.value,
            actor_id=f"idnat:{national_id}" if national_id else "unknown",
            action=Action.LOGIN.value,
            object_type="account" if account else "token",
            object_id=str(account) if account else "-",
            result=result.value,
            rule="C1.oidc",
            subject_account_id=account or None,
            channel="http",
        )

    def _verify(self, token: str) -> tuple[float, TokenPrincipal]:
        try:
            claims = self.verifier.claims(token)
            national_id = self.verifier.national_id(claims)
            if national_id is None:
                raise TokenError("the token names no national id")
        except TokenError as error:
            with self.database.transaction() as session:
                self._login(session, Result.FAILED, None, 0)
            raise AuthenticationFailed(str(error)) from None
        national_id = national_id.strip().upper()
        with self.database.transaction() as session:
            hosted = session.scalar(
                select(Account.id)
                .where(
                    Account.address.in_(
                        [entry.address for entry in find_by_national_id(session, national_id)]
                    ),
                    Account.kind != AccountKind.PATIENT.value,
                    Account.state == AccountState.ACTIVE.value,
                )
                .order_by(Account.id)
                .limit(1)
            )
            account_id = int(hosted) if hosted is not None else 0
            self._login(session, Result.OK, national_id, account_id)
        principal = TokenPrincipal(
            account_id=account_id,
            address="",
            kind=AccountKind.PROFESSIONAL.value,
            method="oidc",
            national_id=national_id,
        )
        expires = float(claims.get("exp", 0))
        return expires, principal

    async def authenticate(self, request: HTTPConnection) -> Principal | None:
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = value.strip()
        if not token or len(token) > 16384:
            raise AuthenticationFailed("malformed bearer token")
        key = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        cached = self._cache.get(key)
        if cached is not None:
            expires, principal = cached
            if expires > self.clock():
                return principal
            del self._cache[key]
        expires, principal = await run_in_threadpool(self._verify, token)
        self._cache[key] = (expires, principal)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return principal
