"""Import of the national MSSanté whitelist into the trust space (A5).

The whitelist (``listeblanchemssante.xml``, published by the ANS) names every
operator domain allowed to exchange mail, once per operator certificate DN. It
is the input of a security decision and it is downloaded from outside, so it is
read defensively:

- **hardened**: lxml's pull parser with no entity resolution, no DTD loading, no
  network and libxml2's default size limits; any document type declaration is
  refused outright (the list never needs one, and without a DTD there is
  nothing to expand: no "billion laughs", no XXE); the input size is bounded;
- **streaming**: each ``Domaine`` is handled and dropped as soon as it ends;
- **tolerant of what the real file does**: the published file is cut short
  (its root element is never closed), so a document that ends early yields
  every *complete* entry and says what was lost instead of raising. A name that
  is not a domain is rejected with its position and reason; the rest goes on;
- **namespace-aware**: elements must be in ``https://listeblanche.mssante.fr/schema``
  or in no namespace at all.

Names are stored as lower-case IDNA A-labels, so ``UC-CMP.mssante.fr`` and an
IDN such as ``hôpital.mssante.fr`` compare exactly with what SMTP carries.

:func:`import_whitelist` then *replaces* the ``whitelist`` rows of
``trust_domains`` with the file's content in one transaction (rows added by
hand or by the demo are never touched) and is idempotent. Two safety rules keep
a bad download from emptying the trust space: rows are removed only when the
document's domain list was read to its end, and a rejected entry still claims
its domain, so a domain is never dropped because today's line for it was
malformed.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import idna
from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.directory.trust_models import DomainError, TrustDomain, to_ascii_domain
from caducee.storage.db import Database, utcnow

logger = logging.getLogger(__name__)

NAMESPACE = "https://listeblanche.mssante.fr/schema"
SOURCE = "whitelist"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""The published list is about 350 kB; 16 MiB leaves ample room and bounds a hostile file."""

MAX_DN_LENGTH = 500  # trust_domains.operator_dn
MAX_DESCRIPTION_LENGTH = 2000
MAX_REJECTIONS_KEPT = 200

_ACCEPTED_NAMESPACES = frozenset({NAMESPACE, ""})
_ROOT = "ListeBlancheMSSante"
_LIST = "ListeDomaines"
_ENTRY = "Domaine"
_FIELDS = {
    "Nom": "name",
    "Description": "description",
    "DNCertificatOperateur": "operator_dn",
    "ResponsableContact": "responsible_contact",
    "SupportContact": "support_contact",
    "DateMAJ": "updated_at",
}
_CHUNK = 64 * 1024
_DOCTYPE_MARKERS = tuple(
    "<!DOCTYPE".encode(codec)
    for codec in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
)
_MARKER_TAIL = max(len(marker) for marker in _DOCTYPE_MARKERS)

WhitelistSource = bytes | str | os.PathLike[str]
SessionTarget = Database | Session | Callable[[], Session]


@dataclass(frozen=True)
class WhitelistEntry:
    """One complete, valid ``Domaine`` of the whitelist."""

    position: int
    """1-based rank of the ``Domaine`` element in the document."""
    domain: str
    """Lower-case IDNA A-label form (``xn--…`` for an IDN)."""
    display_name: str
    """Unicode form, for display."""
    operator_dn: str
    description: str | None
    responsible_contact: str | None
    support_contact: str | None
    updated_at: datetime | None


