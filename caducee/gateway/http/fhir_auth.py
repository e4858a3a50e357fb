"""Who is calling the FHIR API: HTTP Basic with a mailbox address and an app password (C1).

Patients' FHIR clients authenticate like their mail clients: the mailbox address and one of
its app passwords. Checking an app password is argon2id, slow on purpose, so the check runs
in a worker thread, off the event loop, and a success is remembered for a short while
(``ttl_seconds``) under an HMAC of the credentials, keyed by a secret drawn at start-up: a
search session of a few requests then pays for one check, and the cache never holds the
password or anything that could be tested against it offline. Failures are never cached.
A remembered success is used only while the account's sign-in fingerprint (its state and
its app-password hashes: one indexed query) is unchanged: a suspended or closed account, or
a revoked or added app password, is checked again at once.

:class:`Authenticator` is the seam for other ways in: the webmail's session cookie (H2) and
professionals' OpenID Connect tokens (F2) will be other implementations, tried in order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from caducee.mailboxes.accounts import check_app_password, sign_in_fingerprint
from caducee.storage.db import Database

REALM = "Caducee"
MAX_ADDRESS_LENGTH = 320
MAX_PASSWORD_LENGTH = 256


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the account and how it proved who it is."""

    account_id: int
    kind: str
    method: str


class AuthenticationFailed(Exception):
    """Credentials were presented and are wrong; the caller answers 401."""


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
    """HTTP Basic against the app passwords of hosted accounts, with a short success cache."""

    def __init__(
        self,
        database: Database,
        *,
        ttl_seconds: float = 60.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._secret = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, tuple[float, Principal, str]] = OrderedDict()
        self.checks = 0
        """How many argon2 checks ran (for tests and metrics)."""

    def _key(self, user: str, password: str) -> bytes:
        material = user.lower().encode("utf-8") + b"\x00" + password.encode("utf-8")
        return hmac.new(self._secret, material, hashlib.sha256).digest()

    def _check(self, user: str, password: str) -> tuple[Principal, str] | None:
        with self.database.transaction() as session:
            account = check_app_password(session, user, password)
            if account is None:
                return None
            fingerprint = sign_in_fingerprint(session, account.id)
            if fingerprint is None:
                return None
            principal = Principal(account_id=account.id, kind=account.kind, method="basic")
            return principal, fingerprint

    def _fingerprint(self, account_id: int) -> str | None:
        with self.database.reading() as session:
            return sign_in_fingerprint(session, account_id)

    def _remember(self, key: bytes, principal: Principal, fingerprint: str) -> None:
        self._cache[key] = (self.clock() + self.ttl, principal, fingerprint)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def authenticate(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if not header:
            return None
        credentials = basic_credentials(header)
        if credentials is None:
            return None
        user, password = credentials
        key = self._key(user, password)
        cached = self._cache.get(key)
        if cached is not None:
            expires, principal, fingerprint = cached
            if expires > self.clock() and fingerprint == await run_in_threadpool(
                self._fingerprint, principal.account_id
            ):
                return principal
            del self._cache[key]
        self.checks += 1
        checked = await run_in_threadpool(self._check, user, password)
        if checked is None:
            raise AuthenticationFailed("wrong credentials")
        self._remember(key, *checked)
        return checked[0]
