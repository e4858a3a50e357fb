"""G1: out-of-band notifications: content-free texts, a real smarthost (aiosmtpd), grouping of
bursts, per-type preferences, retries through the job queue, the SMS file, the filing hook."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import event, select, update

from caducee.gateway.notify.email import SmarthostSender
from caducee.gateway.notify.sms import FileSmsSender
from caducee.jobs.followup import after_filing
from caducee.mailboxes.delivery import NOTIFY_PATIENT_JOB
from caducee.mailboxes.notifications.centre import CentreNotification
from caducee.mailboxes.notifications.patients import (
    BatchState,
    Counts,
    Event,
    NotificationBatch,
    NotificationSettings,
    build_email,
    make_notify_handler,
    queue_notification,
    sms_text,
    update_preferences,
)
from caducee.records.models import RecordDocument
from caducee.storage.audit import AuditEvent
from caducee.storage.db import Database, utcnow
from caducee.storage.jobs import DEAD, DONE, JobQueue, JobRow
from caducee.storage.worker import WorkerPool
from tests.harness.reports import (
    DEMO_INS,
    OTHER_INS,
    SENDER,
    Record,
    build_mail,
    n1_xdm,
    pdf_part,
    with_ins,
    xdm_part,
)

PERSONAL_EMAIL = "patient.perso@example.org"
PHONE = "+33612345678"
QUARANTINE_RULE = "E3.904-matricule"
SUBJECT = "XDM/1.0/DDM+CR d'examens biologiques PAT-TROIS DOMINIQUE 28/03/1979"


def forbidden(record: Record) -> list[str]:
    """What a notification must never carry: names, INS, sender, subject, titles, addresses."""
    words = [
        "PAT-TROIS",
        "DOMINIQUE",
        DEMO_INS,
        SENDER,
        "labo.mssante",
        "LABORATOIRE",
        "Jean",
        SUBJECT,
        "examens biologiques",
        "biologie",
        record.address,
        "resultats",
        "11502-2",
    ]
    with record.database.reading() as session:
        for title, display in session.execute(
            select(RecordDocument.title, RecordDocument.type_display)
        ):
            words += [value for value in (title, display) if value]
    return words


def assert_content_free(text: str, record: Record) -> None:
    lowered = text.lower()
    for word in forbidden(record):
        assert word.lower() not in lowered, word


class Collector:
    """An aiosmtpd handler keeping what the smarthost received."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 queued"


