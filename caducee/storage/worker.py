"""Worker threads that drain the job queue.

Handlers are plain callables registered per job kind by the gateway. They run
in threads because most of them block (database, SMTP relay); the asyncio
servers never wait for them. :meth:`WorkerPool.stop` lets every in-flight job
finish, which is what a graceful shutdown (SIGTERM) needs.

Before its handler runs, a job's payload is checked against its kind's typed payload
(:func:`caducee.storage.jobs.check_payload`): a malformed one — like a
:class:`PermanentJobError` from the handler — dead-letters the job with its error at once;
no exception from a handler ever stops a worker thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from caducee.storage.jobs import DEAD, ClaimedJob, JobQueue, MalformedPayloadError, check_payload

log = logging.getLogger("caducee.worker")

JobHandler = Callable[[ClaimedJob], None]
JobObserver = Callable[[str, str, float], None]
"""Told ``(kind, outcome, seconds)`` after each job: done, retry, dead (metrics)."""


class PermanentJobError(Exception):
    """Raised by a handler when retrying can never succeed: the job is dead-lettered."""


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
    ) -> None:
        self.queue = queue
        self.observe = observe
        self.handlers = dict(handlers)
        self.workers = workers
        self.poll_interval = poll_interval
        self.name = name
        self._stopping = threading.Event()
        self._wake = threading.Event()
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
        """Claim and run at most one batch of jobs; return how many ran."""
        if not self.handlers:
            return 0
        jobs = self.queue.claim(worker, limit=1, kinds=sorted(self.handlers))
        for job in jobs:
            self._execute(job)
        return len(jobs)

    def _run(self, worker: str) -> None:
        while not self._stopping.is_set():
            try:
                ran = self.run_once(worker)
            except Exception:
                log.exception("job claim failed", extra={"worker": worker})
                ran = 0
            if not ran:
                self._wake.wait(self.poll_interval)
                self._wake.clear()

    def _execute(self, job: ClaimedJob) -> None:
        handler = self.handlers[job.kind]
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
