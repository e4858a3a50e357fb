"""Out-of-band notifications to patients (G1): preferences, grouping, content-free texts and
the ``notify-patient`` job handler.

Three things happen to a patient that they are told about outside the trust space, on their
personal e-mail and, when they gave one, by SMS: a new message (delivery queues the job), a new
or changed document (the filing hook queues it) and a professional's access to their record
(the FHIR API queues it). Each queues one ``notify-patient`` job in the transaction that made
the event happen, so a notification exists exactly when its cause was committed.

The handler does not send at once. It adds the event to the patient's *open batch* (one per
patient, a partial unique index guarantees it) and, when it opened the batch, queues the
batch's sending ``grouping_window_seconds`` later: a burst (ten reports filed in a minute, a
professional paging through the record) becomes one notification. Sending marks the batch
``sending`` first, so later events open a new batch; the e-mail and the SMS are each marked
sent as soon as they are, so a retry (the job queue's back-off) never sends one twice unless
the process died between sending and recording it.

What a notification says is fixed text in French or English with counts, and where to look:
never a sender, a name, a subject, a document title, an INS or the patient's mailbox address
(G1, J2). Logs carry ids and counts only.

The senders are interfaces (:class:`EmailSender`, :class:`SmsSender`) implemented in
``caducee.gateway.notify`` (smarthost over SMTP, SMS file for development), so this module
stays free of network code.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    bindparam,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.config import Settings
from caducee.mailboxes.accounts.store import Account, AccountKind, AccountState
from caducee.mailboxes.delivery import NOTIFY_PATIENT_JOB
from caducee.mailboxes.notifications.centre import add_to_centre
from caducee.storage.audit import Action, record_event
from caducee.storage.db import Base, Database, UtcDateTime, table_of, utcnow
from caducee.storage.jobs import ClaimedJob, JobQueue
from caducee.storage.upsert import PreparedUpsert
from caducee.storage.worker import PermanentJobError

log = logging.getLogger("caducee.notifications")

BIG_ID = BigInteger().with_variant(Integer, "sqlite")
LANGUAGES = ("fr", "en")
_EMAIL = re.compile(r"[^@\s<>()\[\],;:\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")


class Event(enum.StrEnum):
    """What a ``notify-patient`` job reports."""

    NEW_MESSAGE = "new-message"
    NEW_DOCUMENT = "new-document"
    RECORD_ACCESS = "record-access"
    SEND_BATCH = "send-batch"
    """Internal: the grouping window of a batch is over; send it."""


NOTIFIED_EVENTS = (Event.NEW_MESSAGE, Event.NEW_DOCUMENT, Event.RECORD_ACCESS)


class BatchState(enum.StrEnum):
    OPEN = "open"
    SENDING = "sending"
    SENT = "sent"


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class NotificationSettings:
    """The ``[notifications]`` settings, built from ``settings.notifications`` when it exists.

    Without the section every field has the default below: no e-mail (no smarthost), no SMS,
    grouping over five minutes, every type on, French.
    """

    enabled: bool = True
    smarthost_host: str = ""
    """The relay that carries notifications to patients' personal e-mail; empty: no e-mail."""
    smarthost_port: int = 587
    smarthost_tls: str = "starttls"
    """``starttls``, ``tls`` (implicit, port 465) or ``none`` (development only)."""
    smarthost_username: str = ""
    smarthost_password_file: str = ""
    """A file holding the smarthost password (relative to the home); never in the TOML."""
    smarthost_ca_file: str = ""
    """CA bundle for the smarthost's certificate; empty: the system's."""
    smarthost_timeout_seconds: float = 30.0
    from_address: str = ""
    """Envelope and header sender; empty: ``no-reply@<gateway.hostname>``."""
    sms_sender: str = "none"
    """``none`` or ``file`` (development: one JSON line per SMS in ``sms_file``)."""
    sms_file: str = "notifications/sms.jsonl"
    grouping_window_seconds: int = 300
    default_new_message: bool = True
    default_new_document: bool = True
    default_record_access: bool = True
    default_language: str = "fr"
    portal_url: str = ""
    """Where the patient reads their space (webmail); named in every notification."""
    operator_name: str = "Caducée"
    home: Path = field(default=Path("."), compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> NotificationSettings:
        """Read the section if the settings have one; fill what it lacks from the gateway."""
        section = getattr(settings, "notifications", None)
        defaults = cls()
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name in ("home", "operator_name"):
                continue
            values[name] = getattr(section, name, getattr(defaults, name))
        if not values["from_address"]:
            values["from_address"] = f"no-reply@{settings.gateway.hostname}"
        return cls(**values, operator_name=settings.gateway.operator_name, home=settings.home)

    def path(self, value: str) -> Path:
        """A configured path, relative to the home."""
        candidate = Path(value)
        return candidate if candidate.is_absolute() else self.home / candidate

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=max(0, self.grouping_window_seconds))


