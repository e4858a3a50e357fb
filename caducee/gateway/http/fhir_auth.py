"""Who is calling the FHIR API: HTTP Basic with a mailbox address and an app password (C1).

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

:class:`Authenticator` is the seam for other ways in: the webmail's session cookie (H2) and
professionals' OpenID Connect tokens (F2) are other implementations, tried in order.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse

from caducee.config import Settings
from caducee.mailboxes.accounts.identity import IdentityService, Principal
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


def too_many_failures(throttled: AuthenticationThrottled) -> JSONResponse:
    """``429`` as ``application/problem+json`` with ``Retry-After`` (RFC 6585, RFC 9457)."""
    seconds = throttled.retry_after
    body = {
        "type": "about:blank",
        "title": "Too many failed sign-ins",
        "status": 429,
        "detail": f"try again in {seconds} s",
    }
    return JSONResponse(
        body,
        status_code=429,
        media_type="application/problem+json",
        headers={"Retry-After": str(seconds)},
    )


def client_address(request: Request) -> str:
    """The client's IP address as the connection shows it."""
    return request.client.host if request.client is not None else "unknown"


class Authenticator(Protocol):
    """One way of proving who is calling."""

    async def authenticate(self, request: Request) -> Principal | None:
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
    without it (tests), a service of its own with a ``ttl_seconds`` cache on ``clock``.
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
        if identity is None:
            defaults = Settings()
            cache = {"credential_cache_seconds": ttl_seconds}
            settings = defaults.model_copy(
                update={"identity": defaults.identity.model_copy(update=cache)}
            )
            identity = IdentityService(settings, database, clock=clock)
        self.identity = identity

    @property
    def checks(self) -> int:
        """How many argon2 checks ran (for tests and metrics)."""
        return self.identity.checks

    async def authenticate(self, request: Request) -> Principal | None:
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
