"""What the SMTP stages need from the rest of the gateway, and a cache of the trust space.

The trust space changes rarely (imports, anchors added by the operator), but
every session asks about it; :class:`TrustCache` answers from memory and
reloads at most every ``ttl`` seconds, so a change reaches running servers
without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from caducee.config import Settings
from caducee.directory.anchors import verify_bundle
from caducee.directory.trust_models import trusted_domains
from caducee.gateway.commit_relay import Deliver
from caducee.gateway.limits import ConnectionLimiter, DataBudget
from caducee.gateway.smtp.rcpt import AcceptedRecipients
from caducee.mailboxes.delivery import Delivered, Envelope, MailDelivery
from caducee.storage.blobs import BlobStore, SealedBlob
from caducee.storage.db import Database
from caducee.storage.group_commit import GroupCommitter
from caducee.storage.jobs import JobQueue


@dataclass
class TrustCache:
    """Trusted domains and the anchors' PEM bundle, reloaded from the database every ``ttl`` s."""

    database: Database
    ttl: float = 30.0
    domains: frozenset[str] = frozenset()
    anchors_pem: str = ""
    loaded_at: float = field(default=-1.0)

    def load(self) -> None:
        """Read the trust space now (blocking)."""
        with self.database.reading() as session:
            self.domains = frozenset(trusted_domains(session))
            self.anchors_pem = verify_bundle(session)
        self.loaded_at = time.monotonic()

    async def fresh(self) -> TrustCache:
        """This cache, reloaded first if it is older than ``ttl``."""
        if self.loaded_at < 0 or time.monotonic() - self.loaded_at > self.ttl:
            await asyncio.to_thread(self.load)
        return self


@dataclass
class SmtpContext:
    """The gateway components an SMTP listener works with."""

    settings: Settings
    database: Database
    blobs: BlobStore
    queue: JobQueue
    trust: TrustCache
    committer: GroupCommitter
    delivery: MailDelivery
    on_commit: Callable[[], None] = lambda: None
    on_delivered: Callable[[Iterable[int]], None] = lambda accounts: None
    """Told, after the commit, which accounts got a new INBOX entry (thread-safe hook): the
    IMAP server of this process wakes their IDLE sessions at once instead of at its next
    poll (SQLite: every 0.25 s; issue 19 measured a 250 ms p99 from 250 to EXISTS)."""
    relay: Deliver | None = None
    """In an SMTP worker process on SQLite, the main process commits the operators' port's
    deliveries (:mod:`caducee.gateway.commit_relay`); ``None``: this process commits them."""
    in_flight: int = 0
    recipients: AcceptedRecipients = field(default_factory=AcceptedRecipients)
    """Accepted RCPT lookups of the operators' port, reused for at most a second."""
    connections: ConnectionLimiter = field(init=False)
    data_budget: DataBudget = field(init=False)

    def __post_init__(self) -> None:
        # Every SMTP port of this process shares the connection caps and the DATA budget.
        smtp = self.settings.smtp
        self.connections = ConnectionLimiter(
            total=smtp.max_connections, per_ip=smtp.max_connections_per_ip
        )
        self.data_budget = DataBudget(smtp.max_data_in_flight_bytes)

    async def deliver(
        self, envelope: Envelope, sealed: SealedBlob | None, structure: SealedBlob | None
    ) -> Delivered:
        """Commit an accepted message (sealed beforehand) and wake who waits for it.

        Returns once the delivery is durable; the caller answers ``250`` after that (B5).
        """
        if self.relay is not None:
            return await self.relay(envelope, sealed, structure)
        delivered = await self.committer.run(
            lambda db: self.delivery.deliver(db, envelope, sealed, structure)
        )
        # Only a job due now is worth waking the workers for: otherwise each wake-up is a
        # claim that finds nothing (10 % of the main process's samples at full load, issue 19).
        if delivered.jobs_due:
            self.on_commit()
        self.on_delivered(r.account_id for r in envelope.recipients if r.address in delivered.uids)
        return delivered

    def apply(self, settings: Settings) -> None:
        """Settings after a reload (SIGHUP): new connections and commands follow them.

        The caps change in place, so connections already open stay counted.
        """
        self.settings = settings
        self.recipients.clear()  # its facts depend on the domains and the test mode
        smtp = settings.smtp
        self.connections.total = smtp.max_connections
        self.connections.per_ip = smtp.max_connections_per_ip
        self.data_budget.limit = smtp.max_data_in_flight_bytes
