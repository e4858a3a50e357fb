"""Reading the record: the queries behind the FHIR API and, later, the webmail (E5, F2).

Every query is scoped to one record (a patient's account) and to a viewer, so that what a
viewer may see is decided here once, not in each caller: a patient sees the documents filed
in their record except those their author made invisible to the patient (E5); a legal
representative or a caregiver (F3) also loses those marked ``INVISIBLE_REPRESENTANTS_LEGAUX``:
the filter is built from the E5 table (:func:`caducee.policies.access.hidden_flags`), never
written here.
Quarantined, offered and duplicate rows are never part of the record. Superseded versions
are left out of searches unless asked for, and stay readable by id (E4). The record's owner
(the patient's qualified identity, the ``subject`` of each document) is the mailbox's:
:func:`caducee.jobs.mail.record_owner`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, false, func, not_, or_, select
from sqlalchemy.orm import Session

from caducee.policies.access import Basis, DocumentFlag, hidden_flags
from caducee.records.models import DocumentState, RecordDocument, VersionStatus
from caducee.storage.blobs import BlobStore

MAX_PAGE = 100
DEFAULT_PAGE = 20


class Viewer(enum.StrEnum):
    """Who is reading a record."""

    PATIENT = "patient"
    REPRESENTATIVE = "representative"
    CAREGIVER = "caregiver"
    """A caregiver (aidant) acting for the helped person (F3)."""


_BASIS = {
    Viewer.PATIENT: Basis.OWN_RECORD,
    Viewer.REPRESENTATIVE: Basis.REPRESENTATIVE,
    Viewer.CAREGIVER: Basis.CAREGIVER,
}
FLAG_COLUMNS = {
    DocumentFlag.HIDDEN_FROM_PATIENT: RecordDocument.hidden_from_patient,
    DocumentFlag.HIDDEN_FROM_REPRESENTATIVES: RecordDocument.hidden_from_representatives,
    DocumentFlag.HIDDEN_FROM_PROFESSIONALS: RecordDocument.hidden_from_professionals,
}
"""The column that holds each E5 flag: the one map every query over the flags uses."""


def shown_to(viewer: Viewer) -> ColumnElement[bool]:
    """The documents whose flags do not hide them from ``viewer``: the E5 table's
    :func:`~caducee.policies.access.hidden_flags` for the viewer's basis, as SQL (so the
    query and the table cannot disagree)."""
    return and_(*(FLAG_COLUMNS[flag].is_(False) for flag in sorted(hidden_flags(_BASIS[viewer]))))


@dataclass(frozen=True)
class TypeFilter:
    """One ``type`` value: a code, and the code system's OID when the caller gave one."""

    code: str
    system_oid: str | None = None


@dataclass(frozen=True)
class DateFilter:
    """One ``date`` comparison, already turned into an instant range by the caller.

    ``prefix`` is a FHIR comparator (``eq``, ``ne``, ``lt``, ``le``, ``gt``, ``ge``);
    ``start``/``end`` delimit the value's precision range, end excluded.
    """

    prefix: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class DocumentQuery:
    """A search of one record. Each tuple of alternatives is OR; the fields are AND."""

    types: tuple[tuple[TypeFilter, ...], ...] = ()
    dates: tuple[DateFilter, ...] = ()
    authors: tuple[tuple[str, ...], ...] = ()
    statuses: tuple[str, ...] = (VersionStatus.CURRENT.value,)
    count: int = DEFAULT_PAGE
    offset: int = 0


@dataclass(frozen=True)
class SearchPage:
    """One page of results and the total number of matches."""

    total: int
    documents: tuple[RecordDocument, ...]
    replaced: dict[int, tuple[str, ...]] = field(default_factory=dict)


def visible(account_id: int, viewer: Viewer) -> ColumnElement[bool]:
    """The documents of a record that ``viewer`` may see at all."""
    return and_(
        RecordDocument.account_id == account_id,
        RecordDocument.state == DocumentState.FILED.value,
        shown_to(viewer),
    )


def _type_condition(alternatives: Sequence[TypeFilter]) -> ColumnElement[bool]:
    options: list[ColumnElement[bool]] = []
    for wanted in alternatives:
        if wanted.system_oid is None:
            options.append(RecordDocument.type_code == wanted.code)
        else:
            options.append(
                and_(
                    RecordDocument.type_code == wanted.code,
                    RecordDocument.type_system == wanted.system_oid,
                )
            )
    return or_(*options) if options else false()


