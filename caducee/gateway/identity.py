"""The identity service each door of a process shares (SMTP, IMAP, HTTP): C1, issue 12.

One :class:`~caducee.mailboxes.accounts.identity.IdentityService` per process, made with the
gateway's components (:attr:`caducee.gateway.runtime.Gateway.identity`) and handed by
``serve`` to the SMTP authenticator, the IMAP backend and the HTTP authenticators; wired
here to the directory (which hosted accounts an OIDC token's national id designates).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.config import Settings
from caducee.directory.models import DirectoryEntry
from caducee.mailboxes.accounts.identity import IdentityService, Principal
from caducee.mailboxes.accounts.store import Account, AccountState
from caducee.storage.db import Database


def token_accounts(session: Session, national_id: str) -> Sequence[Principal]:
    """The active hosted accounts whose directory entry carries ``national_id``."""
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
    return [Principal(int(row.id), str(row.address), str(row.kind), "oidc") for row in rows]


def make_identity(settings: Settings, database: Database) -> IdentityService:
    """The identity service of one gateway process, wired to the directory for OIDC tokens.

    :func:`caducee.gateway.runtime.build_gateway` makes one per process and ``serve`` hands
    that one to every door, so a failure counted on one door delays the same attempts on
    the others and one credential cache serves them all.
    """
    return IdentityService(settings, database, token_accounts=token_accounts)
