"""K2/B5: one enum of job kinds with typed payloads; a malformed payload is a dead letter.

Every kind the product runs has a payload type that round-trips through JSON; producers
enqueue typed payloads; a payload that does not fit its kind is refused when enqueued and,
when a stored row is malformed anyway (an older version, a hand edit), dead-lettered by the
worker with an error naming the field, never handed to the handler and never stopping the
worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from caducee.config import load_settings
from caducee.gateway.runtime import build_gateway
from caducee.mailboxes.relay.outbound import queue_outbound
from caducee.storage.db import Database, utcnow
from caducee.storage.jobs import (
    DEAD,
    DONE,
    PAYLOADS,
    ClaimedJob,
    FileDocuments,
    JobKind,
    JobPayload,
    JobQueue,
    JobRow,
    LifecycleSweep,
    MalformedPayloadError,
    NotifyPatient,
    OpenSpace,
    PurgeSpace,
    Relay,
)
from caducee.storage.worker import WorkerPool
from tests.harness.reports import Record, build_mail, pdf_part

SAMPLES: list[JobPayload] = [
    FileDocuments(message_id=7, account_id=3),
    NotifyPatient(event="new-message", account_id=3, message_id=7),
    NotifyPatient(event="send-batch", batch_id=12),
    Relay(
        blob_id="b" * 32,
        envelope_from="",
        recipients=("dr@example.test",),
        purpose="mdn",
    ),
    Relay(
        blob_id="b" * 32,
        envelope_from="p@example.test",
        recipients=("a@example.test", "b@example.test"),
        purpose="submission",
        message_id="<x@example.test>",
    ),
    OpenSpace(account_id=3),
    PurgeSpace(account_id=3),
    LifecycleSweep(),
]


def test_k2_every_job_kind_has_one_payload_type() -> None:
    assert set(PAYLOADS) == {kind.value for kind in JobKind}
    assert {type(sample).kind for sample in SAMPLES} == set(JobKind)


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: f"{p.kind}-{len(p.to_json())}")
def test_k2_typed_payloads_round_trip_through_json(payload: JobPayload) -> None:
    stored = payload.to_json()
    assert None not in stored.values()
    assert type(payload).from_json(stored) == payload


@pytest.mark.parametrize(
    ("payload_type", "stored", "field"),
    [
        (FileDocuments, {"message_id": "x", "account_id": 1}, "message_id"),
        (FileDocuments, {"message_id": 1}, "account_id"),
        (FileDocuments, {"message_id": True, "account_id": 1}, "message_id"),
        (NotifyPatient, {"account_id": 1}, "event"),
        (NotifyPatient, {"event": "new-message", "account_id": "1"}, "account_id"),
        (Relay, {"blob_id": "b", "envelope_from": "", "recipients": [], "purpose": "x"}, "recip"),
        (Relay, {"blob_id": "b", "envelope_from": "", "recipients": [1], "purpose": "x"}, "recip"),
        (OpenSpace, {}, "account_id"),
        (PurgeSpace, {"account_id": None}, "account_id"),
    ],
)
def test_k2_a_payload_that_does_not_fit_its_kind_is_refused(
    payload_type: type[JobPayload], stored: dict[str, Any], field: str
) -> None:
    with pytest.raises(MalformedPayloadError, match=field):
        payload_type.from_json(stored)


def test_k2_enqueue_refuses_a_malformed_payload_of_a_known_kind(
    queue: JobQueue, database: Database
) -> None:
    with pytest.raises(MalformedPayloadError), database.transaction() as session:
        queue.enqueue(session, JobKind.FILE_DOCUMENTS, {"message_id": "7"})
    with database.transaction() as session:
        job_id = queue.enqueue(session, FileDocuments(message_id=7, account_id=3))
    with database.reading() as session:
        rows = [(row.id, row.kind, row.payload) for row in session.scalars(select(JobRow))]
    assert rows == [(job_id, "file-documents", {"message_id": 7, "account_id": 3})]


def test_k2_a_typed_payload_read_as_another_kind_is_refused(queue: JobQueue) -> None:
    job = ClaimedJob(
        id=1, kind="relay", payload={"message_id": 1, "account_id": 2}, attempts=1,
        max_attempts=3, worker="w",
    )  # fmt: skip
    with pytest.raises(MalformedPayloadError, match="not a file-documents job"):
        FileDocuments.from_job(job)


def test_b5_malformed_stored_payload_is_dead_lettered_and_the_worker_goes_on(
    queue: JobQueue, database: Database
) -> None:
    handled: list[int] = []
    with database.transaction() as session:
        session.add(
            JobRow(
                kind=JobKind.FILE_DOCUMENTS.value,
                payload={"message_id": "not a number", "account_id": 1},
                max_attempts=3,
                next_attempt_at=utcnow(),
            )
        )
        session.flush()
        good = queue.enqueue(session, FileDocuments(message_id=1, account_id=1))
    pool = WorkerPool(
        queue,
        {JobKind.FILE_DOCUMENTS: lambda job: handled.append(job.id)},
        workers=1,
        poll_interval=0.1,
    )
    assert pool.run_once("w") == 1
    assert pool.run_once("w") == 1
    with database.reading() as session:
        rows = {
            row.id: (row.state, row.attempts, row.last_error)
            for row in session.scalars(select(JobRow))
        }
    [bad] = [row for job_id, row in rows.items() if job_id != good]
    assert bad == (
        DEAD,
        1,  # dead at once: retrying cannot help
        "file-documents job payload: message_id is missing or not a valid value",
    )
    assert rows[good][0] == DONE
    assert handled == [good]


def test_k2_delivery_and_relay_enqueue_typed_payloads(record: Record, n1_pdf: bytes) -> None:
    message_id = record.deliver(build_mail([pdf_part(n1_pdf)], subject="pdf"))
    with record.database.transaction() as session:
        queue_outbound(
            session,
            record.blobs,
            record.queue,
            envelope_from="",
            recipients=["Dr@Example.test"],
            content=b"Subject: r\r\n\r\nbody\r\n",
            purpose="mdn",
        )
    with record.database.reading() as session:
        by_kind = {row.kind: row.payload for row in session.scalars(select(JobRow))}
    assert FileDocuments.from_json(by_kind["file-documents"]) == FileDocuments(
        message_id=message_id, account_id=record.account_id
    )
    relay = Relay.from_json(by_kind["relay"])
    assert relay == Relay(
        blob_id=relay.blob_id, envelope_from="", recipients=("dr@example.test",), purpose="mdn"
    )
    assert "message_id" not in by_kind["relay"]


def test_k2_the_gateway_handles_every_kind_its_producers_enqueue(demo_home: Path) -> None:
    gateway = build_gateway(load_settings(demo_home))
    try:
        assert set(gateway.handlers) == set(PAYLOADS)
    finally:
        gateway.close()
