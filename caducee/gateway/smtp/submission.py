"""The submission ports (C1–C5): users send; the patient's rules hold; mail is delivered or relayed.

After authentication (``auth.py``), MAIL checks that the sender belongs to the
account (C2), each RCPT is judged by the submission rule table (C4 and the B2
checks for hosted recipients), and DATA checks the header ``From`` and the
size with the same strict reader as the operators' port. Hosted recipients get
the message through the same delivery as inbound mail (conversations, contacts,
[FIN], filing jobs); other recipients of the trust space get it through the
outbound queue — both in the one transaction committed before ``250``. The RCPT verdict
and the accepted path are :mod:`caducee.gateway.submit`'s, which the webmail asks too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from caducee.config import Settings
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
from caducee.gateway.smtp.mail import local_domains
from caducee.gateway.smtp.protocol import (
    CaduceeEnvelope,
    CaduceeSession,
    CheapAiosmtpdSetup,
)
from caducee.gateway.submit import judge_recipient, prepare_submission
from caducee.mailboxes.accounts.delegation import delegated_principal
from caducee.policies.limits import DATA_READ_CHAIN, DataReadFacts
from caducee.policies.submission import (
    HEADER_CHAIN,
    SENDER_CHAIN,
    SenderFacts,
    SubmittedHeaderFacts,
)
from caducee.policies.verdict import Verdict, first_refusal

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


class SubmissionHandler(CheapAiosmtpdSetup, AuthMechanisms):
    """aiosmtpd handler of the submission ports (587-style and 465-style)."""

    def __init__(self, context: SmtpContext, authenticator: Authenticator) -> None:
        self.context = context
        self.authenticator = authenticator
        self.local_domains = local_domains(
            context.settings.gateway.patient_domain, context.settings.gateway.hosted_domains
        )
        self.metrics = process_metrics()
        # every SMTP port of a process shares one limiter: one "smtp" series
        self.metrics.watch_connections("smtp", context.connections)

    @property
    def settings(self) -> Settings:
        """The context's settings, read at each use so that a reload (SIGHUP) applies at once."""
        return self.context.settings

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
            return self._refuse("MAIL", too_big, envelope)
        sender = await self._sends_as(user, address)
        facts = SenderFacts(address=address, owned=sender is not None)
        verdict = first_refusal(SENDER_CHAIN, facts)
        if verdict is not None:
            return self._refuse("MAIL", verdict, envelope)
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

    def _refuse(self, stage: str, verdict: Verdict, envelope: CaduceeEnvelope) -> str:
        """Record, log and count a refusal of ``stage``; the reply the client reads."""
        envelope.refused(stage, verdict.rule)
        log.info(
            "refused", extra={"queue_id": envelope.queue_id, "stage": stage, "rule": verdict.rule}
        )
        self.metrics.refusal(LISTENER, stage, verdict.rule)
        return verdict.smtp_reply()

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
            return self._refuse("RCPT", too_many, envelope)
        user = _sender(session, envelope)
        trust = await self.context.trust.fresh()

        def judge() -> tuple[Any, Any]:
            with self.context.database.reading() as db:
                return judge_recipient(
                    db,
                    self.settings,
                    user,
                    address,
                    local_domains=self.local_domains,
                    trust_domains=trust.domains,
                )

        verdict, recipient = await asyncio.to_thread(judge)
        if verdict is not None:
            return self._refuse("RCPT", verdict, envelope)
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
            too_big = first_refusal(DATA_READ_CHAIN, DataReadFacts(too_big=True))
            assert too_big is not None
            return self._refuse("DATA", too_big, envelope)
        assert isinstance(content, bytes)
        headers = data_stage.read_headers(content)
        shape = SubmittedHeaderFacts(headers.parses, bool(headers.from_addresses))
        verdict = first_refusal(HEADER_CHAIN, shape)
        if verdict is not None:
            return self._refuse("DATA", verdict, envelope)
        owned = True
        for address in headers.from_addresses:
            owned = owned and await self._sends_as(_user(session), address) is not None
        verdict = first_refusal(SENDER_CHAIN, SenderFacts(user.address, owned))
        if verdict is not None:
            return self._refuse("DATA", verdict, envelope)
        queue_id = envelope.queue_id
        trust = await self.context.trust.fresh()
        submission = prepare_submission(
            self.settings,
            user,
            content,
            headers,
            client_name=session.host_name or "unknown",
            queue_id=queue_id,
            protocol="ESMTPSA",
            local_domains=self.local_domains,
            trust_domains=trust.domains,
            resolved=envelope.resolved,
            outgoing=envelope.outgoing,
            blobs=self.context.blobs,
            queue=self.context.queue,
            delivery=self.context.delivery,
        )
        self.context.in_flight += 1
        try:
            await self.context.committer.run(submission.commit)
        finally:
            self.context.in_flight -= 1
        self.context.on_commit()
        # a held copy (E3) gets a wake-up too: its IDLE session then finds nothing new
        self.context.on_delivered(r.account_id for r in envelope.resolved)
        log.info(
            "submitted",
            extra={
                "queue_id": queue_id,
                "local": submission.local,
                "relayed": submission.relayed,
                "size": len(content),
            },
        )
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        """Never echo an exception's text: log its type, answer 451."""
        log.error("session error", exc_info=error)
        return "451 4.3.0 Local error; try again later"
