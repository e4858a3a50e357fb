"""Directory search: by name, profession, speciality, place, national id or address.

Professionals look each other up by a name they half remember ("lefev", no
accent), often narrowed by profession or place; mail software looks up an exact
address or national id. Every kind of search must stay fast on a directory of
a million rows, show no red-listed row, and cover both mailboxes and
practitioners' activities.

How: names are matched on the folded keys of :mod:`caducee.directory.normalise`
as index *range* scans (``key >= 'lefev' AND key < 'lefew'``), on the person's
name key and on the organisation key. Each (table, key) pair is a *branch*
that returns at most ``offset + limit + 1`` rows already in key order from its
index; the branches are merged, an entry matched twice keeps its smallest key,
and the page is cut from the merge (name matches first, then organisation
matches, each in key order). A row in the true first N of the merged order is
always in the first N of the branch that gives its smallest key, so the page
is exact while each branch reads only N index entries. Filters
(profession, department, …) have composite indexes ``(filter, name_key)`` that
keep the "no text" case in order too. Pages say whether more rows follow
(``has_more``) instead of counting every match, which would read them all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Row,
    RowMapping,
    Select,
    Table,
    and_,
    false,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from caducee.directory.models import DirectoryEntry, Practitioner
from caducee.directory.normalise import fold, prefix_upper_bound

MAX_LIMIT = 100
MAX_OFFSET = 10_000
ORG_PREFIX_MIN = 3

# Professions of the national nomenclature, so that "--profession médecin" works
# as well as "--profession 10". Other codes are searched by code.
PROFESSIONS: dict[str, str] = {
    "10": "Médecin",
    "21": "Pharmacien",
    "26": "Audioprothésiste",
    "28": "Opticien-Lunetier",
    "31": "Assistant dentaire",
    "40": "Chirurgien-Dentiste",
    "50": "Sage-Femme",
    "60": "Infirmier",
    "69": "Infirmier psychiatrique",
    "70": "Masseur-Kinésithérapeute",
    "71": "Ostéopathe",
    "72": "Psychothérapeute",
    "73": "Chiropracteur",
    "80": "Pédicure-Podologue",
    "81": "Orthoprothésiste",
    "82": "Podo-Orthésiste",
    "83": "Orthopédiste-Orthésiste",
    "84": "Oculariste",
    "85": "Épithésiste",
    "86": "Technicien de laboratoire médical",
    "91": "Orthophoniste",
    "92": "Orthoptiste",
    "93": "Psychologue",
    "94": "Ergothérapeute",
    "95": "Diététicien",
    "96": "Psychomotricien",
    "98": "Manipulateur ERM",
}


class SearchError(ValueError):
    """The query cannot be run as given; the message says which part and why."""


class HitKind(StrEnum):
    """A mailbox (``directory_entries``) or a practitioner's activity without one."""

    MAILBOX = "mailbox"
    ACTIVITY = "activity"


@dataclass(frozen=True)
class SearchQuery:
    """What to look for; every given part must match. ``text`` is interpreted:

    an ``@`` makes it an address prefix, a bare identifier (RPPS, ADELI, FINESS,
    SIRET, with or without its national prefix) a national id, anything else a
    name prefix (person or organisation; accents and case ignored).
    """

    text: str | None = None
    profession: str | None = None
    speciality: str | None = None
    postal_code: str | None = None
    department: str | None = None
    national_id: str | None = None
    address: str | None = None
    kinds: frozenset[HitKind] = frozenset(HitKind)
    limit: int = 20
    offset: int = 0


