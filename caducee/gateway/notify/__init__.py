"""Patient notifications at the edge: the senders and the wiring of the ``notify-patient`` job.

:func:`notify_handler` builds the job handler of
:mod:`caducee.mailboxes.notifications.patients` with
the senders the ``[notifications]`` settings name (smarthost e-mail, SMS file); the gateway
registers it in ``standard_handlers``. What follows filing (the audit, the ``new-document``
notification) is composed by the jobs layer (:mod:`caducee.jobs.followup`), not here.
"""

from __future__ import annotations

from caducee.gateway.notify.setup import email_sender, notify_handler, sms_sender

__all__ = ["email_sender", "notify_handler", "sms_sender"]
