"""The record as the patient's webmail shows and changes it (issue 17, E1, E4, E5, F4).

:mod:`caducee.records.service` answers the FHIR API's searches; the webmail's documents page
needs a little more, and this module adds it without a second copy of any rule:

- the list: filters by type, date range, author and a words-of-the-title search, three sort
  orders (the title search and order run after decryption: titles are sealed at rest, J1),
  superseded versions (marked) and documents their author withdrew (E4: shown as a line that
  says so, with no content — the patient learns where a document went, never its bytes);
  what the viewer may see at all is :func:`caducee.records.service.visible`;
- hiding a document from professionals and showing it again (E5), and adding an offered
  document (E1 ``patient-choice``): the changes of :mod:`caducee.records.filing`, each with
  its audit event (F4) in the same transaction;
- the patient's own files: read by the same readers as mail attachments (E1 formats only:
  PDF, images, RTF, text), filed with the patient as their source, once (E4 duplicates);
- a CDA's narrative as plain text, read with the hardened XML parser (E6), for a page that
  must never put a document's markup into HTML.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from caducee.records.filing import (
    add_offered_document,
    dedupe_key,
    known_document,
    lock_record,
    set_hidden_from_professionals,
)
from caducee.records.model import DEFAULT_LIMITS, Problem, ReaderLimits, SourceFormat
from caducee.records.models import DocumentState, RecordDocument, VersionStatus
from caducee.records.readers import read_attachment
from caducee.records.readers.cda import french_time
from caducee.records.service import Viewer, read_content, shown_to, visible
from caducee.records.xmlsafe import all_text, local_name, parse_xml
from caducee.storage.audit import Action, ActorKind, Result, record_event
from caducee.storage.blobs import BlobStore
from caducee.storage.db import utcnow

PAGE_SIZE = 20
MAX_TITLE = 50
"""A title the patient gives is at most 50 characters (the national app's limit)."""
MAX_TITLE_SCAN = 10_000
"""Documents opened at most for one title search or title order (see :func:`_by_title`)."""
MAX_OWN_FILE = 5 * 1024 * 1024
"""A file of the patient's own is at most 5 MB (the national app's limit)."""
OWN_FORMATS = frozenset(
    {
        SourceFormat.PDF,
        SourceFormat.JPEG,
        SourceFormat.PNG,
        SourceFormat.TIFF,
        SourceFormat.RTF,
        SourceFormat.TEXT,
    }
)
"""E1 formats a patient may add from their own files: the unstructured ones. A structured
document names a patient (E3) and comes from its author, through the mail."""
MAX_CDA_TEXT = 200_000


class Sort(enum.StrEnum):
    """The orders of the list."""

    NEWEST = "date-desc"
    OLDEST = "date-asc"
    TITLE = "title"


@dataclass(frozen=True)
class ListQuery:
    """What the patient asked the list for; every field optional."""

    type_code: str = ""
    author: str = ""
    since: date | None = None
    until: date | None = None
    words: str = ""
    sort: Sort = Sort.NEWEST
    page: int = 1
    pinned_only: bool = False
    """Only the documents the patient pinned (the app's "Voir mes documents épinglés")."""


@dataclass(frozen=True)
class Choice:
    """One option of a filter: its value and what the page shows."""

    value: str
    label: str


@dataclass(frozen=True)
class ListPage:
    """One page of the list, with the filters' options."""

    documents: tuple[RecordDocument, ...]
    total: int
    page: int
    pages: int
    types: tuple[Choice, ...]
    authors: tuple[Choice, ...]


def _listed(account_id: int, viewer: Viewer) -> ColumnElement[bool]:
    """What the list holds: the visible record, and the withdrawn lines (E4) the viewer
    would have seen."""
    withdrawn = and_(
        RecordDocument.account_id == account_id,
        RecordDocument.state == DocumentState.WITHDRAWN.value,
        shown_to(viewer),
    )
    return or_(visible(account_id, viewer), withdrawn)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=french_time()).astimezone(UTC)


