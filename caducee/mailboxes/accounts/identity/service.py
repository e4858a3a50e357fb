"""The identity service below the edges: one password check, one cache, one limiter (C1).

SMTP AUTH, IMAP LOGIN and HTTP Basic all call :meth:`IdentityService.sign_in`, which

1. asks the :class:`~.limiter.FailureLimiter` whether this account may be tried from this
   address now (if not: a refusal with a delay, audited, no password check);
2. looks the credentials up in the verified-credential cache: an HMAC of (address,
   password) under a secret drawn at start-up, mapped to the principal and the account's
   sign-in fingerprint (:func:`~caducee.mailboxes.accounts.store.sign_in_fingerprint`: its state
   and app-password hashes). A hit is used only if the fingerprint read now is the same, so
   a revoked or changed password, or a suspended account, is refused at once. No argon2;
3. otherwise checks the app passwords with argon2id, in a small thread pool of its own
   (``max_concurrent_checks``: memory per check is bounded), with no transaction open
   while argon2 runs, then records ``last_used_at`` (and rehashes a hash made with older
   parameters) in a short write;
4. counts a failure or clears the pair's count, logs the attempt (account id and client
   address, never the address named or a secret) and audits it as a ``login`` event.

:meth:`IdentityService.sign_in_certificate` does the same for SASL EXTERNAL: the account
bound to a verified client certificate's fingerprint (APP mailboxes), same limiter, same
state rule, a ``login`` event with method ``certificate``; no cache (no argon2 to spare).

The account-state rule is :func:`~caducee.mailboxes.accounts.store.may_sign_in`, checked by both
the argon2 path and the fingerprint. One instance serves every door of a process
(``Gateway.identity``, handed to each door by ``serve``), so that failures on one door count
on the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from caducee.config import Settings
from caducee.mailboxes.accounts.certificates import certificate_account
from caducee.mailboxes.accounts.identity.audit import LoginAudit, LoginFact
from caducee.mailboxes.accounts.identity.limiter import Decision, FailureLimiter, LimiterPolicy
from caducee.mailboxes.accounts.identity.oidc import TokenError, TokenVerifier
from caducee.mailboxes.accounts.identity.principal import Principal
from caducee.mailboxes.accounts.identity.shared_failures import SharedFailures
from caducee.mailboxes.accounts.passwords import hash_password, needs_rehash, verify_password
from caducee.mailboxes.accounts.store import (
    Account,
    AppPassword,
    may_sign_in,
    normalise_address,
    sign_in_fingerprint,
)
from caducee.storage.db import Database, utcnow

log = logging.getLogger("caducee.identity")

MAX_ADDRESS_LENGTH = 320
MAX_SECRET_LENGTH = 16384
CERTIFICATE_METHOD = "certificate"
"""The audit method of a sign-in with a client certificate (SASL EXTERNAL)."""


@dataclass(frozen=True)
class SignIn:
    """The outcome of one attempt: a principal, or a refusal (``throttled`` when delayed)."""

    principal: Principal | None = None
    throttled: Decision | None = None
    fresh: bool = False
    """True when credentials were checked (argon2 or token), False for a cache hit."""

    @property
    def ok(self) -> bool:
        return self.principal is not None


def source_key(ip: str) -> str:
    """The limiter's key for a client address: the address, or its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return ip or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class CredentialCache:
    """Verified credentials by HMAC, with their fingerprint; never a password."""

    def __init__(
        self,
        ttl_seconds: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._secret = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[float, Principal, str]] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, address: str, secret: str) -> bytes:
        material = address.encode("utf-8") + b"\x00" + secret.encode("utf-8", "replace")
        return hmac.new(self._secret, material, hashlib.sha256).digest()

    def get(self, key: bytes) -> tuple[Principal, str] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[key]
                return None
            return entry[1], entry[2]

    def put(self, key: bytes, principal: Principal, fingerprint: str) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (self.clock() + self.ttl, principal, fingerprint)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, key: bytes) -> None:
        with self._lock:
            self._entries.pop(key, None)


def _limiter_policy(settings: Settings) -> LimiterPolicy:
    identity = settings.identity
    return LimiterPolicy(
        free_failures_per_account_ip=identity.free_failures_per_account_ip,
        free_failures_per_ip=identity.free_failures_per_ip,
        base_delay_seconds=identity.failure_delay_seconds,
        max_delay_seconds=identity.failure_delay_max_seconds,
        trusted_seconds=identity.trusted_source_hours * 3600,
    )


