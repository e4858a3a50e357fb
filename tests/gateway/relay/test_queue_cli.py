"""C5 operations: ``caducee queue list|show|retry|bounce|delete``: codes and counts, no content."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from caducee.gateway.cli import main as caducee_main
from caducee.mailboxes.relay.models import RelayMessage, RelayRecipient
from caducee.storage.blobs import BlobRow
from caducee.storage.db import utcnow
from caducee.storage.jobs import DONE, READY, JobRow
from caducee.storage.worker import WorkerPool

from .conftest import HOSTED_SENDER, SECRET, SINK_DOMAIN, RelayBench

DR = f"dr.durand@{SINK_DOMAIN}"
DR2 = f"dr.petit@{SINK_DOMAIN}"


def run(bench: RelayBench, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = caducee_main(["queue", *args, "--home", str(bench.home)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_c5_queue_list_shows_states_and_codes_without_content(
    bench: RelayBench, capsys: pytest.CaptureFixture[str]
) -> None:
    bench.sink.handler.per_address = {DR: "451", DR2: "250"}
    job_id = bench.queue([DR, DR2])
    waiting = bench.queue([f"autre@{SINK_DOMAIN}"], purpose="mdn", sender="")
    with bench.gateway.database.transaction() as session:  # not due yet: stays untouched
        session.execute(
            update(JobRow)
            .where(JobRow.id == waiting)
            .values(next_attempt_at=utcnow() + timedelta(hours=1))
        )
    pool = WorkerPool(bench.gateway.queue, {"relay": bench.handler()}, workers=0, poll_interval=1)
    assert pool.run_once("cli-test") == 1

    code, out, _err = run(bench, capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "2 relay job(s) waiting"
    assert lines[1].split()[:4] == ["ID", "PURPOSE", "STATE", "AGE"]
    first = next(line for line in lines[2:] if line.split()[0] == str(job_id))
    assert "submission" in first and "ready" in first
    assert "2 (pending 1, delivered 1)" in first
    assert first.rstrip().endswith("451 4.3.0")
    second = next(line for line in lines[2:] if line.split()[0] == str(waiting))
    assert "mdn" in second and "1 (queued 1)" in second
    for forbidden in (DR, DR2, HOSTED_SENDER, "Compte rendu", SECRET, "@"):
        assert forbidden not in out

    code, out, _err = run(bench, capsys, "list", "--json")
    entries = {entry["id"]: entry for entry in map(json.loads, out.splitlines())}
    assert entries[job_id]["recipient_states"] == {"pending": 1, "delivered": 1}
    assert entries[job_id]["recipient_domains"] == [SINK_DOMAIN]
    assert entries[job_id]["attempts"] == 1
    assert entries[job_id]["last_error"] == "451 4.3.0"
    assert entries[job_id]["expires"] is not None
    assert "@" not in out


def test_c5_queue_retry_makes_a_job_due_now(
    bench: RelayBench, capsys: pytest.CaptureFixture[str]
) -> None:
    bench.sink.stop()
    job_id = bench.queue([DR])
    bench.attempt()
    before = bench.job(job_id).next_attempt_at
    assert before > bench.clock.now

    code, out, _err = run(bench, capsys, "retry", str(job_id))
    assert code == 0 and f"relay job {job_id} will be attempted now" in out
    job = bench.job(job_id)
    assert job.state == READY and job.next_attempt_at < before

    bench.sink.start()
    pool = WorkerPool(bench.gateway.queue, {"relay": bench.handler()}, workers=0, poll_interval=1)
    assert pool.run_once("cli-test") == 1  # due without touching the clock
    assert bench.job(job_id).state == DONE

    code, _out, err = run(bench, capsys, "retry", str(job_id))
    assert code == 1 and "is done: nothing to retry" in err
    code, _out, err = run(bench, capsys, "retry", "999999")
    assert code == 1 and "no relay job 999999" in err


def test_c5_queue_delete_drops_the_job_without_a_dsn(
    bench: RelayBench, capsys: pytest.CaptureFixture[str]
) -> None:
    bench.sink.handler.answer = "451"
    job_id = bench.queue([DR])
    bench.attempt()
    blob_id = bench.job(job_id).payload["blob_id"]

    code, out, _err = run(bench, capsys, "delete", str(job_id))
    assert code == 0
    assert "no DSN was sent" in out and "1 recipient(s)" in out
    with bench.gateway.database.reading() as session:
        assert session.scalar(select(func.count()).select_from(RelayMessage)) == 0
        assert session.scalar(select(func.count()).select_from(RelayRecipient)) == 0
        assert session.get(BlobRow, blob_id) is None
    assert bench.relay_jobs() == []
    assert bench.inbox() == []
    code, out, _err = run(bench, capsys, "list")
    assert out.splitlines()[0] == "0 relay job(s) waiting"
    code, _out, err = run(bench, capsys, "delete", str(job_id))
    assert code == 1 and f"no relay job {job_id}" in err


def test_c5_g4_queue_bounce_fails_pending_recipients_and_tells_the_sender(
    bench: RelayBench, capsys: pytest.CaptureFixture[str]
) -> None:
    bench.sink.handler.per_address = {DR: "451", DR2: "250"}
    job_id = bench.queue([DR, DR2])
    bench.attempt()  # DR2 delivered, DR pending (451)
    code, out, _err = run(bench, capsys, "show", str(job_id))
    shown = json.loads(out)
    assert code == 0 and sorted(r["state"] for r in shown["recipients"]) == ["delivered", "pending"]
    assert "@" not in out and SECRET not in out

    code, out, _err = run(bench, capsys, "bounce", str(job_id))
    assert code == 0 and "1 recipient(s) failed; the sender gets a failure DSN" in out
    assert bench.job(job_id).state == DONE
    (dsn,) = bench.inbox()  # the hosted sender's INBOX: one failure DSN, about DR only
    report = dsn.as_string()
    assert dsn.get_content_type() == "multipart/report"
    assert f"Final-Recipient: rfc822; {DR}" in report and "Status: 5.0.0" in report
    assert DR2 not in report.split("message/delivery-status", 1)[1].split("text/rfc822", 1)[0]
    code, _out, err = run(bench, capsys, "bounce", str(job_id))
    assert code == 1 and "is done" in err
