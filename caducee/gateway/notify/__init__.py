"""Patient notifications at the edge: the senders and the wiring of the ``notify-patient`` job.

:func:`notify_handler` builds the job handler of
:mod:`caducee.mailboxes.notifications.patients` with
the senders the ``[notifications]`` settings name (smarthost e-mail, SMS file); the gateway
registers it in ``standard_handlers``. :func:`filing_hook` is what the filing job calls once
documents entered a record: it audits each filed document and queues the patient's
``new-document`` notification in the filing transaction.
"""

from __future__ import annotations

from caducee.gateway.notify.hooks import filing_hook
from caducee.gateway.notify.setup import email_sender, notify_handler, sms_sender

__all__ = ["email_sender", "filing_hook", "notify_handler", "sms_sender"]
