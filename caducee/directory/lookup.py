"""Hot-path directory lookups for the SMTP rules (B3, B4): one prepared statement each."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from caducee.directory.models import DirectoryEntry
from caducee.storage.db import table_of

_ENTRIES = table_of(DirectoryEntry)
_BAL_TYPE = select(_ENTRIES.c.bal_type).where(_ENTRIES.c.address == bindparam("address"))
_NATIONAL_IDS = select(_ENTRIES.c.national_id).where(
    _ENTRIES.c.address.in_(bindparam("addresses", expanding=True))
)


def bal_type_of(session: Session, address: str) -> str | None:
    """The BAL type (PER, ORG, APP, CAB) of a listed mailbox; None when it is not listed."""
    value = session.connection().execute(_BAL_TYPE, {"address": address.strip().lower()}).scalar()
    return None if value is None else str(value)


def same_professional(session: Session, first: str, second: str) -> bool:
    """True when both addresses are listed mailboxes of the same national id (B4)."""
    addresses = sorted({first.strip().lower(), second.strip().lower()})
    if len(addresses) == 1:
        return True
    ids: list[str | None] = list(
        session.connection().execute(_NATIONAL_IDS, {"addresses": addresses}).scalars()
    )
    return len(ids) == 2 and ids[0] is not None and ids[0] == ids[1]
