"""K2/B5 at speed (issue 19): a worker claims a batch of jobs in one transaction and runs the
jobs that can share it in one more, one savepoint each; a failure stays the failing job's, a
killed worker's batch comes back after its lease, and no job runs twice or gets lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from caducee.storage.db import Database, utcnow
from caducee.storage.jobs import (
    DEAD,
    DONE,
    READY,
    RUNNING,
    ClaimedJob,
    JobQueue,
    JobRow,
)
from caducee.storage.worker import BatchHandler, PermanentJobError, WorkerPool
from tests.harness.waiting import wait_until

BATCH_WORKER = Path(__file__).with_name("batch_worker.py")


class Effects:
    """A batch handler whose effect is an ``effect`` job naming the job that made it."""

    def __init__(self, queue: JobQueue, *, failing: frozenset[str] = frozenset()) -> None:
        self.queue = queue
        self.failing = failing
        self.alone: list[int] = []

    def __call__(self, job: ClaimedJob) -> None:
        self.alone.append(job.id)
        with self.queue.database.transaction() as session:
            self.run_in(job, session)
            assert self.queue.complete(job, session)

    def batch_key(self, job: ClaimedJob) -> int | None:
        return None if job.payload.get("alone") else int(job.payload["n"])

    def run_in(self, job: ClaimedJob, session: Session) -> None:
        self.queue.enqueue(session, "effect", {"of": job.id})
        how = job.payload.get("fail")
        if how in self.failing:
            raise PermanentJobError("refused") if how == "permanent" else OSError("peer down")


def enqueue(database: Database, queue: JobQueue, payloads: list[dict[str, Any]]) -> list[int]:
    with database.transaction() as session:
        return [queue.enqueue(session, "batched", payload) for payload in payloads]


def effects(database: Database) -> Counter[int]:
    with database.reading() as session:
        rows = session.execute(select(JobRow.payload).where(JobRow.kind == "effect")).all()
        return Counter(int(row[0]["of"]) for row in rows)


def states(database: Database) -> dict[int, tuple[str, int]]:
    with database.reading() as session:
        rows = session.execute(
            select(JobRow.id, JobRow.state, JobRow.attempts).where(JobRow.kind == "batched")
        )
        return {row.id: (row.state, row.attempts) for row in rows}


@contextmanager
def counted_commits(database: Database) -> Iterator[list[int]]:
    """How many write transactions commit meanwhile (each is one fsync on SQLite)."""
    commits: list[int] = []

    def count(_connection: Any) -> None:
        commits.append(1)

    event.listen(database.engine, "commit", count)
    try:
        yield commits
    finally:
        event.remove(database.engine, "commit", count)


def test_k2_a_batch_is_claimed_in_one_transaction_and_committed_in_one_more(
    queue: JobQueue, database: Database
) -> None:
    ids = enqueue(database, queue, [{"n": n} for n in range(40)])
    handler = Effects(queue)
    assert isinstance(handler, BatchHandler)
    pool = WorkerPool(queue, {"batched": handler}, workers=1, poll_interval=0.1, batch=32)
    with counted_commits(database) as commits:
        assert pool.run_once("w") == 32
    assert len(commits) == 2  # the claim; every job's effects, completion, and the next claim
    assert handler.alone == []
    assert states(database)[ids[-1]] == (RUNNING, 1)  # claimed in the batch's commit
    with counted_commits(database) as commits:
        assert pool.run_once("w") == 8
    assert len(commits) == 1  # a steady load: one write transaction per batch
    assert pool.run_once("w") == 0
    assert effects(database) == Counter(ids)
    assert states(database) == {job_id: (DONE, 1) for job_id in ids}


def test_k2_one_failing_job_of_a_batch_is_retried_alone_and_the_others_commit(
    queue: JobQueue, database: Database
) -> None:
    ids = enqueue(
        database,
        queue,
        [
            {"n": 0},
            {"n": 1, "fail": "transient"},
            {"n": 2},
            {"n": 3, "fail": "permanent"},
            {"n": 4},
        ],
    )
    handler = Effects(queue, failing=frozenset({"transient", "permanent"}))
    pool = WorkerPool(queue, {"batched": handler}, workers=1, poll_interval=0.1)
    assert pool.run_once("w") == 5
    retried, dead = ids[1], ids[3]
    assert effects(database) == Counter(set(ids) - {retried, dead})  # their savepoints rolled back
    assert states(database) == {
        **{job_id: (DONE, 1) for job_id in ids},
        retried: (READY, 1),
        dead: (DEAD, 1),
    }
    with database.reading() as session:
        row = session.get(JobRow, retried)
        assert row is not None and row.last_error == "OSError: peer down"
        back_off = row.next_attempt_at - utcnow()
        assert timedelta(seconds=9) < back_off <= timedelta(seconds=10)  # unchanged back-off
    assert pool.run_once("w") == 0  # not due before its back-off
    with database.transaction() as session:
        session.execute(update(JobRow).where(JobRow.id == retried).values(next_attempt_at=utcnow()))
    handler.failing = frozenset()
    assert pool.run_once("w") == 1  # alone: nothing else is due
    assert handler.alone == [retried]
    assert effects(database) == Counter(set(ids) - {dead})
    assert states(database)[retried] == (DONE, 2)


def test_k2_a_job_of_a_batch_whose_lease_was_lost_rolls_back_alone(
    queue: JobQueue, database: Database
) -> None:
    ids = enqueue(database, queue, [{"n": n} for n in range(3)])
    pool = WorkerPool(queue, {"batched": Effects(queue)}, workers=1, poll_interval=0.1)
    jobs = queue.claim("a", limit=3, kinds=["batched"])
    with database.transaction() as session:  # its lease expired and worker b took it
        session.execute(update(JobRow).where(JobRow.id == ids[1]).values(locked_by="b"))
    pool.run_claimed(jobs)
    assert effects(database) == Counter([ids[0], ids[2]])
    assert states(database) == {ids[0]: (DONE, 1), ids[1]: (RUNNING, 1), ids[2]: (DONE, 1)}
    with database.reading() as session:
        row = session.get(JobRow, ids[1])
        assert row is not None and row.locked_by == "b" and row.last_error is None


def test_k2_slow_kinds_are_claimed_one_at_a_time_beside_a_batch(
    queue: JobQueue, database: Database
) -> None:
    ids = enqueue(database, queue, [{"n": n} for n in range(5)])
    with database.transaction() as session:
        slow = [queue.enqueue(session, "slow", {"n": n}) for n in range(3)]
    ran: list[int] = []
    pool = WorkerPool(
        queue,
        {"batched": Effects(queue), "slow": lambda job: ran.append(job.id)},
        workers=1,
        poll_interval=0.1,
    )
    assert pool.run_once("w") == 6
    assert ran == slow[:1] and effects(database) == Counter(ids)
    assert pool.run_once("w") == 1 and pool.run_once("w") == 1
    assert ran == slow and queue.counts() == {DONE: 8, READY: 5}  # the effect jobs wait


def test_k2_jobs_of_a_batch_not_started_are_given_back_when_the_worker_stops(
    queue: JobQueue, database: Database
) -> None:
    ids = enqueue(database, queue, [{"n": n, "alone": True} for n in range(4)])

    class StopDuringTheFirst(Effects):
        pool: WorkerPool

        def __call__(self, job: ClaimedJob) -> None:
            self.pool.stop(timeout=0)  # SIGTERM while the first job runs
            super().__call__(job)

    handler = StopDuringTheFirst(queue)
    handler.pool = WorkerPool(queue, {"batched": handler}, workers=1, poll_interval=0.1)
    assert handler.pool.run_once("w") == 4
    assert handler.alone == ids[:1] and effects(database) == Counter(ids[:1])
    assert states(database) == {ids[0]: (DONE, 1), **{i: (READY, 0) for i in ids[1:]}}


def test_k2_a_stopping_worker_gives_back_the_batch_claimed_with_its_last(
    queue: JobQueue, database: Database
) -> None:
    ids = enqueue(database, queue, [{"n": n} for n in range(10)])
    reached, go = threading.Event(), threading.Event()

    class Held(Effects):
        def run_in(self, job: ClaimedJob, session: Session) -> None:
            super().run_in(job, session)
            if job.id == ids[3]:  # the last job of the first batch
                reached.set()
                go.wait(30)

    pool = WorkerPool(queue, {"batched": Held(queue)}, workers=1, poll_interval=0.05, batch=4)
    pool.start()
    try:
        assert reached.wait(30)
        pool.stop(timeout=0)  # SIGTERM during the batch; the thread finishes it
    finally:
        go.set()
    expected = {**{i: (DONE, 1) for i in ids[:4]}, **{i: (READY, 0) for i in ids[4:]}}
    wait_until(lambda: states(database) == expected, message=lambda: str(states(database)))
    assert effects(database) == Counter(ids[:4])


@pytest.mark.timeout(120)
def test_b5_a_killed_workers_batch_is_retried_after_its_lease_with_nothing_lost(
    queue: JobQueue, database: Database, database_url: str, tmp_path: Path
) -> None:
    ids = enqueue(database, queue, [{"n": n} for n in range(10)])
    marker = tmp_path / "in-the-batch"
    worker = subprocess.Popen([sys.executable, str(BATCH_WORKER), database_url, "5", str(marker)])
    try:
        wait_until(marker.exists, timeout=60, message="the worker never reached its batch")
        worker.send_signal(signal.SIGKILL)  # kill -9 with its batch's transaction open
        assert worker.wait(timeout=30) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
    assert effects(database) == Counter()  # nothing of the open transaction survived
    assert states(database) == {job_id: (RUNNING, 1) for job_id in ids}
    pool = WorkerPool(queue, {"batched": Effects(queue)}, workers=1, poll_interval=0.1)
    assert pool.run_once("survivor") == 0  # the dead worker's lease still holds
    wait_until(lambda: pool.run_once("survivor"), timeout=30, message="the lease never expired")
    assert effects(database) == Counter(ids)
    assert states(database) == {job_id: (DONE, 2) for job_id in ids}


@pytest.mark.timeout(300)
def test_k2_two_batching_workers_run_each_job_exactly_once(
    queue: JobQueue, database: Database
) -> None:
    count = 600
    ids = enqueue(database, queue, [{"n": n % 7} for n in range(count)])  # shared lock keys
    pool = WorkerPool(queue, {"batched": Effects(queue)}, workers=2, poll_interval=0.05, batch=16)
    pool.start()
    try:
        wait_until(
            lambda: states(database) == {job_id: (DONE, 1) for job_id in ids},
            timeout=240,
            message=lambda: f"states: {Counter(s for s, _ in states(database).values())}",
        )
    finally:
        pool.stop()
    assert effects(database) == Counter(ids)
