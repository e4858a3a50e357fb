"""G1, F2: the ``[notifications]`` and ``[access]`` settings are read when the sections exist and
fall back to documented defaults before they do; the standard wiring builds the handler."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from caducee.config.settings import GatewaySettings, Settings
from caducee.gateway.notify import email_sender, notify_handler, sms_sender
from caducee.gateway.notify.email import SmarthostSender
from caducee.gateway.notify.sms import FileSmsSender
from caducee.gateway.runtime import Gateway
from caducee.mailboxes.access.rights import AccessSettings
from caducee.mailboxes.notifications.patients import NotificationSettings
from tests.harness.reports import Record, build_mail, pdf_part

from .test_notifications import run_jobs, set_contact


def test_g1_defaults_without_a_notifications_section(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, gateway=GatewaySettings(hostname="mx.example.test"))
    resolved = NotificationSettings.from_settings(settings)
    assert resolved.from_address == "no-reply@mx.example.test"
    assert resolved.smarthost_host == "" and resolved.grouping_window_seconds == 300
    assert resolved.default_language == "fr" and resolved.home == tmp_path
    assert email_sender(resolved) is None and sms_sender(resolved) is None
    assert AccessSettings.from_settings(settings) == AccessSettings()


def test_g1_sections_are_read_when_present(tmp_path: Path) -> None:
    (tmp_path / "smarthost.pw").write_text("s3cret\n")
    section = SimpleNamespace(
        smarthost_host="smtp.example.test",
        smarthost_port=465,
        smarthost_tls="tls",
        smarthost_username="caducee",
        smarthost_password_file="smarthost.pw",
        sms_sender="file",
        sms_file="out/sms.jsonl",
        grouping_window_seconds=30,
        default_language="en",
    )
    fake: Any = SimpleNamespace(
        notifications=section,
        access=SimpleNamespace(emergency_access_default=True, min_reason_length=3),
        gateway=GatewaySettings(),
        home=tmp_path,
    )
    resolved = NotificationSettings.from_settings(fake)
    assert resolved.smarthost_port == 465 and resolved.grouping_window_seconds == 30
    sender = email_sender(resolved)
    assert isinstance(sender, SmarthostSender)
    assert sender.password == "s3cret" and sender.tls == "tls"
    sms = sms_sender(resolved)
    assert isinstance(sms, FileSmsSender) and sms.path == tmp_path / "out" / "sms.jsonl"
    access = AccessSettings.from_settings(fake)
    assert access.emergency_access_default is True and access.min_reason_length == 3
    assert access.notify_record_access is True


def test_g1_standard_handler_without_senders_drops_quietly(
    record: Record, tmp_path: Path, n1_pdf: bytes
) -> None:
    gateway = Gateway(
        settings=record.settings,
        database=record.database,
        keyring=record.blobs.keyring,
        blobs=record.blobs,
        queue=record.queue,
    )
    handler = notify_handler(gateway)
    set_contact(record, NotificationSettings.from_settings(record.settings))
    record.deliver(build_mail([pdf_part(n1_pdf)]))
    record.file()  # E5: the patient's copy is visible (and notified) once filed
    assert run_jobs(record.queue, handler) == 1  # collected nowhere: no channel configured