@dataclass(frozen=True)
class SearchHit:
    """One result, the same shape for a mailbox and for an activity."""

    kind: HitKind
    id: int
    address: str | None
    bal_type: str | None
    national_id: str | None
    id_type: str | None
    civility: str | None
    family_name: str | None
    given_name: str | None
    profession_code: str | None
    profession_label: str | None
    speciality_code: str | None
    speciality_label: str | None
    organisation_name: str | None
    service: str | None
    address_lines: str | None
    postal_code: str | None
    city: str | None
    department: str | None
    country: str | None
    source: str
    hosted: bool = False
    pharmacy: bool = False

    @property
    def display_name(self) -> str:
        """A label for people: "Given FAMILY", else the organisation and service."""
        person = " ".join(part for part in (self.given_name, self.family_name) if part)
        if person:
            return person
        organisation = " – ".join(part for part in (self.organisation_name, self.service) if part)
        return organisation or (self.address or self.national_id or "?")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the HTTP API's item)."""
        return {
            "kind": str(self.kind),
            "address": self.address,
            "bal_type": self.bal_type,
            "national_id": self.national_id,
            "id_type": self.id_type,
            "display_name": self.display_name,
            "civility": self.civility,
            "family_name": self.family_name,
            "given_name": self.given_name,
            "profession": _code_label(self.profession_code, self.profession_label),
            "speciality": _code_label(self.speciality_code, self.speciality_label),
            "organisation": self.organisation_name,
            "service": self.service,
            "address_lines": self.address_lines.split("\n") if self.address_lines else [],
            "postal_code": self.postal_code,
            "city": self.city,
            "department": self.department,
            "country": self.country,
            "source": self.source,
            "hosted": self.hosted,
            "pharmacy": self.pharmacy,
        }


def _code_label(code: str | None, label: str | None) -> dict[str, str | None] | None:
    return {"code": code, "label": label} if code or label else None


@dataclass(frozen=True)
class SearchPage:
    """A page of results; ``has_more`` says whether ``next_offset`` would find more."""

    items: list[SearchHit] = field(default_factory=list)
    offset: int = 0
    limit: int = 20
    has_more: bool = False

    @property
    def next_offset(self) -> int | None:
        """The offset of the next page, or None on the last one."""
        return self.offset + self.limit if self.has_more else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the HTTP API's answer)."""
        return {
            "items": [hit.to_dict() for hit in self.items],
            "offset": self.offset,
            "limit": self.limit,
            "has_more": self.has_more,
            "next_offset": self.next_offset,
        }


def hit_from_entry(entry: DirectoryEntry | Row[Any] | _Prefixed) -> SearchHit:
    """The search-result form of a mailbox (an ORM object or a row of its table)."""
    return SearchHit(
        kind=HitKind.MAILBOX,
        id=entry.id,
        address=entry.address,
        bal_type=entry.bal_type,
        service=entry.service,
        hosted=entry.hosted,
        pharmacy=entry.pharmacy,
        **_shared(entry),
    )


def hit_from_practitioner(row: Practitioner | Row[Any] | _Prefixed) -> SearchHit:
    """The search-result form of a practitioner's activity (ORM object or table row)."""
    return SearchHit(
        kind=HitKind.ACTIVITY, id=row.id, address=None, bal_type=None, service=None, **_shared(row)
    )


def _shared(row: DirectoryEntry | Practitioner | Row[Any] | _Prefixed) -> dict[str, Any]:
    return {
        "national_id": row.national_id,
        "id_type": row.id_type,
        "civility": row.civility,
        "family_name": row.family_name,
        "given_name": row.given_name,
        "profession_code": row.profession_code,
        "profession_label": row.profession_label,
        "speciality_code": row.speciality_code,
        "speciality_label": row.speciality_label,
        "organisation_name": row.organisation_name,
        "address_lines": row.address_lines,
        "postal_code": row.postal_code,
        "city": row.city,
        "department": row.department,
        "country": row.country,
        "source": row.source,
    }


# --- interpreting the query ----------------------------------------------------

_IDENTIFIER = re.compile(r"[0-9][0-9A-Za-z]{8,15}")
_SPECIALITY_CODE = re.compile(r"[A-Za-z]{1,4}[0-9]{1,4}")
_POSTAL_PREFIX = re.compile(r"[0-9]{1,5}")
_DEPARTMENT = re.compile(r"[0-9]{2,3}|2[ABab]")


def national_id_candidates(value: str) -> list[str]:
    """The national ids a typed identifier may stand for (with or without its prefix)."""
    value = value.strip().upper()
    candidates = [value]
    if value.isdigit():
        prefixes = {11: ["8"], 9: ["0", "1"], 14: ["3"]}.get(len(value), [])
        candidates += [prefix + value for prefix in prefixes]
    elif len(value) == 9:
        candidates.append("1" + value)  # a Corsican FINESS
    return candidates


