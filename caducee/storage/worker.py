"""Worker threads that drain the job queue.

Handlers are plain callables registered per job kind by the gateway. They run
in threads because most of them block (database, SMTP relay); the asyncio
servers never wait for them. :meth:`WorkerPool.stop` lets every in-flight job
finish, which is what a graceful shutdown (SIGTERM) needs.

Before its handler runs, a job's payload is checked against its kind's typed payload
(:func:`caducee.storage.jobs.check_payload`): a malformed one — like a
:class:`PermanentJobError` from the handler — dead-letters the job with its error at once;
no exception from a handler ever stops a worker thread.

**Batches** (issue 19). On SQLite every write transaction takes the one writer lock, shared with
the SMTP group committer, and ends in an fsync; a job run alone costs two of them (the claim;
its effects and completion). A worker therefore claims up to ``batch`` due jobs of the kinds
whose handler is a :class:`BatchHandler` in one transaction, and runs those of them the handler
accepts in one shared transaction: each job in its own savepoint, completed (or its failure
recorded) in that savepoint's transaction, so one failing job rolls back only its own effects
and the others commit with their completions — one fsync for the batch. When the whole claim ran
in that transaction, the worker claims its next batch in the same commit, so under a steady load
a batch costs one write transaction, not two. On SQLite one worker of a pool batches at a time
(the others take the slow kinds): two batching workers would only queue on the writer lock in
front of the committer. A job is still done only when its effects are committed, and a claim is
still committed before its jobs run (attempts are counted, a job that kills the process is
dead-lettered in the end); a worker killed mid-batch leaves its claims ``running`` until their
lease expires, as before. Other kinds — slow, or reaching the network — are claimed at most one
per claim, beside the batch, and run alone as before.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from sqlalchemy.orm import Session

from caducee.storage.jobs import DEAD, ClaimedJob, JobQueue, MalformedPayloadError, check_payload
from caducee.storage.writer_lock import mark_background_writer

log = logging.getLogger("caducee.worker")

JobHandler = Callable[[ClaimedJob], None]
JobObserver = Callable[[str, str, float], None]
"""Told ``(kind, outcome, seconds)`` after each job: done, retry, dead (metrics)."""


class PermanentJobError(Exception):
    """Raised by a handler when retrying can never succeed: the job is dead-lettered."""


class LeaseLostError(RuntimeError):
    """The job's lease passed to another worker; its effects were rolled back."""


@runtime_checkable
class BatchHandler(Protocol):
    """A handler whose jobs can share one transaction with other jobs of a worker's batch.

    Called with a job alone, it runs it in its own transaction, as any handler. In a batch,
    :meth:`batch_key` says whether this job may share the transaction (None: run it alone,
    e.g. it sends an e-mail) and orders the shared jobs: the key is what the job locks (a
    patient's account), so that concurrent batches on PostgreSQL take their row locks in
    one order instead of deadlocking. :meth:`run_in` then does the job's database effects in
    the given session, inside the job's savepoint; the worker completes the job there.
    """

    def __call__(self, job: ClaimedJob) -> None: ...

    def batch_key(self, job: ClaimedJob) -> int | None: ...

    def run_in(self, job: ClaimedJob, session: Session) -> None: ...


DEFAULT_BATCH = 32
"""Jobs one claim may lease: enough to spread the writer's fsync, bounded so that one
worker does not hoard the ready jobs of a burst while others idle."""


