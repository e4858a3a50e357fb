"""C5 outbound relay and G4 DSNs, against a real TLS SMTP sink (see conftest)."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from caducee.gateway.relay import RelayTiming, make_relay_handler
from caducee.mailboxes.relay.models import RecipientState
from caducee.storage.jobs import DONE, READY
from caducee.storage.worker import WorkerPool
from tests.harness.waiting import wait_until

from .conftest import (
    HOSTED_SENDER,
    OTHER_DOMAIN,
    REMOTE_SENDER,
    SECRET,
    SINK_DOMAIN,
    RelayBench,
    build_bench,
    message,
    parse,
)

DR = f"dr.durand@{SINK_DOMAIN}"
DR2 = f"dr.petit@{SINK_DOMAIN}"
CLINIC = f"accueil@{OTHER_DOMAIN}"


def report_parts(dsn: EmailMessage) -> tuple[str, list[EmailMessage], str]:
    """(human text, delivery-status blocks, original headers) of a DSN, checking its shape."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = list(dsn.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list)
    human = parts[0].get_content()
    headers = parts[2].get_payload(decode=True).decode("utf-8")
    return human, blocks, headers


# -- delivery -------------------------------------------------------------------------------


def test_c5_relays_over_mutual_tls_with_a_dkim_signature(bench: RelayBench) -> None:
    job_id = bench.queue([DR, CLINIC])
    assert bench.attempt() == 1

    assert len(bench.sink.received) == 2  # one transaction per domain (two static routes)
    for received in bench.sink.received:
        assert received.mail_from == HOSTED_SENDER
        assert received.dkim_pass, "dkimpy at the sink verifies our signature"
        assert received.tls_version in ("TLSv1.2", "TLSv1.3")
        subject = dict(item[0] for item in received.client_certificate["subject"])
        assert subject["commonName"] == bench.settings.gateway.hostname  # our client certificate
        body = parse(received.content).get_body()
        assert body is not None and SECRET in body.get_content()  # intact after signing
    assert sorted(r for m in bench.sink.received for r in m.rcpt_tos) == sorted([DR, CLINIC])
    signature = parse(bench.sink.received[0].content)["DKIM-Signature"]
    assert "a=rsa-sha256" in signature and "d=hopital-demo.mssante.fr" in signature
    assert "c=relaxed/relaxed" in signature

    states = {a: r.state for a, r in bench.recipients(job_id).items()}
    assert states == {DR: "delivered", CLINIC: "delivered"}
    assert bench.job(job_id).state == DONE
    assert bench.relay_message(job_id).attempts == 1
    assert bench.inbox() == []  # no DSN on success


def test_c5_retries_with_backoff_until_the_peer_is_back(bench: RelayBench) -> None:
    bench.sink.stop()
    job_id = bench.queue([DR])
    start = bench.clock.now

    bench.attempt()
    row = bench.recipients(job_id)[DR]
    assert row.state == RecipientState.PENDING
    assert row.status == "4.4.1" and row.reply_code is None
    job = bench.job(job_id)
    assert job.state == READY and job.last_error == "4.4.1"
    assert job.next_attempt_at == start + timedelta(seconds=60)  # base back-off

    bench.clock.advance(seconds=60)
    bench.attempt()
    assert bench.job(job_id).next_attempt_at == bench.clock.now + timedelta(seconds=120)

    bench.clock.advance(seconds=120)
    bench.sink.start()
    bench.attempt()
    assert bench.recipients(job_id)[DR].state == RecipientState.DELIVERED
    assert bench.recipients(job_id)[DR].attempts == 3
    assert bench.job(job_id).state == DONE
    assert len(bench.sink.received) == 1
    assert bench.inbox() == []


def test_c5_backoff_is_capped_and_the_last_attempt_is_at_expiry(bench: RelayBench) -> None:
    bench.sink.handler.answer = "451"
    job_id = bench.queue([DR], sender="")  # null sender: no delay notice to wait for
    bench.attempt()
    expires = bench.relay_message(job_id).expires_at
    gaps = []
    for _ in range(7):
        bench.clock.now = bench.job(job_id).next_attempt_at
        bench.attempt()
        gaps.append((bench.job(job_id).next_attempt_at - bench.clock.now).total_seconds())
    assert gaps == [120, 240, 480, 960, 1920, 3600, 3600]  # doubling, capped at backoff_max
    bench.clock.now = expires - timedelta(minutes=10)
    bench.attempt()
    assert bench.job(job_id).next_attempt_at == expires  # the last attempt is at expiry
    bench.clock.now = expires
    bench.attempt()
    assert bench.recipients(job_id)[DR].state == RecipientState.FAILED
    assert bench.relay_message(job_id).attempts == 10


