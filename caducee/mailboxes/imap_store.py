"""What the IMAP server asks of the mailbox tables: folders, entries, flags, copies, expunges (H1).

The protocol side (``caducee.gateway.imap``) never writes SQL: it calls this
store, from a worker thread, and gets plain frozen values back. Every method is
one transaction (:meth:`Database.reading` for lookups, which on SQLite does not
take the write lock; :meth:`Database.transaction` for changes) and every query
names the account, so a session bound to one account cannot reach another
account's folders or messages whatever folder id or UID it passes (isolation is
enforced here, not trusted to the caller).

Modification sequences (CONDSTORE, RFC 7162) come from ``folders.highest_modseq``:
a change takes the folder's next value under the folder row's lock, stamps it
on every entry it touches and on the ``imap_expunged`` rows of what it removed,
and leaves it as the folder's new ``highest_modseq``. "What changed since n" is
then two indexed range queries, which is how sessions in this and other
processes catch up after an IDLE wake-up.

Messages keep their bytes in the encrypted blob store; the parsed structure
(:mod:`caducee.mailboxes.imap_structure`) is cached as an encrypted blob too,
built on first IMAP access or at APPEND. Blob rows for a batch are loaded with
one query, so decrypting many messages costs one round trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Row, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from caducee.mailboxes.accounts.identity.principal import Principal as Principal
from caducee.mailboxes.accounts.store import (
    Account,
    AccountKind,
)
from caducee.mailboxes.delivery import ensure_folders
from caducee.mailboxes.imap_binary import seven_bit_parts
from caducee.mailboxes.imap_cache import ByteLRU, seal_parsed
from caducee.mailboxes.imap_cache import record_structure as record_structure
from caducee.mailboxes.imap_cache import seal_structure as seal_structure
from caducee.mailboxes.imap_models import (
    ExpungedEntry,
    FolderRecent,
    StructureCache,
    ValidityCounter,
)
from caducee.mailboxes.imap_structure import (
    STRUCTURE_VERSION,
    MessageStructure,
    envelope_from_record,
    envelope_record,
    parse_message,
    wire_envelope,
)
from caducee.mailboxes.models import INBOX, Folder, MailboxEntry, StoredMessage
from caducee.mailboxes.reports.receipts import ReadMessage, queue_displayed_receipt
from caducee.storage.blobs import BlobRow, BlobStore
from caducee.storage.db import Database, utcnow
from caducee.storage.jobs import JobQueue
from caducee.storage.upsert import upsert_insert

SEEN = "\\Seen"
DELETED = "\\Deleted"
RECENT = "\\Recent"
DELIMITER = "/"
MAX_FLAGS_LENGTH = 500
MAX_FOLDER_NAME = 200
MAX_UID_VALIDITY = 2**32 - 1
"""UIDVALIDITY is a non-zero 32-bit number (RFC 3501 §9, nz-number)."""
APPENDED = "appended"
_CHUNK = 500
STRUCTURE_CHARGE = 4
Filed = tuple[int, str, str | None, str | None]
"""A filed message: its id, its blob id, its structure blob id and ENVELOPE blob id (if any)."""
"""Bytes a decrypted structure takes in memory per byte of its JSON (about 3 to 4)."""

_FOLDERS = cast(Table, Folder.__table__)
_ENTRIES = cast(Table, MailboxEntry.__table__)
_MESSAGES = cast(Table, StoredMessage.__table__)
_EXPUNGED = cast(Table, ExpungedEntry.__table__)
_CACHE = cast(Table, StructureCache.__table__)
_RECENT = cast(Table, FolderRecent.__table__)
_VALIDITY = cast(Table, ValidityCounter.__table__)
_ACCOUNTS = cast(Table, Account.__table__)
_BLOBS = cast(Table, BlobRow.__table__)


class StoreError(Exception):
    """Base of the refusals the IMAP layer turns into ``NO`` responses."""


class FolderNotFound(StoreError, LookupError):
    """No folder of this name (or id) in this account."""


class FolderExists(StoreError, ValueError):
    """A folder of this name already exists."""


class FolderProtected(StoreError, PermissionError):
    """INBOX and the special-use folders cannot be deleted or renamed."""


class FolderHasChildren(StoreError):
    """Delete the inferior folders first."""


class InvalidFolderName(StoreError, ValueError):
    """Empty, too long, or malformed folder name."""


class FlagsTooLong(StoreError, ValueError):
    """The flags of one message do not fit the column."""


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """A folder row."""

    id: int
    name: str
    special_use: str | None
    uid_validity: int
    uid_next: int
    highest_modseq: int
    subscribed: bool


class EntryState(NamedTuple):
    """One message in one folder, as a session caches it (a tuple: SELECT makes thousands)."""

    uid: int
    flags: frozenset[str]
    modseq: int
    internal_date: datetime
    message_id: int
    blob_id: str
    size: int


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """Entries added or changed, and UIDs expunged, since a modseq (None: the whole folder)."""

    folder: FolderInfo
    entries: list[EntryState]
    expunged: list[int]
    since: int | None = None
    recent_from: int = 1
    """The first UID no session claimed as ``\\Recent`` yet (:meth:`ImapStore.claim_recent`)."""


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """STATUS figures of a folder."""

    folder: FolderInfo
    messages: int
    unseen: int
    recent: int


@dataclass(frozen=True, slots=True)
class Selection:
    """Everything a SELECT needs: the whole folder and where ``\\Recent`` starts for us."""

    changes: FolderChanges
    recent_from: int | None


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What a STORE did: entries changed, UIDs refused by UNCHANGEDSINCE, receipts queued."""

    changed: list[EntryState]
    modified: list[int]
    highest_modseq: int
    receipts: int