# ---------------------------------------------------------------------------------------------
# Tables


class PatientContact(Base):
    """How a patient is told (G1): personal e-mail and phone, language and per-type choices.

    A ``NULL`` preference follows the operator's default (``[notifications] default_*``).
    """

    __tablename__ = "patient_contacts"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    language: Mapped[str | None] = mapped_column(String(8))
    email_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    sms_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    notify_new_message: Mapped[bool | None] = mapped_column(Boolean)
    notify_new_document: Mapped[bool | None] = mapped_column(Boolean)
    notify_record_access: Mapped[bool | None] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class NotificationBatch(Base):
    """Events waiting to be told to one patient in one notification."""

    __tablename__ = "notification_batches"
    __table_args__ = (
        Index(
            "uq_notification_batches_open",
            "account_id",
            unique=True,
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime())
    due_at: Mapped[datetime] = mapped_column(UtcDateTime())
    new_messages: Mapped[int] = mapped_column(Integer, default=0)
    new_documents: Mapped[int] = mapped_column(Integer, default=0)
    record_accesses: Mapped[int] = mapped_column(Integer, default=0)
    email_sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    sms_sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


_BATCHES = table_of(NotificationBatch)
_CONTACTS = table_of(PatientContact)
_COUNTERS = {
    Event.NEW_MESSAGE: "new_messages",
    Event.NEW_DOCUMENT: "new_documents",
    Event.RECORD_ACCESS: "record_accesses",
}


def _grouping(counter: str) -> PreparedUpsert:
    """Open the patient's batch with one event, or count the event in the open one.

    One statement where there were three (insert-or-nothing, select for update, increment):
    it runs for every inbound message (issue 19). On PostgreSQL the conflicting update locks
    the open batch as the ``SELECT … FOR UPDATE`` did. It returns the batch's id and its
    number of events: 1 exactly when this statement opened it (every statement adds one).
    """
    column = _BATCHES.c[counter]
    events = _BATCHES.c.new_messages + _BATCHES.c.new_documents + _BATCHES.c.record_accesses
    return PreparedUpsert(
        _BATCHES,
        lambda insert: insert.on_conflict_do_update(
            index_elements=["account_id"],
            index_where=_BATCHES.c.state == BatchState.OPEN.value,
            set_={counter: column + 1},
        ).returning(_BATCHES.c.id, events.label("events")),
    )


_GROUPING = {event: _grouping(counter) for event, counter in _COUNTERS.items()}


# ---------------------------------------------------------------------------------------------
# Preferences


@dataclass(frozen=True)
class Preferences:
    """A patient's effective notification choices (defaults applied)."""

    email: str | None
    phone: str | None
    language: str
    email_enabled: bool
    sms_enabled: bool
    new_message: bool
    new_document: bool
    record_access: bool

    def wants(self, event: Event) -> bool:
        match event:
            case Event.NEW_MESSAGE:
                return self.new_message
            case Event.NEW_DOCUMENT:
                return self.new_document
            case Event.RECORD_ACCESS:
                return self.record_access
            case _:
                return True

    def public(self) -> dict[str, Any]:
        """The JSON the patient API shows."""
        return {
            "email": self.email,
            "phone": self.phone,
            "language": self.language,
            "channels": {"email": self.email_enabled, "sms": self.sms_enabled},
            "types": {
                Event.NEW_MESSAGE.value: self.new_message,
                Event.NEW_DOCUMENT.value: self.new_document,
                Event.RECORD_ACCESS.value: self.record_access,
            },
        }


def preferences(session: Session, account_id: int, settings: NotificationSettings) -> Preferences:
    """The patient's choices, with the operator's defaults where they made none."""
    row = session.execute(
        select(_CONTACTS).where(_CONTACTS.c.account_id == account_id)
    ).one_or_none()
    return _effective(row, settings)


def _effective(row: Any, settings: NotificationSettings) -> Preferences:
    """The choices of a ``patient_contacts`` row (None, or all its fields None: no row)."""

    def pick(value: bool | None, default: bool) -> bool:
        return default if value is None else bool(value)

    def field(name: str) -> Any:
        return None if row is None else getattr(row, name)

    language = settings.default_language
    if field("language") in LANGUAGES:
        language = field("language")
    return Preferences(
        email=field("email"),
        phone=field("phone"),
        language=language if language in LANGUAGES else "fr",
        email_enabled=pick(field("email_enabled"), True),
        sms_enabled=pick(field("sms_enabled"), True),
        new_message=pick(field("notify_new_message"), settings.default_new_message),
        new_document=pick(field("notify_new_document"), settings.default_new_document),
        record_access=pick(field("notify_record_access"), settings.default_record_access),
    )


class PreferenceError(ValueError):
    """A preference value is not acceptable; the message names the field (HTTP 400)."""


_TYPE_COLUMNS = {
    Event.NEW_MESSAGE.value: "notify_new_message",
    Event.NEW_DOCUMENT.value: "notify_new_document",
    Event.RECORD_ACCESS.value: "notify_record_access",
}


def _checked_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    unknown = set(changes) - {"email", "phone", "language", "channels", "types"}
    if unknown:
        raise PreferenceError(f"unknown field '{sorted(unknown)[0]}'")
    if "email" in changes:
        email = changes["email"]
        if email is not None and (not isinstance(email, str) or not _EMAIL.fullmatch(email)):
            raise PreferenceError("'email' must be an e-mail address or null")
        values["email"] = email.strip() if isinstance(email, str) else None
    if "phone" in changes:
        phone = changes["phone"]
        if phone is not None and (not isinstance(phone, str) or not _PHONE.fullmatch(phone)):
            raise PreferenceError("'phone' must be an E.164 number (+33612345678) or null")
        values["phone"] = phone
    if "language" in changes:
        if changes["language"] not in LANGUAGES:
            raise PreferenceError("'language' must be 'fr' or 'en'")
        values["language"] = changes["language"]
    for group, names in (
        ("channels", {"email": "email_enabled", "sms": "sms_enabled"}),
        ("types", _TYPE_COLUMNS),
    ):
        if group not in changes:
            continue
        given = changes[group]
        if not isinstance(given, Mapping):
            raise PreferenceError(f"'{group}' must be an object")
        for key, value in given.items():
            if key not in names:
                raise PreferenceError(f"unknown {group} entry '{key}'")
            if not isinstance(value, bool) and not (group == "types" and value is None):
                raise PreferenceError(f"'{group}.{key}' must be true or false")
            values[names[key]] = value
    return values


def update_preferences(
    session: Session,
    account_id: int,
    changes: Mapping[str, Any],
    settings: NotificationSettings,
    *,
    actor_kind: str,
    actor_id: str,
    channel: str,
) -> Preferences:
    """Apply the given fields (others unchanged); audited without the values (F4).

    Fields: ``email``, ``phone``, ``language``, ``channels`` (``{"email": bool, "sms":
    bool}``) and ``types`` (``{"new-message": bool|null, ...}``, null: the default).
    Raises :class:`PreferenceError`.
    """
    values = _checked_changes(changes)
    row = session.get(PatientContact, account_id)
    if row is None:
        row = PatientContact(account_id=account_id, email_enabled=True, sms_enabled=True)
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.flush()
    record_event(
        session,
        actor_kind=actor_kind,
        actor_id=actor_id,
        action=Action.NOTIFICATIONS_UPDATE.value,
        object_type="notifications",
        object_id=str(account_id),
        result="ok",
        subject_account_id=account_id,
        channel=channel,
    )
    return preferences(session, account_id, settings)


# ---------------------------------------------------------------------------------------------
# Producing events


def queue_notification(
    session: Session, queue: JobQueue, account_id: int, event: Event, **ids: int | str
) -> int:
    """Queue a ``notify-patient`` job in the caller's transaction (visible on commit)."""
    if event not in NOTIFIED_EVENTS:
        raise ValueError(f"not a notified event: {event}")
    return queue.enqueue(
        session, NOTIFY_PATIENT_JOB, {"event": event.value, "account_id": account_id, **ids}
    )


# ---------------------------------------------------------------------------------------------
# Texts (G1): counts and where to look, nothing else


@dataclass(frozen=True)
class Counts:
    """How many events of each type one notification reports."""

    new_messages: int = 0
    new_documents: int = 0
    record_accesses: int = 0

    @property
    def empty(self) -> bool:
        return not (self.new_messages or self.new_documents or self.record_accesses)


def _lines(counts: Counts, language: str) -> list[str]:
    lines: list[str] = []
    if language == "en":
        if counts.new_messages:
            n = counts.new_messages
            lines.append("1 new message" if n == 1 else f"{n} new messages")
        if counts.new_documents:
            n = counts.new_documents
            lines.append("1 new or updated document" if n == 1 else f"{n} new or updated documents")
        if counts.record_accesses:
            n = counts.record_accesses
            lines.append(
                "1 access to your record by a health professional"
                if n == 1
                else f"{n} accesses to your record by health professionals"
            )
        return lines
    if counts.new_messages:
        n = counts.new_messages
        lines.append("1 nouveau message" if n == 1 else f"{n} nouveaux messages")
    if counts.new_documents:
        n = counts.new_documents
        lines.append(
            "1 document nouveau ou mis à jour"
            if n == 1
            else f"{n} documents nouveaux ou mis à jour"
        )
    if counts.record_accesses:
        n = counts.record_accesses
        lines.append(
            "1 consultation de votre dossier par un professionnel de santé"
            if n == 1
            else f"{n} consultations de votre dossier par des professionnels de santé"
        )
    return lines


SUBJECTS = {
    "fr": "Du nouveau dans votre espace santé",
    "en": "New activity in your health space",
}


def email_text(counts: Counts, language: str, settings: NotificationSettings) -> str:
    """The body of the notification e-mail."""
    items = "\n".join(f"  - {line}" for line in _lines(counts, language))
    portal = settings.portal_url.strip()
    if language == "en":
        where = (
            f"To see it, sign in to your health space: {portal}"
            if portal
            else "To see it, sign in to your health space."
        )
        return (
            "Hello,\n\n"
            "There is something new in your health space:\n\n"
            f"{items}\n\n"
            f"{where}\n\n"
            "To protect your privacy, this e-mail says nothing of what it is or who it is from.\n"
            "This is an automatic message: please do not reply.\n\n"
            f"{settings.operator_name}\n"
        )
    where = (
        f"Pour en prendre connaissance, connectez-vous à votre espace santé : {portal}"
        if portal
        else "Pour en prendre connaissance, connectez-vous à votre espace santé."
    )
    return (
        "Bonjour,\n\n"
        "Du nouveau vous attend dans votre espace santé :\n\n"
        f"{items}\n\n"
        f"{where}\n\n"
        "Pour protéger votre vie privée, ce message ne dit rien de leur contenu ni de leur "
        "auteur.\n"
        "Ceci est un message automatique : merci de ne pas y répondre.\n\n"
        f"{settings.operator_name}\n"
    )


def sms_text(counts: Counts, language: str) -> str:
    """The SMS: one sentence with the counts (no link: SMS links invite phishing)."""
    joined = ", ".join(_lines(counts, language))
    if language == "en":
        return f"Your health space: {joined}. Sign in to see it."
    return f"Votre espace santé : {joined}. Connectez-vous pour en prendre connaissance."


def build_email(
    counts: Counts, language: str, to: str, settings: NotificationSettings
) -> EmailMessage:
    """The complete notification e-mail, headers included (content-free by construction)."""
    message = EmailMessage()
    local, _, domain = settings.from_address.rpartition("@")
    message["From"] = Address(display_name=settings.operator_name, username=local, domain=domain)
    message["To"] = to
    message["Subject"] = SUBJECTS.get(language, SUBJECTS["fr"])
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(domain=domain or None)
    message["Auto-Submitted"] = "auto-generated"
    message["Content-Language"] = language
    message.set_content(email_text(counts, language, settings), charset="utf-8")
    return message


# ---------------------------------------------------------------------------------------------
# Senders (implemented in caducee.gateway.notify)


class EmailSender(Protocol):
    """Hands an e-mail to the smarthost; raises on failure (the job is retried)."""

    def send(self, message: EmailMessage, sender: str, recipient: str) -> None: ...


class SmsSender(Protocol):
    """Sends one SMS; raises on failure (the job is retried)."""

    def send(self, phone: str, text: str) -> None: ...


# ---------------------------------------------------------------------------------------------
# The job handler


class LeaseLost(RuntimeError):
    """The job's lease passed to another worker; this attempt rolled back."""


_ACCOUNTS = table_of(Account)
_RECIPIENT = (
    select(
        _ACCOUNTS.c.kind,
        _ACCOUNTS.c.state,
        *(column for column in _CONTACTS.c if column.name not in ("account_id", "updated_at")),
    )
    .select_from(_ACCOUNTS.outerjoin(_CONTACTS, _CONTACTS.c.account_id == _ACCOUNTS.c.id))
    .where(_ACCOUNTS.c.id == bindparam("account_id"))
)
"""An account's kind and state with the patient's choices (``NULL`` fields: none made)."""


def _open_patient(row: Any) -> bool:
    """Whether ``row`` (kind and state of an account, or None) is a patient not closed."""
    return (
        row is not None
        and row.kind == AccountKind.PATIENT.value
        and row.state != AccountState.CLOSED.value
    )


def _account_open(session: Session, account_id: int) -> bool:
    return _open_patient(session.execute(_RECIPIENT, {"account_id": account_id}).one_or_none())


class Notifier:
    """Collects events into batches and sends each batch once its window is over.

    A :class:`~caducee.storage.worker.BatchHandler`: the worker collects a burst of events
    (one per inbound message) in one transaction, each in its savepoint, instead of one
    transaction and fsync per event (issue 19); sending, which waits on the smarthost, always
    runs alone.
    """

    def __init__(
        self,
        database: Database,
        queue: JobQueue,
        settings: NotificationSettings,
        *,
        email: EmailSender | None,
        sms: SmsSender | None,
    ) -> None:
        self.database = database
        self.queue = queue
        self.settings = settings
        self.email = email
        self.sms = sms

    def _reachable(self, prefs: Preferences) -> bool:
        by_email = self.email is not None and prefs.email_enabled and bool(prefs.email)
        by_sms = self.sms is not None and prefs.sms_enabled and bool(prefs.phone)
        return by_email or by_sms

    def handle(self, job: ClaimedJob) -> None:
        """Run one job alone, in its own transaction(s)."""
        event = _event(job)
        if event is Event.SEND_BATCH:
            self.send(job, _int(job.payload, "batch_id"))
        else:
            self.collect(job, event, _int(job.payload, "account_id"))

    __call__ = handle

    def batch_key(self, job: ClaimedJob) -> int | None:
        """The patient's account for an event to collect (it may share a worker's batch).

        Collecting is database work only and locks the patient's open batch, hence the key.
        Sending a batch talks to the smarthost: it never holds a shared transaction open (None),
        nor does a job whose payload will not parse (its own path reports it).
        """
        try:
            event = _event(job)
            return None if event is Event.SEND_BATCH else _int(job.payload, "account_id")
        except PermanentJobError:
            return None

    def run_in(self, job: ClaimedJob, session: Session) -> None:
        """Collect one event in ``session`` (a worker's batch); the worker completes the job."""
        event = _event(job)
        if event is Event.SEND_BATCH:
            raise PermanentJobError("a send-batch job cannot share a transaction")
        self._collect_in(session, event, _int(job.payload, "account_id"), _count(job))

    def collect_new_message(self, session: Session, account_id: int) -> None:
        """Collect a delivered message's ``new-message`` event in the delivery's transaction.

        What a ``notify-patient`` job would do for it, without the job (issue 19): the batch
        exists exactly when the message does, as with the job once it ran.
        """
        self._collect_in(session, Event.NEW_MESSAGE, account_id, 1)

    def _complete(self, job: ClaimedJob, session: Session) -> None:
        if not self.queue.complete(job, session):
            raise LeaseLost("the notify-patient job's lease was lost")

    def collect(self, job: ClaimedJob, event: Event, account_id: int) -> None:
        """Add one event to the patient's open batch (opening it, and queueing its sending)."""
        with self.database.transaction() as session:
            self._collect_in(session, event, account_id, _count(job))
            self._complete(job, session)

    def _collect_in(self, session: Session, event: Event, account_id: int, count: int) -> None:
        """The effects of collecting one event, in the caller's transaction (no completion)."""
        # The account and the patient's choices in one read: it runs for every inbound
        # message (issue 19).
        row = session.execute(_RECIPIENT, {"account_id": account_id}).one_or_none()
        if not _open_patient(row):
            return
        add_to_centre(session, account_id, event.value, count)
        if not self.settings.enabled:
            return
        prefs = _effective(row, self.settings)
        if not prefs.wants(event) or not self._reachable(prefs):
            log.debug("notification not wanted", extra={"account_id": account_id})
            return
        now = utcnow()
        values = {"new_messages": 0, "new_documents": 0, "record_accesses": 0}
        values[_COUNTERS[event]] = 1
        grouped = session.execute(
            _GROUPING[event](session),
            {
                "account_id": account_id,
                "state": BatchState.OPEN.value,
                "opened_at": now,
                "due_at": now + self.settings.window,
                **values,
            },
        ).one()
        batch_id = int(grouped.id)
        if grouped.events == 1:  # this event opened the batch: its sending is due after the window
            self.queue.enqueue(
                session,
                NOTIFY_PATIENT_JOB,
                {"event": Event.SEND_BATCH.value, "batch_id": batch_id},
                delay=self.settings.window,
            )
        log.info(
            "notification event grouped",
            extra={"account_id": account_id, "event": event.value, "batch_id": batch_id},
        )

    def send(self, job: ClaimedJob, batch_id: int) -> None:
        """Close the batch and send it on each channel not yet done."""
        with self.database.transaction() as session:
            batch = session.scalar(
                select(NotificationBatch).where(NotificationBatch.id == batch_id).with_for_update()
            )
            if batch is None or batch.state == BatchState.SENT.value:
                self._complete(job, session)
                return
            batch.state = BatchState.SENDING.value
            account_id = batch.account_id
            prefs = preferences(session, account_id, self.settings)
            counts = Counts(
                new_messages=batch.new_messages if prefs.new_message else 0,
                new_documents=batch.new_documents if prefs.new_document else 0,
                record_accesses=batch.record_accesses if prefs.record_access else 0,
            )
            email_done = batch.email_sent_at is not None
            sms_done = batch.sms_sent_at is not None
            wanted = _account_open(session, account_id) and not counts.empty
        channels: list[str] = []
        email_to = prefs.email if prefs.email_enabled else None
        if wanted and not email_done and self.email is not None and email_to:
            message = build_email(counts, prefs.language, email_to, self.settings)
            self.email.send(message, self.settings.from_address, email_to)
            self._mark(batch_id, email_sent_at=utcnow())
            channels.append("email")
        phone = prefs.phone if prefs.sms_enabled else None
        if wanted and not sms_done and self.sms is not None and phone:
            self.sms.send(phone, sms_text(counts, prefs.language))
            self._mark(batch_id, sms_sent_at=utcnow())
            channels.append("sms")
        with self.database.transaction() as session:
            session.execute(
                update(_BATCHES)
                .where(_BATCHES.c.id == batch_id)
                .values(state=BatchState.SENT.value, sent_at=utcnow())
            )
            self._complete(job, session)
        log.info(
            "notification sent",
            extra={
                "account_id": account_id,
                "batch_id": batch_id,
                "channels": ",".join(channels) or "none",
                "new_messages": counts.new_messages,
                "new_documents": counts.new_documents,
                "record_accesses": counts.record_accesses,
            },
        )

    def _mark(self, batch_id: int, **values: datetime) -> None:
        with self.database.transaction() as session:
            session.execute(update(_BATCHES).where(_BATCHES.c.id == batch_id).values(**values))


def _event(job: ClaimedJob) -> Event:
    try:
        return Event(str(job.payload["event"]))
    except (KeyError, ValueError):
        raise PermanentJobError("notify-patient job with an unknown event") from None


def _count(job: ClaimedJob) -> int:
    """How many events one job reports (a filing reports its documents at once)."""
    count = job.payload.get("documents", 1)
    return count if isinstance(count, int) else 1


def _int(payload: Mapping[str, Any], name: str) -> int:
    try:
        return int(payload[name])
    except (KeyError, TypeError, ValueError):
        raise PermanentJobError(f"notify-patient job without a valid '{name}'") from None


def make_notify_handler(
    database: Database,
    queue: JobQueue,
    settings: NotificationSettings,
    *,
    email: EmailSender | None = None,
    sms: SmsSender | None = None,
) -> Notifier:
    """The handler of ``notify-patient`` jobs (register it under :data:`NOTIFY_PATIENT_JOB`).

    The :class:`Notifier` itself: a :class:`~caducee.storage.worker.BatchHandler`, so a worker
    collects a batch of events in one transaction (issue 19).
    """
    return Notifier(database, queue, settings, email=email, sms=sms)
