"""What the webmail shows of a patient's INBOX: conversations, messages, attachments (H2, D1).

Reads go through the same tables and store as IMAP (:class:`~caducee.mailboxes.imap_store.
ImapStore`): the parsed structures it caches (encrypted, J1) give the list its subjects and
attachment markers without decrypting whole messages, and marking a message read is the
store's ``\\Seen`` — which queues the read receipt (G2) once, bumps the folder's modseq so
IMAP sessions see the change, exactly as an IMAP client's read would.

Every query names the signed-in account: a conversation id or an entry id of another
account finds nothing, and the page answers 404 (no existence oracle).

Conversations (D1) are the ``conversations`` rows of the patient; an INBOX message that
belongs to none (a report, a notice) is a conversation of its own. A copy the filing job
made with withheld parts (E5) belongs to the conversation of the message it copies.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, and_, func, select, text, union
from sqlalchemy.orm import Session

from caducee.directory.service import find_by_address
from caducee.mailboxes.accounts.identity.principal import Principal
from caducee.mailboxes.delivery import conversation_of
from caducee.mailboxes.drafts import DraftEntry, list_drafts
from caducee.mailboxes.imap_store import SEEN, ImapStore, NewMessage, parse_flags
from caducee.mailboxes.imap_structure import MessageStructure, decode_words, walk
from caducee.mailboxes.models import (
    INBOX,
    Conversation,
    ConversationMessage,
    Folder,
    HeldDelivery,
    KnownProfessional,
    MailboxEntry,
    StoredMessage,
)
from caducee.mailboxes.reports.receipts import ReadMessage, queue_displayed_receipt

SENT = "Sent"
PAGE_SIZE = 20
MAX_TEXT_CHARS = 200_000
MAX_GROUP_ENTRIES = 200
"""Bounded work per list line: the markers of a longer conversation come from its newest."""
MAX_UID_GAP = 256
"""UIDs further apart than this are asked for in separate batches (:meth:`Mailbox._structures`)."""
_ENTRY_COLUMNS = (
    "id",
    "uid",
    "flags",
    "internal_date",
    "message_id",
    "envelope_from",
    "direction",
    "conversation_id",
)
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,990}>")
"""A ``Message-ID`` in ``In-Reply-To`` (the bound of a header line)."""


@dataclass(frozen=True)
class EntryRow:
    """One INBOX entry of the account, with the conversation it belongs to."""

    entry_id: int
    folder_id: int
    uid: int
    flags: frozenset[str]
    internal_date: datetime
    message_id: int
    envelope_from: str
    direction: str
    conversation_id: int | None
    mine: bool = False
    """In the patient's Sent folder: a message the patient sent (a reply from the webmail)."""

    @property
    def unread(self) -> bool:
        return SEEN not in self.flags and not self.mine


@dataclass
class ListedConversation:
    """One line of the conversation list."""

    href: str
    correspondent: str
    subject: str
    date: datetime
    unread: bool
    attachment: bool
    count: int
    draft: bool = False
    """The patient saved a reply draft in this conversation (H2's draft marker)."""


@dataclass(frozen=True)
class _Group:
    """One line of the list as the database pages it: a conversation (key > 0) or an entry."""

    key: int
    """The conversation id, or minus the entry id of a lone message."""
    oldest: int
    """The UID of its oldest INBOX entry: the subject shown is that message's."""
    count: int


@dataclass(frozen=True)
class Attachment:
    """An attached file of a message, by its position among the message's files."""

    index: int
    filename: str
    content_type: str
    size: int


@dataclass
class ShownMessage:
    """A message as the conversation page shows it."""

    entry_id: int
    sender: str
    subject: str
    date: datetime
    text: str | None
    has_html: bool
    attachments: list[Attachment] = field(default_factory=list)
    message_id_header: str | None = None
    references: str | None = None
    mine: bool = False


@dataclass(frozen=True)
class ReplyTarget:
    """Who a reply in this conversation would go to, and what it answers."""

    professional_address: str
    reply_address: str | None
    ended: bool
    in_reply_to: str | None
    references: str | None
    subject: str


