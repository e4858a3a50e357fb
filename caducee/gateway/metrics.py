"""Prometheus metrics of one gateway process (K3, K4), served on ``/metrics``.

What an operator watches: connections per listener (open now, admitted and
refused since start), SMTP commands and refusals by the rule id of the verdict
(``caducee_smtp_refusals_total{rule="B1.untrusted-sender"}``), SMTP transaction
latency (end of DATA to ``250``), every rule table's decisions by rule id
(``caducee_rule_hits_total{rule="F2.known-professional"}``), the job queue (depth and age of
the oldest ready job, read from the database at scrape time, so every node reports the
shared queue), job durations, blob-store and database latency.

Labels carry names of listeners, stages, rules, job kinds and backends only:
never an address, a subject or any content (J2).

Counters are per process, as Prometheus expects (``rate()`` copes with
restarts): one :class:`GatewayMetrics` per process (:func:`process_metrics`),
which the SMTP handlers reach without it being threaded through every
constructor. Tests that build several gateways in one process share it, which
only adds up their counts.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event

from caducee.policies.verdict import rule_hits
from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TRANSACTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class CountedConnections(Protocol):
    """What a connection limiter tells about its listener (see ``caducee.gateway.limits``)."""

    open: int


class _ConnectionCollector(Collector):
    """Open, admitted and refused connections of the listeners' limiters, read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[str, weakref.WeakSet[Any]] = {}

    def watch(self, listener: str, limiter: CountedConnections) -> None:
        with self._lock:
            self._watched.setdefault(listener, weakref.WeakSet()).add(limiter)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        open_now = GaugeMetricFamily(
            "caducee_connections_open", "Connections open now, per listener", labels=["listener"]
        )
        admitted = CounterMetricFamily(
            "caducee_connections",
            "Connections admitted since the process started, per listener",
            labels=["listener"],
        )
        refused = CounterMetricFamily(
            "caducee_connections_refused",
            "Connections refused by the connection caps, per listener",
            labels=["listener"],
        )
        with self._lock:
            watched = {name: list(limiters) for name, limiters in self._watched.items()}
        for name, limiters in sorted(watched.items()):
            open_now.add_metric([name], sum(limiter.open for limiter in limiters))
            admitted.add_metric([name], sum(getattr(item, "admitted", 0) for item in limiters))
            refused.add_metric([name], sum(getattr(item, "refused", 0) for item in limiters))
        yield open_now
        yield admitted
        yield refused


def _rule_hits() -> CounterMetricFamily:
    """Decisions per rule id of every rule table (:mod:`caducee.policies.verdict` counts them:
    refusals, access decisions, identity checks, D3/D4 findings), read at scrape time."""
    hits = CounterMetricFamily(
        "caducee_rule_hits", "Decisions of the rule tables, per rule id", labels=["rule"]
    )
    for rule, count in sorted(rule_hits().items()):
        hits.add_metric([rule], count)
    return hits


