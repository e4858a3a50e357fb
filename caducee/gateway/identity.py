"""The identity service each door of a process shares (SMTP, IMAP, HTTP): C1, issue 12.

``serve`` builds the three listeners separately; each asks :func:`identity_for` with the
gateway's settings and database and gets the same
:class:`~caducee.mailboxes.identity.IdentityService`, wired here to the directory (which
hosted accounts an OIDC token's national id designates), so that a failure counted on one
door delays the same attempts on the others and one credential cache serves them all.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.config import Settings
from caducee.directory.models import DirectoryEntry
from caducee.mailboxes.accounts import Account, AccountState
from caducee.mailboxes.identity import IdentityService, Principal
from caducee.storage.db import Database

_SERVICES: weakref.WeakKeyDictionary[Database, IdentityService] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


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


def identity_for(settings: Settings, database: Database) -> IdentityService:
    """The identity service of ``database`` in this process (made on first use)."""
    with _LOCK:
        service = _SERVICES.get(database)
        if service is None:
            service = IdentityService(settings, database, token_accounts=token_accounts)
            _SERVICES[database] = service
        return service


def identity_of(database: Database) -> IdentityService:
    """The identity service already made for ``database`` (``build_gateway`` makes it).

    For doors built without the settings at hand (the IMAP backend); a database no gateway
    was built for gets one with the default ``[identity]`` settings.
    """
    with _LOCK:
        service = _SERVICES.get(database)
    return service if service is not None else identity_for(Settings(), database)
