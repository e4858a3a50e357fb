"""The filing job: the attachments of a message delivered to a patient enter their record.

Delivery (``mailboxes.delivery``) commits the message and, for every patient recipient of a
message with attachments, a ``file-documents`` job. This module does that job's filing. The
job's handler (:mod:`caducee.jobs.filing`, which completes the job exactly once, in ONE
transaction) reads the stored message and the mailbox's identity through ``mailboxes`` and
hands them here as plain values (:class:`StoredMail`, :class:`MailboxPatient`): this module
names no mail table. Filing walks the attachments, reads each with the reader its content
calls for, and:

- stores each document found, encrypted, with its metadata and its source message (E1, E2;
  from the mail — sender, date, subject, file name — when the document has none);
- checks the identity a structured document names against the mailbox's (E3, rules in
  :mod:`caducee.policies.identity`): a failure quarantines the document, with its code;
- files a document once per patient (E4: the same unique id with the same content, or the
  same content — a PDF equal to the rendition of a filed CDA is that CDA — is a duplicate;
  another content under a unique id the record holds is a *conflict*, kept for the operator
  and never filed), and lets a CDA replacement (``RPLC``, same ``setId``) supersede the
  version it replaces, in either arrival order;
- applies the author's visibility flags (E5);
- carries out deletion requests (E4, HL7 v2 ``OBX-11 = D``): the document they name (by
  uniqueId, else every version of its setId) is withdrawn — its row is kept with state
  ``withdrawn`` for the operator and the audit, and shown to no one else — when the request
  passes the identity check (E3) and comes from the document's sender or author; otherwise
  nothing changes and the receipt says why (900 unknown document, 901 not its author, E3);
- under the ``patient-choice`` policy, offers documents instead of filing them, until the
  patient adds them (:func:`add_offered_document`); a document its author made invisible to
  the patient is filed directly, since the patient could not choose it;
- checks the ``X-MSS-CODECDA``/``X-MSS-INS``/``X-MSS-NIL`` headers against the attachment
  they describe and returns mismatches as codes (D4; never blocks), which the job writes on
  the message;
- records attachments the record does not take as not filed, with the reason (E1);
- builds the integration receipt the sender asked for (G3, :mod:`caducee.records.receipts`),
  which the job queues for the relay;
- and, after it, :mod:`caducee.jobs.filing` (the job's handler) has the patient's held copy
  of the message decided (E3, E5: :mod:`caducee.records.withheld`, ``mailboxes.held``).

Bad input never raises: a bad attachment is recorded as not filed and the message stays as
it is. Only infrastructure errors (database, blob store) raise, and the job is retried.
Logs carry ids and counts, never names, INS, subjects, titles or file names (J2).
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime
from typing import Any, cast

from sqlalchemy import Integer, func, literal, or_, select
from sqlalchemy.orm import Session

from caducee.config import Settings
from caducee.policies.identity import (
    ERROR_CODES,
    NOT_AUTHOR,
    OTHER_ERROR,
    UNKNOWN_DOCUMENT,
    IdentityVerdict,
    identity_verdict,
    message_verdicts,
    receipt_error,
)
from caducee.policies.mss_headers import MssHeaderFacts, mss_findings
from caducee.records.identity import (
    MailboxPatient,
    identity_facts,
    is_structured,
)
from caducee.records.mailparse import parse_mail
from caducee.records.mailparts import is_attachment, leaves
from caducee.records.model import (
    Document,
    ProblemCode,
    ReaderLimits,
    ReadResult,
    SourceFormat,
    VisibilityFlag,
    WithdrawalRequest,
)
from caducee.records.models import (
    AttachmentOutcome,
    DocumentState,
    RecordAttachment,
    RecordDocument,
    VersionStatus,
)
from caducee.records.readers import read_attachment
from caducee.records.readers.cda import french_time
from caducee.records.receipts import (
    MDN_PURPOSE,
    build_mdn,
    is_xdm_subject,
    receipt_recipients,
)
from caducee.storage.blobs import BlobStore
from caducee.storage.db import utcnow

log = logging.getLogger("caducee.records.filing")

MAX_ATTACHMENTS = 200
"""Attachments beyond this many are recorded as not filed (a 25 MB message has far fewer)."""


@dataclass(frozen=True)
class StoredMail:
    """The stored message filing reads, as plain values (the jobs layer loads it)."""

    message_id: int
    raw: bytes = field(repr=False)
    received_at: datetime | None
    envelope_from: str | None = field(repr=False)
    header_from: str | None = field(repr=False)
    message_id_header: str | None = field(repr=False)


@dataclass(frozen=True)
class Receipt:
    """An integration receipt (G3) to send from the null sender; the job queues it."""

    recipients: tuple[str, ...] = field(repr=False)
    content: bytes = field(repr=False)
    purpose: str = MDN_PURPOSE


# ---------------------------------------------------------------------------------------------
# Small helpers on untrusted values


def _clip(value: object, limit: int) -> str | None:
    """Text fit for a column: no control characters, collapsed spaces, at most ``limit``."""
    if value is None:
        return None
    text = "".join(
        char if unicodedata.category(char)[0] != "C" else " " for char in str(value)
    ).strip()
    text = " ".join(text.split())
    return text[:limit] or None


def _as_utc(value: datetime | date | None) -> datetime | None:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=french_time())
        return aware.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=french_time()).astimezone(UTC)
    return None


def _header(message: Message, name: str) -> str | None:
    try:
        value = message.get(name)
    except (ValueError, TypeError, IndexError):
        return None
    return None if value is None else " ".join(str(value).split())


def _mail_date(message: Message) -> datetime | None:
    raw = _header(message, "Date")
    if not raw:
        return None
    try:
        return _as_utc(parsedate_to_datetime(raw))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _codes_json(codes: Sequence[str]) -> str | None:
    unique = list(dict.fromkeys(codes))
    return json.dumps(unique) if unique else None


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lock_record(session: Session, account_id: int) -> None:
    """Make the other filings of this patient's record wait for this transaction's end.

    What a document is depends on what the record already holds (E4: a duplicate, a conflict,
    a newer version of a set): two job workers filing the same report for one patient at once
    each saw none and both filed it, and the later commit failed on the record's unique
    ``(account_id, dedupe_key)`` (seen in the two-process bench, then retried). The patient's
    own file and an offered document the patient adds are decided the same way and take the
    same lock. On PostgreSQL a transaction-scoped advisory lock per patient serialises them
    (taking it again in the same transaction is free); other patients' filings and every
    reader go on. Advisory locks belong to the whole database, so the key is the schema's
    hash and the account id: homes that share a database in separate schemas never wait for
    each other. On SQLite the write transaction already holds the only write lock.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    if not 0 <= account_id < 1 << 31:
        raise ValueError(f"account id out of the record lock's range: {account_id}")
    session.execute(
        select(
            func.pg_advisory_xact_lock(
                func.hashtext(func.current_schema()), literal(account_id, Integer)
            )
        )
    )


