"""Authentication on the submission ports (C1): app passwords and OIDC tokens, rate-limited.

aiosmtpd calls an ``auth_<MECHANISM>`` method of the handler; ours parse the
mechanism's exchange and hand the credentials to the identity service every door
shares (:mod:`caducee.mailboxes.accounts.identity`): one password check with its cache, one
failure limiter (per account and client address, then per client address, with growing
delays: ``454 4.7.0`` while one runs), one audit vocabulary (``login`` events, channel
``smtp``).

``AUTH PLAIN`` with an authorization identity other than the authentication identity
(RFC 4616) is refused unless that mailbox is delegated to the authenticated account (C2).

``AUTH EXTERNAL`` (RFC 4422 appendix A) signs in the account bound to the client certificate
the TLS layer verified (APP mailboxes: :mod:`caducee.mailboxes.accounts.certificates`). It is
advertised only to a session that presented a verified certificate; its authorization
identity, if any, must be the bound mailbox or one delegated to it (``535 5.7.8`` otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Session

from caducee.mailboxes.accounts.certificates import fingerprint
from caducee.mailboxes.accounts.delegation import delegated_principal
from caducee.mailboxes.accounts.identity import IdentityService, Principal
from caducee.storage.db import Database

log = logging.getLogger("caducee.smtp.auth")

INVALID = "535 5.7.8 Authentication credentials invalid"
THROTTLED = "454 4.7.0 Too many failed authentications; try again later"
FOREIGN_AUTHZID = "535 5.7.8 Not authorised to act as that mailbox"
NO_CERTIFICATE = "504 5.5.4 EXTERNAL needs a verified client certificate"
EXTERNAL = "EXTERNAL"

AuthenticatedUser = Principal
"""Who is submitting: the one principal type of every door."""


def client_certificate(server: SMTP) -> bytes | None:
    """The DER of the client certificate the TLS layer verified in this session, if any.

    The submission ports ask for a certificate with ``CERT_OPTIONAL``: one that was
    presented and does not verify against the trust anchors fails the handshake, so a
    certificate seen here was verified.
    """
    transport = server.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    if ssl_object.context.verify_mode == ssl.CERT_NONE:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return der or None


def _client_ip(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class Authenticator:
    """Checks credentials through the shared identity service."""

    def __init__(self, database: Database, identity: IdentityService) -> None:
        self.database = database
        self.identity = identity
        self.tokens = self.identity.tokens

    async def verify(
        self, session: Session, user: str, secret: str, *, token: bool, authzid: str = ""
    ) -> AuthenticatedUser | str:
        """The authenticated user, or the SMTP reply refusing them."""
        outcome = await self.identity.sign_in(
            user, secret, ip=_client_ip(session), channel="smtp", token=token
        )
        if outcome.throttled is not None:
            return THROTTLED
        if outcome.principal is None:
            return INVALID
        return await self._authorised(outcome.principal, authzid)

    async def verify_certificate(
        self, session: Session, der: bytes, authzid: str = ""
    ) -> AuthenticatedUser | str:
        """The account bound to a verified client certificate (EXTERNAL), or the refusal."""
        outcome = await self.identity.sign_in_certificate(
            fingerprint(der), ip=_client_ip(session), channel="smtp"
        )
        if outcome.throttled is not None:
            return THROTTLED
        if outcome.principal is None:
            return INVALID
        return await self._authorised(outcome.principal, authzid)

    async def _authorised(self, principal: Principal, authzid: str) -> AuthenticatedUser | str:
        """``principal``, or the delegated mailbox its authorization identity names (C2)."""
        wanted = authzid.strip().lower()
        if wanted and wanted != principal.address:
            delegated = await asyncio.to_thread(self._delegated, principal, wanted)
            if delegated is None:
                log.info(
                    "foreign authorization identity refused",
                    extra={"account": principal.account_id},
                )
                return FOREIGN_AUTHZID
            log.info(
                "acting for a delegated mailbox",
                extra={"account": principal.account_id, "mailbox": delegated.account_id},
            )
            return delegated
        return principal

    def _delegated(self, principal: Principal, mailbox: str) -> Principal | None:
        with self.database.reading() as session:
            return delegated_principal(session, principal, mailbox)


def _b64(text: str | bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _result(outcome: Principal | str) -> AuthResult:
    if isinstance(outcome, Principal):
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
        authzid = parts[0].decode("utf-8", "replace")
        user, password = parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
        assert server.session is not None
        outcome = await self.authenticator.verify(
            server.session, user, password, token=False, authzid=authzid
        )
        return _result(outcome)

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

    async def auth_EXTERNAL(self, server: SMTP, args: list[str]) -> AuthResult:
        der = client_certificate(server)
        if der is None:
            return AuthResult(success=False, handled=False, message=NO_CERTIFICATE)
        data = await _initial(server, args)
        if data is None:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode")
        authzid = data.decode("utf-8", "replace")
        assert server.session is not None
        return _result(await self.authenticator.verify_certificate(server.session, der, authzid))

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
