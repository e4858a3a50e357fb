"""Delivery: everything an accepted message implies, written in one transaction (B5, D1–D3).

The SMTP DATA stage calls :func:`deliver` inside a transaction and answers
``250`` only after that transaction commits, so an acknowledged message always
has its blob, its message row, one mailbox entry per recipient, its
conversation and contact effects and its follow-up jobs — or, after a crash,
none of them and no ``250``.

A patient's copy of a message with parts is *held* (E3, E5): a ``held_deliveries`` row
takes the place of its mailbox entry, and the filing job appends the copy — with the
parts the patient may not see replaced by a notice — and queues the ``new-message``
notification once it has decided (``caducee.records.withheld``). A patient's reply joins
the conversation it answers (D1, :func:`join_patient_reply`).

A patient's ``new-message`` event (G1) is collected into their notification batch in the
delivery's own transaction when the delivery is given a :data:`CollectNewMessage` (``serve``
gives it the ``notify-patient`` handler's); otherwise it queues a ``notify-patient`` job that
collects it later. Both record the same rows.
"""

from __future__ import annotations

import enum
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from typing import Any, cast

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from caducee.mailboxes.accounts.store import recipient_account
from caducee.mailboxes.imap_cache import record_structure, seal_structure
from caducee.mailboxes.models import (
    INBOX,
    STANDARD_FOLDERS,
    Conversation,
    ConversationMessage,
    Folder,
    HeldDelivery,
    HeldState,
    KnownProfessional,
    MailboxEntry,
    StoredMessage,
)
from caducee.storage.blobs import BlobStore, SealedBlob
from caducee.storage.db import table_of, utcnow
from caducee.storage.jobs import FileDocuments, JobKind, JobQueue, NotifyPatient
from caducee.storage.upsert import PreparedUpsert

FILE_DOCUMENTS_JOB = JobKind.FILE_DOCUMENTS.value
NOTIFY_PATIENT_JOB = JobKind.NOTIFY_PATIENT.value


class RecipientRole(enum.StrEnum):
    """How the delivery treats a recipient."""

    PATIENT = "patient"
    PROFESSIONAL = "professional"


@dataclass(frozen=True)
class Recipient:
    """A hosted recipient accepted at RCPT."""

    address: str
    account_id: int
    role: RecipientRole


@dataclass(frozen=True)
class Envelope:
    """What the gateway learnt of a message before storing it."""

    content: bytes
    direction: str
    envelope_from: str
    header_from: str | None
    message_id: str | None
    thread_ids: tuple[str, ...]
    reply_to: str | None
    ends_exchange: bool
    sender_is_professional: bool
    has_attachments: bool
    dkim_result: str = "none"
    recipients: Sequence[Recipient] = field(default_factory=tuple)


@dataclass(frozen=True)
class Delivered:
    """Where a message went: its row id and, per recipient address, its INBOX UID.

    ``held`` names the patients whose copy waits for the filing job (no UID yet);
    ``jobs_due`` says whether the delivery queued a job to run now (filing, a notification),
    so that the job workers need waking.
    """

    message_id: int
    uids: dict[str, int]
    duplicate: bool = False
    held: tuple[str, ...] = ()
    jobs_due: bool = False


def ensure_folders(session: Session, account_id: int) -> dict[str, Folder]:
    """The standard folders of an account, created on first use (UIDVALIDITY fixed then)."""
    existing = {
        folder.name: folder
        for folder in session.scalars(select(Folder).where(Folder.account_id == account_id))
    }
    validity = int(utcnow().timestamp())
    for name, special_use in STANDARD_FOLDERS:
        if name not in existing:
            folder = Folder(
                account_id=account_id,
                name=name,
                special_use=special_use,
                uid_validity=validity,
                uid_next=1,
                highest_modseq=1,
                subscribed=True,
            )
            session.add(folder)
            existing[name] = folder
    session.flush()
    return existing


