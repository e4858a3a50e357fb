"""A worker process for the batch tests, killed with SIGKILL in the middle of its batch.

Run as ``python batch_worker.py DATABASE_URL LEASE_SECONDS MARKER``. It claims one batch of
``batched`` jobs with a :class:`~caducee.storage.worker.WorkerPool`; the handler records an
effect (an ``effect`` job) for each job and, at the third, writes MARKER and blocks inside the
batch's open transaction until the test kills the process.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from sqlalchemy.orm import Session

from caducee.storage.db import Database
from caducee.storage.jobs import ClaimedJob, JobQueue
from caducee.storage.worker import WorkerPool


class Blocking:
    """A batch handler that never gets past the third job of its batch."""

    def __init__(self, queue: JobQueue, marker: Path) -> None:
        self.queue = queue
        self.marker = marker
        self.seen = 0

    def __call__(self, job: ClaimedJob) -> None:
        raise AssertionError("the batch is expected to run in one transaction")

    def batch_key(self, job: ClaimedJob) -> int | None:
        return job.id

    def run_in(self, job: ClaimedJob, session: Session) -> None:
        self.queue.enqueue(session, "effect", {"of": job.id})
        self.seen += 1
        if self.seen == 3:
            self.marker.write_text(f"{job.worker}\n", encoding="ascii")
            threading.Event().wait()  # killed here, the transaction open


def main(url: str, lease_seconds: int, marker: str) -> None:
    database = Database(url, pool_size=2)
    queue = JobQueue(database, lease_seconds=lease_seconds)
    pool = WorkerPool(
        queue, {"batched": Blocking(queue, Path(marker))}, workers=1, poll_interval=0.1
    )
    pool.run_once("doomed-worker")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