def author_label(document: RecordDocument) -> str:
    """Who wrote a document, as the list shows it: the author, else their structure."""
    person = " ".join(part for part in (document.author_given, document.author_family) if part)
    return person or document.organisation_name or ""


def list_documents(
    session: Session, account_id: int, query: ListQuery, viewer: Viewer = Viewer.PATIENT
) -> ListPage:
    """One page of the patient's documents, filtered and sorted as asked."""
    base = _listed(account_id, viewer)
    conditions: list[ColumnElement[bool]] = [base]
    if query.type_code:
        conditions.append(RecordDocument.type_code == query.type_code)
    if query.author:
        conditions.append(RecordDocument.author_national_id == query.author)
    if query.pinned_only:
        conditions.append(RecordDocument.pinned.is_(True))
    if query.since is not None:
        conditions.append(RecordDocument.document_date >= _day_start(query.since))
    if query.until is not None:
        conditions.append(
            RecordDocument.document_date < _day_start(query.until + timedelta(days=1))
        )
    words = [word.lower() for word in " ".join(query.words.split())[:100].split(" ")[:5] if word]
    where = and_(*conditions)
    if words or query.sort is Sort.TITLE:
        documents, total, page, pages = _by_title(session, where, words, query)
    else:
        total = int(
            session.scalar(select(func.count()).select_from(RecordDocument).where(where)) or 0
        )
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(max(1, query.page), pages)
        order = {
            Sort.NEWEST: (RecordDocument.document_date.desc(), RecordDocument.id.desc()),
            Sort.OLDEST: (RecordDocument.document_date.asc(), RecordDocument.id.asc()),
        }[query.sort]
        documents = tuple(
            session.scalars(
                select(RecordDocument)
                .where(where)
                .order_by(*order)
                .limit(PAGE_SIZE)
                .offset((page - 1) * PAGE_SIZE)
            )
        )
    types = tuple(
        Choice(str(code), str(display or code))
        for code, display in session.execute(
            select(RecordDocument.type_code, func.max(RecordDocument.type_display))
            .where(base, RecordDocument.type_code.is_not(None))
            .group_by(RecordDocument.type_code)
            .order_by(RecordDocument.type_code)
        )
    )
    authors = tuple(
        Choice(
            str(national_id),
            " ".join(part for part in (given, family) if part) or str(national_id),
        )
        for national_id, given, family in session.execute(
            select(
                RecordDocument.author_national_id,
                func.max(RecordDocument.author_given),
                func.max(RecordDocument.author_family),
            )
            .where(base, RecordDocument.author_national_id.is_not(None))
            .group_by(RecordDocument.author_national_id)
            .order_by(RecordDocument.author_national_id)
        )
    )
    return ListPage(documents, total, page, pages, types, authors)


def _by_title(
    session: Session, where: ColumnElement[bool], words: list[str], query: ListQuery
) -> tuple[tuple[RecordDocument, ...], int, int, int]:
    """Title search and title order, after decryption: titles are sealed at rest (J1).

    The database cannot compare a sealed title, so the patient's documents that pass the other
    filters (at most :data:`MAX_TITLE_SCAN`, newest first: a record, not a corpus) are opened,
    matched word by word and sorted here.
    """
    candidates = session.scalars(
        select(RecordDocument)
        .where(where)
        .order_by(RecordDocument.document_date.desc(), RecordDocument.id.desc())
        .limit(MAX_TITLE_SCAN)
    ).all()
    found = [
        document
        for document in candidates
        if all(word in (document.title or "").lower() for word in words)
    ]
    if query.sort is Sort.TITLE:
        found.sort(key=lambda document: ((document.title or "").lower(), document.id))
    elif query.sort is Sort.OLDEST:
        found.reverse()
    total = len(found)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, query.page), pages)
    return tuple(found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]), total, page, pages


def find_document(
    session: Session, account_id: int, public_id: str, viewer: Viewer = Viewer.PATIENT
) -> RecordDocument | None:
    """A document of the list (withdrawn ones too: their page says so, without content)."""
    if not (0 < len(public_id) <= 32 and public_id.isalnum()):
        return None
    return session.scalar(
        select(RecordDocument).where(
            _listed(account_id, viewer), RecordDocument.public_id == public_id
        )
    )