_MESSAGES = table_of(StoredMessage)
_ENTRIES = table_of(MailboxEntry)
_FOLDERS = table_of(Folder)
_CONVERSATIONS = table_of(Conversation)
_THREADS = table_of(ConversationMessage)
_CONTACTS = table_of(KnownProfessional)
_HELD = table_of(HeldDelivery)

# Statements built once: building them per message costs more than running them.
_ALLOCATE_UID = (
    _FOLDERS.update()
    .where(_FOLDERS.c.id == bindparam("folder"))
    .values(uid_next=_FOLDERS.c.uid_next + 1, highest_modseq=_FOLDERS.c.highest_modseq + 1)
    .returning(_FOLDERS.c.uid_next, _FOLDERS.c.highest_modseq)
)
_INSERT_ENTRY = _ENTRIES.insert()
_FIND_DUPLICATE = select(_MESSAGES.c.id).where(_MESSAGES.c.dedupe_key == bindparam("key"))
_INSERT_MESSAGE = _MESSAGES.insert().returning(_MESSAGES.c.id)
_FIND_THREAD = (
    select(_THREADS.c.conversation_id)
    .join(_CONVERSATIONS, _CONVERSATIONS.c.id == _THREADS.c.conversation_id)
    .where(
        _CONVERSATIONS.c.patient_account_id == bindparam("account"),
        _THREADS.c.message_id_header.in_(bindparam("ids", expanding=True)),
    )
    .order_by(_THREADS.c.conversation_id)
    .limit(1)
)
_INSERT_CONVERSATION = _CONVERSATIONS.insert().returning(_CONVERSATIONS.c.id)
_TOUCH_CONVERSATION = (
    _CONVERSATIONS.update()
    .where(_CONVERSATIONS.c.id == bindparam("conversation"))
    .values(last_message_at=bindparam("now"))
)
_INSERT_THREAD_MEMBER = _THREADS.insert()
_INSERT_HELD = _HELD.insert()
_FIND_MEMBER = (
    select(_THREADS.c.id)
    .where(
        _THREADS.c.conversation_id == bindparam("conversation"),
        _THREADS.c.message_id_header == bindparam("header"),
    )
    .limit(1)
)
SUBMITTED = "submitted"
"""``StoredMessage.direction`` of a message a local user submitted (delivered here)."""

_REPORT_PARTS = frozenset(
    {
        "message/delivery-status",
        "message/disposition-notification",
        "message/global-delivery-status",
        "message/global-disposition-notification",
        "message/rfc822",
        "message/global",
        "message/global-headers",
        "text/rfc822-headers",
    }
)
_REPORT_HEADER = re.compile(rb"(?im)^content-type:[ \t]*multipart/report\b")
_HEADER_LIMIT = 64 * 1024
_REPORT_MAX_PARTS = 50


