"""The application factory: builds every component of a gateway from its settings.

No module keeps global state; this is the one place that wires settings,
database, keyring, blob store, job queue and workers together, for ``serve``,
for commands and for tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from caducee.config import Settings
from caducee.gateway.identity import make_identity
from caducee.gateway.lifecycle import lifecycle_handlers
from caducee.gateway.metrics import GatewayMetrics, process_metrics
from caducee.gateway.notify import notify_handler
from caducee.gateway.relay import make_relay_handler
from caducee.jobs.filing import make_filing_handler
from caducee.mailboxes.accounts.identity import IdentityService
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import JobKind, JobQueue, RetryPolicy
from caducee.storage.keyring import Keyring
from caducee.storage.worker import JobHandler, WorkerPool


@dataclass
class Gateway:
    """The assembled components of one gateway process."""

    settings: Settings
    database: Database
    keyring: Keyring
    blobs: BlobStore
    queue: JobQueue
    handlers: dict[str, JobHandler] = field(default_factory=dict)
    metrics: GatewayMetrics = field(default_factory=process_metrics)
    identity: IdentityService = field(init=False)
    """The identity service every door of this process shares (C1)."""

    def __post_init__(self) -> None:
        self.identity = make_identity(self.settings, self.database)

    def worker_pool(self, name: str = "worker") -> WorkerPool:
        """Worker threads for the job kinds this gateway handles."""
        return WorkerPool(
            self.queue,
            self.handlers,
            workers=self.settings.queue.workers,
            poll_interval=self.settings.queue.poll_interval,
            name=name,
            observe=self.metrics.observe_job,
        )

    def close(self) -> None:
        """Stop the identity service's background work and release database connections."""
        self.identity.close()
        self.database.dispose()


def standard_handlers(gateway: Gateway) -> dict[str, JobHandler]:
    """The job handlers of a complete gateway: what each kind of queued work runs."""
    return {
        JobKind.RELAY.value: make_relay_handler(gateway),
        JobKind.FILE_DOCUMENTS.value: make_filing_handler(
            gateway.database, gateway.blobs, gateway.queue, gateway.settings
        ),
        JobKind.NOTIFY_PATIENT.value: notify_handler(gateway),
        **lifecycle_handlers(gateway),
    }


def build_gateway(settings: Settings, handlers: Mapping[str, JobHandler] | None = None) -> Gateway:
    """Assemble a gateway; nothing listens or runs until ``serve`` starts it.

    Without ``handlers``, the gateway handles every job kind the product defines
    (:func:`standard_handlers`).
    """
    keyring = Keyring(settings.path(settings.crypto.keyring))
    database = Database(settings.database_url, pool_size=settings.database.pool_size)
    database.seal_with(keyring)
    metrics = process_metrics()
    metrics.instrument_database(database)
    queue_settings = settings.queue
    queue = JobQueue(
        database,
        lease_seconds=queue_settings.lease_seconds,
        max_attempts=queue_settings.max_attempts,
        retry=RetryPolicy(
            base_seconds=queue_settings.backoff_base_seconds,
            max_seconds=queue_settings.backoff_max_seconds,
        ),
    )
    gateway = Gateway(
        settings=settings,
        database=database,
        keyring=keyring,
        blobs=BlobStore.from_settings(settings, keyring, observe=metrics.observe_blob),
        queue=queue,
        metrics=metrics,
    )
    gateway.handlers = dict(handlers) if handlers is not None else standard_handlers(gateway)
    return gateway