def is_withdrawn(document: RecordDocument) -> bool:
    """E4: its author withdrew it; the page shows that, never its content."""
    return document.state == DocumentState.WITHDRAWN.value


def is_superseded(document: RecordDocument) -> bool:
    """E4: a newer version replaced it (still readable)."""
    return document.status == VersionStatus.SUPERSEDED.value


def newer_version(session: Session, document: RecordDocument) -> RecordDocument | None:
    """The version that superseded this one, when it is in the record."""
    if document.superseded_by_id is None:
        return None
    newer = session.get(RecordDocument, document.superseded_by_id)
    if newer is None or newer.account_id != document.account_id:
        return None
    return newer


def _audit(
    session: Session,
    account_id: int,
    action: Action,
    public_id: str,
    channel: str,
    result: Result = Result.OK,
    rule: str | None = None,
    actor_kind: str = ActorKind.PATIENT.value,
    actor_account_id: int | None = None,
) -> None:
    record_event(
        session,
        actor_kind=actor_kind,
        actor_id=f"account:{actor_account_id or account_id}",
        action=action.value,
        object_type="document",
        object_id=public_id,
        result=result.value,
        rule=rule,
        subject_account_id=account_id,
        channel=channel,
    )


def document_bytes(
    session: Session,
    blobs: BlobStore,
    document: RecordDocument,
    *,
    rendition: bool = False,
    reader_account_id: int | None = None,
    viewer: Viewer = Viewer.PATIENT,
    channel: str = "webmail",
) -> bytes | None:
    """A document's bytes for its owner (or their representative or caregiver, ``viewer``:
    the audit event's actor kind), the read audited (F4)."""
    if is_withdrawn(document):
        return None
    data = read_content(session, blobs, document, rendition=rendition)
    if data is not None:
        _audit(
            session,
            document.account_id,
            Action.DOCUMENT_CONTENT,
            document.public_id,
            channel,
            Result.ALLOWED,
            actor_kind=ActorKind(viewer.value).value,
            actor_account_id=reader_account_id,
        )
    return data


def set_professional_visibility(
    session: Session, account_id: int, public_id: str, hidden: bool, channel: str = "webmail"
) -> bool:
    """E5: hide a document from professionals, or show it again; False if not the patient's."""
    if not set_hidden_from_professionals(session, account_id, public_id, hidden):
        return False
    _audit(
        session,
        account_id,
        Action.DOCUMENT_VISIBILITY,
        public_id,
        channel,
        rule="E5.hidden-from-professionals" if hidden else "E5.shown-to-professionals",
    )
    return True


def set_pinned(session: Session, account_id: int, public_id: str, pinned: bool) -> bool:
    """H2: the patient pins a document of their own record, or unpins it; False if no such
    document is in the list. A marker of the patient's, not an access right: no audit event."""
    document = find_document(session, account_id, public_id)
    if document is None:
        return False
    document.pinned = pinned
    return True


def add_offered(
    session: Session, account_id: int, public_id: str, channel: str = "webmail"
) -> bool:
    """E1 ``patient-choice``: add an offered document to the record; False if none such."""
    if not (0 < len(public_id) <= 32 and public_id.isalnum()):
        return False
    if add_offered_document(session, account_id, public_id) is None:
        return False
    _audit(session, account_id, Action.DOCUMENT_FILE, public_id, channel, rule="E1.patient-choice")
    return True


def offered_for_messages(
    session: Session, account_id: int, message_ids: list[int]
) -> dict[tuple[int, int], RecordDocument]:
    """Documents of these messages, by (message id, attachment position): what a received
    attachment became in the record (filed or offered), for "add to my documents"."""
    if not message_ids:
        return {}
    rows = session.scalars(
        select(RecordDocument).where(
            RecordDocument.account_id == account_id,
            RecordDocument.message_id.in_(message_ids),
            RecordDocument.state.in_((DocumentState.FILED.value, DocumentState.OFFERED.value)),
            RecordDocument.hidden_from_patient.is_(False),
        )
    )
    return {(int(row.message_id or 0), int(row.attachment_position)): row for row in rows}