@dataclass(frozen=True)
class RejectedEntry:
    """A complete ``Domaine`` that could not be used, and why."""

    position: int
    name: str
    """The name as written in the file (shortened when very long)."""
    domain: str | None
    """The normalised domain when the name itself was valid (it then keeps its rows)."""
    reason: str


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp (``Z`` or an offset; none means UTC) as an aware UTC datetime.

    Raises :class:`ValueError` when the text is not such a timestamp.
    """
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def normalise_domain(name: str) -> tuple[str, str]:
    """The (A-label, Unicode) forms of an operator domain name.

    Raises :class:`DomainError` for anything that is not a multi-label DNS name.
    """
    ascii_domain = to_ascii_domain(name)
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise DomainError("a single label is not an operator domain")
    if labels[-1].isdigit():
        raise DomainError("an IP address is not a domain")
    try:
        display = idna.decode(ascii_domain)
    except ValueError as error:
        raise DomainError(f"not a valid domain name: {error}") from None
    return ascii_domain, display


class _BoundedStream:
    """A binary reader that stops (as if at end of file) past a size or at a DOCTYPE.

    Returning end of file instead of raising lets the parser deliver every event it
    has already produced; the reader then tells which limit stopped it.
    """

    def __init__(self, raw: BinaryIO, max_bytes: int) -> None:
        self._raw = raw
        self._max_bytes = max_bytes
        self._tail = b""
        self.total = 0
        self.at_end = False
        self.too_large = False
        self.doctype = False

    def read(self, size: int = -1) -> bytes:
        if self.at_end or self.too_large or self.doctype:
            return b""
        want = _CHUNK if size is None or size < 0 else max(1, min(size, _CHUNK))
        allowed = self._max_bytes - self.total
        data = self._raw.read(min(want, allowed + 1))
        if not data:
            self.at_end = True
            return b""
        if len(data) > allowed:
            # Feed what fits, then end: the entries before the limit are kept.
            self.too_large = True
            data = data[:allowed]
        self.total += len(data)
        window = self._tail + data
        if any(marker in window for marker in _DOCTYPE_MARKERS):
            self.doctype = True
            return b""
        self._tail = window[-_MARKER_TAIL:]
        return data


def _local_name(element: etree._Element) -> str | None:
    """The local name of an element in an accepted namespace; None otherwise."""
    tag = element.tag
    if not isinstance(tag, str):
        return None
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
    else:
        namespace, local = "", tag
    return local if namespace in _ACCEPTED_NAMESPACES else None


def _text_of(element: etree._Element) -> str:
    return (element.text or "").strip()


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _drop(element: etree._Element) -> None:
    """Free an element that has been handled, and its already handled elder siblings."""
    element.clear()
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


class _EntryWalk:
    """Turns a parser's start/end events into entries, dropping what was handled."""

    def __init__(self, reader: WhitelistReader) -> None:
        self._reader = reader
        self._depth = 0
        self._in_list = False
        self.refused = False

    def drain(self, parser: etree.XMLPullParser) -> Iterator[WhitelistEntry]:
        """The events produced before an error, as far as they can still be read."""
        try:
            yield from self.handle(parser.read_events())
        except (etree.LxmlError, ValueError, LookupError):
            return

    def handle(self, events: Iterator[tuple[str, object]]) -> Iterator[WhitelistEntry]:
        reader = self._reader
        for event, element in events:
            if self.refused:
                return
            if not isinstance(element, etree._Element):
                continue  # only start and end events are asked for
            if event == "start":
                self._depth += 1
                if self._depth == 1:
                    reader._root_seen = True
                    self.refused = reader._refuse_root(element)
                elif self._depth == 2:
                    self._in_list = _local_name(element) == _LIST
                continue
            if self._depth == 3 and self._in_list and _local_name(element) == _ENTRY:
                reader.entries_read += 1
                entry = reader._entry(reader.entries_read, element)
                if entry is not None:
                    yield entry
            elif self._depth == 2:
                name = _local_name(element)
                if name == _LIST and self._in_list:
                    reader.list_complete = True
                elif name == "DateDeGeneration":
                    reader._generation_date(element)
                self._in_list = False
            if self._depth <= 3:
                _drop(element)
            self._depth -= 1


