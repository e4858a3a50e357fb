"""Patient notifications at the edge: the senders and the wiring of the ``notify-patient`` job.

:func:`notify_handler` builds the job handler of
:mod:`caducee.mailboxes.notifications.patients` with
the senders the ``[notifications]`` settings name (smarthost e-mail, SMS file); the gateway
registers it in ``standard_handlers``, and :func:`new_message_collector` lets ``serve``'s
deliveries collect their ``new-message`` events with it, in their own transaction. What
follows filing (the audit, the ``new-document`` notification) is composed by the jobs layer
(:mod:`caducee.jobs.followup`), not here.
"""

from __future__ import annotations

from caducee.gateway.notify.setup import (
    email_sender,
    new_message_collector,
    notify_handler,
    sms_sender,
)

__all__ = ["email_sender", "new_message_collector", "notify_handler", "sms_sender"]