@dataclass(frozen=True, slots=True)
class CopyOutcome:
    """UIDPLUS data of a COPY/MOVE: destination validity and (source, destination) UID pairs."""

    uid_validity: int
    pairs: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message given to APPEND."""

    content: bytes
    flags: frozenset[str]
    internal_date: datetime | None


def format_flags(flags: Iterable[str]) -> str:
    """The column form: unique flags, sorted, space separated (``\\Recent`` is never stored)."""
    text = " ".join(sorted({flag for flag in flags if flag and flag != RECENT}))
    if len(text) > MAX_FLAGS_LENGTH:
        raise FlagsTooLong("too many flags on one message")
    return text


def parse_flags(text: str) -> frozenset[str]:
    """The flags of a ``mailbox_entries.flags`` value."""
    return frozenset(text.split()) if text else frozenset()


def _folder(row: Row[Any]) -> FolderInfo:
    return FolderInfo(
        id=int(row.id),
        name=str(row.name),
        special_use=row.special_use,
        uid_validity=int(row.uid_validity),
        uid_next=int(row.uid_next),
        highest_modseq=int(row.highest_modseq),
        subscribed=bool(row.subscribed),
    )


_FLAG_TEXTS: dict[str, frozenset[str]] = {}


def _entry(row: Row[Any]) -> EntryState:
    uid, text, modseq, internal_date, message_id, blob_id, size = tuple(row)
    flags = _FLAG_TEXTS.get(text)
    if flags is None:
        flags = parse_flags(text)
        if len(_FLAG_TEXTS) < 10_000:
            _FLAG_TEXTS[text] = flags
    return EntryState(uid, flags, modseq, internal_date, message_id, blob_id, size)


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def check_folder_name(name: str) -> str:
    """A usable folder name, or :class:`InvalidFolderName`."""
    if not name or len(name) > MAX_FOLDER_NAME:
        raise InvalidFolderName("folder names are 1 to 200 characters")
    parts = name.split(DELIMITER)
    if any(not part or part.strip() != part for part in parts):
        raise InvalidFolderName("empty or padded level in the folder name")
    if any(ord(char) < 0x20 or char in "*%" for char in name):
        raise InvalidFolderName("control characters and wildcards are not allowed")
    return name


def is_inbox(name: str) -> bool:
    return name.upper() == INBOX


def canonical(name: str) -> str:
    """``INBOX`` is case-insensitive, also as the first level of a hierarchy (RFC 3501 §5.1)."""
    first, separator, rest = name.partition(DELIMITER)
    return INBOX + separator + rest if is_inbox(first) else name


_FOLDER_COLUMNS = (
    _FOLDERS.c.id,
    _FOLDERS.c.name,
    _FOLDERS.c.special_use,
    _FOLDERS.c.uid_validity,
    _FOLDERS.c.uid_next,
    _FOLDERS.c.highest_modseq,
    _FOLDERS.c.subscribed,
)
_ENTRY_COLUMNS = (
    _ENTRIES.c.uid,
    _ENTRIES.c.flags,
    _ENTRIES.c.modseq,
    _ENTRIES.c.internal_date,
    _ENTRIES.c.message_id,
    _MESSAGES.c.blob_id,
    _MESSAGES.c.size,
)
_FOLDER_BY_ID = (
    select(*_FOLDER_COLUMNS, _RECENT.c.first_recent_uid)
    .select_from(_FOLDERS.outerjoin(_RECENT, _RECENT.c.folder_id == _FOLDERS.c.id))
    .where(_FOLDERS.c.id == bindparam("folder"), _FOLDERS.c.account_id == bindparam("account"))
)
_ENTRIES_SINCE = (
    select(*_ENTRY_COLUMNS)
    .join(_MESSAGES, _MESSAGES.c.id == _ENTRIES.c.message_id)
    .where(_ENTRIES.c.folder_id == bindparam("folder"), _ENTRIES.c.modseq > bindparam("since"))
    .order_by(_ENTRIES.c.uid)
)
_FILED = (
    select(
        _ENTRIES.c.uid,
        _MESSAGES.c.id,
        _MESSAGES.c.blob_id,
        _CACHE.c.blob_id,
        _CACHE.c.envelope_blob_id,
    )
    .select_from(_ENTRIES)
    .join(_FOLDERS, _FOLDERS.c.id == _ENTRIES.c.folder_id)
    .join(_MESSAGES, _MESSAGES.c.id == _ENTRIES.c.message_id)
    .outerjoin(
        _CACHE,
        (_CACHE.c.message_id == _MESSAGES.c.id) & (_CACHE.c.version == STRUCTURE_VERSION),
    )
    .where(
        _FOLDERS.c.id == bindparam("folder"),
        _FOLDERS.c.account_id == bindparam("account"),
        _ENTRIES.c.uid >= bindparam("low"),
        _ENTRIES.c.uid <= bindparam("high"),
    )
)
_EXPUNGED_FILED = (
    select(
        _EXPUNGED.c.uid,
        _MESSAGES.c.id,
        _MESSAGES.c.blob_id,
        _CACHE.c.blob_id,
        _CACHE.c.envelope_blob_id,
    )
    .select_from(_EXPUNGED)
    .join(_FOLDERS, _FOLDERS.c.id == _EXPUNGED.c.folder_id)
    .join(_MESSAGES, _MESSAGES.c.id == _EXPUNGED.c.message_id)
    .outerjoin(
        _CACHE,
        (_CACHE.c.message_id == _MESSAGES.c.id) & (_CACHE.c.version == STRUCTURE_VERSION),
    )
    .where(
        _FOLDERS.c.id == bindparam("folder"),
        _FOLDERS.c.account_id == bindparam("account"),
        _EXPUNGED.c.uid.in_(bindparam("uids", expanding=True)),
    )
)
_BLOB_ROWS = select(
    _BLOBS.c.id, _BLOBS.c.kek_id, _BLOBS.c.wrapped_key, _BLOBS.c.size, _BLOBS.c.data
).where(_BLOBS.c.id.in_(bindparam("ids", expanding=True)))
_EXPUNGED_SINCE = select(_EXPUNGED.c.uid).where(
    _EXPUNGED.c.folder_id == bindparam("folder"), _EXPUNGED.c.modseq > bindparam("since")
)


class _BlobRow(NamedTuple):
    id: str
    kek_id: str
    wrapped_key: bytes
    size: int
    data: bytes | None


class _FetchedBlobs:
    """Just enough of a Session for :meth:`BlobStore.read`: ``get(BlobRow, id)``."""

    def __init__(self, rows: Iterable[Any]) -> None:
        self.rows = {str(row[0]): _BlobRow(row[0], row[1], row[2], row[3], row[4]) for row in rows}

    def get(self, _entity: Any, blob_id: str) -> _BlobRow | None:
        return self.rows.get(blob_id)


class ImapStore:
    """The mailbox operations of IMAP sessions, each one transaction, each scoped to an account."""

    def __init__(
        self,
        database: Database,
        blobs: BlobStore,
        queue: JobQueue,
        *,
        reporting_host: str,
        structure_cache_bytes: int = 64 * 1024 * 1024,
        content_cache_bytes: int = 32 * 1024 * 1024,
        content_cache_item_bytes: int = 256 * 1024,
        envelope_cache_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.database = database
        self.blobs = blobs
        self.queue = queue
        self.reporting_host = reporting_host
        self.structure_cache: ByteLRU[int, MessageStructure] = ByteLRU(structure_cache_bytes)
        """Decrypted structures of recently used messages, by message id (a message
        never changes). In memory only, charged :data:`STRUCTURE_CHARGE` times their
        JSON size (what the Python objects take, measured on the bench corpus)."""
        self.content_cache: ByteLRU[tuple[int, str], bytes] = ByteLRU(
            content_cache_bytes, max_item_bytes=content_cache_item_bytes
        )
        """Decrypted bytes of recently read small messages, by (message id, blob id)."""
        self.envelope_cache: ByteLRU[int, bytes] = ByteLRU(envelope_cache_bytes)
        """Rendered ENVELOPEs by message id (a listing of a folder whose structures are
        not held needs only these, issue 15)."""

    # -- login -------------------------------------------------------------------------

    def prepare_account(self, principal: Principal) -> None:
        """Make sure the account's standard folders exist (after a fresh sign-in)."""
        with self.database.transaction() as session:
            ensure_folders(session, principal.account_id)

    # -- folders -----------------------------------------------------------------------

    def list_folders(self, principal: Principal) -> list[FolderInfo]:
        """Every folder of the account, INBOX first."""
        with self.database.reading() as session:
            rows = session.execute(
                select(*_FOLDER_COLUMNS).where(_FOLDERS.c.account_id == principal.account_id)
            ).all()
        folders = [_folder(row) for row in rows]
        folders.sort(key=lambda folder: (folder.name != INBOX, folder.name))
        return folders

    def _by_name(self, session: Session, principal: Principal, name: str) -> FolderInfo:
        wanted = canonical(name)
        row = session.execute(
            select(*_FOLDER_COLUMNS).where(
                _FOLDERS.c.account_id == principal.account_id, _FOLDERS.c.name == wanted
            )
        ).first()
        if row is None:
            raise FolderNotFound(name)
        return _folder(row)

    def _lock(self, session: Session, principal: Principal, folder_id: int) -> FolderInfo:
        """The folder row, locked until commit (SQLite: the transaction already holds the lock)."""
        statement = select(*_FOLDER_COLUMNS).where(
            _FOLDERS.c.id == folder_id, _FOLDERS.c.account_id == principal.account_id
        )
        if session.get_bind().dialect.name == "postgresql":
            statement = statement.with_for_update()
        row = session.execute(statement).first()
        if row is None:
            raise FolderNotFound(str(folder_id))
        return _folder(row)

    def folder(self, principal: Principal, name: str) -> FolderInfo:
        """One folder by name (``INBOX`` in any case)."""
        with self.database.reading() as session:
            return self._by_name(session, principal, name)

    def status(self, principal: Principal, name: str) -> FolderStatus:
        """Message, unseen and recent counts of a folder."""
        with self.database.reading() as session:
            folder = self._by_name(session, principal, name)
            messages, unseen = session.execute(
                select(
                    func.count(),
                    func.count().filter(~_ENTRIES.c.flags.contains(SEEN, autoescape=True)),
                ).where(_ENTRIES.c.folder_id == folder.id)
            ).one()
            boundary = session.scalar(
                select(_RECENT.c.first_recent_uid).where(_RECENT.c.folder_id == folder.id)
            )
            recent = session.scalar(
                select(func.count()).where(
                    _ENTRIES.c.folder_id == folder.id, _ENTRIES.c.uid >= int(boundary or 1)
                )
            )
        return FolderStatus(folder, int(messages), int(unseen), int(recent or 0))

    def create_folder(self, principal: Principal, name: str) -> FolderInfo:
        """Create a folder and any missing superior levels; UIDVALIDITY never repeats.

        Created folders are not subscribed (RFC 3501 §6.3.3 leaves that to SUBSCRIBE;
        clients that want it subscribe themselves, as with Dovecot).
        A name ending with the delimiter (``CREATE Dossiers/``) declares that the client
        means to create names under it: the folder is created without it (RFC 3501
        §6.3.3), as Dovecot and clients expect.
        """
        if name.endswith(DELIMITER) and not name.endswith(DELIMITER * 2):
            name = name[: -len(DELIMITER)]
        name = canonical(check_folder_name(name))
        if name == INBOX:
            raise FolderExists(name)
        with self.database.transaction() as session:
            existing = {
                str(row.name)
                for row in session.execute(
                    select(_FOLDERS.c.name).where(_FOLDERS.c.account_id == principal.account_id)
                )
            }
            if name in existing:
                raise FolderExists(name)
            validity = self._validities(session, principal, len(name.split(DELIMITER)))
            parts = name.split(DELIMITER)
            created: FolderInfo | None = None
            for depth in range(1, len(parts) + 1):
                level = DELIMITER.join(parts[:depth])
                if level in existing:
                    continue
                folder_id: int = session.execute(
                    insert(_FOLDERS)
                    .values(
                        account_id=principal.account_id,
                        name=level,
                        special_use=None,
                        uid_validity=validity,
                        uid_next=1,
                        highest_modseq=1,
                        subscribed=False,
                    )
                    .returning(_FOLDERS.c.id)
                ).scalar_one()
                validity += 1
                created = FolderInfo(int(folder_id), level, None, validity - 1, 1, 1, False)
            assert created is not None
            return created

    def _validities(self, session: Session, principal: Principal, count: int) -> int:
        """The first of ``count`` fresh UIDVALIDITY values of the account, never handed out before.

        A folder incarnation's UIDVALIDITY comes from the account's counter
        (``imap_uid_validity``, locked until commit), not from the clock alone:
        DELETE and CREATE of a name within one second must not give the new
        folder its predecessor's UIDVALIDITY, or clients would take the new
        folder's UIDs for the old messages' (RFC 3501 §2.3.1.1). The clock is
        a floor only so that values keep growing across a database restore.
        """
        account = principal.account_id
        session.execute(
            upsert_insert(session, _VALIDITY)
            .values(account_id=account, last_value=0)
            .on_conflict_do_nothing(index_elements=["account_id"])
        )
        statement = select(_VALIDITY.c.last_value).where(_VALIDITY.c.account_id == account)
        if session.get_bind().dialect.name == "postgresql":
            statement = statement.with_for_update()
        last = int(session.scalar(statement) or 0)
        highest = int(
            session.scalar(
                select(func.max(_FOLDERS.c.uid_validity)).where(_FOLDERS.c.account_id == account)
            )
            or 0
        )
        first = max(last + 1, highest + 1, int(time.time()))
        if first + count > MAX_UID_VALIDITY:
            raise InvalidFolderName("no UIDVALIDITY left for this account")
        session.execute(
            update(_VALIDITY)
            .where(_VALIDITY.c.account_id == account)
            .values(last_value=first + count - 1)
        )
        return first

    def delete_folder(self, principal: Principal, name: str) -> None:
        """Delete a folder and its entries (the stored messages stay: retention, I2)."""
        with self.database.transaction() as session:
            folder = self._by_name(session, principal, name)
            if folder.name == INBOX or folder.special_use:
                raise FolderProtected(name)
            children = session.scalar(
                select(func.count()).where(
                    _FOLDERS.c.account_id == principal.account_id,
                    _FOLDERS.c.name.startswith(folder.name + DELIMITER, autoescape=True),
                )
            )
            if children:
                raise FolderHasChildren(name)
            session.execute(delete(_FOLDERS).where(_FOLDERS.c.id == folder.id))

    def rename_folder(self, principal: Principal, before: str, after: str) -> None:
        """Rename a folder and its inferiors (INBOX and special-use folders keep their names)."""
        after = canonical(check_folder_name(after))
        with self.database.transaction() as session:
            folder = self._by_name(session, principal, before)
            if folder.name == INBOX or folder.special_use:
                raise FolderProtected(before)
            if is_inbox(after):
                raise FolderExists(after)
            rows = session.execute(
                select(_FOLDERS.c.id, _FOLDERS.c.name).where(
                    _FOLDERS.c.account_id == principal.account_id
                )
            ).all()
            names = {str(row.name) for row in rows}
            moving = [
                (int(row.id), str(row.name))
                for row in rows
                if row.name == folder.name or str(row.name).startswith(folder.name + DELIMITER)
            ]
            renamed = {old: after + old[len(folder.name) :] for _, old in moving}
            if any(new in names and new not in renamed for new in renamed.values()):
                raise FolderExists(after)
            for folder_id, old in moving:
                session.execute(
                    update(_FOLDERS).where(_FOLDERS.c.id == folder_id).values(name=renamed[old])
                )
            parts = after.split(DELIMITER)
            for depth in range(1, len(parts)):
                level = DELIMITER.join(parts[:depth])
                if level not in names:
                    session.execute(
                        insert(_FOLDERS).values(
                            account_id=principal.account_id,
                            name=level,
                            special_use=None,
                            uid_validity=self._validities(session, principal, 1),
                            uid_next=1,
                            highest_modseq=1,
                            subscribed=True,
                        )
                    )
                    names.add(level)

    # -- selected folder ---------------------------------------------------------------

    def changes(
        self,
        principal: Principal,
        folder_id: int,
        since: int | None,
        *,
        uid_validity: int | None = None,
    ) -> FolderChanges:
        """Entries changed and UIDs expunged since modseq ``since`` (everything when None).

        The folder row is read first: under READ COMMITTED every later query
        sees at least what its ``highest_modseq`` covers, so nothing is missed.
        With ``uid_validity``, a folder row of another incarnation (the folder
        was deleted and its id given to a new one) is :class:`FolderNotFound`.
        """
        with self.database.reading() as session:
            return self._changes(session, principal, folder_id, since, uid_validity)

    def _changes(
        self,
        session: Session,
        principal: Principal,
        folder_id: int,
        since: int | None,
        uid_validity: int | None = None,
    ) -> FolderChanges:
        row = session.execute(
            _FOLDER_BY_ID, {"folder": folder_id, "account": principal.account_id}
        ).first()
        if row is None:
            raise FolderNotFound(str(folder_id))
        folder = _folder(row)
        if uid_validity is not None and folder.uid_validity != uid_validity:
            raise FolderNotFound(str(folder_id))
        floor = since if since is not None else -1
        connection = session.connection()
        entries = [
            _entry(item)
            for item in connection.execute(_ENTRIES_SINCE, {"folder": folder.id, "since": floor})
        ]
        expunged: list[int] = []
        if since is not None and since < folder.highest_modseq:
            expunged = [
                int(item.uid)
                for item in connection.execute(
                    _EXPUNGED_SINCE, {"folder": folder.id, "since": since}
                )
            ]
        return FolderChanges(folder, entries, expunged, since, int(row.first_recent_uid or 1))

    def _claim(self, session: Session, folder_id: int, upto: int) -> int | None:
        """Move the folder's ``\\Recent`` boundary to ``upto``; the old one if it was lower.

        The boundary row is locked until commit (SQLite: the write lock), so of
        sessions claiming at once exactly one gets each UID (RFC 3501 §2.3.2:
        \\Recent in one session only).
        """
        session.execute(
            upsert_insert(session, _RECENT)
            .values(folder_id=folder_id, first_recent_uid=1)
            .on_conflict_do_nothing(index_elements=["folder_id"])
        )
        statement = select(_RECENT.c.first_recent_uid).where(_RECENT.c.folder_id == folder_id)
        if session.get_bind().dialect.name == "postgresql":
            statement = statement.with_for_update()
        current = int(session.scalar(statement) or 1)
        if current >= upto:
            return None
        session.execute(
            update(_RECENT).where(_RECENT.c.folder_id == folder_id).values(first_recent_uid=upto)
        )
        return current

    def claim_recent(
        self, principal: Principal, folder_id: int, uid_validity: int, upto: int
    ) -> int | None:
        """Claim the unclaimed UIDs below ``upto`` for one read-write session.

        Returns where this session's new ``\\Recent`` messages start, or None when
        another session (of any process) claimed them first. A message appended or
        copied into a folder that sessions have selected is thus recent in exactly
        one of them, the first to notice it (RFC 3501 §2.3.2).

        A read first: when every session of a folder learns of a new message at
        once, all but the first find it claimed without queueing for the write
        lock (under imaptest stress these claims were half the time spent
        waiting for SQLite's lock).
        """
        with self._reading() as connection:
            current = connection.execute(
                select(_RECENT.c.first_recent_uid)
                .select_from(_RECENT.join(_FOLDERS, _FOLDERS.c.id == _RECENT.c.folder_id))
                .where(
                    _RECENT.c.folder_id == folder_id,
                    _FOLDERS.c.account_id == principal.account_id,
                    _FOLDERS.c.uid_validity == uid_validity,
                )
            ).scalar()
        if current is not None and int(current) >= upto:
            return None
        with self.database.transaction() as session:
            folder = self._lock(session, principal, folder_id)
            if folder.uid_validity != uid_validity:
                return None
            return self._claim(session, folder.id, upto)

    def select(
        self,
        principal: Principal,
        name: str,
        *,
        claim_recent: bool,
        known: tuple[int, int, int] | None = None,
    ) -> Selection:
        """The folder for a SELECT; with ``claim_recent`` this session takes ``\\Recent``.

        ``known`` is ``(folder id, UIDVALIDITY, modseq)`` of a copy of the folder
        the caller already holds: if the name still names that folder incarnation
        (same id *and* UIDVALIDITY: a deleted folder's id may be given to a new
        one), only the changes since that modseq are returned
        (``Selection.changes.since``).
        """
        with self.database.reading() as session:
            folder = self._by_name(session, principal, name)
            same = known is not None and (known[0], known[1]) == (folder.id, folder.uid_validity)
            since = known[2] if known is not None and same else None
            changes = self._changes(session, principal, folder.id, since)
        first_recent = changes.recent_from
        if first_recent >= changes.folder.uid_next:
            return Selection(changes, None)
        if not claim_recent:
            # EXAMINE shows what nobody claimed yet as recent, and leaves it so.
            return Selection(changes, first_recent)
        with self.database.transaction() as session:
            self._lock(session, principal, folder.id)
            claimed = self._claim(session, folder.id, changes.folder.uid_next)
        return Selection(changes, claimed)

    def _entries_for(
        self, session: Session, folder_id: int, uids: Sequence[int], *, with_direction: bool = False
    ) -> list[Row[Any]]:
        if not uids:
            return []
        columns: list[Any] = [_ENTRIES.c.id, *_ENTRY_COLUMNS]
        if with_direction:
            columns += [_MESSAGES.c.direction, _MESSAGES.c.envelope_from]
        ordered = sorted(set(uids))
        rows = session.execute(
            select(*columns)
            .join(_MESSAGES, _MESSAGES.c.id == _ENTRIES.c.message_id)
            .where(
                _ENTRIES.c.folder_id == folder_id,
                _ENTRIES.c.uid >= ordered[0],
                _ENTRIES.c.uid <= ordered[-1],
            )
            .order_by(_ENTRIES.c.uid)
        ).all()
        wanted = set(ordered)
        return [row for row in rows if int(row.uid) in wanted]

    def store_flags(
        self,
        principal: Principal,
        folder_id: int,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: str,
        *,
        unchanged_since: int | None = None,
    ) -> StoreOutcome:
        """STORE: ``mode`` is ``add``, ``remove`` or ``replace``; one new modseq for the batch.

        The first ``\\Seen`` of a patient's inbound message queues its read
        receipt (G2) in this same transaction.
        """
        flags = frozenset(flag for flag in flags if flag != RECENT)
        with self.database.transaction() as session:
            folder = self._lock(session, principal, folder_id)
            rows = self._entries_for(session, folder.id, uids, with_direction=True)
            modseq = folder.highest_modseq + 1
            changed: list[EntryState] = []
            modified: list[int] = []
            updates: list[dict[str, Any]] = []
            newly_seen: list[Row[Any]] = []
            for row in rows:
                before = parse_flags(row.flags)
                if unchanged_since is not None and int(row.modseq) > unchanged_since:
                    modified.append(int(row.uid))
                    continue
                if mode == "add":
                    after = before | flags
                elif mode == "remove":
                    after = before - flags
                else:
                    after = flags
                if after == before:
                    continue
                updates.append({"entry": row.id, "flags": format_flags(after), "modseq": modseq})
                changed.append(
                    EntryState(
                        uid=int(row.uid),
                        flags=after,
                        modseq=modseq,
                        internal_date=row.internal_date,
                        message_id=int(row.message_id),
                        blob_id=str(row.blob_id),
                        size=int(row.size),
                    )
                )
                if SEEN in after and SEEN not in before:
                    newly_seen.append(row)
            if updates:
                session.connection().execute(
                    update(_ENTRIES)
                    .where(_ENTRIES.c.id == bindparam("entry"))
                    .values(flags=bindparam("flags"), modseq=bindparam("modseq")),
                    updates,
                )
                session.execute(
                    update(_FOLDERS).where(_FOLDERS.c.id == folder.id).values(highest_modseq=modseq)
                )
            receipts = self._receipts(session, principal, newly_seen)
            highest = modseq if updates else folder.highest_modseq
        return StoreOutcome(changed, modified, highest, receipts)

    def _receipts(self, session: Session, principal: Principal, rows: list[Row[Any]]) -> int:
        if principal.kind != AccountKind.PATIENT.value:
            return 0
        # From other operators (inbound) or from professionals hosted here (submitted);
        # never about what the patient sent themselves.
        inbound = [
            row
            for row in rows
            if row.direction in ("inbound", "submitted")
            and row.envelope_from
            and str(row.envelope_from).lower() != principal.address.lower()
        ]
        if not inbound:
            return 0
        queued = 0
        contents = self._read_blobs(session, [(int(r.message_id), str(r.blob_id)) for r in inbound])
        for row in inbound:
            job = queue_displayed_receipt(
                session,
                self.blobs,
                self.queue,
                ReadMessage(
                    message_id=int(row.message_id),
                    account_id=principal.account_id,
                    account_address=principal.address,
                    envelope_from=str(row.envelope_from),
                    raw=contents[int(row.message_id)],
                ),
                reporting_host=self.reporting_host,
            )
            queued += job is not None
        return queued

    def expunge(
        self, principal: Principal, folder_id: int, uids: Sequence[int] | None
    ) -> list[int]:
        """Remove the ``\\Deleted`` entries (of ``uids`` when given); return their UIDs."""
        with self.database.transaction() as session:
            folder = self._lock(session, principal, folder_id)
            statement = select(
                _ENTRIES.c.id, _ENTRIES.c.uid, _ENTRIES.c.flags, _ENTRIES.c.message_id
            ).where(
                _ENTRIES.c.folder_id == folder.id,
                _ENTRIES.c.flags.contains(DELETED, autoescape=True),
            )
            wanted = set(uids) if uids is not None else None
            doomed = [
                (int(row.id), int(row.uid), int(row.message_id))
                for row in session.execute(statement)
                if DELETED in parse_flags(row.flags) and (wanted is None or int(row.uid) in wanted)
            ]
            if doomed:
                self._remove(session, folder, doomed)
        return sorted(uid for _, uid, _ in doomed)

    def _remove(
        self, session: Session, folder: FolderInfo, doomed: list[tuple[int, int, int]]
    ) -> int:
        """Delete entries ``(entry id, uid, message id)`` at the folder's next modseq.

        The ``imap_expunged`` row keeps the message id: a session that still shows
        the UID (its FETCH was resolved before the expunge, or EXPUNGE responses are
        held back during a FETCH by sequence number, RFC 3501 §7.4.1) can still be
        given that message's data instead of NIL (issue 15).
        """
        modseq = folder.highest_modseq + 1
        for chunk in _chunks([entry_id for entry_id, _, _ in doomed]):
            session.execute(delete(_ENTRIES).where(_ENTRIES.c.id.in_(chunk)))
        session.connection().execute(
            insert(_EXPUNGED),
            [
                {"folder_id": folder.id, "uid": uid, "modseq": modseq, "message_id": message_id}
                for _, uid, message_id in doomed
            ],
        )
        session.execute(
            update(_FOLDERS).where(_FOLDERS.c.id == folder.id).values(highest_modseq=modseq)
        )
        return modseq

    def copy(
        self,
        principal: Principal,
        folder_id: int,
        uids: Sequence[int],
        destination: str,
        *,
        move: bool = False,
    ) -> CopyOutcome:
        """COPY or MOVE messages to another folder of the same account (flags and dates kept)."""
        with self.database.transaction() as session:
            target_id = self._by_name(session, principal, destination).id
            # Lock in id order: two MOVEs in opposite directions never deadlock.
            for locked in sorted({folder_id, target_id}):
                self._lock(session, principal, locked)
            source = self._lock(session, principal, folder_id)
            target = self._lock(session, principal, target_id)
            rows = self._entries_for(session, source.id, uids)
            if not rows:
                return CopyOutcome(target.uid_validity, [])
            first_uid = target.uid_next
            modseq = target.highest_modseq + 1
            session.execute(
                update(_FOLDERS)
                .where(_FOLDERS.c.id == target.id)
                .values(uid_next=first_uid + len(rows), highest_modseq=modseq)
            )
            pairs: list[tuple[int, int]] = []
            values: list[dict[str, Any]] = []
            for offset, row in enumerate(rows):
                pairs.append((int(row.uid), first_uid + offset))
                values.append(
                    {
                        "folder_id": target.id,
                        "message_id": int(row.message_id),
                        "uid": first_uid + offset,
                        "flags": row.flags,
                        "modseq": modseq,
                        "internal_date": row.internal_date,
                    }
                )
            session.connection().execute(insert(_ENTRIES), values)
            if move:
                if source.id == target.id:
                    source = self._lock(session, principal, source.id)
                self._remove(
                    session,
                    source,
                    [(int(row.id), int(row.uid), int(row.message_id)) for row in rows],
                )
        return CopyOutcome(target.uid_validity, pairs)

    def append(
        self, principal: Principal, name: str, messages: Sequence[NewMessage]
    ) -> CopyOutcome:
        """APPEND: store each message encrypted, with its structure cache, at the folder's end.

        A part holding NUL octets (a ``~{n}`` literal8) is stored base64-encoded
        (:func:`~caducee.mailboxes.imap_binary.seven_bit_parts`, RFC 3516 §4.3).
        """
        prepared = []
        for message in messages:
            content = seven_bit_parts(message.content)
            structure = parse_message(content)
            prepared.append(
                (
                    message,
                    len(content),
                    structure,
                    self.blobs.seal(content),
                    seal_parsed(self.blobs, structure),
                )
            )
        with self.database.transaction() as session:
            folder = self._by_name(session, principal, name)
            folder = self._lock(session, principal, folder.id)
            first_uid = folder.uid_next
            modseq = folder.highest_modseq + 1
            session.execute(
                update(_FOLDERS)
                .where(_FOLDERS.c.id == folder.id)
                .values(uid_next=first_uid + len(prepared), highest_modseq=modseq)
            )
            pairs: list[tuple[int, int]] = []
            now = utcnow()
            for offset, (message, size, structure, sealed, sealed_structure) in enumerate(prepared):
                blob_id = self.blobs.record(session, sealed)
                senders = structure.envelope.from_
                header_from = (
                    f"{senders[0][2]}@{senders[0][3]}".lower()[:320]
                    if senders and senders[0][2] and senders[0][3]
                    else None
                )
                message_id: int = session.execute(
                    insert(_MESSAGES)
                    .values(
                        blob_id=blob_id,
                        size=size,
                        received_at=now,
                        direction=APPENDED,
                        envelope_from="",
                        header_from=header_from,
                        message_id_header=(structure.envelope.message_id or None),
                        dkim_result="none",
                        end_of_exchange=False,
                        mss_problems=None,
                        dedupe_key=None,
                    )
                    .returning(_MESSAGES.c.id)
                ).scalar_one()
                record_structure(session, self.blobs, message_id, sealed_structure)
                uid = first_uid + offset
                session.execute(
                    insert(_ENTRIES).values(
                        folder_id=folder.id,
                        message_id=message_id,
                        uid=uid,
                        flags=format_flags(message.flags),
                        modseq=modseq,
                        internal_date=message.internal_date or now,
                    )
                )
                pairs.append((0, uid))
        return CopyOutcome(folder.uid_validity, pairs)

    # -- content -----------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A Core connection for lookups, rolled back at the end.

        The FETCH paths read through it rather than through :meth:`Database.reading`:
        an ORM session's set-up, connection bookkeeping and rollback cost more than
        the two indexed queries of a one-message FETCH (issue 15, py-spy under
        imaptest and bench/imap). Same engine, so the same isolation and column
        sealing.
        """
        with self.database.read_engine.connect() as connection:
            try:
                yield connection
            finally:
                connection.rollback()

    def _read_blobs(
        self, session: Session | Connection, wanted: Sequence[tuple[int, str]]
    ) -> dict[int, bytes]:
        """Decrypt many blobs: one query fetches their rows, then each is decrypted in memory.

        :meth:`BlobStore.read` looks its row up with ``session.get``: one query
        (and one ORM object) per blob. It is given a stand-in session that
        answers from the rows fetched here; decryption and its integrity checks
        are still BlobStore's own.
        """
        contents: dict[int, bytes] = {}
        connection = session if isinstance(session, Connection) else session.connection()
        for chunk in _chunks(list(wanted)):
            rows = _FetchedBlobs(
                connection.execute(_BLOB_ROWS, {"ids": [blob_id for _, blob_id in chunk]})
            )
            for key, blob_id in chunk:
                contents[key] = self.blobs.read(cast(Session, rows), blob_id)
        return contents

    def _filed(
        self,
        session: Session | Connection,
        principal: Principal,
        folder_id: int,
        uids: Sequence[int],
    ) -> dict[int, Filed]:
        """UID → (message id, blob id, structure blob id, ENVELOPE blob id) for UIDs of a folder.

        This is where isolation holds for content: the folder must be the
        account's, or nothing comes back. One range scan of the folder's
        ``(folder_id, uid)`` index per batch, not a lookup per message.
        """
        filed: dict[int, Filed] = {}
        wanted = sorted(set(uids))
        connection = session if isinstance(session, Connection) else session.connection()
        for chunk in _chunks(wanted):
            rows = connection.execute(
                _FILED,
                {
                    "folder": folder_id,
                    "account": principal.account_id,
                    "low": chunk[0],
                    "high": chunk[-1],
                },
            )
            members = set(chunk)
            for uid, message_id, blob_id, cache_id, envelope_id in cast(Any, rows):
                if uid in members:
                    filed[int(uid)] = (int(message_id), str(blob_id), cache_id, envelope_id)
        gone = [uid for uid in wanted if uid not in filed]
        for chunk in _chunks(gone):
            # Expunged since the session resolved them: the message itself stays
            # (retention, I2) and the expunge row names it, for this folder only.
            rows = connection.execute(
                _EXPUNGED_FILED,
                {"folder": folder_id, "account": principal.account_id, "uids": list(chunk)},
            )
            for uid, message_id, blob_id, cache_id, envelope_id in cast(Any, rows):
                filed.setdefault(int(uid), (int(message_id), str(blob_id), cache_id, envelope_id))
        return filed

    def contents(
        self, principal: Principal, folder_id: int, uids: Sequence[int], *, keep: bool = True
    ) -> dict[int, bytes]:
        """Message bytes by UID, for UIDs of one of the account's folders.

        Small messages come from :attr:`content_cache` (the folder check still runs:
        the cache saves the blob query and the decryption, not the check), and go to it
        unless ``keep`` is false: a scan of a whole folder (SEARCH TEXT) would push out
        the messages a client opens again and keep none for long.
        """
        with self._reading() as connection:
            filed = self._filed(connection, principal, folder_id, uids)
            keys = {uid: (entry[0], entry[1]) for uid, entry in filed.items()}
            known = self.content_cache.get_many(keys.values())
            contents = {uid: known[key] for uid, key in keys.items() if key in known}
            read = self._read_blobs(
                connection, [(uid, key[1]) for uid, key in keys.items() if key not in known]
            )
        if keep:
            for uid, data in read.items():
                self.content_cache.put(keys[uid], data, len(data))
        contents.update(read)
        return contents

    def cached_envelopes(self, message_ids: Iterable[int]) -> dict[int, bytes]:
        """The rendered ENVELOPEs this process holds for ``message_ids``, no query.

        As :meth:`cached`, for the messages of a session's own view; a structure
        held (and rendered once) serves too.
        """
        wanted = list(message_ids)
        found = self.envelope_cache.get_many(wanted)
        missing = [message_id for message_id in wanted if message_id not in found]
        if missing:
            for message_id, structure in self.structure_cache.get_many(missing).items():
                rendered = structure.memo.get("envelope")
                if rendered is not None:
                    found[message_id] = rendered
        return found

    def cached(
        self, messages: Iterable[tuple[int, str]], *, structure: bool, content: bool
    ) -> dict[int, tuple[MessageStructure | None, bytes | None]]:
        """What this process holds decrypted for ``(message id, blob id)`` pairs, no query.

        For the messages of a session's own view (read from this account's folders
        with the account check): a FETCH of messages whose structure and bytes are
        held costs no thread hop, query or decryption (issue 15). A message is in the
        answer only if everything asked for is held.
        """
        wanted = list(messages)
        structures = self.structure_cache.get_many(m for m, _ in wanted) if structure else {}
        contents = self.content_cache.get_many(wanted) if content else {}
        found: dict[int, tuple[MessageStructure | None, bytes | None]] = {}
        for message_id, blob_id in wanted:
            held = structures.get(message_id)
            data = contents.get((message_id, blob_id))
            if (held is None and structure) or (data is None and content):
                continue
            found[message_id] = (held, data)
        return found

    def structures(
        self, principal: Principal, folder_id: int, uids: Sequence[int], *, build: bool = True
    ) -> dict[int, MessageStructure]:
        """Parsed structures by UID; missing or outdated caches are built and stored.

        With ``build=False`` nothing is written: UIDs without a usable cache are left
        out (for callers that must not wait for the write lock).
        """
        with self._reading() as session:
            filed = self._filed(session, principal, folder_id, uids)
            by_message = self.structure_cache.get_many(m for m, _, _, _ in filed.values())
            cached = [
                (message_id, cache_id)
                for message_id, _, cache_id, _ in filed.values()
                if cache_id is not None and message_id not in by_message
            ]
            raw = self._read_blobs(session, cached)
        loaded: dict[int, MessageStructure] = {}
        for message_id, data in raw.items():
            loaded[message_id] = structure = MessageStructure.from_json(data)
            self.structure_cache.put(message_id, structure, STRUCTURE_CHARGE * len(data))
        missing = [
            (message_id, blob_id)
            for message_id, blob_id, _, _ in filed.values()
            if message_id not in by_message and message_id not in loaded
        ]
        for chunk in _chunks(missing if build else [], 100):
            loaded.update(self._build_structures(chunk))
        by_message.update(loaded)
        return {
            uid: by_message[message_id]
            for uid, (message_id, _, _, _) in filed.items()
            if message_id in by_message
        }

    def envelopes(
        self, principal: Principal, folder_id: int, uids: Sequence[int], *, build: bool = True
    ) -> dict[int, bytes]:
        """Rendered ENVELOPEs by UID, for UIDs of one of the account's folders.

        From the ENVELOPE record sealed at delivery (one small decryption, no parse:
        issue 15, the cold listing); messages without one (stored before migration
        0027, or by a path that did not seal it) take their structure
        (:meth:`structures`, ``build`` as there). Same folder check as the others.
        """
        with self._reading() as connection:
            filed = self._filed(connection, principal, folder_id, uids)
            held = self.envelope_cache.get_many(entry[0] for entry in filed.values())
            sealed = [
                (entry[0], entry[3])
                for entry in filed.values()
                if entry[3] is not None and entry[0] not in held
            ]
            raw = self._read_blobs(connection, sealed)
        for message_id, data in raw.items():
            rendered = envelope_from_record(data)
            if rendered is not None:
                held[message_id] = rendered
                self.envelope_cache.put(message_id, rendered, len(rendered))
        rest = [uid for uid, entry in filed.items() if entry[0] not in held]
        if rest:
            for uid, structure in self.structures(principal, folder_id, rest, build=build).items():
                rendered = structure.memo.get("envelope")
                if rendered is None:
                    rendered = structure.memo["envelope"] = wire_envelope(structure.envelope)
                held[filed[uid][0]] = rendered
        return {uid: held[entry[0]] for uid, entry in filed.items() if entry[0] in held}

    def _build_structures(self, wanted: Sequence[tuple[int, str]]) -> dict[int, MessageStructure]:
        with self._reading() as connection:
            contents = self._read_blobs(connection, wanted)
        built = {message_id: parse_message(data) for message_id, data in contents.items()}
        sealed = {}
        for message_id, structure in built.items():
            data = structure.to_json()
            # The ENVELOPE record too (as delivery writes it): later listings read only that.
            envelope = self.blobs.seal(envelope_record(structure))
            sealed[message_id] = (self.blobs.seal(data), envelope)
            self.structure_cache.put(message_id, structure, STRUCTURE_CHARGE * len(data))
        now = utcnow()
        with self.database.transaction() as session:
            rows = [
                {
                    "message_id": message_id,
                    "blob_id": self.blobs.record(session, blob),
                    "version": STRUCTURE_VERSION,
                    "created_at": now,
                    "envelope_blob_id": self.blobs.record(session, envelope),
                }
                for message_id, (blob, envelope) in sealed.items()
            ]
            if rows:
                statement = upsert_insert(session, _CACHE)
                session.connection().execute(
                    statement.on_conflict_do_update(
                        index_elements=["message_id"],
                        set_={
                            "blob_id": statement.excluded.blob_id,
                            "version": statement.excluded.version,
                            "created_at": statement.excluded.created_at,
                            "envelope_blob_id": statement.excluded.envelope_blob_id,
                        },
                    ),
                    rows,
                )
        return built

    # -- change detection --------------------------------------------------------------

    def folder_versions(self, account_ids: Sequence[int]) -> dict[int, tuple[tuple[int, ...], ...]]:
        """A cheap fingerprint of each account's folders (id, uid_next, highest_modseq)."""
        versions: dict[int, list[tuple[int, ...]]] = {account: [] for account in account_ids}
        with self.database.reading() as session:
            for chunk in _chunks(list(account_ids)):
                for row in session.execute(
                    select(
                        _FOLDERS.c.account_id,
                        _FOLDERS.c.id,
                        _FOLDERS.c.uid_next,
                        _FOLDERS.c.highest_modseq,
                    ).where(_FOLDERS.c.account_id.in_(chunk))
                ):
                    versions[int(row.account_id)].append(
                        (int(row.id), int(row.uid_next), int(row.highest_modseq))
                    )
        return {account: tuple(sorted(items)) for account, items in versions.items()}
