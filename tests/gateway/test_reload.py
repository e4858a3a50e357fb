"""K3: SIGHUP reloads ``caducee.toml`` while the gateway serves.

An operator edits the file and sends ``kill -HUP``: a live setting (here the SMTP
recipient limit) applies to the next transaction while an open session stays open;
a setting read only at start (the lifetime of new admin tokens) is reported in the log
as waiting for a restart; a file that no longer validates changes nothing and the
log says why in one line.
"""

from __future__ import annotations

import contextlib
import json
import signal
import smtplib
from collections.abc import Iterator
from typing import Any

import pytest

from caducee.config import Settings
from caducee.gateway import pki
from caducee.gateway.reload import merge
from tests.gateway.relay.conftest import Sink, sink_certificate
from tests.harness.served import ServedGateway, free_port, prepare_demo
from tests.harness.waiting import wait_until

OTHER = "secretariat.cardio@hopital-demo.mssante.fr"


@pytest.fixture
def served(tmp_path: Any, pg_schemas: Any) -> Iterator[ServedGateway]:
    url = pg_schemas.new() if pg_schemas is not None else None
    gateway = prepare_demo(tmp_path / "home", url)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop_all()


def _append_and_hangup(served: ServedGateway, toml: str, expected_log: str) -> None:
    """Append ``toml`` to the configuration, send SIGHUP, wait for ``expected_log``."""
    config = served.home / "caducee.toml"
    config.write_text(config.read_text() + "\n" + toml + "\n")
    before = served.log().count(expected_log)
    assert served.process is not None
    served.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: served.log().count(expected_log) > before,
        message=lambda: f"no {expected_log!r} in the log: {served.log()[-2000:]}",
    )


def test_k3_sighup_applies_a_live_smtp_limit_and_keeps_open_sessions(
    served: ServedGateway,
) -> None:
    patient = served.credentials["patient"]["address"]
    other = served.new_patient().address
    open_session = served.smtp()
    try:
        with served.smtp() as client:  # before: two recipients accepted
            assert client.mail(served.peer["professional"])[0] == 250
            assert client.rcpt(patient)[0] == 250
            assert client.rcpt(other)[0] == 250

        _append_and_hangup(
            served, "[smtp]\nmax_recipients = 1", "configuration reloaded: smtp.max_recipients"
        )

        with served.smtp() as client:
            assert client.mail(served.peer["professional"])[0] == 250
            assert client.rcpt(patient)[0] == 250
            code, reply = client.rcpt(other)
        assert code == 452, reply
        assert reply.startswith(b"4.5.3"), reply
        assert open_session.noop()[0] == 250  # the session opened before the reload is alive
    finally:
        with contextlib.suppress(smtplib.SMTPException):
            open_session.quit()


def test_k3_sighup_reports_a_start_only_setting_as_waiting_for_a_restart(
    served: ServedGateway,
) -> None:
    _append_and_hangup(
        served,
        "[admin]\ntoken_days = 30",
        "configuration changes wait for a restart: admin.token_days",
    )
    assert "configuration reloaded: nothing to apply live" in served.log()
    served.send(served.message(subject="Toujours servi"))  # still serving


def test_k3_sighup_with_an_invalid_file_changes_nothing_and_says_why(
    served: ServedGateway,
) -> None:
    other = served.new_patient().address  # before the file breaks (the harness reads it too)
    _append_and_hangup(served, "[smtp]\nmax_recipients = 0", "configuration not reloaded")
    line = next(line for line in served.log().splitlines() if "configuration not reloaded" in line)
    assert "max_recipients" in line
    patient = served.credentials["patient"]["address"]
    with served.smtp() as client:  # the running value (100) stays in force
        assert client.mail(served.peer["professional"])[0] == 250
        assert client.rcpt(patient)[0] == 250
        assert client.rcpt(other)[0] == 250


def _queue(served: ServedGateway) -> list[dict[str, Any]]:
    lines = served.cli("queue", "list", "--json").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_k3_c5_sighup_sends_waiting_mail_by_a_new_relay_route(
    tmp_path: Any, pg_schemas: Any
) -> None:
    """The operator fixes a peer's route in the file and sends SIGHUP: the waiting message leaves
    by the new route at its next attempt, without a restart."""
    closed = free_port()  # nothing listens here: the first attempts are deferred
    domain = "labo-route.mssante.fr"
    url = pg_schemas.new() if pg_schemas is not None else None
    served = prepare_demo(tmp_path / "home", url, workers=1)
    config = served.home / "caducee.toml"
    assert "[relay]" not in config.read_text()
    route = f'[relay]\nroutes = {{"{domain}" = "127.0.0.1:{closed}"}}\n'
    config.write_text(config.read_text() + "\n" + route)
    served.cli("trust", "add-domain", domain)
    ca = pki.load(served.home / "tls" / "ca.pem", served.home / "tls" / "ca.key")
    cert, key = sink_certificate(ca, tmp_path / "sink", names=[domain])
    sink = Sink(cert=cert, key=key, client_ca=served.home / "tls" / "ca.pem", dkim_records={})
    served.start()
    try:
        professional = served.credentials["professional"]["address"]
        recipient = f"secretariat@{domain}"
        raw = served.message(
            sender=professional, to=recipient, subject="Par la nouvelle route", sign=False
        )
        with served.submit("professional") as client:
            assert client.sendmail(professional, [recipient], raw) == {}

        def deferred() -> dict[str, Any] | None:
            jobs = [job for job in _queue(served) if job.get("attempts", 0) >= 1]
            return jobs[0] if jobs else None

        job = wait_until(deferred, message="the relay never tried the closed route")
        assert sink.received == []

        sink.start()
        before = served.log().count("configuration reloaded: relay.routes")
        config.write_text(config.read_text().replace(str(closed), str(sink.port)))
        assert served.process is not None
        served.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: served.log().count("configuration reloaded: relay.routes") > before,
            message=lambda: f"no reload in the log: {served.log()[-2000:]}",
        )
        served.cli("queue", "retry", str(job["id"]))
        wait_until(lambda: sink.received, message="nothing arrived by the new route")
        (received,) = sink.received
        assert received.rcpt_tos == [recipient]
        assert b"Par la nouvelle route" in received.content
        assert wait_until(lambda: _queue(served) == [] or None, message="the job stays queued")
    finally:
        sink.stop()
        served.stop_all()


def test_k3_reload_merges_live_fields_only() -> None:
    old = Settings()
    new = old.model_copy(
        update={
            "smtp": old.smtp.model_copy(update={"max_recipients": 7, "processes": 4}),
            "relay": old.relay.model_copy(update={"routes": {"labo.fr": "10.0.0.9:25"}}),
            "database": old.database.model_copy(update={"pool_size": 3}),
        }
    )
    merged, outcome = merge(old, new)
    assert merged.smtp.max_recipients == 7
    assert merged.relay.routes == {"labo.fr": "10.0.0.9:25"}
    assert merged.smtp.processes == old.smtp.processes  # the running value stays in force
    assert merged.database == old.database
    assert sorted(outcome.applied) == ["relay.routes", "smtp.max_recipients"]
    assert sorted(outcome.restart_needed) == ["database.pool_size", "smtp.processes"]