def _date_condition(wanted: DateFilter) -> ColumnElement[bool]:
    column = RecordDocument.document_date
    inside = and_(column >= wanted.start, column < wanted.end)
    match wanted.prefix:
        case "lt":
            return column < wanted.start
        case "le":
            return column < wanted.end
        case "gt":
            return column >= wanted.end
        case "ge":
            return column >= wanted.start
        case "ne":
            return not_(inside)
        case _:
            return inside


def _author_condition(alternatives: Sequence[str]) -> ColumnElement[bool]:
    ids: set[str] = set()
    for value in alternatives:
        ids.add(value)
        if len(value) == 11 and value.isdigit():
            ids.add("8" + value)  # an RPPS number matches its IdNatPs
    return RecordDocument.author_national_id.in_(sorted(ids))


def query_conditions(query: DocumentQuery) -> list[ColumnElement[bool]]:
    """What ``query`` asks of a document (status, type, date, author), whoever searches.

    Who may see which documents is the caller's part: the patient's view (:func:`visible`)
    or a professional's access verdict; both searches add these same conditions to it.
    """
    conditions: list[ColumnElement[bool]] = [RecordDocument.status.in_(query.statuses)]
    conditions += [_type_condition(alternatives) for alternatives in query.types]
    conditions += [_date_condition(wanted) for wanted in query.dates]
    conditions += [_author_condition(alternatives) for alternatives in query.authors]
    return conditions


def search_documents(
    session: Session, account_id: int, query: DocumentQuery, viewer: Viewer = Viewer.PATIENT
) -> SearchPage:
    """The page of ``query`` over the record of ``account_id``, newest first."""
    where = and_(visible(account_id, viewer), *query_conditions(query))
    total = int(session.scalar(select(func.count()).select_from(RecordDocument).where(where)) or 0)
    documents = tuple(
        session.scalars(
            select(RecordDocument)
            .where(where)
            .order_by(RecordDocument.document_date.desc(), RecordDocument.id.desc())
            .limit(min(max(query.count, 0), MAX_PAGE))
            .offset(max(query.offset, 0))
        )
    )
    return SearchPage(
        total=total, documents=documents, replaced=replaced_versions(session, documents)
    )


def get_document(
    session: Session, account_id: int, public_id: str, viewer: Viewer = Viewer.PATIENT
) -> RecordDocument | None:
    """One document of the record, current or superseded, if ``viewer`` may see it."""
    return session.scalar(
        select(RecordDocument).where(
            visible(account_id, viewer), RecordDocument.public_id == public_id
        )
    )


def replaced_versions(
    session: Session, documents: Sequence[RecordDocument]
) -> dict[int, tuple[str, ...]]:
    """For each document, the public ids of the versions it superseded (E4, ``replaces``)."""
    ids = [document.id for document in documents]
    if not ids:
        return {}
    found: dict[int, list[str]] = {}
    rows = session.execute(
        select(RecordDocument.superseded_by_id, RecordDocument.public_id).where(
            RecordDocument.superseded_by_id.in_(ids)
        )
    )
    for newer_id, public_id in rows:
        if newer_id is not None:
            found.setdefault(int(newer_id), []).append(str(public_id))
    return {key: tuple(values) for key, values in found.items()}


def read_content(
    session: Session, blobs: BlobStore, document: RecordDocument, *, rendition: bool = False
) -> bytes | None:
    """The document's bytes as received, or its human-readable rendition when asked."""
    blob_id = document.rendition_blob_id if rendition else document.content_blob_id
    if blob_id is None:
        return None
    return blobs.read(session, blob_id)


def offered_documents(session: Session, account_id: int) -> list[RecordDocument]:
    """Policy ``patient-choice``: the documents waiting for the patient to add them."""
    return list(
        session.scalars(
            select(RecordDocument)
            .where(
                RecordDocument.account_id == account_id,
                RecordDocument.state == DocumentState.OFFERED.value,
                RecordDocument.hidden_from_patient.is_(False),
            )
            .order_by(RecordDocument.document_date.desc(), RecordDocument.id.desc())
        )
    )


def quarantined_documents(session: Session, limit: int = 100) -> list[RecordDocument]:
    """For the operator: documents kept out of records by the identity check (E3)."""
    return list(
        session.scalars(
            select(RecordDocument)
            .where(RecordDocument.state == DocumentState.QUARANTINED.value)
            .order_by(RecordDocument.id.desc())
            .limit(limit)
        )
    )