def carries_no_document(content: bytes) -> bool:
    """A delivery or read report (``multipart/report``) made of its text and report parts only.

    Such a message has nothing the filing job could file, withhold or quarantine, so the
    patient's copy need not wait for it (E5). Anything else with parts — or a report with any
    other part, a named part or an unusual structure — waits: when in doubt, hold.
    """
    end = content.find(b"\r\n\r\n", 0, _HEADER_LIMIT)
    if end < 0 or not _REPORT_HEADER.search(content, 0, end + 2):
        return False
    try:
        parsed = BytesParser(policy=compat32).parsebytes(content)
    except Exception:  # ``email`` does no I/O: anything raised is bad input, so hold
        return False
    stack: list[tuple[Message, int]] = [(parsed, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > _REPORT_MAX_PARTS or depth > 3:
            return False
        if part.get_content_maintype() == "multipart":
            children = part.get_payload()
            if not isinstance(children, list):
                return False
            stack.extend((cast(Message, child), depth + 1) for child in children)
            continue
        content_type = part.get_content_type()
        if content_type in _REPORT_PARTS:
            continue
        if (
            content_type == "text/plain"
            and part.get_filename() is None
            and part.get_content_disposition() != "attachment"
        ):
            continue
        return False
    return True


def append_to_folder(
    session: Session, folder_id: int, message_id: int, flags: str = ""
) -> int | None:
    """Give the message the folder's next UID; the row lock serialises concurrent appends.

    Returns None when the folder does not exist (any more).
    """
    connection = session.connection()
    allocated = connection.execute(_ALLOCATE_UID, {"folder": folder_id}).first()
    if allocated is None:
        return None
    uid = int(allocated[0]) - 1
    connection.execute(
        _INSERT_ENTRY,
        {
            "folder_id": folder_id,
            "message_id": message_id,
            "uid": uid,
            "flags": flags,
            "modseq": int(allocated[1]),
            "internal_date": utcnow(),
        },
    )
    return uid


def dedupe_key(envelope: Envelope) -> str | None:
    """Same sender, same recipients, same Message-ID: the same message sent again.

    A client that lost our ``250`` (connection cut after the commit) sends the
    message again; this key makes the second copy a no-op (B5: no duplicate).
    """
    if not envelope.message_id:
        return None
    recipients = ",".join(sorted(r.address for r in envelope.recipients))
    material = (
        f"{envelope.direction}\n{envelope.envelope_from}\n{recipients}\n{envelope.message_id}"
    )
    return hashlib.sha256(material.encode("utf-8", "surrogateescape")).hexdigest()


INBOX_CACHE_ENTRIES = 50_000
"""How many accounts' INBOX ids one process keeps (a few MiB at most)."""


CollectNewMessage = Callable[[Session, int], None]
"""Adds a ``new-message`` event for the patient's account to their notification batch, in the
caller's transaction (``Notifier.collect_new_message`` of ``mailboxes.notifications``)."""


class MailDelivery:
    """Writes accepted messages and their effects; keeps the INBOX id of each account at hand.

    Statements are Core inserts and updates (no ORM unit of work): delivery is
    the hot path of every SMTP session, and each statement it saves is paid
    once per message. For the same reason ``serve`` passes ``collect_new_message``: a
    ``notify-patient`` job per message cost a claim, a transaction and a completion around
    three statements, more than a third of the main process's time at full load (issue 19).
    """

    def __init__(
        self,
        blobs: BlobStore,
        queue: JobQueue,
        collect_new_message: CollectNewMessage | None = None,
    ) -> None:
        self.blobs = blobs
        self.queue = queue
        self.collect_new_message = collect_new_message
        self._inbox: OrderedDict[int, int] = OrderedDict()
        self._inbox_lock = threading.Lock()

    def _inbox_of(self, session: Session, account_id: int) -> int:
        """The account's INBOX id, from a cache bounded to :data:`INBOX_CACHE_ENTRIES` (the
        most recently delivered-to accounts): a gateway with a million mailboxes must not
        keep an entry for every mailbox it ever delivered to."""
        with self._inbox_lock:
            folder_id = self._inbox.get(account_id)
            if folder_id is not None:
                self._inbox.move_to_end(account_id)
                return folder_id
        folder_id = ensure_folders(session, account_id)[INBOX].id
        with self._inbox_lock:
            self._inbox[account_id] = folder_id
            if len(self._inbox) > INBOX_CACHE_ENTRIES:
                self._inbox.popitem(last=False)
        return folder_id

    def _append_inbox(self, session: Session, account_id: int, message_id: int) -> int:
        uid = append_to_folder(session, self._inbox_of(session, account_id), message_id)
        if uid is None:  # the cached folder went away: look again
            with self._inbox_lock:
                self._inbox.pop(account_id, None)
            uid = append_to_folder(session, self._inbox_of(session, account_id), message_id)
        assert uid is not None
        return uid

    def deliver(
        self,
        session: Session,
        envelope: Envelope,
        sealed: SealedBlob | None = None,
        structure: SealedBlob | None = None,
    ) -> Delivered:
        """Store the message and every effect it implies; the caller commits, then answers 250.

        ``sealed`` is the message already encrypted (and its file written)
        outside the transaction, which keeps the transaction short; ``structure``
        likewise its IMAP structure (:func:`seal_structure`), computed here when
        not given and a mailbox entry is written, so IMAP's first listing does not
        have to (issue 15).
        """
        now = utcnow()
        connection = session.connection()
        key = dedupe_key(envelope)
        if key is not None:
            already = connection.execute(_FIND_DUPLICATE, {"key": key}).scalar()
            if already is not None:
                return Delivered(message_id=int(already), uids={}, duplicate=True)
        blob_id = self.blobs.record(session, sealed or self.blobs.seal(envelope.content))
        message_id = int(
            connection.execute(
                _INSERT_MESSAGE,
                {
                    "blob_id": blob_id,
                    "size": len(envelope.content),
                    "received_at": now,
                    "direction": envelope.direction,
                    "envelope_from": envelope.envelope_from,
                    "header_from": envelope.header_from,
                    "message_id_header": envelope.message_id,
                    "dkim_result": envelope.dkim_result,
                    "end_of_exchange": envelope.ends_exchange,
                    "mss_problems": None,
                    "dedupe_key": key,
                },
            ).scalar_one()
        )
        if envelope.direction == SUBMITTED and not envelope.sender_is_professional:
            sender = recipient_account(session, envelope.envelope_from, patient=True)
            if sender is not None:
                join_patient_reply(
                    session,
                    sender.id,
                    message_id=message_id,
                    message_id_header=envelope.message_id,
                    thread_ids=envelope.thread_ids,
                )
        uids: dict[str, int] = {}
        hold = envelope.has_attachments and any(
            r.role is RecipientRole.PATIENT for r in envelope.recipients
        )
        hold = hold and not carries_no_document(envelope.content)
        held: list[str] = []
        jobs_due = False
        for recipient in envelope.recipients:
            patient = recipient.role is RecipientRole.PATIENT
            if patient and hold:
                # E3/E5: the patient's copy stays invisible until the filing job decided
                # which parts the patient may see; that job appends it and notifies.
                self._hold(session, recipient.account_id, message_id, now)
                held.append(recipient.address)
            else:
                uids[recipient.address] = self._append_inbox(
                    session, recipient.account_id, message_id
                )
            if not patient:
                continue
            if envelope.sender_is_professional:
                _record_conversation(session, recipient, envelope, message_id, now)
                _record_contact(session, recipient, envelope, now)
            if envelope.has_attachments:
                self.queue.enqueue(
                    session, FileDocuments(message_id=message_id, account_id=recipient.account_id)
                )
                jobs_due = True
            if hold:
                continue
            if self.collect_new_message is not None:
                # A batch it opens queues its sending for the end of the grouping window: a
                # later job, which the workers' polling finds.
                self.collect_new_message(session, recipient.account_id)
                continue
            self.queue.enqueue(
                session,
                NotifyPatient(
                    event="new-message", account_id=recipient.account_id, message_id=message_id
                ),
            )
            jobs_due = True
        if uids:
            structure = structure or seal_structure(self.blobs, envelope.content)
            if structure is not None:
                record_structure(session, self.blobs, message_id, structure)
        return Delivered(message_id=message_id, uids=uids, held=tuple(held), jobs_due=jobs_due)

    def _hold(self, session: Session, account_id: int, message_id: int, now: datetime) -> None:
        session.connection().execute(
            _INSERT_HELD,
            {
                "account_id": account_id,
                "message_id": message_id,
                "folder_id": self._inbox_of(session, account_id),
                "state": HeldState.HELD.value,
                "held_at": now,
                "withheld_parts": 0,
            },
        )


def _record_conversation(
    session: Session, patient: Recipient, envelope: Envelope, message_id: int, now: datetime
) -> None:
    """D1: join the thread the message answers, or start one rooted at it."""
    connection = session.connection()
    conversation_id = None
    if envelope.thread_ids:
        conversation_id = connection.execute(
            _FIND_THREAD, {"account": patient.account_id, "ids": list(envelope.thread_ids)}
        ).scalar()
    if conversation_id is None:
        conversation_id = connection.execute(
            _INSERT_CONVERSATION,
            {
                "patient_account_id": patient.account_id,
                "professional_address": envelope.envelope_from,
                "root_message_id": message_id,
                "started_at": now,
                "last_message_at": now,
            },
        ).scalar_one()
    else:
        connection.execute(_TOUCH_CONVERSATION, {"conversation": conversation_id, "now": now})
    connection.execute(
        _INSERT_THREAD_MEMBER,
        {
            "conversation_id": conversation_id,
            "message_id": message_id,
            "message_id_header": envelope.message_id,
        },
    )


def conversation_of(
    session: Session, patient_account_id: int, thread_ids: Sequence[str]
) -> int | None:
    """D1: the patient's conversation that ``thread_ids`` (``In-Reply-To``, ``References``) answer.

    The lookup a delivered or relayed reply joins by, for callers that only need to know
    where a message would go — the webmail ties a saved reply draft to its conversation.
    """
    if not thread_ids:
        return None
    found = (
        session.connection()
        .execute(_FIND_THREAD, {"account": patient_account_id, "ids": list(thread_ids)})
        .scalar()
    )
    return int(found) if found is not None else None


def join_patient_reply(
    session: Session,
    patient_account_id: int,
    *,
    message_id: int | None,
    message_id_header: str | None,
    thread_ids: Sequence[str],
) -> int | None:
    """D1: the patient's reply joins the conversation it answers (``In-Reply-To``/``References``).

    ``message_id`` is the stored message when the reply was delivered here, None when it was
    only relayed to another operator (the thread then knows it by its ``Message-ID``). The
    same reply delivered and relayed joins once. Returns the conversation, or None when the
    reply answers none of the patient's conversations.
    """
    if not thread_ids:
        return None
    connection = session.connection()
    conversation_id = connection.execute(
        _FIND_THREAD, {"account": patient_account_id, "ids": list(thread_ids)}
    ).scalar()
    if conversation_id is None:
        return None
    if message_id_header is not None:
        member = connection.execute(
            _FIND_MEMBER, {"conversation": conversation_id, "header": message_id_header}
        ).first()
        if member is not None:
            return int(conversation_id)
    connection.execute(_TOUCH_CONVERSATION, {"conversation": conversation_id, "now": utcnow()})
    connection.execute(
        _INSERT_THREAD_MEMBER,
        {
            "conversation_id": conversation_id,
            "message_id": message_id,
            "message_id_header": message_id_header,
        },
    )
    return int(conversation_id)


def _on_contact_conflict(insert: Any) -> Any:
    """A known professional's row takes the values the insert carried (``excluded``)."""
    return insert.on_conflict_do_update(
        index_elements=["patient_account_id", "professional_address"],
        set_={
            name: getattr(insert.excluded, name)
            for name in ("reply_address", "last_message_at", "can_reply", "ended_at")
        },
    )


_CONTACT_UPSERT = PreparedUpsert(_CONTACTS, _on_contact_conflict)
"""D2's upsert of a known professional, run for every message to a patient."""


def _record_contact(
    session: Session, patient: Recipient, envelope: Envelope, now: datetime
) -> None:
    """D2: the professional becomes (or stays) known; D3: [FIN] ends, any other message restores."""
    session.connection().execute(
        _CONTACT_UPSERT(session),
        {
            "patient_account_id": patient.account_id,
            "professional_address": envelope.envelope_from,
            "reply_address": envelope.reply_to or envelope.envelope_from,
            "first_contact_at": now,
            "last_message_at": now,
            "can_reply": not envelope.ends_exchange,
            "ended_at": now if envelope.ends_exchange else None,
            "status": "authorised",
            "medecin_traitant": False,
        },
    )