class QueueBacklogCollector(Collector):
    """Ready jobs per kind and the age of the oldest, asked of the database at scrape time."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "caducee_queue_depth", "Jobs ready to run (due or waiting to retry)", labels=["kind"]
        )
        oldest = GaugeMetricFamily(
            "caducee_queue_oldest_age_seconds",
            "Age of the oldest ready job, per kind (0 when none)",
            labels=["kind"],
        )
        total = GaugeMetricFamily("caducee_queue_ready_jobs", "Jobs ready to run, all kinds")
        oldest_all = GaugeMetricFamily(
            "caducee_queue_oldest_ready_age_seconds",
            "Age of the oldest ready job of any kind (0 when the queue is empty)",
        )
        now = datetime.now(UTC)
        count_all, age_all = 0, 0.0
        for kind, count, created in self.queue.backlog():
            age = max(0.0, (now - created).total_seconds())
            depth.add_metric([kind], count)
            oldest.add_metric([kind], age)
            count_all, age_all = count_all + count, max(age_all, age)
        total.add_metric([], count_all)
        oldest_all.add_metric([], age_all)
        yield from (depth, oldest, total, oldest_all)


class GatewayMetrics(Collector):
    """The instruments of one process, on a registry of their own (itself a collector)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.connections = _ConnectionCollector()
        registry.register(self.connections)
        self.smtp_commands = Counter(
            "caducee_smtp_commands",
            "SMTP commands handled, per listener and command",
            ["listener", "command"],
            registry=registry,
        )
        self.smtp_refusals = Counter(
            "caducee_smtp_refusals",
            "SMTP refusals per listener, stage and rule id of the verdict",
            ["listener", "stage", "rule"],
            registry=registry,
        )
        self.smtp_transactions = Counter(
            "caducee_smtp_transactions",
            "SMTP transactions that reached the end of DATA, per listener and outcome",
            ["listener", "outcome"],
            registry=registry,
        )
        self.smtp_transaction_seconds = Histogram(
            "caducee_smtp_transaction_seconds",
            "From the end of DATA to the reply (250 only after the commit), per listener",
            ["listener"],
            buckets=TRANSACTION_BUCKETS,
            registry=registry,
        )
        self.job_seconds = Histogram(
            "caducee_job_duration_seconds",
            "Time a worker spent on a job, per kind and outcome",
            ["kind", "outcome"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.blob_seconds = Histogram(
            "caducee_blob_operation_seconds",
            "Blob-store object operations (put, get), per backend",
            ["operation", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.database_seconds = Histogram(
            "caducee_database_statement_seconds",
            "Database statement latency, per engine",
            ["engine"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._databases: weakref.WeakSet[Database] = weakref.WeakSet()
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        """Every metric of :attr:`registry` (so another registry can include them all)."""
        yield from self.registry.collect()
        yield _rule_hits()

    # -- listeners ---------------------------------------------------------------------

    def watch_connections(self, listener: str, limiter: CountedConnections) -> None:
        """Report the connections ``limiter`` counts under ``listener`` (idempotent)."""
        self.connections.watch(listener, limiter)

    def command(self, listener: str, command: str) -> None:
        self.smtp_commands.labels(listener, command).inc()

    def refusal(self, listener: str, stage: str, rule: str) -> None:
        self.smtp_refusals.labels(listener, stage, rule).inc()

    def transaction(self, listener: str, outcome: str, started: float) -> None:
        """A transaction ended with ``outcome`` (accepted, refused, failed)."""
        self.smtp_transactions.labels(listener, outcome).inc()
        if outcome == "accepted":
            self.smtp_transaction_seconds.labels(listener).observe(time.perf_counter() - started)

    # -- jobs, blobs, database ---------------------------------------------------------

    def observe_job(self, kind: str, outcome: str, seconds: float) -> None:
        self.job_seconds.labels(kind, outcome).observe(seconds)

    def observe_blob(self, operation: str, backend: str, seconds: float) -> None:
        self.blob_seconds.labels(operation, backend).observe(seconds)

    def instrument_database(self, database: Database) -> None:
        """Time every statement of ``database``'s engines (once per database)."""
        with self._lock:
            if database in self._databases:
                return
            self._databases.add(database)
        engines = {id(engine): engine for engine in (database.engine, database.read_engine)}
        for engine in engines.values():
            histogram = self.database_seconds.labels(engine.dialect.name)

            def before(
                conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any
            ) -> None:
                if context is not None:
                    context.caducee_started = time.perf_counter()

            def after(
                conn: Any,
                cursor: Any,
                statement: Any,
                params: Any,
                context: Any,
                many: Any,
                histogram: Any = histogram,
            ) -> None:
                started = getattr(context, "caducee_started", None)
                if started is not None:
                    histogram.observe(time.perf_counter() - started)

            event.listen(engine, "before_cursor_execute", before)
            event.listen(engine, "after_cursor_execute", after)


_PROCESS_METRICS: GatewayMetrics | None = None
_PROCESS_LOCK = threading.Lock()


def process_metrics() -> GatewayMetrics:
    """This process's metrics (made on first use)."""
    global _PROCESS_METRICS
    with _PROCESS_LOCK:
        if _PROCESS_METRICS is None:
            _PROCESS_METRICS = GatewayMetrics()
        return _PROCESS_METRICS
