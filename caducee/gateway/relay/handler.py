"""The ``relay`` job handler: deliver, retry with back-off, report delays and failures (C5, G4).

One job carries one message for its recipients (``queue_outbound``). Each run
of the handler is one *attempt*:

1. in a first transaction, check the lease, create or read the per-recipient
   state (``relay_messages``, ``relay_recipients``) and read the message;
2. outside any transaction, relay to the pending remote recipients: recipients
   outside the trust space fail (``5.7.1``); the rest are grouped by domain,
   routed (static route, else MX), DKIM-signed once, and sent over STARTTLS with
   our client certificate, all domains concurrently (:mod:`.client`);
3. in a second transaction (lease checked again): deliver the pending recipients
   hosted here (:class:`~caducee.mailboxes.delivery.MailDelivery`), record every
   outcome, send the DSNs that are due, and either reschedule the job or finish it.

Recipients delivered stay delivered: a later attempt only concerns the pending
ones. A 5xx fails a recipient at once; a temporary failure keeps it pending,
with the relay's own exponential back-off (``[relay] backoff_base_seconds`` ×
2^(n−1), at most ``backoff_max_seconds``), until ``retry_hours`` after the
message arrived. The attempt that runs after that instant fails whoever is
still pending (:func:`.outcomes.expire`). Between, once ``delay_warning_hours``
have passed, the sender gets one delay DSN listing the recipients still
pending; the next attempt is scheduled at that instant so the notice is on time.

A failure DSN (and the delay DSN) goes to the message's envelope sender with the
null sender: into its INBOX when the sender is hosted here, through
``queue_outbound`` otherwise. A message that had the null sender (a DSN, an MDN)
never gets one. One attempt sends at most one DSN: failures and the delay
notice due at the same attempt share it. Recording a failure and sending its
DSN happen in the same transaction, so a recipient is reported exactly once.

Time is injectable (``clock``) and every period comes from :class:`RelayTiming`,
so tests go through five days of retries in milliseconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from caducee.config.settings import RelaySettings
from caducee.directory.anchors import verify_bundle
from caducee.directory.trust_models import DomainError, to_ascii_domain, trusted_domains
from caducee.gateway.dkim_sign import DkimConfigError, DkimSigner
from caducee.gateway.relay import client, outcomes, state
from caducee.gateway.relay.outcomes import Outcome, Verdict
from caducee.gateway.relay.routes import Hop, RouteError, Router
from caducee.gateway.smtp.data import read_headers
from caducee.mailboxes.accounts.store import AccountState, recipient_account
from caducee.mailboxes.delivery import Envelope, MailDelivery, Recipient, RecipientRole
from caducee.mailboxes.relay.models import RecipientState, RelayMessage, RelayRecipient
from caducee.mailboxes.relay.outbound import queue_outbound
from caducee.mailboxes.reports.dsn import (
    DSN_PURPOSE,
    Action,
    RecipientReport,
    build_dsn,
    dsn_allowed,
)
from caducee.storage.blobs import BlobError
from caducee.storage.db import utcnow
from caducee.storage.jobs import ClaimedJob
from caducee.storage.worker import JobHandler, PermanentJobError

if TYPE_CHECKING:  # runtime builds the handlers: importing it here would be circular
    from caducee.gateway.runtime import Gateway

log = logging.getLogger("caducee.relay")

Clock = Callable[[], datetime]
TRUST_TTL_SECONDS = 30.0
_NO_ANSWER_PURPOSES = frozenset({DSN_PURPOSE, "mdn"})


@dataclass(frozen=True)
class RelayTiming:
    """How long, how often and how patiently the relay retries."""

    retry: timedelta = timedelta(hours=120)
    delay_warning: timedelta = timedelta(hours=4)
    backoff_base: float = 60.0
    backoff_max: float = 3600.0
    timeout: float = 60.0
    jitter: float = 0.1

    @classmethod
    def from_settings(cls, relay: RelaySettings) -> RelayTiming:
        return cls(
            retry=timedelta(hours=relay.retry_hours),
            delay_warning=timedelta(hours=relay.delay_warning_hours),
            backoff_base=relay.backoff_base_seconds,
            backoff_max=relay.backoff_max_seconds,
            timeout=relay.timeout_seconds,
        )

    def backoff(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th attempt: base × 2^(n−1), capped, ± jitter."""
        raw = min(self.backoff_base * (2 ** max(attempts - 1, 0)), self.backoff_max)
        spread = raw * self.jitter
        return timedelta(seconds=max(0.0, raw + random.uniform(-spread, spread)))  # noqa: S311