def dedupe_key(document_uid: str | None, sha256: str) -> str:
    """E4: a document's identity in one record — its unique id, else its content hash."""
    basis = f"uid:{document_uid}" if document_uid else f"sha256:{sha256}"
    return _sha256(basis.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Attachments of a message


@dataclass(frozen=True)
class MailAttachment:
    """One attachment of a message, decoded."""

    position: int
    file_name: str | None = field(repr=False)
    content_type: str
    data: bytes = field(repr=False)


def mail_attachments(message: Message) -> list[MailAttachment]:
    """The attachments of a message, in order: leaf parts that are not its body."""
    found: list[MailAttachment] = []
    for part in leaves(message):
        if not is_attachment(part):
            continue
        try:
            data = part.get_payload(decode=True)
            file_name = part.get_filename()
        except (ValueError, TypeError, IndexError, LookupError):
            data, file_name = None, None
        found.append(
            MailAttachment(
                position=len(found),
                file_name=file_name,
                content_type=part.get_content_type(),
                data=data if isinstance(data, bytes) else b"",
            )
        )
    return found


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class FoundDocument:
    """A document a reader found, with the attachment it came from and its own findings."""

    attachment: MailAttachment
    source_format: SourceFormat
    document: Document
    problems: tuple[str, ...]

    @property
    def structured(self) -> bool:
        return is_structured(self.source_format)


@dataclass(frozen=True)
class ReadAttachment:
    """What reading one attachment gave."""

    attachment: MailAttachment
    source_format: SourceFormat
    documents: tuple[FoundDocument, ...]
    problems: tuple[str, ...]
    withdrawals: tuple[WithdrawalRequest, ...] = ()


def reader_limits(settings: Settings) -> ReaderLimits:
    """The readers' bounds on untrusted input, from the ``[records]`` settings (E6)."""
    records = settings.records
    return ReaderLimits(
        max_entries=records.max_archive_entries,
        max_total_bytes=records.max_archive_bytes,
        max_ratio=records.max_compression_ratio,
    )


def read_one(attachment: MailAttachment, limits: ReaderLimits) -> ReadAttachment:
    """Run the reader for one attachment; a reader bug is recorded, never raised."""
    if not attachment.data:
        return ReadAttachment(attachment, SourceFormat.UNKNOWN, (), ("NO_DOCUMENT",))
    try:
        result: ReadResult = read_attachment(
            attachment.file_name or "attachment",
            attachment.content_type,
            attachment.data,
            limits=limits,
        )
    except Exception as error:  # readers promise not to raise; a bug must not lose the job
        log.warning("attachment reader failed", extra={"reason": type(error).__name__})
        return ReadAttachment(attachment, SourceFormat.UNKNOWN, (), ("READER_ERROR",))
    documents = tuple(
        FoundDocument(
            attachment=attachment,
            source_format=result.format,
            document=document,
            problems=tuple(
                str(problem.code)
                for problem in result.problems
                if problem.where is not None and problem.where == document.file_name
            ),
        )
        for document in result.documents
    )
    problems = tuple(str(problem.code) for problem in result.problems)
    return ReadAttachment(attachment, result.format, documents, problems, result.withdrawals)


# ---------------------------------------------------------------------------------------------
# D4: MSSanté headers against the attachment they describe


def _split_codes(values: Sequence[str]) -> set[str]:
    return {code.strip() for value in values for code in value.split(",") if code.strip()}


def mss_header_problems(message: Message, read: Sequence[ReadAttachment]) -> list[str]:
    """D4 mismatch codes for ``X-MSS-CODECDA``, ``X-MSS-INS`` and ``X-MSS-NIL``.

    The headers describe the CDA documents of the ``IHE_XDM.zip`` (ECO.2.4.1–2.4.3):
    ``X-MSS-CODECDA`` lists their type codes, ``X-MSS-INS`` says ``O`` when they carry a
    qualified INS (matricule, OID and identity traits) and ``N`` otherwise, ``X-MSS-NIL`` is
    the sending software's reference. Codes say which header and how, nothing else; the
    rules are the tables of :mod:`caducee.policies.mss_headers`.
    """
    try:
        code_headers = [str(v) for v in message.get_all("X-MSS-CODECDA") or []]
        ins_headers = [str(v).strip().upper() for v in message.get_all("X-MSS-INS") or []]
        nil_headers = [str(v).strip() for v in message.get_all("X-MSS-NIL") or []]
    except (ValueError, TypeError, IndexError):
        return mss_findings(MssHeaderFacts(readable=False))
    cdas = [
        found.document
        for item in read
        if item.source_format is SourceFormat.XDM
        for found in item.documents
        if found.document.metadata.type_code and "xml" in found.document.mime_type
    ]
    return mss_findings(
        MssHeaderFacts(
            codecda=frozenset(_split_codes(code_headers)),
            codecda_present=bool(code_headers),
            ins=tuple(ins_headers),
            nil=tuple(nil_headers),
            cda_type_codes=frozenset(str(d.metadata.type_code) for d in cdas),
            has_cda=bool(cdas),
            cdas_qualified=all(
                d.metadata.patient is not None
                and bool(d.metadata.patient.ins)
                and not d.metadata.patient.missing_traits()
                for d in cdas
            ),
        )
    )


# ---------------------------------------------------------------------------------------------
# Versions and duplicates (E4)


def find_duplicate(
    session: Session, account_id: int, document_uid: str | None, sha256: str
) -> RecordDocument | None:
    """The document of this record that ``(uid, content)`` is a copy of, if any."""
    same = [RecordDocument.document_uid == document_uid] if document_uid else []
    same.append(RecordDocument.sha256 == sha256)
    if not document_uid:
        same.append(RecordDocument.rendition_sha256 == sha256)
    return session.scalar(
        select(RecordDocument)
        .where(
            RecordDocument.account_id == account_id,
            RecordDocument.state.in_((DocumentState.FILED.value, DocumentState.OFFERED.value)),
            or_(*same),
        )
        .order_by(RecordDocument.id)
        .limit(1)
    )


UID_CONFLICT = "UID_CONFLICT"
"""Problem code of a document whose uniqueId the record holds with another content (E4)."""


def known_document(
    session: Session, account_id: int, document_uid: str | None, sha256: str
) -> tuple[DocumentState, RecordDocument] | None:
    """E4: what the record already holds of a document — by uniqueId **and** content.

    The same uniqueId with the same content (the document, or the rendition of the CDA) is a
    duplicate; the same uniqueId with another content is a conflict; without a uniqueId match,
    the same content is a duplicate (:func:`find_duplicate`).
    """
    live = (DocumentState.FILED.value, DocumentState.OFFERED.value)
    if document_uid:
        same_uid = session.scalars(
            select(RecordDocument)
            .where(
                RecordDocument.account_id == account_id,
                RecordDocument.document_uid == document_uid,
                RecordDocument.state.in_(live),
            )
            .order_by(RecordDocument.id)
        ).all()
        for row in same_uid:
            if sha256 in (row.sha256, row.rendition_sha256):
                return DocumentState.DUPLICATE, row
        if same_uid:
            return DocumentState.CONFLICT, same_uid[0]
    original = find_duplicate(session, account_id, document_uid, sha256)
    return None if original is None else (DocumentState.DUPLICATE, original)


def _same_set(one: str | None, other: str | None) -> bool:
    return one is None or other is None or one == other


def apply_versions(session: Session, document: RecordDocument) -> None:
    """E4: a filed replacement supersedes the version it names (same ``setId``); a version
    filed after its replacement (out-of-order arrival) is filed superseded."""
    session.flush()
    if document.replaces_uid:
        older = session.scalars(
            select(RecordDocument).where(
                RecordDocument.account_id == document.account_id,
                RecordDocument.document_uid == document.replaces_uid,
                RecordDocument.state == DocumentState.FILED.value,
                RecordDocument.status == VersionStatus.CURRENT.value,
                RecordDocument.id != document.id,
            )
        ).all()
        for old in older:
            if _same_set(old.set_id, document.set_id):
                old.status = VersionStatus.SUPERSEDED.value
                old.superseded_by_id = document.id
                old.updated_at = utcnow()
    if document.document_uid:
        newer = session.scalar(
            select(RecordDocument)
            .where(
                RecordDocument.account_id == document.account_id,
                RecordDocument.replaces_uid == document.document_uid,
                RecordDocument.state == DocumentState.FILED.value,
                RecordDocument.id != document.id,
            )
            .order_by(RecordDocument.id.desc())
            .limit(1)
        )
        if newer is not None and _same_set(newer.set_id, document.set_id):
            document.status = VersionStatus.SUPERSEDED.value
            document.superseded_by_id = newer.id


def withdrawal_targets(
    session: Session,
    account_id: int,
    document_uid: str | None,
    set_id: str | None,
    *,
    states: tuple[str, ...] = (DocumentState.FILED.value, DocumentState.OFFERED.value),
) -> list[RecordDocument]:
    """E4: the rows a deletion request withdraws — the version its uniqueId names, else
    (a request that names only a setId) every version of that set still in the record."""
    if document_uid:
        condition = RecordDocument.document_uid == document_uid
    elif set_id:
        condition = RecordDocument.set_id == set_id
    else:
        return []
    return list(
        session.scalars(
            select(RecordDocument)
            .where(
                RecordDocument.account_id == account_id,
                RecordDocument.state.in_(states),
                condition,
            )
            .order_by(RecordDocument.id)
        )
    )


def _may_withdraw(target: RecordDocument, sender: str | None, author_id: str | None) -> bool:
    """Only the document's sender (same mailbox) or its author (same national id) may."""
    if sender and target.sender and sender.strip().lower() == target.sender.strip().lower():
        return True
    return bool(author_id) and author_id == target.author_national_id


def add_offered_document(
    session: Session, account_id: int, public_id: str
) -> RecordDocument | None:
    """Policy ``patient-choice``: the patient adds an offered document to their record."""
    lock_record(session, account_id)  # versions are decided against what the record holds
    document = session.scalar(
        select(RecordDocument).where(
            RecordDocument.account_id == account_id,
            RecordDocument.public_id == public_id,
            RecordDocument.state == DocumentState.OFFERED.value,
        )
    )
    if document is None:
        return None
    now = utcnow()
    document.state = DocumentState.FILED.value
    document.filed_at = now
    document.updated_at = now
    apply_versions(session, document)
    return document


def offered_documents(session: Session, account_id: int) -> list[RecordDocument]:
    """Policy ``patient-choice``: documents waiting for the patient to add them, oldest first."""
    return list(
        session.scalars(
            select(RecordDocument)
            .where(
                RecordDocument.account_id == account_id,
                RecordDocument.state == DocumentState.OFFERED.value,
                RecordDocument.hidden_from_patient.is_(False),
            )
            .order_by(RecordDocument.id)
        )
    )


def set_hidden_from_professionals(
    session: Session, account_id: int, public_id: str, hidden: bool
) -> bool:
    """E5: the patient hides (or shows again) one of their documents from professionals."""
    document = session.scalar(
        select(RecordDocument).where(
            RecordDocument.account_id == account_id,
            RecordDocument.public_id == public_id,
            RecordDocument.state.in_((DocumentState.FILED.value, DocumentState.OFFERED.value)),
            RecordDocument.hidden_from_patient.is_(False),
        )
    )
    if document is None:
        return False
    document.hidden_from_professionals = hidden
    document.updated_at = utcnow()
    return True


# ---------------------------------------------------------------------------------------------
# Filing one message for one patient


@dataclass
class FilingSummary:
    """What one run of the job did: counts and codes only (safe to log)."""

    message_id: int
    account_id: int
    states: Counter[str] = field(default_factory=Counter)
    not_filed: int = 0
    receipt_error: int | None = None
    receipt_queued: bool = False
    withdrawal_error: int | None = None
    mss_problems: tuple[str, ...] = ()
    """D4 codes about the message, for the job to write on it (never blocks)."""
    receipt: Receipt | None = None
    """The integration receipt to send (G3), for the job to queue."""
    skipped: str | None = None

    def log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "message_row": self.message_id,
            "account_id": self.account_id,
            "not_filed": self.not_filed,
            "receipt_queued": self.receipt_queued,
        }
        fields.update({f"documents_{state}": count for state, count in self.states.items()})
        if self.receipt_error is not None:
            fields["receipt_error"] = self.receipt_error
        if self.withdrawal_error is not None:
            fields["withdrawal_error"] = self.withdrawal_error
        if self.skipped:
            fields["skipped"] = self.skipped
        return fields


