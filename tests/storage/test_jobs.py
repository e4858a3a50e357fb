"""K2/B5: the durable job queue: committed with its cause, leased once, retried, dead-lettered."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from caducee.storage.db import Database, utcnow
from caducee.storage.jobs import DEAD, DONE, READY, JobQueue, JobRow, RetryPolicy
from caducee.storage.worker import PermanentJobError, WorkerPool

DRAIN_WORKER = Path(__file__).with_name("drain_worker.py")


def test_b5_job_exists_only_if_its_transaction_commits(queue: JobQueue, database: Database) -> None:
    with pytest.raises(RuntimeError), database.transaction() as session:
        queue.enqueue(session, "k", {"message": 1})
        raise RuntimeError("the message was not stored")
    assert queue.claim("w") == []
    with database.transaction() as session:
        queue.enqueue(session, "k", {"message": 2})
    jobs = queue.claim("w")
    assert [job.payload for job in jobs] == [{"message": 2}]
    assert jobs[0].attempts == 1


def test_k2_claimed_job_is_not_handed_out_again(queue: JobQueue, database: Database) -> None:
    with database.transaction() as session:
        queue.enqueue(session, "k", {})
    assert len(queue.claim("a")) == 1
    assert queue.claim("b") == []


def test_k2_failure_backs_off_then_dead_letters(queue: JobQueue, database: Database) -> None:
    with database.transaction() as session:
        queue.enqueue(session, "k", {"n": 1})
    delays = []
    for attempt in (1, 2):
        (job,) = queue.claim("w")
        assert job.attempts == attempt
        assert queue.fail(job, "peer unreachable") == READY
        with database.transaction() as session:
            row = session.get(JobRow, job.id)
            assert row is not None
            delays.append(row.next_attempt_at - utcnow())
            row.next_attempt_at = utcnow()  # make it due now for the next round
    assert timedelta(seconds=9) < delays[0] <= timedelta(seconds=10)
    assert timedelta(seconds=19) < delays[1] <= timedelta(seconds=20)
    (job,) = queue.claim("w")
    assert queue.fail(job, "still unreachable") == DEAD
    assert queue.claim("w") == []
    assert queue.counts() == {DEAD: 1}
    assert queue.retry_now(job.id)
    assert [j.id for j in queue.claim("w")] == [job.id]


def test_k2_back_off_is_capped() -> None:
    policy = RetryPolicy(base_seconds=30, max_seconds=3600, jitter=0.2)
    assert policy.delay(30) <= timedelta(seconds=3600 * 1.2)
    assert policy.delay(1) >= timedelta(seconds=24)


def test_k2_expired_lease_is_reclaimed_and_old_holder_cannot_complete(
    queue: JobQueue, database: Database
) -> None:
    with database.transaction() as session:
        queue.enqueue(session, "k", {})
    (first,) = queue.claim("crashed-worker")
    with database.transaction() as session:
        session.execute(update(JobRow).values(locked_until=utcnow() - timedelta(seconds=1)))
    (second,) = queue.claim("healthy-worker")
    assert second.id == first.id and second.attempts == 2
    assert queue.complete(first) is False
    assert queue.complete(second) is True
    assert queue.counts() == {DONE: 1}


def test_k2_complete_in_the_jobs_own_transaction(queue: JobQueue, database: Database) -> None:
    with database.transaction() as session:
        queue.enqueue(session, "k", {})
    (job,) = queue.claim("w")
    with pytest.raises(RuntimeError), database.transaction() as session:
        assert queue.complete(job, session)
        raise RuntimeError("the job's own effects failed")
    assert queue.counts() == {"running": 1}


def test_k2_worker_pool_runs_handlers_and_dead_letters_permanent_errors(
    queue: JobQueue, database: Database
) -> None:
    ran: list[int] = []
    finished = threading.Event()

    def ok(job: object) -> None:
        ran.append(1)
        if len(ran) == 3:
            finished.set()

    def broken(job: object) -> None:
        raise PermanentJobError("unknown recipient")

    with database.transaction() as session:
        for _ in range(3):
            queue.enqueue(session, "ok", {})
        queue.enqueue(session, "broken", {})
        queue.enqueue(session, "nobody-handles-this", {})
    pool = WorkerPool(queue, {"ok": ok, "broken": broken}, workers=2, poll_interval=0.05)
    pool.start()
    try:
        assert finished.wait(30)
        for _ in range(200):
            if queue.counts().get(DEAD) == 1:
                break
            threading.Event().wait(0.05)
    finally:
        pool.stop()
    assert queue.counts() == {DONE: 3, DEAD: 1, READY: 1}


def _drain_with_two_processes(database: Database, url: str, tmp_path: Path, count: int) -> None:
    with database.transaction() as session:
        session.execute(
            JobRow.__table__.insert(),
            [
                {
                    "kind": "k",
                    "payload": {"n": n},
                    "state": READY,
                    "attempts": 0,
                    "max_attempts": 3,
                    "next_attempt_at": utcnow(),
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                }
                for n in range(count)
            ],
        )
    outputs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    workers = [
        subprocess.Popen([sys.executable, str(DRAIN_WORKER), url, name, str(output)])
        for name, output in zip(("a", "b"), outputs, strict=True)
    ]
    for worker in workers:
        assert worker.wait(timeout=600) == 0
    handed = [outputs[0].read_text().split(), outputs[1].read_text().split()]
    assert "lost" not in handed[0] + handed[1]
    assert handed[0] and handed[1], "both workers must have taken part"
    assert len(handed[0]) + len(handed[1]) == count
    assert len(set(handed[0]) | set(handed[1])) == count
    assert not set(handed[0]) & set(handed[1])
    with database.transaction() as session:
        assert session.scalar(select(func.count()).where(JobRow.state == DONE)) == count


@pytest.mark.timeout(900)
def test_k2_two_workers_drain_10000_jobs_each_exactly_once(
    database: Database, database_url: str, tmp_path: Path, engine: str
) -> None:
    """On PostgreSQL this is FOR UPDATE SKIP LOCKED; on SQLite, BEGIN IMMEDIATE."""
    count = 10_000 if engine == "postgresql" else 2_000
    _drain_with_two_processes(database, database_url, tmp_path, count)
