"""Accepting a message a local user sends: one path for the submission ports and the webmail.

The SMTP submission handler (:mod:`caducee.gateway.smtp.submission`) and the patient's webmail
(:mod:`caducee.gateway.web`) both send mail for an authenticated mailbox. Both ask the same
questions here, so that no rule exists twice:

* :func:`judge_recipient` — the RCPT verdict of the submission rule table
  (:data:`caducee.policies.submission.RECIPIENT_CHAIN`: C4, the B2 checks for hosted
  recipients, B3), and the hosted recipient when there is one;
* :func:`prepare_submission` — from the message bytes to the one transaction that delivers it
  to hosted recipients (conversations, contacts, [FIN], filing jobs: D1–D3, E1) and queues it
  for the others (C5); the caller commits it (SMTP through its group committer, before
  ``250``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import format_datetime

from sqlalchemy.orm import Session

from caducee.config import Settings
from caducee.directory.lookup import bal_type_of
from caducee.gateway.smtp.data import HeaderFacts
from caducee.gateway.smtp.mail import split_address
from caducee.gateway.smtp.rcpt import resolve_recipient
from caducee.mailboxes.access.contacts import patient_may_write
from caducee.mailboxes.accounts.identity.principal import Principal
from caducee.mailboxes.accounts.store import AccountKind
from caducee.mailboxes.delivery import Envelope as DeliveryEnvelope
from caducee.mailboxes.delivery import MailDelivery, Recipient
from caducee.mailboxes.relay.outbound import queue_outbound
from caducee.policies.submission import RECIPIENT_CHAIN, SubmittedRecipientFacts
from caducee.policies.verdict import Verdict, first_refusal
from caducee.storage.blobs import BlobStore
from caducee.storage.db import utcnow
from caducee.storage.jobs import JobQueue


def judge_recipient(
    session: Session,
    settings: Settings,
    sender: Principal,
    address: str,
    *,
    local_domains: frozenset[str],
    trust_domains: frozenset[str],
) -> tuple[Verdict | None, Recipient | None]:
    """The submission table's verdict on ``address`` for ``sender`` (None: accepted).

    The second value is the hosted recipient the message is delivered to, None when the
    address is relayed to another operator of the trust space (or refused).
    """
    is_patient = sender.kind == AccountKind.PATIENT.value
    classified, recipient = resolve_recipient(session, settings, address, sender.address)
    parts = split_address(address)
    in_trust = parts is not None and (parts[1] in local_domains or parts[1] in trust_domains)
    facts = SubmittedRecipientFacts(
        sender_is_patient=is_patient,
        sender_bal_type=None if is_patient else bal_type_of(session, sender.address),
        kind=classified.kind,
        ins_key_valid=classified.ins_key_valid,
        patient_state=classified.patient_state,
        in_trust_space=in_trust,
        patient_may_write=is_patient and patient_may_write(session, sender.account_id, address),
    )
    return first_refusal(RECIPIENT_CHAIN, facts), recipient


@dataclass(frozen=True)
class Submission:
    """A message ready to commit: :attr:`commit` runs in the caller's transaction."""

    commit: Callable[[Session], None]
    local: int
    relayed: int


def prepare_submission(
    settings: Settings,
    sender: Principal,
    content: bytes,
    headers: HeaderFacts,
    *,
    client_name: str,
    queue_id: str,
    protocol: str,
    local_domains: frozenset[str],
    trust_domains: frozenset[str],
    resolved: Sequence[Recipient],
    outgoing: Sequence[str],
    blobs: BlobStore,
    queue: JobQueue,
    delivery: MailDelivery,
) -> Submission:
    """Stamp ``Received`` and build the delivery of an accepted submission (C3–C5, D1–D3).

    ``headers`` is :func:`caducee.gateway.smtp.data.read_headers` of ``content``, whose
    ``From`` the caller has checked against the sender (C2). A ``Reply-To`` outside the
    trust space is ignored (D2). ``protocol`` is the ``with`` word of ``Received``.
    """
    received = (
        f"Received: from {client_name or 'unknown'} (authenticated user)\r\n"
        f"\tby {settings.gateway.hostname} (Caducée) with {protocol} id {queue_id};\r\n"
        f"\t{format_datetime(utcnow())}\r\n"
    ).encode()
    message = received + content
    reply_to = headers.reply_to
    if reply_to is not None:
        reply_parts = split_address(reply_to)
        if reply_parts is None or not (
            reply_parts[1] in trust_domains or reply_parts[1] in local_domains
        ):
            reply_to = None
    is_patient = sender.kind == AccountKind.PATIENT.value
    envelope = DeliveryEnvelope(
        content=message,
        direction="submitted",
        envelope_from=sender.address,
        header_from=headers.from_addresses[0],
        message_id=headers.message_id,
        thread_ids=headers.thread_ids,
        reply_to=reply_to,
        ends_exchange=headers.ends_exchange,
        sender_is_professional=not is_patient,
        has_attachments=headers.multipart,
        recipients=tuple(resolved),
    )
    relayed = list(outgoing)

    def commit(session: Session) -> None:
        if envelope.recipients:
            delivery.deliver(session, envelope)
        if relayed:
            queue_outbound(
                session,
                blobs,
                queue,
                envelope_from=sender.address,
                recipients=relayed,
                content=message,
                purpose="submission",
                message_id=headers.message_id,
            )

    return Submission(commit, len(envelope.recipients), len(relayed))
