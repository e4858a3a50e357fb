"""Builds the notification senders and the ``notify-patient`` handler from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from caducee.gateway.notify.email import SmarthostSender
from caducee.gateway.notify.sms import FileSmsSender
from caducee.mailboxes.delivery import NOTIFY_PATIENT_JOB, CollectNewMessage
from caducee.mailboxes.notifications.patients import (
    EmailSender,
    NotificationSettings,
    Notifier,
    SmsSender,
    make_notify_handler,
)

if TYPE_CHECKING:  # runtime imports this module to register the handler
    from caducee.gateway.runtime import Gateway


def email_sender(settings: NotificationSettings) -> EmailSender | None:
    """The smarthost sender, or None when no smarthost is configured (no e-mail then)."""
    if not settings.smarthost_host:
        return None
    password = ""
    if settings.smarthost_password_file:
        password = settings.path(settings.smarthost_password_file).read_text().strip()
    return SmarthostSender(
        settings.smarthost_host,
        settings.smarthost_port,
        tls=settings.smarthost_tls,
        username=settings.smarthost_username,
        password=password,
        ca_file=settings.path(settings.smarthost_ca_file) if settings.smarthost_ca_file else None,
        timeout=settings.smarthost_timeout_seconds,
    )


def sms_sender(settings: NotificationSettings) -> SmsSender | None:
    """The configured SMS sender: ``file`` (development) or None (``none``)."""
    if settings.sms_sender == "file":
        return FileSmsSender(settings.path(settings.sms_file))
    if settings.sms_sender not in ("", "none"):
        raise ValueError("[notifications] sms_sender must be 'none' or 'file'")
    return None


def notify_handler(
    gateway: Gateway,
    *,
    settings: NotificationSettings | None = None,
    email: EmailSender | None = None,
    sms: SmsSender | None = None,
) -> Notifier:
    """The ``notify-patient`` handler; ``email``/``sms`` replace the configured senders."""
    resolved = settings or NotificationSettings.from_settings(gateway.settings)
    return make_notify_handler(
        gateway.database,
        gateway.queue,
        resolved,
        email=email if email is not None else email_sender(resolved),
        sms=sms if sms is not None else sms_sender(resolved),
    )


def new_message_collector(gateway: Gateway) -> CollectNewMessage:
    """Collects deliveries' ``new-message`` events with the gateway's ``notify-patient``
    handler of the moment (a reload of ``[notifications]`` replaces it)."""

    def collect(session: Session, account_id: int) -> None:
        notifier = gateway.handlers[NOTIFY_PATIENT_JOB]
        if not isinstance(notifier, Notifier):
            raise TypeError("the notify-patient handler is not a Notifier")
        notifier.collect_new_message(session, account_id)

    return collect
