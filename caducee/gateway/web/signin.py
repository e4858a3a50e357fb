"""Patient sign-in on the webmail: the account's own password and TOTP, via the identity service.

The other doors check app passwords (:meth:`IdentityService.sign_in`); the webmail checks the
credentials the patient chose at activation — password (argon2id) and the second factor
(:func:`caducee.mailboxes.accounts.lifecycle.check_credentials`). What makes it a door like the
others
is taken from the same :class:`~caducee.mailboxes.accounts.identity.IdentityService` instance
(``gateway.identity``):

* its failure limiter, keyed by (account, client address) and by client address, so failures
  here delay the same attempts on SMTP, IMAP and HTTP and the reverse (C1);
* its login audit (``login`` events, method ``password+totp``, channel ``webmail``: F4);
* the same bound on concurrent argon2 checks (``[identity] max_concurrent_checks``).

Only patients sign in here (H2), and only with a second factor enrolled. A TOTP value is
accepted once: the time step it belongs to is kept per account (``webmail_totp_steps``), and
a value of that step or an earlier one is refused (RFC 6238 §5.2), so a code seen over a
shoulder or in a proxy log cannot be replayed. A wrong address, password or code, a replayed
code, or a professional's address all get the same answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import BigInteger, ForeignKey, Table
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.gateway.runtime import Gateway
from caducee.mailboxes.accounts.identity.audit import LoginFact
from caducee.mailboxes.accounts.identity.service import MAX_ADDRESS_LENGTH, source_key
from caducee.mailboxes.accounts.lifecycle import (
    TOTP_STEP,
    AccountCredentials,
    check_credentials,
    totp_now,
)
from caducee.mailboxes.accounts.store import BIG_ID, AccountKind, normalise_address
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Base, UtcDateTime, utcnow
from caducee.storage.upsert import upsert_insert

log = logging.getLogger("caducee.webmail")

CHANNEL = "webmail"
METHOD = "password+totp"
MAX_PASSWORD = 256


class TotpStep(Base):
    """The last TOTP time step accepted for an account (a code is good once)."""

    __tablename__ = "webmail_totp_steps"

    account_id: Mapped[int] = mapped_column(
        BIG_ID, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    last_step: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


_STEPS = cast(Table, TotpStep.__table__)


def matched_step(
    session: Session, blobs: BlobStore, account_id: int, code: str, now: datetime
) -> int | None:
    """The time step whose value ``code`` is (this one or one either side), or None.

    None as well when the account has no second factor enrolled: the webmail requires one.
    """
    credentials = session.get(AccountCredentials, account_id)
    if credentials is None or credentials.totp_blob_id is None:
        return None
    secret = blobs.read(session, credentials.totp_blob_id)
    for drift in (0, -TOTP_STEP, TOTP_STEP):
        moment = now + timedelta(seconds=drift)
        if totp_now(secret, moment) == code:
            return int(moment.timestamp()) // TOTP_STEP
    return None


def claim_step(session: Session, account_id: int, step: int, now: datetime) -> bool:
    """Record ``step`` as used; False when it (or a later one) was used already (a replay)."""
    statement = upsert_insert(session, _STEPS).values(
        account_id=account_id, last_step=step, used_at=now
    )
    claimed = session.execute(
        statement.on_conflict_do_update(
            index_elements=["account_id"],
            set_={"last_step": step, "used_at": now},
            where=_STEPS.c.last_step < step,
        ).returning(_STEPS.c.account_id)
    ).first()
    return claimed is not None


@dataclass(frozen=True)
class Outcome:
    """The account signed in, or why not (``retry_after`` seconds when delayed)."""

    account_id: int | None = None
    retry_after: int | None = None


class WebSignIn:
    """Password + TOTP sign-in for one gateway process, sharing its identity service."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.identity = gateway.identity
        self._checks = asyncio.Semaphore(gateway.settings.identity.max_concurrent_checks)

    def _check(self, address: str, password: str, code: str) -> int | None:
        now = utcnow()
        with self.gateway.database.transaction() as session:
            account = check_credentials(session, self.gateway.blobs, address, password, code)
            if account is None or account.kind != AccountKind.PATIENT.value:
                return None
            step = matched_step(session, self.gateway.blobs, account.id, code, now)
            if step is None or not claim_step(session, account.id, step, now):
                return None
            return int(account.id)

    async def sign_in(self, address: str, password: str, code: str, *, ip: str) -> Outcome:
        """Check the three values; the limiter first, the audit always."""
        named = normalise_address(address)[:MAX_ADDRESS_LENGTH]
        source = source_key(ip)
        decision = self.identity.limiter.check(named, source)
        if not decision.allowed:
            log.info(
                "sign-in delayed",
                extra={"channel": CHANNEL, "client": ip, "scope": decision.scope},
            )
            await self.identity.audit.record_async(
                LoginFact(CHANNEL, METHOD, False, named=named or None, throttled=True)
            )
            return Outcome(retry_after=decision.retry_after_seconds)
        account_id: int | None = None
        code = "".join(code.split())
        if (
            named
            and password
            and len(password) <= MAX_PASSWORD
            and code.isdigit()
            and len(code) <= 10
        ):
            async with self._checks:
                account_id = await asyncio.to_thread(self._check, named, password, code)
        if account_id is None:
            self.identity.limiter.failed(named, source)
            log.info("sign-in failed", extra={"channel": CHANNEL, "client": ip, "method": METHOD})
            await self.identity.audit.record_async(
                LoginFact(CHANNEL, METHOD, False, named=named or None)
            )
            return Outcome()
        self.identity.limiter.succeeded(named, source)
        log.info(
            "sign-in",
            extra={"channel": CHANNEL, "client": ip, "account": account_id, "method": METHOD},
        )
        await self.identity.audit.record_async(
            LoginFact(CHANNEL, METHOD, True, account_id, AccountKind.PATIENT.value)
        )
        return Outcome(account_id=account_id)