class IdentityService:
    """Sign-in for every door of one process (see the module documentation)."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        token_accounts: Callable[[Session, str], Sequence[Principal]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        identity = settings.identity
        self.database = database
        self.token_accounts = token_accounts
        """The active hosted accounts of a national id (wired by the gateway: directory)."""
        self.tokens = TokenVerifier(settings)
        policy = _limiter_policy(settings)
        self.limiter = FailureLimiter(
            policy,
            clock=clock,
            shared=SharedFailures(database, forget_seconds=policy.forget_seconds),
        )
        self.cache = CredentialCache(identity.credential_cache_seconds, clock=clock)
        self.audit = LoginAudit(database)
        self._executor = ThreadPoolExecutor(
            max_workers=identity.max_concurrent_checks, thread_name_prefix="identity"
        )
        self.checks = 0
        """How many argon2 checks ran (for tests and metrics)."""

    def apply(self, settings: Settings) -> None:
        """Settings after a reload (SIGHUP): limiter policy, cache lifetime, OIDC verifier.

        Counted failures and cached credentials are kept: a reload neither forgives an
        attacker nor signs anyone out. (The number of concurrent checks is fixed at start.)
        """
        self.tokens = TokenVerifier(settings)
        self.limiter.policy = _limiter_policy(settings)
        self.cache.ttl = settings.identity.credential_cache_seconds

    # -- synchronous parts (worker threads) -----------------------------------------------------

    def check_password(self, address: str, password: str) -> tuple[Principal, str] | None:
        """Argon2id against the account's app passwords; the principal and its fingerprint."""
        self.checks += 1
        with self.database.reading() as session:
            account = session.execute(
                select(Account.id, Account.address, Account.kind, Account.state).where(
                    Account.address == address
                )
            ).first()
            hashes: list[tuple[int, str]] = []
            if account is not None and may_sign_in(str(account.state)):
                hashes = [
                    (int(row.id), str(row.password_hash))
                    for row in session.execute(
                        select(AppPassword.id, AppPassword.password_hash).where(
                            AppPassword.account_id == account.id
                        )
                    )
                ]
        matched = next(
            ((row_id, stored) for row_id, stored in hashes if verify_password(stored, password)),
            None,
        )
        if account is None or matched is None:
            return None
        row_id, stored = matched
        values: dict[str, object] = {"last_used_at": utcnow()}
        if needs_rehash(stored):
            values["password_hash"] = hash_password(password)
        with self.database.transaction() as session:
            session.execute(update(AppPassword).where(AppPassword.id == row_id).values(**values))
            fingerprint = sign_in_fingerprint(session, int(account.id))
        if fingerprint is None:
            return None
        principal = Principal(int(account.id), str(account.address), str(account.kind))
        return principal, fingerprint

    def fingerprint(self, account_id: int) -> str | None:
        with self.database.reading() as session:
            return sign_in_fingerprint(session, account_id)

    def check_token(self, token: str, user: str) -> Principal | None:
        """The hosted account an OIDC access token designates (``user`` chooses among several)."""
        self.checks += 1
        try:
            claims = self.tokens.claims(token)
        except TokenError:
            return None
        national_id = self.tokens.national_id(claims)
        if national_id is None:
            return None
        if self.token_accounts is None:
            return None
        with self.database.reading() as session:
            accounts = list(self.token_accounts(session, national_id))
        if user:
            accounts = [a for a in accounts if a.address == user]
        return accounts[0] if accounts else None

    def check_certificate(self, digest: str) -> tuple[str, Principal | None]:
        """The address bound to a certificate fingerprint ("" if none) and its principal.

        The principal is None when no account is bound or the account may not sign in now
        (:func:`may_sign_in`, the rule of every door).
        """
        self.checks += 1
        with self.database.reading() as session:
            account = certificate_account(session, digest)
            if account is None:
                return "", None
            address = str(account.address)
            if not may_sign_in(str(account.state)):
                return address, None
            principal = Principal(int(account.id), address, str(account.kind), CERTIFICATE_METHOD)
        return address, principal

    # -- the door's entry point -------------------------------------------------------------------

    async def _run(self, function: Callable[..., object], *args: object) -> object:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    async def _audit(self, fact: LoginFact) -> None:
        await self.audit.record_async(fact)

    async def sign_in(
        self,
        user: str,
        secret: str,
        *,
        ip: str,
        channel: str,
        token: bool = False,
        audit_cached: bool = True,
    ) -> SignIn:
        """Check ``user``/``secret`` (an app password, or with ``token`` an OIDC token).

        ``audit_cached``: audit a success answered from the cache too (IMAP and SMTP: each
        is a new session); HTTP audits only fresh checks (each request presents them).
        """
        address = normalise_address(user)[:MAX_ADDRESS_LENGTH]
        method = "oidc" if token else "app-password"
        source = source_key(ip)
        decision = self.limiter.check(address, source)
        if not decision.allowed:
            return await self._delayed(decision, channel, ip, method, address)
        principal: Principal | None = None
        fresh = True
        audited = False
        if secret and len(secret) <= MAX_SECRET_LENGTH and (address or token):
            if token:
                found = await self._run(self.check_token, secret, address)
                principal = found if isinstance(found, Principal) else None
            else:
                success = LoginFact(channel, method, True) if audit_cached else None
                principal, fresh, audited = await self._password(address, secret, success)
        if principal is None:
            self.limiter.failed(address, source)
            log.info("sign-in failed", extra={"channel": channel, "client": ip, "method": method})
            await self._audit(LoginFact(channel, method, False, named=address or None))
            return SignIn(fresh=True)
        self.limiter.succeeded(address, source)
        log.info(
            "sign-in",
            extra={
                "channel": channel,
                "client": ip,
                "account": principal.account_id,
                "method": method,
                "cached": not fresh,
            },
        )
        if (fresh or audit_cached) and not audited:
            await self._audit(
                LoginFact(channel, method, True, principal.account_id, principal.kind)
            )
        return SignIn(principal=principal, fresh=fresh)

    async def _delayed(
        self, decision: Decision, channel: str, ip: str, method: str, address: str
    ) -> SignIn:
        """An attempt the limiter refuses: logged, audited, answered "try later"."""
        log.info(
            "sign-in delayed",
            extra={
                "channel": channel,
                "client": ip,
                "scope": decision.scope,
                "retry_after": decision.retry_after_seconds,
            },
        )
        await self._audit(LoginFact(channel, method, False, named=address or None, throttled=True))
        return SignIn(throttled=decision)

    async def sign_in_certificate(self, digest: str, *, ip: str, channel: str) -> SignIn:
        """Sign in the account bound to a verified client certificate (SASL EXTERNAL, C1).

        ``digest`` is the SHA-256 fingerprint of the certificate the TLS layer verified. The
        same limiter, account-state rule, log line and ``login`` audit event (method
        ``certificate``) as a password sign-in.
        """
        source = source_key(ip)
        found = await self._run(self.check_certificate, digest)
        assert isinstance(found, tuple)
        address, principal = found
        decision = self.limiter.check(address, source)
        if not decision.allowed:
            return await self._delayed(decision, channel, ip, CERTIFICATE_METHOD, address)
        if principal is None:
            self.limiter.failed(address, source)
            log.info(
                "sign-in failed",
                extra={"channel": channel, "client": ip, "method": CERTIFICATE_METHOD},
            )
            await self._audit(LoginFact(channel, CERTIFICATE_METHOD, False, named=address or None))
            return SignIn(fresh=True)
        self.limiter.succeeded(address, source)
        log.info(
            "sign-in",
            extra={
                "channel": channel,
                "client": ip,
                "account": principal.account_id,
                "method": CERTIFICATE_METHOD,
                "cached": False,
            },
        )
        await self._audit(
            LoginFact(channel, CERTIFICATE_METHOD, True, principal.account_id, principal.kind)
        )
        return SignIn(principal=principal, fresh=True)

    async def _password(
        self, address: str, password: str, success: LoginFact | None
    ) -> tuple[Principal | None, bool, bool]:
        """``(principal, fresh, audited)``: from the cache when its fingerprint still holds.

        With ``success`` (a cached success is to be audited), the fingerprint is read and the
        login event written in one group-committed transaction: one database trip per login.
        """
        key = self.cache.key(address, password)
        cached = self.cache.get(key)
        if cached is not None:
            principal, fingerprint = cached
            if success is not None:
                fact = replace(
                    success, account_id=principal.account_id, account_kind=principal.kind
                )
                holds = await self.audit.record_if(
                    lambda session: (
                        sign_in_fingerprint(session, principal.account_id) == fingerprint
                    ),
                    fact,
                )
                if holds:
                    return principal, False, True
            elif fingerprint == await asyncio.to_thread(self.fingerprint, principal.account_id):
                return principal, False, False
            self.cache.forget(key)
        checked = await self._run(self.check_password, address, password)
        if not isinstance(checked, tuple):
            return None, True, False
        principal, fingerprint = checked
        self.cache.put(key, principal, fingerprint)
        return principal, True, False

    def close(self) -> None:
        if self.limiter.shared is not None:
            self.limiter.shared.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.audit.close()
