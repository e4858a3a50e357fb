"""A worker process for the queue tests: drains every due job and lists what it ran.

Run as ``python drain_worker.py DATABASE_URL NAME OUTPUT_FILE``. Each claimed
job id is appended to OUTPUT_FILE before the job is completed, so the test
sees every job any worker was handed.
"""

from __future__ import annotations

import sys

from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue


def drain(url: str, name: str, output: str) -> None:
    database = Database(url, pool_size=2)
    queue = JobQueue(database, lease_seconds=600)
    idle_rounds = 0
    with open(output, "w", encoding="ascii") as handle:
        while idle_rounds < 3:
            jobs = queue.claim(name, limit=25)
            if not jobs:
                idle_rounds += 1
                continue
            idle_rounds = 0
            for job in jobs:
                handle.write(f"{job.id}\n")
                if not queue.complete(job):
                    handle.write(f"lost {job.id}\n")
            handle.flush()
    database.dispose()


if __name__ == "__main__":
    drain(sys.argv[1], sys.argv[2], sys.argv[3])