class OwnFileRefusal(enum.StrEnum):
    """Why a file of the patient's own was not added."""

    TOO_LARGE = "too-large"
    EMPTY = "empty"
    FORMAT = "format"
    NO_TITLE = "no-title"
    TITLE_TOO_LONG = "title-too-long"
    DUPLICATE = "duplicate"


def add_own_file(
    session: Session,
    blobs: BlobStore,
    account_id: int,
    *,
    file_name: str,
    content_type: str | None,
    data: bytes,
    title: str,
    sender: str,
    max_bytes: int = MAX_OWN_FILE,
    limits: ReaderLimits = DEFAULT_LIMITS,
    channel: str = "webmail",
) -> RecordDocument | OwnFileRefusal:
    """File a document of the patient's own (E1 formats, ≤ 5 MB, title ≤ 50 characters).

    ``max_bytes`` may lower the 5 MB (the HTTP listener's body limit may be smaller).
    """
    title = " ".join(title.split())
    if not title:
        return OwnFileRefusal.NO_TITLE
    if len(title) > MAX_TITLE:
        return OwnFileRefusal.TITLE_TOO_LONG
    if len(data) > min(max_bytes, MAX_OWN_FILE):
        return OwnFileRefusal.TOO_LARGE
    if not data:
        return OwnFileRefusal.EMPTY
    result = read_attachment(file_name or "document", content_type, data, limits=limits)
    if result.format not in OWN_FORMATS or len(result.documents) != 1:
        return OwnFileRefusal.FORMAT
    document = result.documents[0]
    sha256 = hashlib.sha256(document.content).hexdigest()
    lock_record(session, account_id)  # a filing job of the same content waits, or we do
    known = known_document(session, account_id, None, sha256)
    if known is not None and known[1].state == DocumentState.OFFERED.value:
        # the same file was offered from a message (E1 patient-choice): adding it is choosing it
        offered = known[1]
        if add_offered(session, account_id, offered.public_id, channel):
            return offered
    key = dedupe_key(None, sha256)
    taken = session.scalar(
        select(RecordDocument.id).where(
            RecordDocument.account_id == account_id, RecordDocument.dedupe_key == key
        )
    )
    if taken is not None or known is not None:
        return OwnFileRefusal.DUPLICATE
    now = utcnow()
    row = RecordDocument(
        public_id=uuid.uuid4().hex,
        account_id=account_id,
        message_id=None,
        attachment_position=0,
        entry_name=(file_name or "")[:255] or None,
        source_format=result.format.value,
        state=DocumentState.FILED.value,
        status=VersionStatus.CURRENT.value,
        content_blob_id=blobs.write(session, document.content),
        mime_type=(document.mime_type or "application/octet-stream")[:100],
        size=len(document.content),
        sha1=hashlib.sha1(document.content, usedforsecurity=False).hexdigest(),
        sha256=sha256,
        dedupe_key=key,
        title=title,
        document_date=now,
        sender=sender[:320],
        author_flags="",
        received_at=now,
        filed_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    _audit(session, account_id, Action.DOCUMENT_FILE, row.public_id, channel, rule="E1.own-file")
    return row


def cda_text(content: bytes) -> str | None:
    """The narrative of a CDA (section titles and texts) as plain text, or None.

    Parsed with the hardened parser (no DTD, no entities, E6); nothing of the markup is
    kept, so the page escapes it like any text.
    """
    root = parse_xml(content, where="document")
    if isinstance(root, Problem):
        return None
    lines: list[str] = []
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        name = local_name(element)
        parent = element.getparent()
        in_section = parent is not None and local_name(parent) == "section"
        if name == "title" or (name == "text" and in_section):
            text = " ".join(all_text(element).split())
            if text:
                lines.append(text)
    joined = "\n\n".join(lines)
    return joined[:MAX_CDA_TEXT] if joined else None
