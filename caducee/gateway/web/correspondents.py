"""Who the patient writes to: professionals still in activity, pharmacies (C4, issue 17).

Two questions the messaging pages ask about a correspondent, answered from the directory
(and, for a mailbox hosted here, its account) — the gateway layer, where both meet:

* :func:`inactive` — the national app's "X n'est plus en activité": the address is no longer
  a mailbox of the directory (the last import removed it), or it is hosted here and its
  account is suspended or closed (I4 disables dormant professional mailboxes). The
  conversation then says so and offers no reply.
* :func:`find_pharmacies` — the national app's pharmacy search, "searched by structure,
  active, with a secure mailbox": the directory's pharmacy mailboxes (``pharmacy``, the C4
  flag the operator sets, ``caducee patient declare-pharmacy`` asks for the same) whose
  structure, trade name or place matches, kept only when :func:`inactive` says no. Choosing
  one calls :func:`caducee.mailboxes.access.contacts.declare_pharmacy`, the CLI's call, after
  the same check (a pharmacy mailbox of the directory); the submission rule table then
  accepts it as a recipient (C4) with no rule of its own here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from caducee.directory.models import DirectoryEntry
from caducee.directory.service import find_by_address
from caducee.mailboxes.accounts.store import AccountState, find_account

MAX_PHARMACIES = 20
MIN_QUERY = 2


def inactive(session: Session, address: str) -> bool:
    """True when ``address`` is no longer a professional in activity (see module doc)."""
    entry = find_by_address(session, address)
    if entry is None:
        return True
    if entry.hosted:
        account = find_account(session, entry.address)
        return account is None or account.state != AccountState.ACTIVE.value
    return False


@dataclass(frozen=True)
class Pharmacy:
    """A pharmacy mailbox the patient may choose."""

    address: str
    name: str
    place: str


def _name(entry: DirectoryEntry) -> str:
    return entry.organisation_name or entry.trade_name or entry.address


def find_pharmacies(session: Session, text: str) -> list[Pharmacy]:
    """Pharmacy mailboxes whose structure name, trade name, city or postal code contains
    ``text`` (case-insensitive), in activity, by name."""
    wanted = " ".join(text.split()).lower()[:100]
    if len(wanted) < MIN_QUERY:
        return []
    pattern = f"%{wanted.replace('%', '').replace('_', '')}%"
    rows = session.scalars(
        select(DirectoryEntry)
        .where(
            DirectoryEntry.pharmacy.is_(True),
            or_(
                func.lower(DirectoryEntry.organisation_name).like(pattern),
                func.lower(DirectoryEntry.trade_name).like(pattern),
                func.lower(DirectoryEntry.city).like(pattern),
                DirectoryEntry.postal_code.like(pattern),
            ),
        )
        .order_by(DirectoryEntry.organisation_name, DirectoryEntry.address)
        .limit(MAX_PHARMACIES * 2)
    ).all()
    found = []
    for entry in rows:
        if inactive(session, entry.address):
            continue
        place = " ".join(part for part in (entry.postal_code, entry.city) if part)
        found.append(Pharmacy(entry.address, _name(entry), place))
    return found[:MAX_PHARMACIES]


def pharmacy_entry(session: Session, address: str) -> DirectoryEntry | None:
    """The directory's pharmacy mailbox ``address`` when it is one and in activity."""
    entry = find_by_address(session, address)
    if entry is None or not entry.pharmacy or inactive(session, entry.address):
        return None
    return entry