@dataclass(frozen=True)
class _Trust:
    domains: frozenset[str]
    anchors: str
    loaded: float


class Relay:
    """The relay of one gateway; :meth:`handle` is the job handler."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        clock: Clock = utcnow,
        timing: RelayTiming | None = None,
        router: Router | None = None,
        signer: DkimSigner | None = None,
    ) -> None:
        settings = gateway.settings
        self.settings = settings
        self.database = gateway.database
        self.blobs = gateway.blobs
        self.queue = gateway.queue
        self.clock = clock
        self.timing = timing or RelayTiming.from_settings(settings.relay)
        self.router = router or Router(
            settings.relay.routes, port=settings.relay.port, timeout=self.timing.timeout
        )
        self.signer = signer or DkimSigner.from_settings(settings)
        self.delivery = MailDelivery(gateway.blobs, gateway.queue)
        self.hostname = settings.gateway.hostname
        self.patient_domain = _ascii(settings.gateway.patient_domain)
        self.local_domains = frozenset(
            _ascii(d) for d in (*settings.gateway.hosted_domains, settings.gateway.patient_domain)
        )
        self.budget = max(self.queue.lease.total_seconds() * 0.8, 1.0)
        self._trust: _Trust | None = None
        self._context: tuple[str, ssl.SSLContext] | None = None
        self._lock = threading.Lock()

    # -- the job ------------------------------------------------------------------------

    def handle(self, job: ClaimedJob) -> None:
        """One attempt of one relay job (see the module docstring)."""
        try:
            payload = state.RelayPayload.parse(job.payload)
        except ValueError as error:
            raise PermanentJobError(f"relay job {job.id}: {error}") from None
        with self.database.transaction() as session:
            state.hold(session, job)
            snapshot = self._load(session, job, payload)
            try:
                content = self.blobs.read(session, payload.blob_id)
            except BlobError:
                raise PermanentJobError(f"relay job {job.id}: message blob unreadable") from None
            pending = [(r.address, r.domain) for r in snapshot.pending()]
        now = self.clock()
        remote = [(a, d) for a, d in pending if _ascii_or_none(d) not in self.local_domains]
        local = [a for a, d in pending if _ascii_or_none(d) in self.local_domains]
        results = self._relay_remote(job, payload, content, remote) if remote else {}
        with self.database.transaction() as session:
            state.hold(session, job)
            snapshot = self._load(session, job, payload)
            if local:
                results.update(self._deliver_local(session, payload, content, local))
            self._record(session, job, payload, content, snapshot, results, now)

    def _load(
        self, session: Session, job: ClaimedJob, payload: state.RelayPayload
    ) -> state.Snapshot:
        return state.load(
            session,
            job.id,
            payload,
            retry=self.timing.retry,
            delay_warning=self.timing.delay_warning,
        )

    def fail_pending(
        self,
        session: Session,
        job: ClaimedJob,
        payload: state.RelayPayload,
        failure: Outcome,
        now: datetime,
    ) -> int:
        """Give every recipient still pending ``failure`` (an operator's bounce): how many.

        The states, the DSN to the sender and the job's end follow the relay's own rules, as
        after an attempt; the caller holds the job (claimed) and commits.
        """
        snapshot = self._load(session, job, payload)
        pending = snapshot.pending()
        content = self.blobs.read(session, payload.blob_id)
        results = dict.fromkeys((row.address for row in pending), failure)
        self._record(session, job, payload, content, snapshot, results, now)
        return len(pending)

    # -- remote recipients --------------------------------------------------------------

    def _trust_view(self) -> _Trust:
        with self._lock:
            current = self._trust
            if current is not None and time.monotonic() - current.loaded < TRUST_TTL_SECONDS:
                return current
        with self.database.reading() as session:
            fresh = _Trust(
                frozenset(trusted_domains(session)), verify_bundle(session), time.monotonic()
            )
        with self._lock:
            self._trust = fresh
        return fresh

    def _tls_context(self, anchors: str) -> ssl.SSLContext:
        digest = hashlib.sha256(anchors.encode("ascii", "replace")).hexdigest()
        with self._lock:
            if self._context is not None and self._context[0] == digest:
                return self._context[1]
        context = client.client_context(self.settings, anchors)
        with self._lock:
            self._context = (digest, context)
        return context

    def _relay_remote(
        self,
        job: ClaimedJob,
        payload: state.RelayPayload,
        content: bytes,
        recipients: Sequence[tuple[str, str]],
    ) -> dict[str, Outcome]:
        results: dict[str, Outcome] = {}
        trust = self._trust_view()
        by_domain: dict[str, list[str]] = {}
        for address, domain in recipients:
            ascii_domain = _ascii_or_none(domain)
            if ascii_domain is None:
                results[address] = outcomes.failed(*outcomes.BAD_ADDRESS)
            elif ascii_domain not in trust.domains:
                results[address] = outcomes.failed(*outcomes.OUTSIDE_TRUST_SPACE)
            else:
                by_domain.setdefault(ascii_domain, []).append(address)
        if not by_domain:
            return results
        waiting = [a for addresses in by_domain.values() for a in addresses]
        if not trust.anchors.strip():
            log.error("relay impossible: no trust anchor", extra={"job_id": job.id})
            return results | dict.fromkeys(waiting, outcomes.retry(*outcomes.NO_ANCHORS))
        try:
            signed, signing_domain = self.signer.sign(content)
        except DkimConfigError:
            log.error("relay impossible: DKIM key unusable", extra={"job_id": job.id})
            return results | dict.fromkeys(waiting, outcomes.retry(*outcomes.SIGNING_FAILED))
        if signing_domain is None:
            log.warning(
                "relayed unsigned: no DKIM key for the From domain", extra={"job_id": job.id}
            )
        try:
            context = self._tls_context(trust.anchors)
        except (OSError, ssl.SSLError):
            log.error("relay impossible: our TLS certificate is unusable", extra={"job_id": job.id})
            return results | dict.fromkeys(waiting, outcomes.retry(*outcomes.TLS_FAILED))
        policy = client.TlsPolicy(context, trust.domains)
        sender = _wire_address(payload.envelope_from) if payload.envelope_from else ""
        transfers: list[tuple[list[Hop], client.Transfer, dict[str, str]]] = []
        for domain, addresses in by_domain.items():
            try:
                hops = self.router.hops(domain)
            except RouteError as error:
                results.update(dict.fromkeys(addresses, error.outcome))
                continue
            wire = {_wire_address(a): a for a in addresses}
            transfers.append((hops, client.Transfer(domain, sender, tuple(wire), signed), wire))
        if transfers:
            replies = asyncio.run(self._send_all(transfers, policy))
            for (_hops, _transfer, wire), answered in zip(transfers, replies, strict=True):
                for wire_address, outcome in answered.items():
                    results[wire[wire_address]] = outcome
        return results

    async def _send_all(
        self,
        transfers: Sequence[tuple[list[Hop], client.Transfer, dict[str, str]]],
        policy: client.TlsPolicy,
    ) -> list[dict[str, Outcome]]:
        async def one(hops: list[Hop], transfer: client.Transfer) -> dict[str, Outcome]:
            try:
                return await asyncio.wait_for(
                    client.deliver(
                        hops,
                        transfer,
                        policy=policy,
                        helo=self.hostname,
                        timeout=self.timing.timeout,
                    ),
                    self.budget,
                )
            except TimeoutError:
                return dict.fromkeys(transfer.recipients, outcomes.retry(*outcomes.TOO_SLOW))

        return list(await asyncio.gather(*(one(h, t) for h, t, _ in transfers)))

    # -- hosted recipients --------------------------------------------------------------

    def _account(self, session: Session, address: str) -> tuple[Recipient | None, str]:
        """The hosted recipient for ``address`` and its account state ("" when unknown)."""
        patient = _ascii_or_none(state.domain_of(address)) == self.patient_domain
        account = recipient_account(session, address, patient=patient)
        if account is None:
            return None, ""
        role = RecipientRole.PATIENT if patient else RecipientRole.PROFESSIONAL
        return Recipient(account.address, account.id, role), account.state

    def _deliver_local(
        self,
        session: Session,
        payload: state.RelayPayload,
        content: bytes,
        addresses: Sequence[str],
    ) -> dict[str, Outcome]:
        results: dict[str, Outcome] = {}
        deliverable: list[Recipient] = []
        for address in addresses:
            recipient, account_state = self._account(session, address)
            if recipient is None:
                results[address] = outcomes.failed(*outcomes.UNKNOWN_MAILBOX, self.hostname)
            elif account_state == AccountState.CLOSED.value:
                results[address] = outcomes.failed(*outcomes.MAILBOX_CLOSED, self.hostname)
            elif account_state == AccountState.SUSPENDED.value:
                results[address] = outcomes.retry(*outcomes.MAILBOX_SUSPENDED, self.hostname)
            else:
                deliverable.append(recipient)
                results[address] = outcomes.delivered_locally(self.hostname)
        if deliverable:
            sender = payload.envelope_from.lower()
            headers = read_headers(content)
            self.delivery.deliver(
                session,
                Envelope(
                    content=content,
                    direction="inbound",
                    envelope_from=sender,
                    header_from=headers.from_addresses[0] if headers.from_addresses else None,
                    message_id=headers.message_id,
                    thread_ids=headers.thread_ids,
                    reply_to=headers.reply_to,
                    ends_exchange=headers.ends_exchange,
                    sender_is_professional=bool(sender)
                    and _ascii_or_none(state.domain_of(sender)) != self.patient_domain,
                    has_attachments=headers.multipart
                    and payload.purpose not in _NO_ANSWER_PURPOSES,
                    recipients=tuple(deliverable),
                ),
            )
        return results

    # -- recording, DSNs, scheduling ----------------------------------------------------

    def _record(
        self,
        session: Session,
        job: ClaimedJob,
        payload: state.RelayPayload,
        content: bytes,
        snapshot: state.Snapshot,
        results: dict[str, Outcome],
        now: datetime,
    ) -> None:
        message = snapshot.message
        message.attempts += 1
        message.last_attempt_at = now
        expired = now >= message.expires_at
        failed: list[tuple[RelayRecipient, Outcome]] = []
        delayed: list[tuple[RelayRecipient, Outcome]] = []
        counts = {verdict: 0 for verdict in Verdict}
        for row in snapshot.pending():
            outcome = results.get(row.address)
            if outcome is None:  # not attempted (cannot happen): keep it pending
                outcome = outcomes.retry(*outcomes.CONNECTION_LOST)
            if expired:
                outcome = outcomes.expire(outcome)
            row.attempts += 1
            row.last_attempt_at = now
            row.reply_code = outcome.code
            row.status = outcome.status
            row.diagnostic = outcome.text
            row.remote_mta = (outcome.remote_mta or "")[:253] or None
            counts[outcome.verdict] += 1
            if outcome.verdict is Verdict.DELIVERED:
                row.state = RecipientState.DELIVERED.value
                row.finished_at = now
            elif outcome.verdict is Verdict.FAILED:
                row.state = RecipientState.FAILED.value
                row.finished_at = now
                failed.append((row, outcome))
            else:
                delayed.append((row, outcome))
        notify = dsn_allowed(payload.envelope_from)
        warn = bool(delayed) and notify and message.delay_notified_at is None
        reports = [(row, o, Action.FAILED) for row, o in failed] if notify else []
        if warn and now >= message.warn_at:
            reports += [(row, o, Action.DELAYED) for row, o in delayed]
            message.delay_notified_at = now
        if reports:  # one DSN per attempt: failures and the delay notice together
            self._send_dsn(session, job, payload, content, message, reports, now)
        summary = ", ".join(sorted({o.summary for _, o in failed + delayed}))[:200]
        log.info(
            "relay attempt",
            extra={
                "job_id": job.id,
                "attempt": message.attempts,
                "purpose": payload.purpose,
                "delivered": counts[Verdict.DELIVERED],
                "retry": counts[Verdict.RETRY],
                "failed": counts[Verdict.FAILED],
                "codes": summary,
                "expired": expired,
            },
        )
        if delayed:
            at = self._next_attempt(message, now, notify)
            message.next_attempt_at = at
            state.reschedule(session, job, at, summary)
        else:
            message.next_attempt_at = None
            message.finished_at = now
            state.finish(session, job, summary or None)

    def _next_attempt(self, message: RelayMessage, now: datetime, notify: bool) -> datetime:
        at = now + self.timing.backoff(message.attempts)
        if notify and message.delay_notified_at is None and message.warn_at > now:
            at = min(at, message.warn_at)
        return min(at, message.expires_at)

    def _send_dsn(
        self,
        session: Session,
        job: ClaimedJob,
        payload: state.RelayPayload,
        content: bytes,
        message: RelayMessage,
        rows: Sequence[tuple[RelayRecipient, Outcome, Action]],
        now: datetime,
    ) -> None:
        reports = [
            RecipientReport(
                address=row.address,
                action=action,
                status=outcome.status,
                remote_mta=outcome.remote_mta,
                diagnostic=outcome.text,
                diagnostic_type=outcome.diagnostic_type,
                last_attempt=now,
                will_retry_until=message.expires_at if action is Action.DELAYED else None,
            )
            for row, outcome, action in rows
        ]
        sender = payload.envelope_from.lower()
        report = build_dsn(
            content,
            recipients=reports,
            to=sender,
            reporting_mta=self.hostname,
            arrival=message.arrival_at,
            now=now,
        )
        actions = ",".join(sorted({r.action.value for r in reports}))
        fields = {"job_id": job.id, "action": actions, "recipients": len(reports)}
        if _ascii_or_none(state.domain_of(sender)) in self.local_domains:
            recipient, account_state = self._account(session, sender)
            if recipient is None or account_state == AccountState.CLOSED.value:
                log.warning("dsn dropped: sender mailbox unknown or closed", extra=fields)
                return
            headers = read_headers(report)
            self.delivery.deliver(
                session,
                Envelope(
                    content=report,
                    direction="inbound",
                    envelope_from="",
                    header_from=headers.from_addresses[0] if headers.from_addresses else None,
                    message_id=headers.message_id,
                    thread_ids=headers.thread_ids,
                    reply_to=None,
                    ends_exchange=False,
                    sender_is_professional=False,
                    has_attachments=False,
                    recipients=(recipient,),
                ),
            )
            log.info("dsn delivered to a hosted sender", extra=fields)
            return
        dsn_job = queue_outbound(
            session,
            self.blobs,
            self.queue,
            envelope_from="",
            recipients=[sender],
            content=report,
            purpose=DSN_PURPOSE,
        )
        log.info("dsn queued", extra={**fields, "dsn_job_id": dsn_job})


def _ascii(domain: str) -> str:
    return to_ascii_domain(domain)


def _ascii_or_none(domain: str) -> str | None:
    try:
        return to_ascii_domain(domain)
    except DomainError:
        return None


def _wire_address(address: str) -> str:
    """The address as sent in MAIL/RCPT: the domain as an A-label (IDN, A5)."""
    local, _, domain = address.rpartition("@")
    ascii_domain = _ascii_or_none(domain)
    return f"{local}@{ascii_domain}" if ascii_domain else address


def make_relay_handler(
    gateway: Gateway,
    *,
    clock: Clock = utcnow,
    timing: RelayTiming | None = None,
    router: Router | None = None,
    signer: DkimSigner | None = None,
) -> JobHandler:
    """The handler of ``relay`` jobs: ``gateway.handlers["relay"] = make_relay_handler(gateway)``.

    ``clock``, ``timing``, ``router`` and ``signer`` default to the real time, the
    ``[relay]`` settings, static routes + DNS and the ``[dkim]`` keys.
    """
    return Relay(gateway, clock=clock, timing=timing, router=router, signer=signer).handle
