"""The directory as the rest of the product uses it: look up, add, flag, search.

The SMTP rules ask "is this sender a listed professional mailbox?" (B3), "is
this ORG mailbox a pharmacy?" (C4) and "is this mailbox hosted here?" (A4);
the demo and the operator add entries by hand; the CLI and the HTTP API search.
They all go through these functions, which take a SQLAlchemy session (the
caller owns the transaction) and never commit. Addresses are compared
lower-cased, as they are stored. Bulk loading is in
:mod:`caducee.directory.importer`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from caducee.directory.formats import (
    BAL_TYPES,
    ENTRY_DATA_COLUMNS,
    SourceKind,
    department_of,
    looks_like_pharmacy,
    row_hash,
    search_keys,
)
from caducee.directory.identifiers import Holder, IdentifierError, parse_national_id
from caducee.directory.models import DirectoryEntry, Practitioner
from caducee.directory.normalise import fold
from caducee.directory.search import SearchPage, SearchQuery
from caducee.directory.search import search as _search
from caducee.storage.db import utcnow

__all__ = [
    "DirectoryError",
    "Lookup",
    "NewEntry",
    "add_entry",
    "find_by_address",
    "find_by_national_id",
    "lookup",
    "normalise_address",
    "remove_entry",
    "search",
    "set_hosted",
    "set_pharmacy",
    "set_red_list",
]

_ADDRESS = re.compile(r"[^@\s|]+@[^@\s|]+\.[^@\s|.]+")


class DirectoryError(ValueError):
    """A directory operation was refused; the message says why, for the operator."""


def normalise_address(address: str) -> str:
    """The stored form of a mailbox address: trimmed and lower-cased."""
    return address.strip().lower()


def find_by_address(session: Session, address: str) -> DirectoryEntry | None:
    """The mailbox with this address (case-insensitive), red-listed or not."""
    return session.scalar(
        select(DirectoryEntry).where(DirectoryEntry.address == normalise_address(address))
    )


def find_by_national_id(session: Session, national_id: str) -> list[DirectoryEntry]:
    """The mailboxes of a person or structure, by national id (``8``+RPPS, ``1``+FINESS…)."""
    return list(
        session.scalars(
            select(DirectoryEntry)
            .where(DirectoryEntry.national_id == national_id.strip().upper())
            .order_by(DirectoryEntry.address)
        )
    )


@dataclass(frozen=True)
class Lookup:
    """Everything the directory holds under an address or a national id."""

    entries: list[DirectoryEntry] = field(default_factory=list)
    practitioners: list[Practitioner] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.entries or self.practitioners)


def lookup(session: Session, address_or_id: str) -> Lookup:
    """The mailbox at an address, or the mailboxes and activities of a national id.

    Red-listed rows are included: callers that publish must filter them.
    """
    value = address_or_id.strip()
    if "@" in value:
        entry = find_by_address(session, value)
        return Lookup(entries=[entry] if entry else [])
    national_id = value.upper()
    practitioners = session.scalars(
        select(Practitioner)
        .where(Practitioner.national_id == national_id)
        .order_by(Practitioner.id)
    )
    return Lookup(
        entries=find_by_national_id(session, national_id), practitioners=list(practitioners)
    )


@dataclass(frozen=True)
class NewEntry:
    """A mailbox added by hand or by the demo (not from a national file)."""

    address: str
    bal_type: str
    national_id: str | None = None
    civility: str | None = None
    family_name: str | None = None
    given_name: str | None = None
    profession_code: str | None = None
    profession_label: str | None = None
    category_code: str | None = None
    category_label: str | None = None
    speciality_code: str | None = None
    speciality_label: str | None = None
    structure_id: str | None = None
    organisation_name: str | None = None
    trade_name: str | None = None
    service: str | None = None
    address_lines: tuple[str, ...] = ()
    postal_code: str | None = None
    city: str | None = None
    department: str | None = None
    country: str | None = None
    source: SourceKind | str = SourceKind.MANUAL
    red_list: bool = False
    hosted: bool = False
    pharmacy: bool | None = None


def add_entry(
    session: Session, new: NewEntry, *, hosted_domains: Collection[str] = ()
) -> DirectoryEntry:
    """Add a mailbox; raise :class:`DirectoryError` if it is invalid or already listed.

    The national id, when given, must be a valid person id (``8``+RPPS,
    ``0``+ADELI) for PER and CAB mailboxes and a valid structure id (``1``+FINESS,
    ``3``+SIRET) for ORG and APP ones. ``pharmacy=None`` guesses the flag from
    the profession and name; a mailbox of one of ``hosted_domains`` is hosted.
    """
    address = normalise_address(new.address)
    if len(address) > 254 or _ADDRESS.fullmatch(address) is None:
        raise DirectoryError(f"{new.address!r} is not a mailbox address")
    bal_type = new.bal_type.strip().upper()
    if bal_type not in BAL_TYPES:
        raise DirectoryError(f"unknown BAL type {new.bal_type!r} (PER, ORG, APP or CAB)")
    national_id = id_type = None
    if new.national_id:
        holder = Holder.PERSON if bal_type in ("PER", "CAB") else Holder.STRUCTURE
        try:
            parsed = parse_national_id(new.national_id, holder)
        except IdentifierError as error:
            raise DirectoryError(str(error)) from None
        national_id, id_type = parsed.value, str(parsed.kind)
    elif bal_type == "PER":
        raise DirectoryError("a PER mailbox needs the person's national id (8+RPPS or 0+ADELI)")
    try:
        source = SourceKind(new.source)
    except ValueError:
        known = ", ".join(kind.value for kind in SourceKind)
        raise DirectoryError(f"unknown source {new.source!r} ({known})") from None
    if find_by_address(session, address) is not None:
        raise DirectoryError(f"{address} is already in the directory (addresses are unique)")
    domain = address.rpartition("@")[2]
    hosted_set = {item.lower().rstrip(".") for item in hosted_domains}
    keys = search_keys(
        bal_type,
        new.family_name,
        new.given_name,
        new.organisation_name,
        new.trade_name,
        new.service,
    )
    entry = DirectoryEntry(
        address=address,
        domain=domain,
        bal_type=bal_type,
        national_id=national_id,
        id_type=id_type,
        pp_identifier=national_id[1:] if national_id and bal_type in ("PER", "CAB") else None,
        civility=new.civility,
        family_name=new.family_name,
        given_name=new.given_name,
        profession_code=new.profession_code,
        profession_label=new.profession_label,
        category_code=new.category_code,
        category_label=new.category_label,
        speciality_code=new.speciality_code,
        speciality_label=new.speciality_label,
        structure_id=new.structure_id,
        organisation_name=new.organisation_name,
        trade_name=new.trade_name,
        service=new.service,
        address_lines="\n".join(new.address_lines) or None,
        postal_code=new.postal_code,
        city=new.city,
        department=department_of(new.department, new.postal_code),
        country=new.country,
        source=str(source),
        red_list=new.red_list,
        hosted=new.hosted or domain in hosted_set,
        pharmacy=(
            looks_like_pharmacy(
                bal_type, new.profession_code, (new.organisation_name, new.trade_name)
            )
            if new.pharmacy is None
            else new.pharmacy
        ),
        name_key=keys["name_key"] or fold(address)[:200],
        org_key=keys["org_key"],
        row_hash="",
    )
    entry.row_hash = row_hash([getattr(entry, column) for column in ENTRY_DATA_COLUMNS])
    session.add(entry)
    session.flush()
    return entry


def remove_entry(session: Session, address: str) -> bool:
    """Remove a mailbox from the directory; False if it was not listed."""
    entry = find_by_address(session, address)
    if entry is None:
        return False
    session.delete(entry)
    session.flush()
    return True


def set_red_list(session: Session, address_or_id: str, red_list: bool = True) -> int:
    """Put on (or take off) the red list a mailbox, or every row of a national id.

    Red-listed rows are never returned by search. Returns how many rows the
    target has; raises :class:`DirectoryError` if the directory has none.
    """
    value = address_or_id.strip()
    now = utcnow()
    if "@" in value:
        condition = DirectoryEntry.address == normalise_address(value)
        result = session.execute(
            update(DirectoryEntry).where(condition).values(red_list=red_list, updated_at=now),
            execution_options={"synchronize_session": False},
        )
        count = cast(CursorResult[Any], result).rowcount
    else:
        national_id = value.upper()
        count = 0
        for model in (DirectoryEntry, Practitioner):
            result = session.execute(
                update(model)
                .where(model.national_id == national_id)
                .values(red_list=red_list, updated_at=now),
                execution_options={"synchronize_session": False},
            )
            count += cast(CursorResult[Any], result).rowcount
    if not count:
        raise DirectoryError(f"{value} is not in the directory")
    session.expire_all()
    return count


def _flag(session: Session, address: str, name: str, value: bool) -> DirectoryEntry:
    entry = find_by_address(session, address)
    if entry is None:
        raise DirectoryError(f"{address.strip()} is not in the directory")
    setattr(entry, name, value)
    entry.updated_at = utcnow()
    session.flush()
    return entry


def set_pharmacy(session: Session, address: str, pharmacy: bool = True) -> DirectoryEntry:
    """Mark an ORG mailbox as a pharmacy a patient may write to first (C4), or unmark it."""
    entry = find_by_address(session, address)
    if entry is not None and pharmacy and entry.bal_type != "ORG":
        raise DirectoryError(f"{entry.address} is a {entry.bal_type} mailbox, not ORG")
    return _flag(session, address, "pharmacy", pharmacy)


def set_hosted(session: Session, address: str, hosted: bool = True) -> DirectoryEntry:
    """Mark a mailbox as hosted on this gateway (A4), or as living at another operator."""
    return _flag(session, address, "hosted", hosted)


def search(session: Session, query: SearchQuery) -> SearchPage:
    """Search the directory (see :mod:`caducee.directory.search`); no red-listed row."""
    return _search(session, query)