class Mailbox:
    """The webmail's reading side for one gateway process."""

    def __init__(self, store: ImapStore) -> None:
        self.store = store
        self.database = store.database
        self.blobs = store.blobs

    # -- the INBOX and its conversations ---------------------------------------------------

    def _folder(self, session: Session, account_id: int, name: str) -> int | None:
        return session.scalar(
            select(Folder.id).where(Folder.account_id == account_id, Folder.name == name)
        )

    def _inbox(self, session: Session, account_id: int) -> int | None:
        return self._folder(session, account_id, INBOX)

    def _member(self, account_id: int) -> ScalarSelect[Any]:
        """The conversation of the INBOX entry in the statement (None for a lone message, D1).

        The conversation of the message the entry shows: the message itself, or the original
        a released copy with withheld parts stands for (E5, ``held_deliveries``). Correlated to
        ``mailbox_entries`` and ``held_deliveries``; one index lookup per entry (0023). The
        lowest id when a message belongs to two of the patient's conversations.
        """
        original = func.coalesce(HeldDelivery.message_id, MailboxEntry.message_id)
        return (
            select(func.min(ConversationMessage.conversation_id))
            .join(Conversation, Conversation.id == ConversationMessage.conversation_id)
            .where(
                ConversationMessage.message_id == original,
                Conversation.patient_account_id == account_id,
            )
            .scalar_subquery()
        )

    def _held_join(self, account_id: int) -> ColumnElement[bool]:
        return and_(
            HeldDelivery.copy_message_id == MailboxEntry.message_id,
            HeldDelivery.account_id == account_id,
        )

    def _entries(
        self,
        session: Session,
        account_id: int,
        *,
        conversation_ids: Sequence[int] = (),
        entry_ids: Sequence[int] = (),
        per_conversation: int | None = None,
    ) -> list[EntryRow]:
        """INBOX entries of the account, newest first: of some conversations, or some entries.

        Only those entries are read (never the whole INBOX): a conversation's are found from
        its members (``conversation_messages``, and the released copies of held members, E5),
        then kept when their conversation is that one; ``per_conversation`` keeps only the
        newest of each.
        """
        if not conversation_ids and not entry_ids:
            return []
        folder_id = self._inbox(session, account_id)
        if folder_id is None:
            return []
        member = self._member(account_id)
        statement = (
            select(
                MailboxEntry.id,
                MailboxEntry.uid,
                MailboxEntry.flags,
                MailboxEntry.internal_date,
                MailboxEntry.message_id,
                StoredMessage.envelope_from,
                StoredMessage.direction,
                member.label("conversation_id"),
            )
            .join(StoredMessage, StoredMessage.id == MailboxEntry.message_id)
            .outerjoin(HeldDelivery, self._held_join(account_id))
            .order_by(MailboxEntry.uid.desc())
        )
        if conversation_ids:
            wanted = list(conversation_ids)
            members = select(ConversationMessage.message_id).where(
                ConversationMessage.conversation_id.in_(wanted),
                ConversationMessage.message_id.is_not(None),
            )
            copies = select(HeldDelivery.copy_message_id).where(
                HeldDelivery.account_id == account_id,
                HeldDelivery.copy_message_id.is_not(None),
                HeldDelivery.message_id.in_(members),
            )
            # The plan must start from these messages (index on mailbox_entries.message_id),
            # never from the folder: one IN over a union (an OR of two INs scans), and the
            # folder compared as ``folder_id + 0``, which no index serves — else SQLite, with
            # no statistics, walks the whole folder by (folder_id, uid) to save the sort.
            statement = statement.where(
                MailboxEntry.message_id.in_(union(members, copies)),
                (MailboxEntry.folder_id + 0) == folder_id,
                member.in_(wanted),
            )
        else:
            statement = statement.where(
                MailboxEntry.id.in_(list(entry_ids)), MailboxEntry.folder_id == folder_id
            )
        if per_conversation is not None:  # the newest of each conversation, in one query
            rank = func.row_number().over(partition_by=member, order_by=MailboxEntry.uid.desc())
            ranked = statement.order_by(None).add_columns(rank.label("rank")).subquery()
            statement = (
                select(*(ranked.c[name] for name in _ENTRY_COLUMNS))
                .where(ranked.c.rank <= per_conversation)
                .order_by(ranked.c.uid.desc())
            )
        return [
            EntryRow(
                entry_id=int(row.id),
                folder_id=folder_id,
                uid=int(row.uid),
                flags=parse_flags(row.flags),
                internal_date=row.internal_date,
                message_id=int(row.message_id),
                envelope_from=str(row.envelope_from or ""),
                direction=str(row.direction),
                conversation_id=int(row.conversation_id)
                if row.conversation_id is not None
                else None,
            )
            for row in session.execute(statement)
        ]

    def _groups(
        self, session: Session, account_id: int, folder_id: int, page: int
    ) -> tuple[list[_Group], int]:
        """One page of the INBOX grouped by conversation (a lone message is a group of its own).

        Grouped, ordered (newest entry first) and paged by the database: one pass over the
        folder's entries with an index lookup each (``_member``), no row leaves the database
        but the page's. Also the number of groups, for the pager.
        """
        inbox = (
            select(
                MailboxEntry.id.label("entry_id"),
                MailboxEntry.uid.label("uid"),
                self._member(account_id).label("conversation_id"),
            )
            .outerjoin(HeldDelivery, self._held_join(account_id))
            .where(MailboxEntry.folder_id == folder_id)
            .subquery("inbox")
        )
        key = func.coalesce(inbox.c.conversation_id, -inbox.c.entry_id)
        grouped = (
            select(
                key.label("key"),
                func.min(inbox.c.uid).label("oldest"),
                func.count().label("size"),
                func.count().over().label("groups"),
            )
            .group_by(key)
            .order_by(func.max(inbox.c.uid).desc())
        )
        if session.get_bind().dialect.name == "postgresql":
            # The plan's estimated cost grows with the folder and passes ``jit_above_cost``
            # near 10,000 entries: compiling it (~1 s, measured) would cost far more than
            # running it (milliseconds). For this read transaction only.
            session.execute(text("SET LOCAL jit = off"))
        rows = session.execute(grouped.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
        if not rows and page > 1:  # past the end: the caller asks for the last page
            total = session.scalar(select(func.count()).select_from(grouped.subquery()))
            return [], int(total or 0)
        groups = [_Group(int(row.key), int(row.oldest), int(row.size)) for row in rows]
        return groups, int(rows[0].groups) if rows else 0

    def _sent(
        self,
        session: Session,
        account_id: int,
        *,
        conversation_id: int | None = None,
        entry_id: int | None = None,
    ) -> list[EntryRow]:
        """The patient's own messages in Sent that belong to a conversation (or one entry)."""
        folder_id = self._folder(session, account_id, SENT)
        if folder_id is None:
            return []
        statement = (
            select(
                MailboxEntry.id,
                MailboxEntry.uid,
                MailboxEntry.flags,
                MailboxEntry.internal_date,
                MailboxEntry.message_id,
                StoredMessage.message_id_header,
            )
            .join(StoredMessage, StoredMessage.id == MailboxEntry.message_id)
            .where(MailboxEntry.folder_id == folder_id)
        )
        if conversation_id is not None:
            headers = select(ConversationMessage.message_id_header).where(
                ConversationMessage.conversation_id == conversation_id,
                ConversationMessage.message_id_header.is_not(None),
            )
            statement = statement.where(StoredMessage.message_id_header.in_(headers))
        if entry_id is not None:
            statement = statement.where(MailboxEntry.id == entry_id)
        return [
            EntryRow(
                entry_id=int(row.id),
                folder_id=folder_id,
                uid=int(row.uid),
                flags=parse_flags(row.flags),
                internal_date=row.internal_date,
                message_id=int(row.message_id),
                envelope_from="",
                direction="sent",
                conversation_id=conversation_id,
                mine=True,
            )
            for row in session.execute(statement.order_by(MailboxEntry.uid.desc()).limit(500))
        ]

    def _structures(
        self, principal: Principal, folder_id: int, uids: Sequence[int]
    ) -> dict[int, MessageStructure]:
        """The cached structures of ``uids``, asked for one run of close UIDs at a time.

        The store reads a batch by one range scan of the folder, from its lowest UID to its
        highest (IMAP's sets are ranges); a page's conversations are spread over the whole
        folder, so one batch would scan nearly all of it (9,500 rows at 10,000 messages).
        """
        found: dict[int, MessageStructure] = {}
        run: list[int] = []
        for uid in sorted(set(uids)):
            if run and uid - run[-1] > MAX_UID_GAP:
                found.update(self.store.structures(principal, folder_id, run))
                run = []
            run.append(uid)
        if run:
            found.update(self.store.structures(principal, folder_id, run))
        return found

    def conversations(
        self, principal: Principal, page: int
    ) -> tuple[list[ListedConversation], int]:
        """One page of the conversation list (newest first) and the number of pages.

        The database groups and pages (:meth:`_groups`); only the page's entries are then
        read (at most :data:`MAX_GROUP_ENTRIES` of a conversation, its newest), for the unread
        and attachment markers, and each group's oldest for the subject. A conversation with
        a reply draft (:meth:`reply_drafts`) is marked as such.
        """
        page = max(1, page)
        with self.database.reading() as session:
            folder_id = self._inbox(session, principal.account_id)
            if folder_id is None:
                return [], 1
            groups, total = self._groups(session, principal.account_id, folder_id, page)
            pages = max(1, -(-total // PAGE_SIZE))
            if not groups and page > pages:
                page = pages
                groups, total = self._groups(session, principal.account_id, folder_id, page)
            conversation_ids = [group.key for group in groups if group.key > 0]
            by_group: dict[int, list[EntryRow]] = {}
            for row in self._entries(
                session,
                principal.account_id,
                conversation_ids=conversation_ids,
                per_conversation=MAX_GROUP_ENTRIES,
            ):
                by_group.setdefault(row.conversation_id or 0, []).append(row)
            for row in self._entries(
                session,
                principal.account_id,
                entry_ids=[-group.key for group in groups if group.key < 0],
            ):
                by_group[-row.entry_id] = [row]
            professionals = {
                int(conversation_id): str(address)
                for conversation_id, address in session.execute(
                    select(Conversation.id, Conversation.professional_address).where(
                        Conversation.patient_account_id == principal.account_id,
                        Conversation.id.in_(conversation_ids),
                    )
                )
            }
            names = _Names(session)
            wanted = {row.uid for rows in by_group.values() for row in rows}
            wanted |= {group.oldest for group in groups}
            structures = self._structures(principal, folder_id, sorted(wanted))
            drafts = self.reply_drafts(principal, session) if conversation_ids else {}
            listed: list[ListedConversation] = []
            for group in groups:
                members = by_group.get(group.key, [])  # newest first
                if not members:  # gone meanwhile (expunged between the two reads)
                    continue
                newest = members[0]
                structure = structures.get(group.oldest) or structures.get(newest.uid)
                if group.key > 0:
                    address = professionals.get(group.key, newest.envelope_from)
                    href = f"/webmail/conversations/{group.key}"
                else:
                    address = newest.envelope_from
                    href = f"/webmail/messages/{newest.entry_id}"
                listed.append(
                    ListedConversation(
                        href=href,
                        correspondent=names.name(address, structure),
                        subject=_subject(structure),
                        date=newest.internal_date,
                        unread=any(row.unread for row in members),
                        attachment=any(_has_attachment(structures.get(row.uid)) for row in members),
                        count=group.count,
                        draft=group.key in drafts,
                    )
                )
        return listed, pages

    def reply_drafts(self, principal: Principal, session: Session | None = None) -> dict[int, int]:
        """The patient's reply drafts by conversation: conversation id → newest draft's entry.

        A draft is a message in the IMAP Drafts folder (:mod:`caducee.mailboxes.drafts`); a
        reply's draft carries ``In-Reply-To`` (:func:`~caducee.gateway.web.reply.
        compose_message`), and the conversation it answers is the one the reply would join
        once sent (:func:`~caducee.mailboxes.delivery.conversation_of`, D1). ``In-Reply-To``
        is read from the drafts' cached structures (their envelope), so no draft is decrypted;
        the newest :data:`~caducee.mailboxes.drafts.MAX_DRAFTS` are considered.
        """
        drafts = list_drafts(self.store, principal)
        if not drafts:
            return {}
        structures = self._structures(principal, drafts[0].folder_id, [d.uid for d in drafts])
        if session is None:
            with self.database.reading() as own:
                return self._tie_drafts(own, principal, drafts, structures)
        return self._tie_drafts(session, principal, drafts, structures)

    @staticmethod
    def _tie_drafts(
        session: Session,
        principal: Principal,
        drafts: Sequence[DraftEntry],
        structures: dict[int, MessageStructure],
    ) -> dict[int, int]:
        tied: dict[int, int] = {}
        for draft in drafts:  # newest first: the first draft of a conversation is kept
            structure = structures.get(draft.uid)
            answered = structure.envelope.in_reply_to if structure is not None else None
            ids = tuple(dict.fromkeys(_MESSAGE_ID.findall(answered or "")))
            conversation_id = conversation_of(session, principal.account_id, ids)
            if conversation_id is not None:
                tied.setdefault(conversation_id, draft.entry_id)
        return tied

    def conversation_entries(
        self, principal: Principal, conversation_id: int
    ) -> tuple[list[EntryRow], str | None]:
        """The entries of one of the account's conversations (oldest first) and its professional.

        Empty when the conversation is not the account's (the caller answers 404).
        """
        with self.database.reading() as session:
            conversation = session.scalar(
                select(Conversation).where(
                    Conversation.id == conversation_id,
                    Conversation.patient_account_id == principal.account_id,
                )
            )
            if conversation is None:
                return [], None
            rows = self._entries(
                session, principal.account_id, conversation_ids=[conversation_id]
            ) + self._sent(session, principal.account_id, conversation_id=conversation_id)
            rows.sort(key=lambda row: (row.internal_date, row.entry_id))
            return rows, conversation.professional_address

    def entry(self, principal: Principal, entry_id: int) -> EntryRow | None:
        """One entry of the account's INBOX (or of its own sent messages), or None."""
        with self.database.reading() as session:
            found = self._entries(session, principal.account_id, entry_ids=[entry_id])
            if not found:
                found = self._sent(session, principal.account_id, entry_id=entry_id)
        return found[0] if found else None

    # -- messages -------------------------------------------------------------------------

    def raw(self, principal: Principal, entry: EntryRow) -> bytes | None:
        """The bytes of an entry of one of the account's folders (isolation: the store's)."""
        return self.store.contents(principal, entry.folder_id, [entry.uid]).get(entry.uid)

    def keep_sent(self, principal: Principal, content: bytes) -> None:
        """Keep a copy of what the patient sent in Sent, as a mail client would (APPEND)."""
        self.store.append(
            principal, SENT, [NewMessage(content, frozenset({SEEN}), internal_date=None)]
        )

    def mark_read(self, principal: Principal, entries: Sequence[EntryRow]) -> int:
        """``\\Seen`` on the unread ones; the first read queues the G2 receipt. Receipts queued.

        The store's ``\\Seen`` queues receipts for mail received from other operators; a
        message a professional hosted here submitted asks for one just as well (G2), so the
        same :func:`~caducee.mailboxes.reports.receipts.queue_displayed_receipt` is asked for it
        here
        (at most one receipt per message and reader, whoever asks first).
        """
        unread = [row for row in entries if row.unread]
        if not unread:
            return 0
        folder_id = unread[0].folder_id
        outcome = self.store.store_flags(
            principal, folder_id, [row.uid for row in unread], frozenset({SEEN}), "add"
        )
        queued = outcome.receipts
        submitted = [row for row in unread if row.direction != "inbound" and row.envelope_from]
        if not submitted:
            return queued
        contents = self.store.contents(principal, folder_id, [row.uid for row in submitted])
        with self.database.transaction() as session:
            for row in submitted:
                raw = contents.get(row.uid)
                if raw is None:
                    continue
                job = queue_displayed_receipt(
                    session,
                    self.blobs,
                    self.store.queue,
                    ReadMessage(
                        message_id=row.message_id,
                        account_id=principal.account_id,
                        account_address=principal.address,
                        envelope_from=row.envelope_from,
                        raw=raw,
                    ),
                    reporting_host=self.store.reporting_host,
                )
                queued += job is not None
        return queued

    def correspondent_name(self, address: str) -> str:
        with self.database.reading() as session:
            return _Names(session).name(address, None)

    def reply_target(
        self, principal: Principal, professional_address: str, last: ShownMessage | None
    ) -> ReplyTarget:
        """The contact (D2: the ``Reply-To`` it gave) and what a reply would answer."""
        with self.database.reading() as session:
            contact = session.execute(
                select(KnownProfessional.reply_address, KnownProfessional.can_reply).where(
                    KnownProfessional.patient_account_id == principal.account_id,
                    KnownProfessional.professional_address == professional_address,
                )
            ).first()
        subject = last.subject if last is not None else ""
        if not subject.lower().startswith(("re:", "re :")):
            subject = f"Re: {subject}".strip()
        references = None
        if last is not None and last.message_id_header:
            references = " ".join([*(last.references or "").split(), last.message_id_header])
        return ReplyTarget(
            professional_address=professional_address,
            reply_address=str(contact.reply_address) if contact is not None else None,
            ended=bool(contact is not None and not contact.can_reply),
            in_reply_to=last.message_id_header if last is not None else None,
            references=references,
            subject=subject[:250],
        )


class _Names:
    """Correspondents' names from the directory (a person's name, else the organisation)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.cache: dict[str, str | None] = {}

    def name(self, address: str, structure: MessageStructure | None) -> str:
        if address not in self.cache:
            entry = find_by_address(self.session, address) if address else None
            found = None
            if entry is not None:
                person = " ".join(p for p in (entry.given_name, entry.family_name) if p)
                found = person or entry.organisation_name or None
            self.cache[address] = found
        known = self.cache[address]
        if known:
            return known
        if structure is not None:
            for name, _adl, mailbox, host in structure.envelope.from_:
                if name:
                    return decode_words(name.strip('"'))
                if mailbox and host:
                    return f"{mailbox}@{host}"
        return address or "?"


def _subject(structure: MessageStructure | None) -> str:
    if structure is None or structure.envelope.subject is None:
        return ""
    return " ".join(decode_words(structure.envelope.subject).split())[:300]


def _has_attachment(structure: MessageStructure | None) -> bool:
    if structure is None:
        return False
    for part in walk(structure.root):
        if part.children:
            continue
        if (part.disposition or "").lower() == "attachment":
            return True
        if any(key.lower() == "name" for key, _ in part.params) and part.maintype != "text":
            return True
    return False


# -- parsing one message for display ------------------------------------------------------


def parse(raw: bytes) -> EmailMessage:
    """The message, parsed with the modern policy (decoded headers, ``get_body``)."""
    message = email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def files_of(message: EmailMessage) -> list[EmailMessage]:
    """The attached files of a message, in a stable order (depth first)."""
    files: list[EmailMessage] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        assert isinstance(part, EmailMessage)
        disposition = part.get_content_disposition()
        if disposition == "attachment" or (part.get_filename() and disposition != "inline"):
            files.append(part)
    return files


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, TypeError, IndexError):
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _date(message: EmailMessage, fallback: datetime) -> datetime:
    try:
        value = parsedate_to_datetime(_header(message, "Date"))
    except (TypeError, ValueError, IndexError):
        return fallback
    return value if value.tzinfo is not None else fallback


def _text(part: EmailMessage | None) -> str | None:
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return str(content)[:MAX_TEXT_CHARS]


def html_of(message: EmailMessage) -> str | None:
    """The HTML body, when the message has one (shown only in a sandboxed frame)."""
    body = message.get_body(preferencelist=("html",))
    return _text(body if isinstance(body, EmailMessage) else None)


def show(entry: EntryRow, raw: bytes, sender_name: str) -> ShownMessage:
    """What the page shows of one message: plain text (escaped by the template), files."""
    message = parse(raw)
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    attachments = []
    for index, part in enumerate(files_of(message)):
        payload = part.get_payload(decode=True)
        attachments.append(
            Attachment(
                index=index,
                filename=_safe_filename(part.get_filename() or f"piece-jointe-{index + 1}"),
                content_type=part.get_content_type(),
                size=len(payload) if isinstance(payload, bytes) else 0,
            )
        )
    return ShownMessage(
        entry_id=entry.entry_id,
        sender=sender_name,
        subject=" ".join(_header(message, "Subject").split())[:300],
        date=_date(message, entry.internal_date),
        text=_text(plain if isinstance(plain, EmailMessage) else None),
        has_html=isinstance(html, EmailMessage),
        attachments=attachments,
        message_id_header=_header(message, "Message-ID") or None,
        references=_header(message, "References") or None,
        mine=entry.mine,
    )


def attachment_bytes(raw: bytes, index: int) -> tuple[str, str, bytes] | None:
    """(file name, content type, bytes) of the ``index``-th attached file, or None."""
    files = files_of(parse(raw))
    if not 0 <= index < len(files):
        return None
    part = files[index]
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    name = _safe_filename(part.get_filename() or f"piece-jointe-{index + 1}")
    return name, part.get_content_type(), data


def _safe_filename(name: str) -> str:
    cleaned = "".join(ch for ch in name if ch.isprintable() and ch not in '/\\"\r\n')
    return cleaned.strip()[:150] or "piece-jointe"


def header_addresses(message: EmailMessage, name: str) -> list[str]:
    """The addresses of a header field, lower-cased."""
    return [address.lower() for _, address in getaddresses([_header(message, name)]) if address]