def profession_codes(value: str) -> list[str]:
    """Resolve a profession code or (the start of) a label of the nomenclature."""
    value = value.strip()
    if value.isdigit():
        return [value]
    wanted = fold(value) or "?"
    codes = [
        code for code, label in PROFESSIONS.items() if wanted and fold(label).startswith(wanted)
    ]
    if not codes:
        raise SearchError(f"unknown profession {value!r}: give its code (10 = Médecin, …)")
    return codes


@dataclass(frozen=True)
class _Plan:
    name_prefix: str | None
    address_prefixes: list[str]
    national_ids: list[str] | None


def _plan(query: SearchQuery) -> _Plan:
    if not 1 <= query.limit <= MAX_LIMIT:
        raise SearchError(f"limit must be between 1 and {MAX_LIMIT}")
    if not 0 <= query.offset <= MAX_OFFSET:
        raise SearchError(f"offset must be between 0 and {MAX_OFFSET}; narrow the search")
    text = (query.text or "").strip()
    name_prefix = None
    address_prefixes = [query.address.strip().lower()] if query.address else []
    national_ids = [query.national_id.strip().upper()] if query.national_id else None
    if "@" in text:
        address_prefixes.append(text.lower())
    elif text and _IDENTIFIER.fullmatch(text):
        candidates = national_id_candidates(text)
        national_ids = [
            value for value in candidates if national_ids is None or value in national_ids
        ]
    elif text:
        name_prefix = fold(text)[:200]
        if not name_prefix:
            raise SearchError(f"nothing to search in {text!r}")
    return _Plan(name_prefix, address_prefixes, national_ids)


def _filters(
    table: Table, query: SearchQuery, plan: _Plan, code: str | None, *, residual: bool
) -> list[ColumnElement[bool]]:
    """The conditions of every branch of ``table`` (red list, filters).

    ``residual`` wraps the filtered columns in ``coalesce(…, '')`` (same truth
    for the non-empty values compared) so that no index on them is used: the
    organisation branch must walk its ``org_key`` range, not, say, every
    doctor of the profession index. SQLite has no statistics to find that alone.
    """

    def column(name: str) -> Any:
        return func.coalesce(table.c[name], "") if residual else table.c[name]

    conditions: list[ColumnElement[bool]] = [table.c.red_list == false()]
    if code is not None:
        conditions.append(column("profession_code") == code)
    if query.speciality:
        speciality = query.speciality.strip()
        if _SPECIALITY_CODE.fullmatch(speciality):
            conditions.append(table.c.speciality_code == speciality.upper())
        else:
            conditions.append(
                func.lower(table.c.speciality_label).startswith(speciality.lower(), autoescape=True)
            )
    if query.postal_code:
        postal = query.postal_code.strip()
        if not _POSTAL_PREFIX.fullmatch(postal):
            raise SearchError(f"postal code {postal!r}: 1 to 5 digits expected")
        conditions += _prefix(column("postal_code"), postal)
    if query.department:
        department = query.department.strip().upper()
        if not _DEPARTMENT.fullmatch(department):
            raise SearchError(f"department {department!r}: a code such as 01, 2A or 974 expected")
        conditions.append(column("department") == department)
    if plan.national_ids is not None:
        conditions.append(table.c.national_id.in_(plan.national_ids))
    for address_prefix in plan.address_prefixes:
        conditions += _prefix(table.c.address, address_prefix)
    return conditions


def _prefix(column: Any, prefix: str) -> list[ColumnElement[bool]]:
    return [column >= prefix, column < prefix_upper_bound(prefix)]


def _branch(
    table: Table,
    kind: HitKind,
    key: Any,
    rank: str,
    conditions: Sequence[ColumnElement[bool]],
    size: int,
    *,
    walk_key: bool = True,
) -> Select[Any]:
    """At most ``size`` ids in ``key`` order; ``rank`` prefixes the sort key (name before org).

    ``walk_key=False`` orders by an expression no index has, so that the
    database finds the rows through a selective filter's index and sorts
    them, instead of walking the whole key index in order while it filters.
    """
    sort_key = literal(rank) + key
    inner = (
        select(literal(str(kind)).label("kind"), table.c.id.label("id"), sort_key.label("sort_key"))
        .where(*conditions)
        .order_by(key if walk_key else sort_key, table.c.id)
        .limit(size)
        .subquery()
    )
    return select(inner.c.kind, inner.c.id, inner.c.sort_key)


