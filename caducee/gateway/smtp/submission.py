"""The submission ports (C1–C5): users send; the patient's rules hold; mail is delivered or relayed.

After authentication (``auth.py``), MAIL checks that the sender belongs to the
account (C2), each RCPT is judged by the submission rule table (C4 and the B2
checks for hosted recipients), and DATA checks the header ``From`` and the
size with the same strict reader as the operators' port. Hosted recipients get
the message through the same delivery as inbound mail (conversations, contacts,
[FIN], filing jobs); other recipients of the trust space get it through the
outbound queue — both in the one transaction committed before ``250``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import format_datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from caducee.directory.lookup import bal_type_of
from caducee.gateway.metrics import process_metrics
from caducee.gateway.smtp import data as data_stage
from caducee.gateway.smtp.auth import (
    EXTERNAL,
    AuthenticatedUser,
    Authenticator,
    AuthMechanisms,
    client_certificate,
)
from caducee.gateway.smtp.context import SmtpContext
from caducee.gateway.smtp.limits import declared_size_refusal, recipients_refusal
from caducee.gateway.smtp.mail import local_domains, split_address
from caducee.gateway.smtp.protocol import CaduceeEnvelope, CaduceeSession
from caducee.gateway.smtp.rcpt import resolve_recipient
from caducee.mailboxes.accounts import AccountKind
from caducee.mailboxes.contacts import patient_may_write
from caducee.mailboxes.delegation import delegated_principal
from caducee.mailboxes.delivery import Envelope as DeliveryEnvelope
from caducee.mailboxes.outbound import queue_outbound
from caducee.policies.submission import (
    RECIPIENT_CHAIN,
    SENDER_CHAIN,
    SenderFacts,
    SubmittedRecipientFacts,
)
from caducee.policies.verdict import first_refusal
from caducee.storage.db import utcnow

LISTENER = "submission"

log = logging.getLogger("caducee.smtp.submission")


def _user(session: Session) -> AuthenticatedUser:
    user = session.auth_data
    assert isinstance(user, AuthenticatedUser), "aiosmtpd's auth_required guarantees a user"
    return user


def _sender(session: Session, envelope: Envelope) -> AuthenticatedUser:
    """The mailbox this transaction sends as: MAIL FROM's (own or delegated), else the login's."""
    if isinstance(envelope, CaduceeEnvelope) and envelope.sender is not None:
        return envelope.sender
    return _user(session)


def _without_external(line: str) -> str:
    if not line[4:].upper().startswith("AUTH "):
        return line
    return " ".join(word for word in line.split(" ") if word.upper() != EXTERNAL)


class SubmissionHandler(AuthMechanisms):
    """aiosmtpd handler of the submission ports (587-style and 465-style)."""

    def __init__(self, context: SmtpContext, authenticator: Authenticator) -> None:
        self.context = context
        self.settings = context.settings
        self.authenticator = authenticator
        self.local_domains = local_domains(
            context.settings.gateway.patient_domain, context.settings.gateway.hosted_domains
        )
        self.metrics = process_metrics()
        # every SMTP port of a process shares one limiter: one "smtp" series
        self.metrics.watch_connections("smtp", context.connections)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.metrics.command(LISTENER, "EHLO")
        session.host_name = hostname
        if client_certificate(server) is None:
            # EXTERNAL only to a session whose client certificate was verified (C1)
            responses = [_without_external(line) for line in responses]
        return [responses[0], f"250-SIZE {self.settings.smtp.max_message_bytes}", *responses[1:]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.metrics.command(LISTENER, "MAIL")
        user = _user(session)
        too_big = declared_size_refusal(options, self.settings.smtp.max_message_bytes)
        assert isinstance(envelope, CaduceeEnvelope)
        if too_big is not None:
            envelope.refused("MAIL", "limits.declared-size")
            return too_big
        sender = await self._sends_as(user, address)
        facts = SenderFacts(address=address, owned=sender is not None)
        verdict = first_refusal(SENDER_CHAIN, facts)
        if verdict is not None:
            envelope.refused("MAIL", verdict.rule)
            log.info(
                "refused",
                extra={"queue_id": envelope.queue_id, "stage": "MAIL", "rule": verdict.rule},
            )
            self.metrics.refusal(LISTENER, "MAIL", verdict.rule)
            return verdict.smtp_reply()
        assert sender is not None
        if sender.address != user.address:
            log.info(
                "sending for a delegated mailbox",
                extra={"account": user.authenticated_account_id, "mailbox": sender.account_id},
            )
        envelope.sender = sender
        envelope.mail_from = sender.address
        envelope.mail_options.extend(options)
        envelope.outgoing = []
        return "250 2.1.0 Sender OK"

    async def _sends_as(self, user: AuthenticatedUser, address: str) -> AuthenticatedUser | None:
        """The mailbox ``address`` names if ``user`` owns it or it is delegated to them (C2)."""
        wanted = address.strip().lower()
        if wanted == user.address:
            return user
        if not wanted:
            return None

        def lookup() -> AuthenticatedUser | None:
            with self.context.database.reading() as db:
                return delegated_principal(db, user, wanted)

        return await asyncio.to_thread(lookup)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.metrics.command(LISTENER, "RCPT")
        assert isinstance(envelope, CaduceeEnvelope)
        too_many = recipients_refusal(envelope, self.settings.smtp.max_recipients)
        if too_many is not None:
            envelope.refused("RCPT", "limits.recipients")
            return too_many
        user = _sender(session, envelope)
        is_patient = user.kind == AccountKind.PATIENT.value
        trust = await self.context.trust.fresh()
        parts = split_address(address)

        def judge() -> tuple[Any, Any]:
            with self.context.database.reading() as db:
                classified, recipient = resolve_recipient(db, self.settings, address, user.address)
                in_trust = parts is not None and (
                    parts[1] in self.local_domains or parts[1] in trust.domains
                )
                facts = SubmittedRecipientFacts(
                    sender_is_patient=is_patient,
                    sender_bal_type=None if is_patient else bal_type_of(db, user.address),
                    kind=classified.kind,
                    ins_key_valid=classified.ins_key_valid,
                    patient_state=classified.patient_state,
                    in_trust_space=in_trust,
                    patient_may_write=is_patient
                    and patient_may_write(db, user.account_id, address),
                )
            return first_refusal(RECIPIENT_CHAIN, facts), recipient

        verdict, recipient = await asyncio.to_thread(judge)
        if verdict is not None:
            envelope.refused("RCPT", verdict.rule)
            log.info(
                "refused",
                extra={"queue_id": envelope.queue_id, "stage": "RCPT", "rule": verdict.rule},
            )
            self.metrics.refusal(LISTENER, "RCPT", verdict.rule)
            return str(verdict.smtp_reply())
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        if recipient is not None:
            envelope.resolved.append(recipient)
        else:
            envelope.outgoing.append(address.strip().lower())
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Count and time the transaction (end of DATA to the reply) around :meth:`_data`."""
        started = time.perf_counter()
        self.metrics.command(LISTENER, "DATA")
        try:
            reply = await self._data(server, session, envelope)
        except BaseException:
            self.metrics.transaction(LISTENER, "failed", started)
            raise
        outcome = "accepted" if reply.startswith("250") else "refused"
        self.metrics.transaction(LISTENER, outcome, started)
        return reply

    async def _data(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(session, CaduceeSession)
        assert isinstance(envelope, CaduceeEnvelope)
        user = _sender(session, envelope)
        content = envelope.content
        if content is None or envelope.size_hint is None:
            envelope.refused("DATA", "limits.size")
            return "552 5.3.4 Message too big"
        assert isinstance(content, bytes)
        headers = data_stage.read_headers(content)
        if not headers.parses or not headers.from_addresses:
            envelope.refused("DATA", "headers.malformed")
            return "550 5.6.0 The message header is malformed or has no From field"
        owned = True
        for address in headers.from_addresses:
            owned = owned and await self._sends_as(_user(session), address) is not None
        verdict = first_refusal(SENDER_CHAIN, SenderFacts(user.address, owned))
        if verdict is not None:
            envelope.refused("DATA", verdict.rule)
            log.info(
                "refused",
                extra={"queue_id": envelope.queue_id, "stage": "DATA", "rule": verdict.rule},
            )
            self.metrics.refusal(LISTENER, "DATA", verdict.rule)
            return verdict.smtp_reply()
        queue_id = envelope.queue_id
        received = (
            f"Received: from {session.host_name or 'unknown'} (authenticated user)\r\n"
            f"\tby {self.settings.gateway.hostname} (Caducée) with ESMTPSA id {queue_id};\r\n"
            f"\t{format_datetime(utcnow())}\r\n"
        ).encode()
        message = received + content
        trust = await self.context.trust.fresh()
        reply_to = headers.reply_to
        if reply_to is not None:
            reply_parts = split_address(reply_to)
            if reply_parts is None or not (
                reply_parts[1] in trust.domains or reply_parts[1] in self.local_domains
            ):
                reply_to = None
        is_patient = user.kind == AccountKind.PATIENT.value
        delivery = DeliveryEnvelope(
            content=message,
            direction="submitted",
            envelope_from=user.address,
            header_from=headers.from_addresses[0],
            message_id=headers.message_id,
            thread_ids=headers.thread_ids,
            reply_to=reply_to,
            ends_exchange=headers.ends_exchange,
            sender_is_professional=not is_patient,
            has_attachments=headers.multipart,
            recipients=tuple(envelope.resolved),
        )
        outgoing = list(envelope.outgoing)
        blobs, queue, delivery_service = (
            self.context.blobs,
            self.context.queue,
            self.context.delivery,
        )

        def commit(db: Any) -> None:
            if delivery.recipients:
                delivery_service.deliver(db, delivery)
            if outgoing:
                queue_outbound(
                    db,
                    blobs,
                    queue,
                    envelope_from=user.address,
                    recipients=outgoing,
                    content=message,
                    purpose="submission",
                    message_id=headers.message_id,
                )

        self.context.in_flight += 1
        try:
            await self.context.committer.run(commit)
        finally:
            self.context.in_flight -= 1
        self.context.on_commit()
        log.info(
            "submitted",
            extra={
                "queue_id": queue_id,
                "local": len(delivery.recipients),
                "relayed": len(outgoing),
                "size": len(content),
            },
        )
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        """Never echo an exception's text: log its type, answer 451."""
        log.error("session error", exc_info=error)
        return "451 4.3.0 Local error; try again later"
