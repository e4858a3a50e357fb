"""The operators' port: aiosmtpd hooks that run our stages and deliver (A1, A5, B1–B5, D1–D3).

Each hook gathers the facts of its stage (database lookups run in threads,
off the event loop), asks the policy chain, and either refuses with the
verdict's reply or goes on. DATA ends with one transaction — blob, message,
mailbox entries, conversation, contact, jobs — and ``250`` is sent only after
it commits (B5).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from caducee.config import Settings
from caducee.directory.lookup import same_professional
from caducee.gateway import dkim_verify
from caducee.gateway.metrics import process_metrics
from caducee.gateway.smtp import data as data_stage
from caducee.gateway.smtp.connection import peer_identity
from caducee.gateway.smtp.context import SmtpContext
from caducee.gateway.smtp.limits import declared_size_refusal, recipients_refusal
from caducee.gateway.smtp.mail import judge_sender, local_domains, sender_facts, split_address
from caducee.gateway.smtp.protocol import (
    CaduceeEnvelope,
    CaduceeSession,
    CheapAiosmtpdSetup,
)
from caducee.gateway.smtp.rcpt import judge_recipient, resolve_recipient
from caducee.mailboxes.delivery import Envelope as DeliveryEnvelope
from caducee.mailboxes.delivery import Recipient, RecipientRole
from caducee.mailboxes.imap_cache import seal_structure
from caducee.mailboxes.relay.outbound import sent_by
from caducee.policies.inbound import RecipientFacts
from caducee.policies.limits import DATA_READ_CHAIN, DataReadFacts
from caducee.policies.verdict import Verdict, first_refusal
from caducee.storage.blobs import BlobStore, SealedBlob

LISTENER = "operators"

log = logging.getLogger("caducee.smtp.inbound")


NULL_SENDER = "<>"


def _sender(envelope: Envelope) -> str:
    """The envelope sender, ``""`` for the null sender (kept as ``<>`` for aiosmtpd's checks)."""
    return "" if envelope.mail_from in (None, NULL_SENDER) else str(envelope.mail_from)


def _refuse(stage: str, verdict: Verdict, envelope: Envelope, **fields: Any) -> str:
    process_metrics().refusal(LISTENER, stage, verdict.rule)
    assert isinstance(envelope, CaduceeEnvelope)
    envelope.refused(stage, verdict.rule)
    log.info(
        "refused",
        extra={
            "queue_id": envelope.queue_id,
            "stage": stage,
            "rule": verdict.rule,
            "code": verdict.refusal.code,
            **fields,
        },
    )
    return verdict.smtp_reply()


def _gets_inbox_entry(delivery: DeliveryEnvelope) -> bool:
    """Whether delivery will write an INBOX entry, hence the message's IMAP structure.

    A patient's copy of a message with parts is held for the filing job instead (E3); when
    every recipient is such a patient, no structure is needed now. When unsure, say yes:
    a structure sealed for nothing costs one parse, never a wrong delivery.
    """
    if not delivery.has_attachments:
        return True
    return any(r.role is not RecipientRole.PATIENT for r in delivery.recipients)


def _seal(
    blobs: BlobStore, content: bytes, structure: bool
) -> tuple[SealedBlob, SealedBlob | None]:
    """The message encrypted (its file written when large) and, if wanted, its IMAP structure."""
    return blobs.seal(content), seal_structure(blobs, content) if structure else None


class InboundHandler(CheapAiosmtpdSetup):
    """aiosmtpd handler of the operators' port."""

    def __init__(self, context: SmtpContext) -> None:
        self.context = context
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

    # Connection and TLS -------------------------------------------------------------

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        assert isinstance(session, CaduceeSession)
        session.identity = peer_identity(session.ssl)
        return True

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
        size = f"250-SIZE {self.settings.smtp.max_message_bytes}"
        # Operators authenticate with their certificate: no AUTH on this port.
        kept = [line for line in responses[1:] if not line[4:].upper().startswith("AUTH")]
        return [responses[0], size, *kept]

    # MAIL ------------------------------------------------------------------------------

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.metrics.command(LISTENER, "MAIL")
        assert isinstance(session, CaduceeSession)
        address = "" if address in ("", "<>") else address
        too_big = declared_size_refusal(options, self.settings.smtp.max_message_bytes)
        if too_big is not None:
            return _refuse("MAIL", too_big, envelope)
        trust = await self.context.trust.fresh()
        facts = sender_facts(
            session.identity,
            address,
            trust.domains,
            self.local_domains,
            self.settings.smtp.allow_plaintext,
        )
        verdict = judge_sender(facts)
        if verdict is not None:
            return _refuse("MAIL", verdict, envelope)
        envelope.mail_from = address or NULL_SENDER
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    # RCPT ------------------------------------------------------------------------------

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.metrics.command(LISTENER, "RCPT")
        assert isinstance(envelope, CaduceeEnvelope)
        too_many = recipients_refusal(envelope, self.settings.smtp.max_recipients)
        if too_many is not None:
            return _refuse("RCPT", too_many, envelope)
        sender = _sender(envelope)

        def lookup() -> tuple[RecipientFacts, Recipient | None]:
            with self.context.database.reading() as db:
                return resolve_recipient(db, self.settings, address, sender)

        # An acceptance of the last second is reused without a thread hop or a query
        # (issue 19; the bound is RECIPIENT_CACHE_SECONDS). Refusals are always looked up.
        cached = self.context.recipients.get(address, sender)
        facts, recipient = cached if cached is not None else await asyncio.to_thread(lookup)
        verdict = judge_recipient(facts)
        if verdict is not None:
            return _refuse("RCPT", verdict, envelope)
        assert recipient is not None
        if cached is None:
            self.context.recipients.put(address, sender, facts, recipient)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        envelope.resolved.append(recipient)
        return "250 2.1.5 Recipient OK"

    # DATA ------------------------------------------------------------------------------

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
        settings = self.settings
        sender = _sender(envelope)
        content = envelope.content
        if content is None or envelope.size_hint is None:
            too_big = first_refusal(DATA_READ_CHAIN, DataReadFacts(too_big=True))
            assert too_big is not None
            return _refuse("DATA", too_big, envelope)
        assert isinstance(content, bytes)
        headers = data_stage.read_headers(content)
        sender_parts = split_address(sender) if sender else None
        patient_domain = split_address(f"x@{settings.gateway.patient_domain}")
        patient_ascii = patient_domain[1] if patient_domain else settings.gateway.patient_domain
        to_patient = any(r.role is RecipientRole.PATIENT for r in envelope.resolved)
        trust = await self.context.trust.fresh()

        patients = [r for r in envelope.resolved if r.role is RecipientRole.PATIENT]
        # B2: under <>, a patient receives only a report about a message that mailbox sent.
        report_needed = not sender and bool(patients)

        def examine() -> tuple[bool, dkim_verify.DkimOutcome, data_stage.ReportFacts, bool]:
            report = data_stage.read_report(content) if report_needed else data_stage.NOT_A_REPORT
            about_sent = False
            if report.well_formed:
                with self.context.database.reading() as db:
                    about_sent = all(
                        sent_by(
                            db,
                            account_id=p.account_id,
                            address=p.address,
                            message_ids=report.original_ids,
                        )
                        for p in patients
                    )
            aligned = True
            if sender and headers.from_addresses:
                aligned = all(
                    a == sender.lower() or self._same_professional(a, sender)
                    for a in headers.from_addresses
                )
            # No DKIM-Signature in the header block: "none" without dkimpy, which would
            # split the whole message into lines first (23 % of the thread pool's time on
            # 1 MiB messages, issue 19) only to find no signature.
            outcome = (
                dkim_verify.verify(content, sender_parts[1], settings.dkim.key_table)
                if sender_parts is not None and headers.dkim_signed
                else dkim_verify.DkimOutcome("none")
            )
            return aligned, outcome, report, about_sent

        # A thread only for what may block or take long: a database lookup (a report's
        # original, a From that is not the envelope sender) or a DKIM verification. Otherwise
        # ``examine`` is a few comparisons, cheaper than the hop (issue 19).
        blocking = (
            report_needed
            or (sender_parts is not None and headers.dkim_signed)
            or (bool(sender) and any(a != sender.lower() for a in headers.from_addresses))
        )
        aligned, dkim, report, about_sent = (
            await asyncio.to_thread(examine) if blocking else examine()
        )
        facts = data_stage.content_facts(
            size=len(content),
            size_limit=settings.smtp.max_message_bytes,
            headers=headers,
            sender=sender,
            from_aligned=aligned,
            to_patient=to_patient,
            patient_domain=patient_ascii,
            dkim_required=settings.smtp.require_dkim and bool(sender),
            dkim=dkim,
            report=report,
            report_about_sent=about_sent,
        )
        verdict = data_stage.judge_content(facts)
        if verdict is not None:
            return _refuse("DATA", verdict, envelope)
        queue_id = envelope.queue_id
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        trace = data_stage.trace_headers(
            hostname=settings.gateway.hostname,
            helo=session.host_name,
            peer=peer,
            identity=session.identity,
            queue_id=queue_id,
            sender=sender,
            dkim=dkim,
        )
        reply_to = headers.reply_to
        if reply_to is not None:
            reply_parts = split_address(reply_to)
            if reply_parts is None or reply_parts[1] not in trust.domains:
                reply_to = None
        delivery = DeliveryEnvelope(
            content=trace + content,
            direction="inbound",
            envelope_from=sender.lower(),
            header_from=headers.from_addresses[0] if headers.from_addresses else None,
            message_id=headers.message_id,
            thread_ids=headers.thread_ids,
            reply_to=reply_to,
            ends_exchange=headers.ends_exchange,
            sender_is_professional=bool(sender),
            has_attachments=headers.multipart,
            dkim_result=dkim.result,
            recipients=tuple(envelope.resolved),
        )

        self.context.in_flight += 1
        try:
            blobs = self.context.blobs
            # The message and its IMAP structure are sealed here, not inside the transaction of
            # the group committer's thread, where the structure (a MIME parse and an encryption)
            # took 7 % of that thread while holding the write lock the job workers wait for
            # (issue 19).
            structure = _gets_inbox_entry(delivery)
            if len(delivery.content) <= blobs.inline_max_bytes:
                # ~0.1 ms for 4 KiB: no file, cheaper than a thread hop
                sealed, sealed_structure = _seal(blobs, delivery.content, structure)
            else:
                sealed, sealed_structure = await asyncio.to_thread(
                    _seal, blobs, delivery.content, structure
                )
            delivered = await self.context.deliver(delivery, sealed, sealed_structure)
        finally:
            self.context.in_flight -= 1
        message_row = delivered.message_id
        log.info(
            "accepted",
            extra={
                "queue_id": queue_id,
                "message_row": message_row,
                "recipients": len(envelope.resolved),
                "size": len(content),
                "dkim": dkim.result,
            },
        )
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def _same_professional(self, first: str, second: str) -> bool:
        with self.context.database.reading() as db:
            return same_professional(db, first, second)

    async def handle_exception(self, error: Exception) -> str:
        """Never echo an exception's text (it may quote content): log its type, say 451."""
        log.error("session error", exc_info=error)
        return "451 4.3.0 Local error; try again later"