class WorkerPool:
    """A fixed number of threads claiming jobs of the kinds they have handlers for."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, JobHandler],
        *,
        workers: int,
        poll_interval: float,
        name: str = "worker",
        observe: JobObserver | None = None,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.queue = queue
        self.batch = max(1, batch)
        self.observe = observe
        self.handlers = dict(handlers)
        self.workers = workers
        self.poll_interval = poll_interval
        self.name = name
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._next: dict[str, list[ClaimedJob]] = {}
        """Per worker: the batch it claimed in the commit of its last one, to run next."""
        self._batching = threading.Lock()
        """Held by the one worker of a SQLite pool that is claiming and running a batch."""
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the threads; each claims jobs until :meth:`stop`."""
        # Lease holders must be unique across processes and hosts sharing the queue:
        # completing a job checks the holder's name.
        prefix = f"{self.name}@{socket.gethostname()}:{os.getpid()}"
        for number in range(self.workers):
            thread = threading.Thread(
                target=self._run,
                args=(f"{prefix}-{number}",),
                name=f"{self.name}-{number}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Tell idle workers that new jobs were committed."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, and wait for in-flight jobs to finish."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def run_once(self, worker: str) -> int:
        """Claim and run at most one batch of jobs; return how many ran (or were given back)."""
        handlers = dict(self.handlers)  # a reload may replace one meanwhile
        if not handlers:
            return 0
        claimed_at = time.monotonic()
        # On SQLite the batches of two workers would only queue on the one writer lock, in
        # front of the SMTP committer: one worker batches, the others take the slow kinds.
        batcher = self.queue.database.dialect != "sqlite" or self._batching.acquire(False)
        try:
            jobs = self._next.pop(worker, None) or self._claim(worker, handlers, batch=batcher)
            self.run_claimed(jobs, handlers, claimed_at=claimed_at)
        finally:
            if batcher and self.queue.database.dialect == "sqlite":
                self._batching.release()
        return len(jobs)

    def _claim(
        self,
        worker: str,
        handlers: Mapping[str, JobHandler],
        session: Session | None = None,
        *,
        batch: bool = True,
    ) -> list[ClaimedJob]:
        """A batch of the kinds a :class:`BatchHandler` runs, beside one job of another kind.

        Without ``batch``, only the one job of another kind, if any such kind is handled.
        """
        batched = sorted(kind for kind, h in handlers.items() if isinstance(h, BatchHandler))
        alone = sorted(kind for kind in handlers if kind not in batched)
        if not batch:
            return self.queue.claim(worker, limit=1, kinds=alone) if alone else []
        if batched:
            return self.queue.claim(
                worker, limit=self.batch, kinds=batched, one_of=alone, session=session
            )
        return self.queue.claim(worker, limit=1, kinds=alone, session=session)

    def run_claimed(
        self,
        jobs: Sequence[ClaimedJob],
        handlers: Mapping[str, JobHandler] | None = None,
        *,
        claimed_at: float | None = None,
    ) -> None:
        """Run jobs this worker claimed (at ``claimed_at``, monotonic): a batch, then the rest.

        The jobs a :class:`BatchHandler` accepts run first, in one transaction; the others
        one by one, each on its handler's own path. Before each of those but the first, the
        worker gives back what is left when it is stopping or when half the lease is gone.
        """
        handlers = dict(self.handlers) if handlers is None else handlers
        claimed_at = time.monotonic() if claimed_at is None else claimed_at
        shared: list[tuple[int, ClaimedJob, BatchHandler]] = []
        single: list[ClaimedJob] = []
        for job in jobs:
            handler = handlers[job.kind]
            key = handler.batch_key(job) if isinstance(handler, BatchHandler) else None
            if key is None or not isinstance(handler, BatchHandler):
                single.append(job)
            else:
                shared.append((key, job, handler))
        if len(shared) == 1:  # nothing to share with: the handler's own path
            single.insert(0, shared.pop()[1])
        if shared:
            shared.sort(key=lambda entry: (entry[0], entry[1].id))
            # Nothing to run after the batch: the next claim can ride on its commit.
            claim_next = not single and not self._stopping.is_set()
            self._execute_together(
                [(job, handler) for _, job, handler in shared], handlers, claim_next=claim_next
            )
        half_lease = self.queue.lease.total_seconds() / 2
        for index, job in enumerate(single):
            late = time.monotonic() - claimed_at > half_lease
            if index and (late or self._stopping.is_set()):
                given_back = self.queue.release(single[index:])
                log.info("jobs given back", extra={"worker": job.worker, "count": given_back})
                break
            self._execute(job, handlers[job.kind])

    def _run(self, worker: str) -> None:
        mark_background_writer()  # deliveries and IMAP replies commit before jobs (issue 19)
        while not self._stopping.is_set():
            try:
                ran = self.run_once(worker)
            except Exception:
                log.exception("job claim failed", extra={"worker": worker})
                ran = 0
            if not ran:
                self._wake.wait(self.poll_interval)
                self._wake.clear()
        pending = self._next.pop(worker, None)
        if pending:  # claimed with the last batch, never started: for the next worker now
            try:
                self.queue.release(pending)
            except Exception:
                log.exception("could not give back claimed jobs", extra={"worker": worker})

    def _execute(self, job: ClaimedJob, handler: JobHandler) -> None:
        fields = {"job_id": job.id, "kind": job.kind, "attempt": job.attempts}
        started = time.perf_counter()
        outcome = "done"
        try:
            check_payload(job)
            handler(job)
        except (PermanentJobError, MalformedPayloadError) as error:
            outcome = "dead"
            self.queue.fail(job, str(error), permanent=True)
            log.warning("job dead-lettered", extra={**fields, "reason": type(error).__name__})
        except Exception as error:
            state = self.queue.fail(job, f"{type(error).__name__}: {error}")
            outcome = "dead" if state == DEAD else "retry"
            log.warning(
                "job failed", extra={**fields, "state": state, "reason": type(error).__name__}
            )
        else:
            self.queue.complete(job)
        if self.observe is not None:
            self.observe(job.kind, outcome, time.perf_counter() - started)

    def _execute_together(
        self,
        jobs: Sequence[tuple[ClaimedJob, BatchHandler]],
        handlers: Mapping[str, JobHandler],
        *,
        claim_next: bool = False,
    ) -> None:
        """Run ``jobs`` in one transaction, one savepoint each; alone if that transaction fails.

        A job's failure rolls back its savepoint and is recorded (retry or dead letter) in the
        same transaction, so the others' effects and completions stand. If the transaction as
        a whole fails (the commit, or an error that ended it, such as SQLite's disk full),
        nothing of it is committed and every job runs again on its handler's own path.
        ``claim_next``: claim the worker's next batch in the same transaction; it runs next.
        """
        results: list[tuple[ClaimedJob, str, float, str]] = []
        worker = jobs[0][0].worker
        following: list[ClaimedJob] = []
        try:
            with self.queue.database.transaction() as session:
                for job, handler in jobs:
                    results.append(self._in_savepoint(session, job, handler))
                if claim_next:
                    following = self._claim(worker, handlers, session)
            if following:
                self._next[worker] = following
        except Exception:
            log.exception("a batch's transaction failed: its jobs run one by one")
            for job, _ in jobs:
                self._execute(job, handlers[job.kind])
            return
        for job, outcome, seconds, reason in results:
            fields = {"job_id": job.id, "kind": job.kind, "attempt": job.attempts}
            if outcome == "dead":
                log.warning("job dead-lettered", extra={**fields, "reason": reason})
            elif outcome == "retry":
                log.warning("job failed", extra={**fields, "state": "ready", "reason": reason})
            if self.observe is not None:
                self.observe(job.kind, outcome, seconds)

    def _in_savepoint(
        self, session: Session, job: ClaimedJob, handler: BatchHandler
    ) -> tuple[ClaimedJob, str, float, str]:
        """One job of a shared transaction: ``(job, outcome, seconds, failure's class name)``."""
        started = time.perf_counter()
        try:
            with session.begin_nested():
                check_payload(job)
                handler.run_in(job, session)
                if not self.queue.complete(job, session):
                    raise LeaseLostError("the job's lease was lost; its effects rolled back")
        except (PermanentJobError, MalformedPayloadError) as error:
            _still_in_transaction(session)
            self.queue.fail(job, str(error), permanent=True, session=session)
            return job, "dead", time.perf_counter() - started, type(error).__name__
        except Exception as error:
            _still_in_transaction(session)
            state = self.queue.fail(job, f"{type(error).__name__}: {error}", session=session)
            outcome = "dead" if state == DEAD else "retry"
            return job, outcome, time.perf_counter() - started, type(error).__name__
        return job, "done", time.perf_counter() - started, ""


def _still_in_transaction(session: Session) -> None:
    """Raise when an error ended the whole transaction, not only the job's savepoint.

    SQLite rolls the whole transaction back by itself on some errors (disk full, I/O): the
    connection is then in autocommit, and the batch's next statements would each commit
    alone. The batch must stop there and run its jobs one by one.
    """
    driver = session.connection().connection.driver_connection
    if getattr(driver, "in_transaction", True) is False:
        raise RuntimeError("the batch's transaction ended with a job's error")