@pytest.fixture
def smarthost() -> Iterator[tuple[Collector, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    collector = Collector()
    controller = Controller(collector, hostname="127.0.0.1", port=port)
    controller.start()
    yield collector, port
    controller.stop()


class FakeEmail:
    def __init__(self, failures: int = 0) -> None:
        self.sent: list[tuple[EmailMessage, str, str]] = []
        self.failures = failures

    def send(self, message: EmailMessage, sender: str, recipient: str) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("smarthost unreachable")
        self.sent.append((message, sender, recipient))


class FlakySms(FileSmsSender):
    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def send(self, phone: str, text: str) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("SMS gateway down")
        super().send(phone, text)


def notification_settings(tmp_path: Path, port: int = 0, window: int = 0) -> NotificationSettings:
    return NotificationSettings(
        smarthost_host="127.0.0.1" if port else "",
        smarthost_port=port,
        smarthost_tls="none",
        from_address="no-reply@caducee.test",
        sms_sender="file",
        sms_file="sms.jsonl",
        grouping_window_seconds=window,
        portal_url="https://espace.caducee.test/",
        operator_name="Caducée test",
        home=tmp_path,
    )


def set_contact(record: Record, settings: NotificationSettings, **changes: Any) -> None:
    values: dict[str, Any] = {"email": PERSONAL_EMAIL, "phone": PHONE}
    values.update(changes)
    with record.database.transaction() as session:
        update_preferences(
            session,
            record.account_id,
            values,
            settings,
            actor_kind="patient",
            actor_id=f"account:{record.account_id}",
            channel="http",
        )


def run_jobs(queue: JobQueue, handler: Any) -> int:
    """Run every due job, in the worker's batches; return how many jobs ran."""
    pool = WorkerPool(queue, {NOTIFY_PATIENT_JOB: handler}, workers=1, poll_interval=0.1)
    ran = 0
    while batch := pool.run_once("test-notifier"):
        ran += batch
    return ran


def release_delayed(database: Database) -> None:
    """The grouping window (or a retry's back-off) is over."""
    with database.transaction() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.state == "ready")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def file_with_hook(record: Record, message_id: int) -> int:
    """What the filing job does once the lead wires the hook: file, then call it."""
    record.file()
    with record.database.transaction() as session:
        return after_filing(
            session, record.queue, message_id=message_id, account_id=record.account_id
        )


def test_g1_a_notification_reaches_the_smarthost_and_carries_no_health_content(
    record: Record,
    tmp_path: Path,
    smarthost: tuple[Collector, int],
    n1_cda: bytes,
) -> None:
    """Acceptance: message + filed document → one e-mail at a local smarthost, content-free."""
    collector, port = smarthost
    settings = notification_settings(tmp_path, port)
    set_contact(record, settings)
    message_id = record.deliver(build_mail([xdm_part(n1_xdm(n1_cda))], subject=SUBJECT))
    assert file_with_hook(record, message_id) == 1
    handler = make_notify_handler(
        record.database,
        record.queue,
        settings,
        email=SmarthostSender("127.0.0.1", port, tls="none"),
        sms=FileSmsSender(settings.path(settings.sms_file)),
    )
    assert run_jobs(record.queue, handler) == 3  # new-message, new-document, send-batch

    [envelope] = collector.envelopes
    assert envelope.mail_from == "no-reply@caducee.test"
    assert envelope.rcpt_tos == [PERSONAL_EMAIL]
    raw = bytes(envelope.content)
    received = message_from_bytes(raw, policy=policy.default)
    assert isinstance(received, EmailMessage)
    body = received.get_content()
    assert "1 nouveau message" in body and "1 document nouveau ou mis à jour" in body
    assert "https://espace.caducee.test/" in body
    assert received["Subject"] == "Du nouveau dans votre espace santé"
    assert received["Auto-Submitted"] == "auto-generated"
    headers = "\n".join(f"{name}: {value}" for name, value in received.items())
    assert_content_free(headers + "\n" + body + "\n" + raw.decode("utf-8", "replace"), record)

    [sms] = FileSmsSender(settings.path(settings.sms_file)).sent()
    assert sms["to"] == PHONE
    assert_content_free(sms["text"], record)
    mode = stat.S_IMODE(os.stat(settings.path(settings.sms_file)).st_mode)
    assert mode == 0o600

    with record.database.reading() as session:
        [batch] = session.scalars(select(NotificationBatch))
        assert batch.state == BatchState.SENT.value
        assert batch.email_sent_at is not None and batch.sms_sent_at is not None


@pytest.mark.parametrize("language", ["fr", "en"])
def test_g1_every_text_is_content_free(record: Record, tmp_path: Path, language: str) -> None:
    settings = notification_settings(tmp_path)
    for counts in (
        Counts(new_messages=1),
        Counts(new_messages=3, new_documents=2, record_accesses=5),
        Counts(new_documents=1),
        Counts(record_accesses=1),
    ):
        message = build_email(counts, language, PERSONAL_EMAIL, settings)
        full = message.as_string() + message.get_content()
        assert_content_free(full, record)
        assert_content_free(sms_text(counts, language), record)
        assert "Message-ID" in message and "caducee.test" in str(message["Message-ID"])
    english = build_email(Counts(new_messages=2, record_accesses=1), "en", "a@b.org", settings)
    assert "2 new messages" in english.get_content()
    assert "1 access to your record by a health professional" in english.get_content()


def test_g1_a_burst_is_grouped_into_one_notification(
    record: Record, tmp_path: Path, n1_pdf: bytes
) -> None:
    settings = notification_settings(tmp_path, window=120)
    set_contact(record, settings, phone=None)
    email = FakeEmail()
    handler = make_notify_handler(record.database, record.queue, settings, email=email)
    first = record.deliver(build_mail([pdf_part(n1_pdf)], subject="un"))
    record.deliver(build_mail([pdf_part(n1_pdf + b"\n% 2\n")], subject="deux"))
    file_with_hook(record, first)
    run_jobs(record.queue, handler)
    assert email.sent == []  # the window is not over
    third = record.deliver(build_mail([pdf_part(n1_pdf + b"\n% 3\n")], subject="trois"))
    file_with_hook(record, third)
    run_jobs(record.queue, handler)
    assert email.sent == []
    release_delayed(record.database)
    run_jobs(record.queue, handler)
    [(message, sender, recipient)] = email.sent
    assert recipient == PERSONAL_EMAIL and sender == "no-reply@caducee.test"
    body = message.get_content()
    assert "3 nouveaux messages" in body and "2 documents nouveaux ou mis à jour" in body
    # after sending, a new event opens a new batch
    record.deliver(build_mail([pdf_part(n1_pdf + b"\n% 4\n")], subject="quatre"))
    record.file()  # E5: the patient's copy is visible (and notified) once filed
    run_jobs(record.queue, handler)
    release_delayed(record.database)
    run_jobs(record.queue, handler)
    assert len(email.sent) == 2 and "1 nouveau message" in email.sent[1][0].get_content()


def test_g1_per_type_preferences_and_no_contact(
    record: Record, tmp_path: Path, n1_pdf: bytes
) -> None:
    settings = notification_settings(tmp_path)
    email = FakeEmail()
    handler = make_notify_handler(record.database, record.queue, settings, email=email)
    record.deliver(build_mail([pdf_part(n1_pdf)]))
    record.file()  # E5: the patient's copy is visible (and notified) once filed
    run_jobs(record.queue, handler)
    assert email.sent == []  # no personal contact: nothing to send, nothing kept
    set_contact(record, settings, phone=None, types={"new-message": False})
    record.deliver(build_mail([pdf_part(n1_pdf + b"\n% b\n")]))
    record.file()  # E5: the patient's copy is visible (and notified) once filed
    run_jobs(record.queue, handler)
    assert email.sent == []
    with record.database.reading() as session:
        assert list(session.scalars(select(NotificationBatch))) == []
    set_contact(record, settings, types={"new-message": None}, channels={"sms": False})
    record.deliver(build_mail([pdf_part(n1_pdf + b"\n% c\n")]))
    record.file()  # E5: the patient's copy is visible (and notified) once filed
    run_jobs(record.queue, handler)
    assert len(email.sent) == 1
    assert not settings.path(settings.sms_file).exists()


def test_g1_failures_are_retried_without_sending_twice(
    record: Record, tmp_path: Path, n1_pdf: bytes
) -> None:
    settings = notification_settings(tmp_path)
    set_contact(record, settings)
    email = FakeEmail(failures=1)
    sms = FlakySms(settings.path(settings.sms_file), failures=1)
    handler = make_notify_handler(record.database, record.queue, settings, email=email, sms=sms)
    record.deliver(build_mail([pdf_part(n1_pdf)]))
    record.file()  # E5: the patient's copy is visible (and notified) once filed
    run_jobs(record.queue, handler)  # the e-mail fails: retried later
    assert email.sent == [] and sms.sent() == []
    release_delayed(record.database)
    run_jobs(record.queue, handler)  # the e-mail goes, the SMS fails
    assert len(email.sent) == 1 and sms.sent() == []
    release_delayed(record.database)
    run_jobs(record.queue, handler)  # the SMS goes, the e-mail is not sent again
    assert len(email.sent) == 1 and len(sms.sent()) == 1
    with record.database.reading() as session:
        notify = select(JobRow).where(JobRow.kind == NOTIFY_PATIENT_JOB)
        states = {row.state for row in session.scalars(notify)}
    assert states == {DONE}


def test_g1_a_workers_batch_of_events_is_collected_in_one_transaction(
    record: Record, tmp_path: Path
) -> None:
    """Issue 19: a burst of events costs one claim and one commit; a bad one fails alone."""
    settings = notification_settings(tmp_path, window=120)
    set_contact(record, settings, phone=None)
    handler = make_notify_handler(record.database, record.queue, settings, email=FakeEmail())
    with record.database.transaction() as session:
        for _ in range(5):
            queue_notification(session, record.queue, record.account_id, Event.NEW_MESSAGE)
        session.add(
            JobRow(
                kind=NOTIFY_PATIENT_JOB,
                payload={
                    "event": "new-document",
                    "account_id": record.account_id,
                    "documents": "x",
                },
                max_attempts=3,
                next_attempt_at=utcnow(),
            )
        )
        queue_notification(
            session, record.queue, record.account_id, Event.NEW_DOCUMENT, documents=2
        )
    commits: list[int] = []
    listen = event.listens_for(record.database.engine, "commit")(lambda _c: commits.append(1))
    pool = WorkerPool(record.queue, {NOTIFY_PATIENT_JOB: handler}, workers=1, poll_interval=0.1)
    try:
        assert pool.run_once("test-notifier") == 7
    finally:
        event.remove(record.database.engine, "commit", listen)
    assert len(commits) == 2  # the claim; every event, the bad one's dead letter, completions
    with record.database.reading() as session:
        [batch] = session.scalars(select(NotificationBatch))
        assert (batch.state, batch.new_messages, batch.new_documents) == ("open", 5, 1)
        rows = session.scalars(select(JobRow).where(JobRow.kind == NOTIFY_PATIENT_JOB)).all()
        assert sorted(row.state for row in rows) == [DEAD] + [DONE] * 6 + ["ready"]
        [dead] = [row for row in rows if row.state == DEAD]
        assert "documents" in (dead.last_error or "")
        [waiting] = [row for row in rows if row.state == "ready"]
        assert waiting.payload == {"event": "send-batch", "batch_id": batch.id}
        lines = session.scalars(select(CentreNotification.kind)).all()
        assert sorted(lines) == ["new-document"] + ["new-message"] * 5


def test_g1_malformed_jobs_are_dead_lettered(record: Record, tmp_path: Path) -> None:
    handler = make_notify_handler(record.database, record.queue, notification_settings(tmp_path))
    with record.database.transaction() as session:
        record.queue.enqueue(session, NOTIFY_PATIENT_JOB, {"event": "gossip"})
        record.queue.enqueue(session, NOTIFY_PATIENT_JOB, {"event": "new-message"})
    run_jobs(record.queue, handler)
    with record.database.reading() as session:
        assert [row.state for row in session.scalars(select(JobRow))] == [DEAD, DEAD]


def test_f4_filing_hook_audits_filed_and_quarantined_documents(
    record: Record, n1_cda: bytes, n1_pdf: bytes
) -> None:
    wrong = n1_xdm(with_ins(n1_cda, OTHER_INS), ins=OTHER_INS)
    message_id = record.deliver(build_mail([xdm_part(wrong)]))
    assert file_with_hook(record, message_id) == 0
    good = record.deliver(build_mail([pdf_part(n1_pdf)]))
    assert file_with_hook(record, good) == 1
    with record.database.reading() as session:
        events = [
            (event.object_type, event.result, event.rule, event.subject_account_id)
            for event in session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "document.file")
                .order_by(AuditEvent.position)
            )
        ]
        jobs = [
            dict(row.payload)
            for row in session.scalars(
                select(JobRow).where(JobRow.kind == NOTIFY_PATIENT_JOB).order_by(JobRow.id)
            )
        ]
    assert events == [
        ("document", "denied", QUARANTINE_RULE, record.account_id),
        ("document", "ok", "E1.filed", record.account_id),
    ]
    assert [job for job in jobs if job["event"] == "new-document"] == [
        {
            "event": "new-document",
            "account_id": record.account_id,
            "message_id": good,
            "documents": 1,
        }
    ]
