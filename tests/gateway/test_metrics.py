"""K3/K4: ``/metrics`` of a served gateway shows its listeners, refusals by rule id, latencies.

After one accepted and one refused SMTP transaction, a scrape finds the listener
series (connections open and admitted, commands), the refusal counted under the
rule id of the verdict (B2.unknown-recipient), the transaction latency histogram,
the queue, job durations, blob-store and database latency. No label carries an
address or content (J2).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.served import Account, ServedGateway, prepare_demo
from tests.harness.waiting import wait_until

DOCS = Path(__file__).resolve().parents[2] / "docs"
UNKNOWN = "inconnu.introuvable@hopital-demo.mssante.fr"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pg_schemas: Any) -> Iterator[ServedGateway]:
    home = tmp_path_factory.mktemp("metrics") / "home"
    url = pg_schemas.new() if pg_schemas is not None else None
    # every body goes to the blob backend, so that blob latency is observed
    gateway = prepare_demo(home, url, workers=1, extra_env={"CADUCEE_BLOBS__INLINE_MAX_BYTES": "0"})
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop_all()


def scrape(served: ServedGateway) -> tuple[str, Samples]:
    url = f"http://127.0.0.1:{served.ports['http']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for sample_name, labels in samples if sample_name == name]


def test_k3_metrics_show_listeners_and_refusals_by_rule_id_after_traffic(
    served: ServedGateway,
) -> None:
    served.send(served.message(subject="Compte rendu", body="Bonjour,\nrésultats normaux.\n"))
    with served.smtp() as client:
        code, _ = client.mail(served.peer["professional"])
        assert code == 250
        code, reply = client.rcpt(UNKNOWN)
        assert code == 550, reply

    def refused_seen() -> Samples | None:
        _, samples = scrape(served)
        found = value(
            samples,
            "caducee_smtp_refusals_total",
            listener="operators",
            stage="RCPT",
            rule="B2.unknown-recipient",
        )
        return samples if found else None

    samples = wait_until(refused_seen, message="no refusal series with the rule id")
    assert samples is not None
    assert (value(samples, "caducee_connections_total", listener="smtp") or 0) >= 2
    assert value(samples, "caducee_connections_open", listener="smtp") is not None
    assert value(samples, "caducee_connections_refused_total", listener="smtp") == 0
    for command in ("EHLO", "MAIL", "RCPT", "DATA"):
        assert (
            value(samples, "caducee_smtp_commands_total", listener="operators", command=command)
            or 0
        ) >= 1, command
    accepted = value(
        samples, "caducee_smtp_transactions_total", listener="operators", outcome="accepted"
    )
    assert accepted is not None and accepted >= 1
    assert (
        value(samples, "caducee_smtp_transaction_seconds_count", listener="operators") or 0
    ) >= 1
    assert value(samples, "caducee_queue_ready_jobs") is not None
    assert value(samples, "caducee_queue_oldest_ready_age_seconds") is not None
    assert (
        value(samples, "caducee_blob_operation_seconds_count", operation="put", backend="folder")
        or 0
    ) >= 1
    assert any(
        labels.get("engine") in ("sqlite", "postgresql")
        for labels in series(samples, "caducee_database_statement_seconds_count")
    )


def test_k3_imap_and_http_listeners_report_their_connections(served: ServedGateway) -> None:
    patient = served.credentials["patient"]
    client = served.imap(Account(patient["address"], patient["password"]))
    try:
        client.select("INBOX")

        def open_imap_seen() -> Samples | None:
            samples = scrape(served)[1]
            return samples if value(samples, "caducee_connections_open", listener="imap") else None

        samples = wait_until(open_imap_seen, message="no open IMAP connection in /metrics")
    finally:
        client.logout()
    assert samples is not None
    assert (value(samples, "caducee_connections_total", listener="imap") or 0) >= 1
    # the scrape itself is an HTTP connection of the listener it is counted under
    assert (value(samples, "caducee_connections_open", listener="http") or 0) >= 1
    assert (value(samples, "caducee_connections_total", listener="http") or 0) >= 1
    assert value(samples, "caducee_connections_refused_total", listener="http") == 0


def test_k3_job_durations_appear_once_workers_ran_jobs(served: ServedGateway) -> None:
    served.send(served.message(subject="Résultats", body="Bonjour,\nvoici.\n"))

    def jobs_seen() -> Samples | None:
        samples = scrape(served)[1]
        return samples if series(samples, "caducee_job_duration_seconds_count") else None

    samples = wait_until(jobs_seen, message="no job duration series")
    assert samples is not None
    durations = series(samples, "caducee_job_duration_seconds_count")
    assert {labels["outcome"] for labels in durations} <= {"done", "retry", "dead"}


def test_j2_metric_labels_carry_no_address_or_content(served: ServedGateway) -> None:
    text, _ = scrape(served)
    assert "@" not in text
    assert "Compte rendu" not in text and "résultats" not in text


def test_k3_grafana_dashboard_uses_only_metrics_the_gateway_exports(
    served: ServedGateway,
) -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"caducee_[a-z_]+", target["expr"])
    }
    text, _ = scrape(served)
    exported = set(re.findall(r"^# TYPE (caducee_[a-z_]+) (\w+)", text, re.M))
    names = set()
    for name, kind in exported:
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        if kind == "counter":
            names.add(f"{name}_total")
    assert used and used <= names, used - names
