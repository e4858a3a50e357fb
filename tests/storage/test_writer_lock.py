"""K2 on SQLite: the lock of one process's writers lets clients' writes pass the job workers'.

A delivery's ``250`` (B5) and an IDLE session's ``EXISTS`` wait for their commit; a job
worker's transaction waits for nobody. Real threads on the real lock; each step waits for a
condition (a thread seen waiting, a thread done), never for a fixed time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from caducee.storage.writer_lock import WriterLock, mark_background_writer

WAIT_SECONDS = 10.0


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


def _writer(lock: WriterLock, name: str, order: list[str], *, background: bool) -> threading.Thread:
    def run() -> None:
        if background:
            mark_background_writer()
        assert lock.acquire(timeout=WAIT_SECONDS)
        order.append(name)
        lock.release()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def test_k2_a_client_s_write_passes_a_job_worker_that_waited_before_it() -> None:
    lock = WriterLock(patience=WAIT_SECONDS)
    order: list[str] = []
    assert lock.acquire(timeout=1)  # a transaction in progress
    job = _writer(lock, "job worker", order, background=True)
    _until(lambda: lock.waiting == 1)
    delivery = _writer(lock, "delivery", order, background=False)
    _until(lambda: lock.waiting == 2)
    lock.release()
    job.join(WAIT_SECONDS)
    delivery.join(WAIT_SECONDS)
    assert order == ["delivery", "job worker"]


def test_k2_a_job_worker_goes_at_once_when_no_client_waits() -> None:
    lock = WriterLock(patience=WAIT_SECONDS)
    order: list[str] = []
    assert lock.acquire(timeout=1)
    job = _writer(lock, "job worker", order, background=True)
    _until(lambda: lock.waiting == 1)
    lock.release()  # nobody else waits: the job worker goes at once
    job.join(WAIT_SECONDS)
    assert order == ["job worker"]


def test_k2_a_job_worker_is_not_starved_by_a_steady_stream_of_client_writes() -> None:
    lock = WriterLock(patience=0.05)
    stop = threading.Event()
    rounds = [0]

    def client_writes() -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not stop.is_set() and time.monotonic() < deadline:
            assert lock.acquire(timeout=WAIT_SECONDS)
            rounds[0] += 1
            time.sleep(0.0005)  # a short commit, so another client waits at each release
            lock.release()

    clients = [threading.Thread(target=client_writes, daemon=True) for _ in range(3)]
    for client in clients:
        client.start()
    _until(lambda: rounds[0] > 20)  # the stream is flowing
    order: list[str] = []
    job = _writer(lock, "job worker", order, background=True)
    job.join(WAIT_SECONDS)
    stop.set()
    for client in clients:
        client.join(WAIT_SECONDS)
    assert order == ["job worker"], "the job worker never got the lock during the stream"


def test_k2_a_job_worker_past_its_patience_goes_before_the_next_client_write() -> None:
    """Once its patience is over, the job worker gets the lock at its next release, even if
    the client that releases it asks again at once (a Condition alone lets it barge in)."""
    lock = WriterLock(patience=0.0)
    order: list[str] = []
    assert lock.acquire(timeout=1)  # a client's transaction
    job = _writer(lock, "job worker", order, background=True)
    _until(lambda: lock.waiting == 1)
    lock.release()
    assert lock.acquire(timeout=WAIT_SECONDS)  # the same client writes again at once
    order.append("client again")
    lock.release()
    job.join(WAIT_SECONDS)
    assert order == ["job worker", "client again"]


def test_k2_client_writes_are_served_in_the_order_they_came() -> None:
    """The group committer taking the lock again at once must not pass an IDLE session's
    \\Recent claim that waits for it (H1: the EXISTS waits on that claim)."""
    lock = WriterLock()
    order: list[str] = []
    assert lock.acquire(timeout=1)  # the group committer's batch
    claim = _writer(lock, "IMAP claim", order, background=False)
    _until(lambda: lock.waiting == 1)
    reply = _writer(lock, "IMAP reply", order, background=False)
    _until(lambda: lock.waiting == 2)
    lock.release()
    assert lock.acquire(timeout=WAIT_SECONDS)  # its next batch, at once
    order.append("next batch")
    lock.release()
    claim.join(WAIT_SECONDS)
    reply.join(WAIT_SECONDS)
    assert order == ["IMAP claim", "IMAP reply", "next batch"]


def test_k2_the_lock_is_reentrant_and_held_until_the_last_release() -> None:
    lock = WriterLock()
    order: list[str] = []
    assert lock.acquire(timeout=1)
    assert lock.acquire(timeout=1)  # a nested transaction in the same thread
    other = _writer(lock, "other", order, background=False)
    _until(lambda: lock.waiting == 1)
    lock.release()
    assert lock.waiting == 1 and not order  # still held once
    lock.release()
    other.join(WAIT_SECONDS)
    assert order == ["other"]


def test_k2_a_writer_gives_up_after_its_timeout_and_a_stranger_cannot_release() -> None:
    lock = WriterLock()
    assert lock.acquire(timeout=1)
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(lock.acquire(timeout=0.05)))
    thread.start()
    thread.join(WAIT_SECONDS)
    assert outcome == [False]
    assert lock.waiting == 0
    errors: list[BaseException] = []

    def release_not_held() -> None:
        try:
            lock.release()
        except RuntimeError as error:
            errors.append(error)

    stranger = threading.Thread(target=release_not_held)
    stranger.start()
    stranger.join(WAIT_SECONDS)
    assert len(errors) == 1
    lock.release()


@pytest.mark.parametrize("background", [False, True])
def test_k2_a_free_lock_is_taken_at_once(background: bool) -> None:
    lock = WriterLock()
    order: list[str] = []
    _writer(lock, "writer", order, background=background).join(WAIT_SECONDS)
    assert order == ["writer"]