@dataclass(frozen=True)
class _MailContext:
    message_id: int
    received_at: datetime
    sender: str | None
    subject: str | None
    message_id_header: str | None
    mail_date: datetime | None


def already_filed(session: Session, message_id: int, account_id: int) -> bool:
    """Whether a run already filed ``message_id`` for ``account_id`` (a retried job)."""
    existing = session.scalar(
        select(RecordAttachment.id)
        .where(
            RecordAttachment.account_id == account_id,
            RecordAttachment.message_id == message_id,
        )
        .limit(1)
    )
    return existing is not None


class Filing:
    """Files the documents of one message into one patient's record, in the caller's session."""

    def __init__(self, session: Session, blobs: BlobStore, settings: Settings) -> None:
        self.session = session
        self.blobs = blobs
        self.settings = settings
        self.limits = reader_limits(settings)

    def run(
        self,
        message_id: int,
        account_id: int,
        *,
        mail: StoredMail | None,
        mailbox: MailboxPatient | None,
    ) -> FilingSummary:
        """File ``mail`` for ``mailbox``; ``None`` for either: the message or account is gone.

        The D4 codes and the receipt come back in the summary; the caller writes and
        queues them (they belong to the mail side).
        """
        summary = FilingSummary(message_id=message_id, account_id=account_id)
        if already_filed(self.session, message_id, account_id):
            summary.skipped = "already-filed"
            return summary
        if mail is None or mailbox is None:
            summary.skipped = "message-or-account-gone"
            return summary
        raw = mail.raw
        try:
            message = parse_mail(raw)
        except Exception as error:  # the parser is lenient; never lose the job to it
            log.warning("message could not be parsed", extra={"reason": type(error).__name__})
            summary.skipped = "unparsable"
            return summary
        context = _MailContext(
            message_id=message_id,
            received_at=mail.received_at or utcnow(),
            sender=mail.header_from or mail.envelope_from or None,
            subject=_header(message, "Subject"),
            message_id_header=mail.message_id_header or _header(message, "Message-ID"),
            mail_date=_mail_date(message),
        )
        try:
            attachments = mail_attachments(message)
        except Exception as error:  # ``email`` does no I/O: anything raised is bad input
            log.warning("attachments could not be listed", extra={"reason": type(error).__name__})
            attachments = []
        read = [read_one(a, self.limits) for a in attachments[:MAX_ATTACHMENTS]]
        found = [document for item in read for document in item.documents]
        verdicts = self._verdicts(mailbox, found)
        # What the record holds decides each document's fate: from here on, alone.
        lock_record(self.session, mailbox.account_id)
        order = sorted(range(len(found)), key=lambda i: (not found[i].structured, i))
        for index in order:
            state = self._store(mailbox, context, found[index], verdicts[index])
            summary.states[state] += 1
        withdrawals = self._withdrawals(mailbox, context, read)
        for count, code in withdrawals.values():
            summary.states[DocumentState.WITHDRAWN.value] += count
            if code is not None and summary.withdrawal_error is None:
                summary.withdrawal_error = code
        summary.not_filed = self._record_attachments(
            mailbox.account_id, message_id, attachments, read, withdrawals
        )
        summary.mss_problems = tuple(mss_header_problems(message, read))
        self._receipt(summary, message, raw, mail.envelope_from or "", mailbox, read, verdicts)
        return summary

    # -- E4: deletion requests ------------------------------------------------------------------

    def _withdrawals(
        self, mailbox: MailboxPatient, context: _MailContext, read: Sequence[ReadAttachment]
    ) -> dict[int, tuple[int, int | None]]:
        """Carry out the deletion requests of each attachment: (withdrawn, error code)."""
        outcomes: dict[int, tuple[int, int | None]] = {}
        for item in read:
            if not item.withdrawals:
                continue
            withdrawn, error = 0, None
            for request in item.withdrawals:
                count, code = self._withdraw(mailbox, context, request)
                withdrawn += count
                error = error if error is not None else code
            outcomes[item.attachment.position] = (withdrawn, error)
        return outcomes

    def _withdraw(
        self, mailbox: MailboxPatient, context: _MailContext, request: WithdrawalRequest
    ) -> tuple[int, int | None]:
        metadata = request.metadata
        named = Document(content=b"", file_name=request.where, mime_type="text/xml")
        facts = identity_facts(
            mailbox,
            replace(named, metadata=metadata),
            SourceFormat.HL7V2,
            test_mode=self.settings.gateway.test_mode,
        )
        verdict = identity_verdict(facts)
        if verdict is not None:
            return 0, verdict.code
        targets = withdrawal_targets(
            self.session,
            mailbox.account_id,
            _clip(metadata.document_id, 255),
            _clip(metadata.set_id, 255),
        )
        # The same request again (a lost receipt) finds the document withdrawn already:
        # processed, nothing changes; not an unknown document.
        done = not targets
        if done:
            targets = withdrawal_targets(
                self.session,
                mailbox.account_id,
                _clip(metadata.document_id, 255),
                _clip(metadata.set_id, 255),
                states=(DocumentState.WITHDRAWN.value,),
            )
            if not targets:
                return 0, UNKNOWN_DOCUMENT
        author = metadata.author.national_id if metadata.author else None
        if not all(_may_withdraw(target, context.sender, author) for target in targets):
            return 0, NOT_AUTHOR
        if done:
            return 0, None
        now = utcnow()
        for target in targets:
            target.state = DocumentState.WITHDRAWN.value
            target.withdrawn_at = now
            target.withdrawn_by_message_id = context.message_id
            target.updated_at = now
        self.session.flush()
        return len(targets), None

    def _verdicts(
        self, mailbox: MailboxPatient, found: Sequence[FoundDocument]
    ) -> list[IdentityVerdict | None]:
        test_mode = self.settings.gateway.test_mode
        own = [
            identity_verdict(
                identity_facts(mailbox, f.document, f.source_format, test_mode=test_mode)
            )
            for f in found
        ]
        return message_verdicts(own, [f.structured for f in found])

    def _store(
        self,
        mailbox: MailboxPatient,
        context: _MailContext,
        found: FoundDocument,
        verdict: IdentityVerdict | None,
    ) -> str:
        document = found.document
        metadata = document.metadata
        uid = _clip(metadata.document_id, 255)
        sha256 = _sha256(document.content)
        now = utcnow()
        row = self._new_row(mailbox.account_id, context, found, uid, sha256)
        if verdict is not None:
            row.state = DocumentState.QUARANTINED.value
            row.error_code = verdict.code
            row.identity_rule = verdict.rule
        else:
            known = known_document(self.session, mailbox.account_id, uid, sha256)
            if known is not None and known[0] is DocumentState.DUPLICATE:
                row.state = DocumentState.DUPLICATE.value
                row.duplicate_of_id = known[1].id
                self.session.add(row)
                return row.state
            if known is not None:
                # E4: another content under a uniqueId the record holds is not the same
                # document: kept (content too) for the operator, never filed, never dropped
                row.state = DocumentState.CONFLICT.value
                row.duplicate_of_id = known[1].id
                row.problems = _codes_json([*found.problems, UID_CONFLICT])
            else:
                # E5: a document the patient may not see cannot wait for the patient's choice
                auto = self.settings.records.filing_policy == "auto" or row.hidden_from_patient
                row.state = (DocumentState.FILED if auto else DocumentState.OFFERED).value
                row.dedupe_key = dedupe_key(uid, sha256)
                row.filed_at = now if auto else None
        row.content_blob_id = self.blobs.write(self.session, document.content)
        if document.rendition is not None:
            row.rendition_blob_id = self.blobs.write(self.session, document.rendition)
            row.rendition_mime_type = _clip(document.rendition_mime_type, 100)
            row.rendition_size = len(document.rendition)
            row.rendition_sha1 = _sha1(document.rendition)
            row.rendition_sha256 = _sha256(document.rendition)
        self.session.add(row)
        if row.state == DocumentState.FILED.value:
            apply_versions(self.session, row)
        else:
            self.session.flush()
        return row.state

    def _new_row(
        self,
        account_id: int,
        context: _MailContext,
        found: FoundDocument,
        uid: str | None,
        sha256: str,
    ) -> RecordDocument:
        document = found.document
        metadata = document.metadata
        author = metadata.author
        flags = tuple(dict.fromkeys(metadata.visibility))
        title = metadata.title or found.attachment.file_name or document.file_name
        return RecordDocument(
            public_id=uuid.uuid4().hex,
            account_id=account_id,
            message_id=context.message_id,
            attachment_position=found.attachment.position,
            entry_name=_clip(document.file_name, 255),
            source_format=found.source_format.value,
            status=VersionStatus.CURRENT.value,
            problems=_codes_json(found.problems),
            mime_type=_clip(document.mime_type, 100) or "application/octet-stream",
            size=len(document.content),
            sha1=_sha1(document.content),
            sha256=sha256,
            document_uid=uid,
            xds_entry_id=_clip(metadata.xds_entry_id, 255),
            set_id=_clip(metadata.set_id, 255),
            version=metadata.version,
            replaces_uid=_clip(metadata.replaces, 255),
            type_code=_clip(metadata.type_code, 64),
            type_system=_clip(metadata.type_code_system, 128),
            type_display=_clip(metadata.type_display, 255),
            class_code=_clip(metadata.class_code, 64),
            format_code=_clip(metadata.format_code, 255),
            title=_clip(title, 500),
            document_date=(
                _as_utc(metadata.effective_time) or context.mail_date or context.received_at
            ),
            confidentiality=_clip(metadata.confidentiality, 8),
            language=_clip(metadata.language, 16),
            author_national_id=_clip(author.national_id if author else None, 64),
            author_family=_clip(author.family if author else None, 200),
            author_given=_clip(author.given if author else None, 200),
            organisation_id=_clip(author.organisation_id if author else None, 64),
            organisation_name=_clip(author.organisation_name if author else None, 255),
            sender=_clip(context.sender, 320),
            mail_subject=_clip(context.subject, 998),
            mail_message_id=_clip(context.message_id_header, 998),
            author_flags=",".join(flag.value for flag in flags)[:200],
            hidden_from_patient=VisibilityFlag.INVISIBLE_PATIENT in flags,
            hidden_from_representatives=VisibilityFlag.INVISIBLE_REPRESENTANTS_LEGAUX in flags,
            hidden_from_professionals=VisibilityFlag.MASQUE_PS in flags,
            received_at=context.received_at,
            updated_at=utcnow(),
        )

    def _record_attachments(
        self,
        account_id: int,
        message_id: int,
        attachments: Sequence[MailAttachment],
        read: Sequence[ReadAttachment],
        withdrawals: dict[int, tuple[int, int | None]] | None = None,
    ) -> int:
        """One row per attachment; returns how many were not filed at all (E1)."""
        not_filed = 0
        for position, attachment in enumerate(attachments):
            item = read[position] if position < len(read) else None
            problems = item.problems if item is not None else ("TOO_MANY_ATTACHMENTS",)
            documents = len(item.documents) if item is not None else 0
            withdrawal = (withdrawals or {}).get(attachment.position)
            if withdrawal is not None:
                count, code = withdrawal
                self.session.add(
                    RecordAttachment(
                        account_id=account_id,
                        message_id=message_id,
                        position=attachment.position,
                        file_name=_clip(attachment.file_name, 255),
                        content_type=_clip(attachment.content_type, 255),
                        size=len(attachment.data),
                        source_format=(item.source_format if item else SourceFormat.UNKNOWN).value,
                        outcome=(
                            AttachmentOutcome.WITHDRAWAL
                            if code is None
                            else AttachmentOutcome.NOT_FILED
                        ).value,
                        reason=None if code is None else f"WITHDRAWAL_REFUSED_{code}",
                        problems=_codes_json(problems),
                        document_count=count,
                    )
                )
                not_filed += code is not None
                continue
            if not documents:
                not_filed += 1
            self.session.add(
                RecordAttachment(
                    account_id=account_id,
                    message_id=message_id,
                    position=attachment.position,
                    file_name=_clip(attachment.file_name, 255),
                    content_type=_clip(attachment.content_type, 255),
                    size=len(attachment.data),
                    source_format=(item.source_format if item else SourceFormat.UNKNOWN).value,
                    outcome=(
                        AttachmentOutcome.READ if documents else AttachmentOutcome.NOT_FILED
                    ).value,
                    reason=None if documents else _not_filed_reason(problems),
                    problems=_codes_json(problems),
                    document_count=documents,
                )
            )
        return not_filed

    def _receipt(
        self,
        summary: FilingSummary,
        message: Message,
        raw: bytes,
        envelope_from: str,
        mailbox: MailboxPatient,
        read: Sequence[ReadAttachment],
        verdicts: Sequence[IdentityVerdict | None],
    ) -> None:
        """G3: build the integration receipt of an XDM report that asked for one."""
        email_message = cast(EmailMessage, message)
        xdm = [item for item in read if item.source_format is SourceFormat.XDM]
        withdrawal = any(item.withdrawals for item in read)
        if not xdm and not is_xdm_subject(email_message) and not withdrawal:
            return
        recipients = receipt_recipients(email_message, envelope_from)
        if not recipients:
            return
        code = receipt_error(verdicts)
        if code is None:
            code = summary.withdrawal_error
        if code is None and not withdrawal and not any(item.documents for item in xdm):
            code = OTHER_ERROR
        try:
            content = build_mdn(
                email_message,
                raw,
                from_address=mailbox.address,
                recipients=recipients,
                final_recipient=mailbox.address,
                reporting_host=self.settings.gateway.hostname,
                error=ERROR_CODES[code] if code is not None else None,
            )
        except Exception as error:  # building mail does no I/O: the original is malformed
            log.warning("receipt could not be built", extra={"reason": type(error).__name__})
            return
        summary.receipt = Receipt(recipients=tuple(recipients), content=content)
        summary.receipt_error = code
        summary.receipt_queued = True


def _not_filed_reason(problems: Sequence[str]) -> str:
    """The one reason shown for an attachment that gave no document."""
    if ProblemCode.UNSUPPORTED_FORMAT.value in problems:
        return ProblemCode.UNSUPPORTED_FORMAT.value
    return problems[0][:32] if problems else ProblemCode.NO_DOCUMENT.value