def search(session: Session, query: SearchQuery) -> SearchPage:
    """Run ``query``; red-listed rows are never returned.

    Raises :class:`SearchError` for a query that cannot be run (bad limit,
    unknown profession, malformed postal code…).
    """
    plan = _plan(query)
    size = query.offset + query.limit + 1
    branches: list[Select[Any]] = []
    tables: list[tuple[HitKind, Table]] = []
    if HitKind.MAILBOX in query.kinds:
        tables.append((HitKind.MAILBOX, cast(Table, DirectoryEntry.__table__)))
    if HitKind.ACTIVITY in query.kinds and not plan.address_prefixes:
        tables.append((HitKind.ACTIVITY, cast(Table, Practitioner.__table__)))
    # One branch per profession code: "profession_code = ?" keeps the composite
    # index (profession_code, name_key) in key order, an IN list would not.
    codes: list[str | None] = (
        list(profession_codes(query.profession)) if query.profession else [None]
    )
    for kind, table in tables:
        for code in codes:
            conditions = _filters(table, query, plan, code, residual=False)
            if plan.name_prefix is None:
                # A postal code (a few hundred rows) is better found by its index and
                # sorted than by walking every name until enough of them match.
                walk = not query.postal_code
                branches.append(
                    _branch(table, kind, table.c.name_key, "0", conditions, size, walk_key=walk)
                )
                continue
            # People whose name matches come first, then people of a matching
            # organisation (from three letters on: "ch" would be every hospital).
            matching = [*conditions, *_prefix(table.c.name_key, plan.name_prefix)]
            branches.append(_branch(table, kind, table.c.name_key, "0", matching, size))
            if len(plan.name_prefix) >= ORG_PREFIX_MIN:
                residual = _filters(table, query, plan, code, residual=True)
                matching = [*residual, *_prefix(table.c.org_key, plan.name_prefix)]
                branches.append(_branch(table, kind, table.c.org_key, "1", matching, size))
    if not branches:
        return SearchPage(offset=query.offset, limit=query.limit)
    merged = union_all(*branches).subquery()
    sort_key = func.min(merged.c.sort_key).label("sort_key")
    page = (
        select(merged.c.kind, merged.c.id, sort_key)
        .group_by(merged.c.kind, merged.c.id)
        .order_by(sort_key, merged.c.kind, merged.c.id)
        .limit(query.limit + 1)
        .offset(query.offset)
        .subquery("page")
    )
    # The page's rows come back in the same statement (one round trip).
    entries = cast(Table, DirectoryEntry.__table__).alias("e")
    activities = cast(Table, Practitioner.__table__).alias("p")
    statement = (
        select(
            page.c.kind,
            *[column.label(f"e_{column.name}") for column in entries.columns],
            *[column.label(f"p_{column.name}") for column in activities.columns],
        )
        .select_from(
            page.outerjoin(
                entries, and_(page.c.kind == str(HitKind.MAILBOX), entries.c.id == page.c.id)
            ).outerjoin(
                activities,
                and_(page.c.kind == str(HitKind.ACTIVITY), activities.c.id == page.c.id),
            )
        )
        .order_by(page.c.sort_key, page.c.kind, page.c.id)
    )
    hits = [_hit(row._mapping) for row in session.execute(statement)]
    return SearchPage(
        items=hits[: query.limit],
        offset=query.offset,
        limit=query.limit,
        has_more=len(hits) > query.limit,
    )


class _Prefixed:
    """Attribute access to the ``e_``/``p_`` columns of a joined page row."""

    def __init__(self, mapping: RowMapping, prefix: str) -> None:
        self._mapping = mapping
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        return self._mapping[self._prefix + name]


def _hit(mapping: RowMapping) -> SearchHit:
    if mapping["kind"] == str(HitKind.MAILBOX):
        return hit_from_entry(_Prefixed(mapping, "e_"))
    return hit_from_practitioner(_Prefixed(mapping, "p_"))