class WhitelistReader:
    """Streams the complete, valid entries of a whitelist document.

    Iterate once; afterwards the attributes tell what else happened:
    ``entries_read`` (complete ``Domaine`` elements, valid or not), ``rejected``
    (the first :data:`MAX_REJECTIONS_KEPT`; ``rejected_count`` has them all),
    ``claimed_domains`` (valid names of rejected entries), ``generated_at``,
    ``list_complete`` (the ``ListeDomaines`` end tag was read), ``truncated`` (the
    document did not end well-formed) and ``problem`` (one sentence, or None).
    Iteration never raises because of the document's content.
    """

    def __init__(self, source: WhitelistSource, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._source = source
        self._max_bytes = max_bytes
        self._started = False
        self._root_seen = False
        self.entries_read = 0
        self.rejected: list[RejectedEntry] = []
        self.rejected_count = 0
        self.claimed_domains: set[str] = set()
        self.generated_at: datetime | None = None
        self.list_complete = False
        self.truncated = False
        self.problem: str | None = None
        self.notes: list[str] = []

    def __iter__(self) -> Iterator[WhitelistEntry]:
        if self._started:
            raise RuntimeError("a WhitelistReader can be iterated only once")
        self._started = True
        try:
            raw: BinaryIO = (
                io.BytesIO(self._source)
                if isinstance(self._source, bytes)
                else Path(self._source).open("rb")  # noqa: SIM115 - closed below
            )
        except OSError as error:
            self.truncated = True
            self.problem = f"cannot read the file: {error.strerror or error}"
            return
        try:
            yield from self._entries(_BoundedStream(raw, self._max_bytes))
        finally:
            raw.close()

    def _reject(self, position: int, name: str, domain: str | None, reason: str) -> None:
        self.rejected_count += 1
        if domain is not None:
            self.claimed_domains.add(domain)
        if len(self.rejected) < MAX_REJECTIONS_KEPT:
            self.rejected.append(RejectedEntry(position, _shorten(name), domain, reason))

    def _entries(self, stream: _BoundedStream) -> Iterator[WhitelistEntry]:
        """Feed the document chunk by chunk to a pull parser and handle its events.

        A pull parser rather than ``iterparse``: when libxml2 meets an error inside a
        chunk, the events it produced before the error are still delivered by
        ``read_events`` (``iterparse`` of lxml 6.2 drops them when the whole document
        fits in one read), so a malformed document keeps every entry before the error
        whatever lxml version is installed.
        """
        parser = etree.XMLPullParser(
            events=("start", "end"),
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )
        walk = _EntryWalk(self)
        error: Exception | None = None
        try:
            while not walk.refused:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    # At the end; no events of close() are read: for a truncated document
                    # libxml2 would close the open elements, making a cut entry look whole.
                    parser.close()
                    break
                try:
                    parser.feed(chunk)
                except (etree.LxmlError, ValueError, LookupError) as failure:
                    # ValueError: odd input lxml refuses; LookupError: an unknown encoding.
                    error = failure
                    yield from walk.drain(parser)
                    break
                yield from walk.handle(parser.read_events())
        except (etree.LxmlError, ValueError, LookupError) as failure:
            error = failure
        except OSError as failure:
            self.truncated = True
            self.problem = (
                f"cannot read the file after entry {self.entries_read}: "
                f"{failure.strerror or failure}; the rest was not imported"
            )
            return
        if walk.refused:
            self.truncated = True
        elif error is not None or stream.doctype or stream.too_large:
            self._stopped(stream, error)

    def _refuse_root(self, root: etree._Element) -> bool:
        docinfo = root.getroottree().docinfo
        declared: object = getattr(docinfo, "doctype", "")  # missing from lxml-stubs
        if docinfo.internalDTD is not None or declared:
            self.problem = self._doctype_problem()
            return True
        if _local_name(root) != _ROOT:
            tag = root.tag if isinstance(root.tag, str) else "?"
            self.problem = f"not an MSSanté whitelist: the root element is {_shorten(tag)!r}"
            return True
        return False

    @staticmethod
    def _doctype_problem() -> str:
        return (
            "document refused: it has a document type declaration (DOCTYPE), "
            "which the whitelist never needs; nothing was imported"
        )

    def _stopped(self, stream: _BoundedStream, error: Exception | None) -> None:
        """Record why reading stopped before a well-formed end of document."""
        self.truncated = True
        done = self.entries_read
        lost = (
            "no entry was lost (the domain list was complete)"
            if self.list_complete
            else "the rest was not imported"
        )
        if stream.doctype:
            self.problem = self._doctype_problem()
        elif stream.too_large:
            self.problem = (
                f"document larger than {self._max_bytes} bytes: stopped after entry {done}; {lost}"
            )
        elif stream.total == 0:
            self.problem = "document is empty; nothing was imported"
        elif not self._root_seen:
            self.problem = "document is not XML (no root element); nothing was imported"
        elif stream.at_end:
            self.problem = f"document truncated after entry {done}: {lost}"
        else:
            line = ""
            if isinstance(error, etree.XMLSyntaxError) and error.position:
                line = f" at line {error.position[0]}"
            self.problem = f"document malformed{line}, after entry {done}: {lost}"

    def _generation_date(self, element: etree._Element) -> None:
        try:
            self.generated_at = parse_timestamp(_text_of(element))
        except ValueError:
            self.notes.append("DateDeGeneration is not an ISO 8601 timestamp")

    def _entry(self, position: int, element: etree._Element) -> WhitelistEntry | None:
        values: dict[str, str] = {}
        for child in element:
            key = _FIELDS.get(_local_name(child) or "")
            if key is None:
                continue
            if key in values:
                name = values.get("name", "")
                self._reject(position, name, None, f"{child.tag} appears more than once")
                return None
            if len(child):
                self._reject(position, values.get("name", ""), None, "a field holds elements")
                return None
            values[key] = _text_of(child)
        name = values.get("name", "")
        if not name:
            self._reject(position, name, None, "no domain name (Nom)")
            return None
        try:
            domain, display = normalise_domain(name)
        except DomainError as error:
            self._reject(position, name, None, str(error))
            return None
        operator_dn = values.get("operator_dn", "")
        description = values.get("description") or None
        if len(operator_dn) > MAX_DN_LENGTH:
            reason = f"operator DN longer than {MAX_DN_LENGTH} characters"
            self._reject(position, name, domain, reason)
            return None
        if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
            reason = f"description longer than {MAX_DESCRIPTION_LENGTH} characters"
            self._reject(position, name, domain, reason)
            return None
        updated_at: datetime | None = None
        if values.get("updated_at"):
            try:
                updated_at = parse_timestamp(values["updated_at"])
            except ValueError:
                reason = f"DateMAJ is not an ISO 8601 timestamp: {_shorten(values['updated_at'])!r}"
                self._reject(position, name, domain, reason)
                return None
        return WhitelistEntry(
            position=position,
            domain=domain,
            display_name=display,
            operator_dn=operator_dn,
            description=description,
            responsible_contact=values.get("responsible_contact") or None,
            support_contact=values.get("support_contact") or None,
            updated_at=updated_at,
        )


def read_whitelist(
    source: WhitelistSource, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> WhitelistReader:
    """A reader of ``source`` (bytes, or a file path); iterate it for the entries."""
    return WhitelistReader(source, max_bytes=max_bytes)


@dataclass
class WhitelistReport:
    """What an import read and changed; every count is of the document just read."""

    entries_read: int = 0
    """Complete ``Domaine`` entries, valid or rejected."""
    domains_distinct: int = 0
    """Distinct valid domain names."""
    duplicates: int = 0
    """Domain names listed more than once."""
    multi_operator: int = 0
    """Domain names listed under more than one operator DN."""
    repeated_entries: int = 0
    """Entries repeating a (domain, operator DN) pair already listed (one is kept)."""
    pairs: int = 0
    """Distinct (domain, operator DN) pairs: the rows the file asks for."""
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    held_by_other_source: int = 0
    """Pairs already in the trust space by hand or by the demo; left as they are."""
    rejected_count: int = 0
    rejected: list[RejectedEntry] = field(default_factory=list)
    truncated: bool = False
    list_complete: bool = False
    removals_skipped: bool = False
    """True when rows were kept because the list could not be read to its end."""
    generated_at: datetime | None = None
    dated_after_generation: int = 0
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def imported(self) -> bool:
        """True when the document gave at least one usable entry."""
        return self.pairs > 0

    def summary_lines(self) -> list[str]:
        """The report as lines for an operator to read."""
        generated = self.generated_at.isoformat() if self.generated_at else "unknown"
        lines = [
            f"Whitelist generated at {generated}.",
            f"Entries read: {self.entries_read}; distinct domains: {self.domains_distinct}; "
            f"(domain, operator) pairs: {self.pairs}.",
            f"Domains listed more than once: {self.duplicates} "
            f"({self.multi_operator} under several operators; "
            f"{self.repeated_entries} repeated entries for the same operator).",
            f"Added: {self.added}; updated: {self.updated}; removed: {self.removed}; "
            f"unchanged: {self.unchanged}; already present by hand or demo: "
            f"{self.held_by_other_source}.",
            f"Rejected entries: {self.rejected_count}.",
        ]
        lines += [f"  entry {r.position} ({r.name!r}): {r.reason}" for r in self.rejected]
        if self.rejected_count > len(self.rejected):
            lines.append(f"  … and {self.rejected_count - len(self.rejected)} more")
        if self.dated_after_generation:
            lines.append(f"Entries dated after the generation date: {self.dated_after_generation}.")
        if self.problem:
            lines.append(f"Warning: {self.problem}.")
        if self.removals_skipped:
            lines.append("No row was removed: the domain list was not read to its end.")
        lines += [f"Note: {note}." for note in self.notes]
        return lines


@contextmanager
def session_scope(target: SessionTarget) -> Iterator[Session]:
    """One transaction from a Database or a session factory; a Session is used as is."""
    if isinstance(target, Database):
        with target.transaction() as session:
            yield session
    elif isinstance(target, Session):
        yield target
    else:
        with target() as session, session.begin():
            yield session


def _preferred(first: WhitelistEntry, second: WhitelistEntry) -> WhitelistEntry:
    """Of two entries for one (domain, operator) pair, the one kept, whatever their order."""

    def rank(entry: WhitelistEntry) -> tuple[datetime, str, str, str]:
        return (
            entry.updated_at or datetime.min.replace(tzinfo=UTC),
            entry.description or "",
            entry.responsible_contact or "",
            entry.support_contact or "",
        )

    return second if rank(second) > rank(first) else first


def _apply(
    row: TrustDomain, entry: WhitelistEntry, now: datetime, *, operator_dn: bool = False
) -> None:
    row.display_name = entry.display_name
    row.description = entry.description
    row.updated_at = entry.updated_at
    if operator_dn:
        row.operator_dn = entry.operator_dn
    row.imported_at = now


def _differs(row: TrustDomain, entry: WhitelistEntry) -> bool:
    return (
        row.display_name != entry.display_name
        or row.description != entry.description
        or row.updated_at != entry.updated_at
    )


def import_whitelist(
    target: SessionTarget,
    source: WhitelistSource,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> WhitelistReport:
    """Replace the ``whitelist`` rows of the trust space with the content of ``source``.

    ``target`` is a :class:`Database` or a session factory (one transaction of its
    own), or a :class:`Session` whose transaction the caller owns. Rows of other
    sources are left alone. Rows the file no longer lists are removed only when
    the domain list was read to its end; nothing changes when the document gave no
    usable entry. Importing the same document twice changes nothing.
    """
    reader = read_whitelist(source, max_bytes=max_bytes)
    chosen: dict[tuple[str, str], WhitelistEntry] = {}
    listed: Counter[str] = Counter()
    operators: defaultdict[str, set[str]] = defaultdict(set)
    report = WhitelistReport()
    entries = list(reader)
    for entry in entries:
        listed[entry.domain] += 1
        operators[entry.domain].add(entry.operator_dn)
        key = (entry.domain, entry.operator_dn)
        previous = chosen.get(key)
        if previous is None:
            chosen[key] = entry
        else:
            report.repeated_entries += 1
            chosen[key] = _preferred(previous, entry)
    report.entries_read = reader.entries_read
    report.domains_distinct = len(listed)
    report.duplicates = sum(1 for count in listed.values() if count > 1)
    report.multi_operator = sum(1 for dns in operators.values() if len(dns) > 1)
    report.pairs = len(chosen)
    report.rejected_count = reader.rejected_count
    report.rejected = list(reader.rejected)
    report.truncated = reader.truncated
    report.list_complete = reader.list_complete
    report.generated_at = reader.generated_at
    report.problem = reader.problem
    report.notes = list(reader.notes)
    if reader.generated_at is not None:
        report.dated_after_generation = sum(
            1 for e in entries if e.updated_at is not None and e.updated_at > reader.generated_at
        )
    if not chosen:
        report.removals_skipped = True
        return report
    may_remove = reader.list_complete
    report.removals_skipped = not may_remove
    with session_scope(target) as session:
        _replace(session, chosen, reader.claimed_domains, may_remove, report)
    logger.info(
        "whitelist import: %d entries, %d added, %d updated, %d removed, %d unchanged, %d rejected",
        report.entries_read,
        report.added,
        report.updated,
        report.removed,
        report.unchanged,
        report.rejected_count,
    )
    return report


def _replace(
    session: Session,
    chosen: dict[tuple[str, str], WhitelistEntry],
    claimed: set[str],
    may_remove: bool,
    report: WhitelistReport,
) -> None:
    now = utcnow()
    existing: dict[tuple[str, str], TrustDomain] = {}
    other_sources: set[tuple[str, str]] = set()
    for row in session.scalars(select(TrustDomain)):
        key = (row.domain, row.operator_dn)
        if row.source == SOURCE:
            existing[key] = row
        else:
            other_sources.add(key)
    unmatched_new: defaultdict[str, list[WhitelistEntry]] = defaultdict(list)
    for key, entry in chosen.items():
        current = existing.pop(key, None)
        if key in other_sources:
            report.held_by_other_source += 1
        elif current is None:
            unmatched_new[entry.domain].append(entry)
        elif _differs(current, entry):
            _apply(current, entry, now)
            report.updated += 1
        else:
            report.unchanged += 1
    unmatched_old: defaultdict[str, list[TrustDomain]] = defaultdict(list)
    for (domain, _dn), row in existing.items():
        unmatched_old[domain].append(row)
    # A domain whose operator DN changed keeps its row: pair the leftovers per domain.
    for domain, new_entries in unmatched_new.items():
        new_entries.sort(key=lambda e: e.operator_dn)
        old_rows = sorted(unmatched_old.get(domain, []), key=lambda r: r.operator_dn)
        if not may_remove or domain in claimed:
            old_rows = []
        for index, entry in enumerate(new_entries):
            if index < len(old_rows):
                _apply(old_rows[index], entry, now, operator_dn=True)
                report.updated += 1
                unmatched_old[domain].remove(old_rows[index])
            else:
                session.add(
                    TrustDomain(
                        domain=entry.domain,
                        display_name=entry.display_name,
                        operator_dn=entry.operator_dn,
                        description=entry.description,
                        source=SOURCE,
                        updated_at=entry.updated_at,
                        imported_at=now,
                    )
                )
                report.added += 1
    if not may_remove:
        return
    for domain, rows in unmatched_old.items():
        if domain in claimed:
            continue
        for row in rows:
            session.delete(row)
            report.removed += 1