def test_c5_retries_through_the_worker_pool_in_real_time(demo_home: Path, tmp_path: Path) -> None:
    """No injected clock: tiny back-off, worker threads as ``caducee serve`` runs them."""
    timing = RelayTiming(backoff_base=0.2, backoff_max=0.5, timeout=5, jitter=0)
    bench = build_bench(demo_home, tmp_path)
    job_id = bench.queue([DR])
    handler = make_relay_handler(bench.gateway, timing=timing)
    pool = WorkerPool(bench.gateway.queue, {"relay": handler}, workers=1, poll_interval=0.05)
    pool.start()
    try:
        wait_until(
            lambda: bench.relay_attempts(job_id) >= 3, message="not retried while the peer was down"
        )
        assert bench.sink.received == []
        bench.sink.start()
        wait_until(lambda: bench.job(job_id).state == DONE, message="not delivered once back")
    finally:
        pool.stop()
        bench.sink.stop()
        bench.gateway.close()
    assert bench.recipients(job_id)[DR].state == RecipientState.DELIVERED
    assert len(bench.sink.received) == 1


# -- failures and DSNs ---------------------------------------------------------------------


def test_g4_a_550_gives_a_failure_dsn_in_the_hosted_senders_inbox(bench: RelayBench) -> None:
    bench.sink.handler.answer = "550"
    job_id = bench.queue([DR])
    bench.attempt()

    row = bench.recipients(job_id)[DR]
    assert row.state == RecipientState.FAILED
    assert (row.reply_code, row.status) == (550, "5.1.1")
    assert bench.job(job_id).state == DONE
    assert bench.sink.received == []

    inbox = bench.inbox()
    assert len(inbox) == 1
    dsn = inbox[0]
    assert dsn["Auto-Submitted"] == "auto-replied"
    human, blocks, headers = report_parts(dsn)
    per_message, per_recipient = blocks[0], blocks[1:]
    assert per_message["Reporting-MTA"] == f"dns; {bench.settings.gateway.hostname}"
    assert per_message["Arrival-Date"]
    assert len(per_recipient) == 1
    fields = per_recipient[0]
    assert fields["Final-Recipient"] == f"rfc822; {DR}"
    assert fields["Action"] == "failed"
    assert fields["Status"] == "5.1.1"
    assert fields["Remote-MTA"] == "dns; 127.0.0.1"
    assert fields["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user here"
    assert fields["Last-Attempt-Date"]
    assert "Will-Retry-Until" not in fields
    assert "Subject: Compte rendu" in headers  # the sender's own header, to recognise it
    for text in (human, headers, dsn.as_string()):
        assert "1,32" not in text and "Glyc" not in text  # never the body
    assert "n'a pas pu être distribué" in human and "could not be delivered" in human


def test_g4_mixed_answers_are_per_recipient(bench: RelayBench) -> None:
    bench.sink.handler.per_address = {DR2: "550"}
    job_id = bench.queue([DR, DR2])
    bench.attempt()
    states = {a: r.state for a, r in bench.recipients(job_id).items()}
    assert states == {DR: "delivered", DR2: "failed"}
    assert [m.rcpt_tos for m in bench.sink.received] == [[DR]]
    (dsn,) = bench.inbox()
    _human, blocks, _headers = report_parts(dsn)
    assert [b["Final-Recipient"] for b in blocks[1:]] == [f"rfc822; {DR2}"]


def test_g4_delay_dsn_after_four_hours_once_then_failure_at_expiry(bench: RelayBench) -> None:
    bench.sink.handler.answer = "451"
    job_id = bench.queue([DR])
    arrival = bench.clock.now

    bench.attempt()
    assert bench.inbox() == []
    warn_at = bench.relay_message(job_id).warn_at
    assert abs(warn_at - arrival - timedelta(hours=4)) < timedelta(seconds=5)

    bench.clock.now = warn_at - timedelta(minutes=1)
    bench.attempt()
    assert bench.inbox() == []
    assert bench.job(job_id).next_attempt_at == warn_at  # the notice is on time

    bench.clock.now = warn_at + timedelta(minutes=1)
    bench.attempt()
    (delay,) = bench.inbox()
    human, blocks, _headers = report_parts(delay)
    fields = blocks[1]
    assert fields["Action"] == "delayed"
    assert fields["Status"] == "4.3.0"
    assert fields["Diagnostic-Code"].startswith("smtp; 451 4.3.0")
    assert fields["Will-Retry-Until"]
    assert "retardée" in human and "delayed" in human

    for hours in (5, 8, 24, 72):
        bench.clock.now = arrival + timedelta(hours=hours)
        bench.attempt()
    assert len(bench.inbox()) == 1, "the delay notice is sent once"
    assert bench.recipients(job_id)[DR].state == RecipientState.PENDING

    bench.clock.now = arrival + timedelta(hours=120, minutes=1)
    bench.attempt()
    inbox = bench.inbox()
    assert len(inbox) == 2
    _human, blocks, _headers = report_parts(inbox[1])
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Status"] == "5.3.0"  # the last 4.3.0, made permanent at expiry
    assert bench.recipients(job_id)[DR].state == RecipientState.FAILED
    assert bench.job(job_id).state == DONE
    assert bench.sink.received == []


def test_g4_a_failure_and_the_delay_notice_share_one_dsn(bench: RelayBench) -> None:
    bench.sink.handler.answer = "451"
    job_id = bench.queue([DR, DR2])
    bench.attempt()
    bench.sink.handler.per_address = {DR2: "550"}
    bench.clock.now = bench.relay_message(job_id).warn_at
    bench.attempt()
    (dsn,) = bench.inbox()
    _human, blocks, _ = report_parts(dsn)
    actions = {b["Final-Recipient"]: (b["Action"], b["Status"]) for b in blocks[1:]}
    assert actions == {
        f"rfc822; {DR}": ("delayed", "4.3.0"),
        f"rfc822; {DR2}": ("failed", "5.1.1"),
    }
    assert dsn["Subject"] == "Message non distribué / Undelivered message"


def test_g4_never_a_dsn_about_a_null_sender_message(bench: RelayBench) -> None:
    bench.sink.handler.answer = "550"
    job_id = bench.queue([DR], sender="", purpose="mdn")
    bench.attempt()
    assert bench.recipients(job_id)[DR].state == RecipientState.FAILED
    assert [job.id for job in bench.relay_jobs()] == [job_id]  # no DSN queued
    assert bench.inbox() == []


def test_g4_dsn_to_a_remote_sender_is_relayed_with_the_null_sender(bench: RelayBench) -> None:
    bench.sink.handler.per_address = {DR: "550"}
    job_id = bench.queue([DR], sender=REMOTE_SENDER)
    bench.attempt()
    jobs = bench.relay_jobs()
    assert len(jobs) == 2
    dsn_job = jobs[1]
    assert dsn_job.payload["purpose"] == "dsn"
    assert dsn_job.payload["envelope_from"] == ""
    assert dsn_job.payload["recipients"] == [REMOTE_SENDER]
    assert dsn_job.state == DONE  # the same attempt round relayed it to the sink
    assert bench.recipients(job_id)[DR].state == RecipientState.FAILED
    (received,) = bench.sink.received
    assert received.mail_from in ("", "<>")  # MAIL FROM:<>
    assert received.rcpt_tos == [REMOTE_SENDER]
    assert received.dkim_pass  # signed for our host name (From: MAILER-DAEMON@...)
    _human, blocks, _ = report_parts(parse(received.content))
    assert blocks[1]["Final-Recipient"] == f"rfc822; {DR}"


def test_g4_a_failed_dsn_does_not_bounce_again(bench: RelayBench) -> None:
    """The DSN itself is refused: it fails, and nothing is sent about it (no loop)."""
    bench.sink.handler.answer = "550"
    bench.queue([DR], sender=REMOTE_SENDER)
    bench.attempt()
    jobs = bench.relay_jobs()
    assert len(jobs) == 2 and all(job.state == DONE for job in jobs)


# -- TLS and the trust space -------------------------------------------------------------


@pytest.mark.parametrize("case", ["unknown-ca", "expired", "wrong-name"])
def test_c5_a_certificate_that_does_not_verify_delivers_nothing(
    demo_home: Path, tmp_path: Path, case: str
) -> None:
    bench = build_bench(
        demo_home,
        tmp_path,
        sink_ca_trusted=case != "unknown-ca",
        expired=case == "expired",
        names=["mx.elsewhere.example"] if case == "wrong-name" else None,
    )
    bench.sink.start()
    try:
        job_id = bench.queue([DR])
        arrival = bench.clock.now
        bench.attempt()
        row = bench.recipients(job_id)[DR]
        assert row.state == RecipientState.PENDING  # temporary: the peer may renew
        assert row.status == "4.7.5"
        assert bench.sink.handler.connections >= 1  # it was tried...
        assert bench.sink.received == []  # ...and nothing was sent
        assert bench.inbox() == []

        bench.clock.now = arrival + timedelta(hours=121)
        bench.attempt()
    finally:
        bench.sink.stop()
        bench.gateway.close()
    assert bench.sink.received == []
    assert bench.recipients(job_id)[DR].state == RecipientState.FAILED
    (failure,) = bench.inbox()  # no delay notice: nothing was pending after the last attempt
    _human, blocks, _ = report_parts(failure)
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Status"] == "5.7.5"
    assert blocks[1]["Diagnostic-Code"].startswith("X-Caducee; ")


def test_c5_starttls_is_required(demo_home: Path, tmp_path: Path) -> None:
    bench = build_bench(demo_home, tmp_path, starttls=False)
    bench.sink.start()
    try:
        job_id = bench.queue([DR])
        bench.attempt()
    finally:
        bench.sink.stop()
        bench.gateway.close()
    assert bench.sink.received == []
    assert bench.recipients(job_id)[DR].status == "4.7.4"


def test_c5_recipient_outside_the_trust_space_fails_without_connecting(bench: RelayBench) -> None:
    outsider = "someone@gmail.com"
    job_id = bench.queue([outsider, DR])
    bench.attempt()
    rows = bench.recipients(job_id)
    assert rows[outsider].state == RecipientState.FAILED and rows[outsider].status == "5.7.1"
    assert rows[DR].state == RecipientState.DELIVERED
    (dsn,) = bench.inbox()
    _human, blocks, _ = report_parts(dsn)
    assert blocks[1]["Final-Recipient"] == f"rfc822; {outsider}"
    assert blocks[1]["Status"] == "5.7.1"
    assert [r for m in bench.sink.received for r in m.rcpt_tos] == [DR]


# -- hosted recipients ---------------------------------------------------------------------


def test_c5_hosted_recipients_are_delivered_directly(bench: RelayBench) -> None:
    pharmacy = "pharmacie@hopital-demo.mssante.fr"
    unknown = "nobody@hopital-demo.mssante.fr"
    content = message(REMOTE_SENDER, [HOSTED_SENDER, pharmacy, unknown])
    job_id = bench.queue([HOSTED_SENDER, pharmacy, unknown], sender=REMOTE_SENDER, content=content)
    bench.attempt()
    rows = bench.recipients(job_id)
    assert rows[HOSTED_SENDER].state == rows[pharmacy].state == RecipientState.DELIVERED
    assert rows[unknown].state == RecipientState.FAILED and rows[unknown].status == "5.1.1"
    assert len(bench.inbox(pharmacy)) == 1
    assert [m["Subject"] for m in bench.inbox(HOSTED_SENDER)] == ["Compte rendu"]
    # the remote sender is told about the unknown mailbox, through the relay
    dsn_jobs = [job for job in bench.relay_jobs() if job.payload["purpose"] == "dsn"]
    assert len(dsn_jobs) == 1 and dsn_jobs[0].payload["recipients"] == [REMOTE_SENDER]


def test_g4_dsn_to_a_patient_sender_lands_in_the_patient_inbox(bench: RelayBench) -> None:
    credentials = (bench.home / "demo" / "credentials.json").read_text()
    import json

    patient = json.loads(credentials)["patient"]["address"]
    bench.sink.handler.answer = "550"
    bench.queue([DR], sender=patient, content=message(patient, [DR]))
    bench.attempt()
    (dsn,) = bench.inbox(patient)
    assert report_parts(dsn)[1][1]["Action"] == "failed"
    # a DSN is no document: nothing queued for the patient's record
    from sqlalchemy import select

    from caducee.mailboxes.delivery import FILE_DOCUMENTS_JOB
    from caducee.storage.jobs import JobRow

    with bench.gateway.database.reading() as session:
        kinds = list(session.scalars(select(JobRow.kind)))
    assert FILE_DOCUMENTS_JOB not in kinds
