"""C5/G4 decisions as plain tables: replies → outcomes, expiry, back-off, routes, DSN shape."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email import policy
from typing import Any, ClassVar

import dns.resolver
import pytest

from caducee.gateway.relay import RelayTiming, outcomes
from caducee.gateway.relay.client import certificate_domains, names_trusted_domain
from caducee.gateway.relay.outcomes import Verdict
from caducee.gateway.relay.routes import Hop, RouteError, Router, dns_lookup, parse_hop
from caducee.mailboxes.reports.dsn import Action, RecipientReport, build_dsn, dsn_allowed

# -- replies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "verdict", "status"),
    [
        (250, "2.0.0 Ok: queued as 12345", Verdict.DELIVERED, "2.0.0"),
        (250, "Ok", Verdict.DELIVERED, "2.0.0"),
        (451, "4.3.0 Try later", Verdict.RETRY, "4.3.0"),
        (421, "Service not available", Verdict.RETRY, "4.0.0"),
        (452, "4.2.2 Mailbox full", Verdict.RETRY, "4.2.2"),
        (550, "5.1.1 <x@y>: User unknown", Verdict.FAILED, "5.1.1"),
        (554, "5.7.1 Relay access denied", Verdict.FAILED, "5.7.1"),
        (550, "4.1.1 class does not match the reply", Verdict.FAILED, "5.0.0"),
        (552, "Message too big", Verdict.FAILED, "5.0.0"),
        (354, "unexpected", Verdict.RETRY, "4.0.0"),
    ],
)
def test_c5_a_reply_decides_the_recipient(
    code: int, text: str, verdict: Verdict, status: str
) -> None:
    outcome = outcomes.from_reply(code, text, "mx.example")
    assert (outcome.verdict, outcome.status, outcome.code) == (verdict, status, code)
    assert outcome.text == f"{code} {text}"
    assert outcome.diagnostic_type == "smtp"
    assert outcome.summary == f"{code} {status}"


@pytest.mark.parametrize(
    ("status", "expired"),
    [("4.4.1", "5.4.1"), ("4.7.5", "5.7.5"), ("4.3.0", "5.3.0"), ("4.0.0", "5.4.7")],
)
def test_c5_expiry_makes_the_last_temporary_failure_permanent(status: str, expired: str) -> None:
    outcome = outcomes.expire(outcomes.retry(status, "why"))
    assert (outcome.verdict, outcome.status) == (Verdict.FAILED, expired)
    delivered = outcomes.delivered_locally("mx")
    assert outcomes.expire(delivered) is delivered


def test_c5_a_bad_greeting_moves_on_instead_of_failing() -> None:
    outcome = outcomes.as_retry(outcomes.from_reply(554, "5.3.2 no service", "mx"))
    assert (outcome.verdict, outcome.status) == (Verdict.RETRY, "4.3.2")


def test_c5_backoff_doubles_up_to_its_ceiling() -> None:
    timing = RelayTiming(backoff_base=60, backoff_max=3600, jitter=0)
    assert [timing.backoff(n).total_seconds() for n in range(1, 9)] == [
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
        3600,
    ]
    jittered = RelayTiming(backoff_base=100, backoff_max=100, jitter=0.1)
    assert all(90 <= jittered.backoff(5).total_seconds() <= 110 for _ in range(50))


def test_c5_timing_comes_from_the_settings() -> None:
    from caducee.config.settings import RelaySettings

    timing = RelayTiming.from_settings(RelaySettings(retry_hours=2, delay_warning_hours=0.5))
    assert timing.retry == timedelta(hours=2) and timing.delay_warning == timedelta(minutes=30)
    default = RelayTiming.from_settings(RelaySettings())
    assert default.retry == timedelta(days=5) and default.delay_warning == timedelta(hours=4)


# -- certificates ----------------------------------------------------------------------------


def test_c5_the_peer_certificate_must_name_a_trust_space_domain() -> None:
    peercert = {"subjectAltName": (("DNS", "Labo.MSSante.fr."), ("IP Address", "192.0.2.1"))}
    names = certificate_domains(peercert)
    assert names == ["labo.mssante.fr"]
    assert names_trusted_domain(names, "labo.mssante.fr", set())
    assert names_trusted_domain(names, "other.mssante.fr", {"labo.mssante.fr"})
    assert not names_trusted_domain(names, "other.mssante.fr", {"third.mssante.fr"})
    assert not names_trusted_domain(certificate_domains(None), "labo.mssante.fr", set())


# -- routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hop"),
    [
        ("mx.labo.fr", Hop("mx.labo.fr", 25)),
        ("mx.labo.fr:2525", Hop("mx.labo.fr", 2525)),
        ("127.0.0.1:10025", Hop("127.0.0.1", 10025)),
        ("[::1]:2525", Hop("::1", 2525)),
        ("[2001:db8::1]", Hop("2001:db8::1", 25)),
    ],
)
def test_c5_static_route_forms(text: str, hop: Hop) -> None:
    assert parse_hop(text, 25) == hop


def test_c5_static_routes_come_before_dns_and_accept_idn() -> None:
    asked: list[str] = []

    def lookup(domain: str, timeout: float) -> list[str]:
        asked.append(domain)
        return [f"mx1.{domain}", f"mx2.{domain}"]

    router = Router(
        {"hôpital.mssante.fr": "relay.local:2525, backup.local"}, port=25, timeout=5, lookup=lookup
    )
    assert router.hops("HÔPITAL.mssante.fr") == [Hop("relay.local", 2525), Hop("backup.local", 25)]
    assert router.hops("xn--hpital-ixa.mssante.fr") == router.hops("hôpital.mssante.fr")
    assert router.hops("labo.mssante.fr") == [
        Hop("mx1.labo.mssante.fr", 25),
        Hop("mx2.labo.mssante.fr", 25),
    ]
    assert asked == ["labo.mssante.fr"]  # only the domain without a static route
    with pytest.raises(RouteError) as refused:
        router.hops("bad..domain")
    assert refused.value.outcome.verdict is Verdict.FAILED


def test_c5_a_bad_route_is_a_configuration_error() -> None:
    from caducee.config import ConfigError

    with pytest.raises(ConfigError, match=r'\[relay\] routes."labo.fr": expected "host:port"'):
        Router({"labo.fr": "mx.labo.fr:smtp"}, port=25, timeout=5)
    with pytest.raises(ConfigError, match="no host given"):
        Router({"labo.fr": " , "}, port=25, timeout=5)


class _Record:
    def __init__(self, preference: int, exchange: str) -> None:
        self.preference = preference
        self.exchange = exchange


class _FakeResolver:
    answers: ClassVar[dict[tuple[str, str], Any]] = {}

    def __init__(self) -> None:
        self.lifetime = 0.0

    def resolve(self, name: str, kind: str) -> Any:
        answer = self.answers.get((name, kind), dns.resolver.NoAnswer())
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (
            {("labo.fr", "MX"): [_Record(20, "mx2.labo.fr."), _Record(10, "mx1.labo.fr.")]},
            ["mx1.labo.fr", "mx2.labo.fr"],
        ),
        ({("labo.fr", "A"): ["192.0.2.1"]}, ["labo.fr"]),  # implicit MX
        ({("labo.fr", "MX"): dns.resolver.NXDOMAIN()}, (Verdict.FAILED, "5.1.2")),
        ({("labo.fr", "MX"): [_Record(0, ".")]}, (Verdict.FAILED, "5.1.10")),  # RFC 7505
        ({("labo.fr", "MX"): dns.resolver.LifetimeTimeout()}, (Verdict.RETRY, "4.4.3")),
        ({("labo.fr", "MX"): dns.resolver.NoNameservers()}, (Verdict.RETRY, "4.4.3")),
        ({}, (Verdict.FAILED, "5.1.2")),  # neither MX nor address
    ],
)
def test_c5_mx_lookup(
    monkeypatch: pytest.MonkeyPatch, answers: dict[Any, Any], expected: Any
) -> None:
    monkeypatch.setattr(_FakeResolver, "answers", answers)
    monkeypatch.setattr(dns.resolver, "Resolver", _FakeResolver)
    if isinstance(expected, list):
        assert dns_lookup("labo.fr", 5) == expected
        return
    with pytest.raises(RouteError) as refused:
        dns_lookup("labo.fr", 5)
    assert (refused.value.outcome.verdict, refused.value.outcome.status) == expected


# -- the DSN itself ----------------------------------------------------------------------------

ORIGINAL = (
    b"From: claire.martin@hopital-demo.mssante.fr\r\n"
    b"To: dr.durand@labo.mssante.fr\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sultats?=\r\n"
    b"Message-ID: <m1@hopital-demo.mssante.fr>\r\n"
    b"\r\n"
    b"HbA1c 9,1 % - confidentiel\r\n"
)


def test_g4_dsn_is_an_rfc_3464_report() -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    raw = build_dsn(
        ORIGINAL,
        recipients=[
            RecipientReport(
                "dr.durand@labo.mssante.fr",
                Action.FAILED,
                "5.1.1",
                remote_mta="mx.labo.mssante.fr",
                diagnostic="550 5.1.1 unknown",
                last_attempt=now,
            ),
            RecipientReport(
                "dr.petit@labo.mssante.fr",
                Action.DELAYED,
                "4.4.1",
                diagnostic="no answer from the remote host",
                diagnostic_type="X-Caducee",
                last_attempt=now,
                will_retry_until=now + timedelta(days=5),
            ),
        ],
        to="claire.martin@hopital-demo.mssante.fr",
        reporting_mta="mx.caducee.localhost",
        arrival=now - timedelta(hours=5),
        now=now,
    )
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) < 998
    dsn = email.message_from_bytes(raw, policy=policy.default)
    assert dsn["From"] == "Mail Delivery System <MAILER-DAEMON@mx.caducee.localhost>"
    assert dsn["To"] == "claire.martin@hopital-demo.mssante.fr"
    assert dsn["In-Reply-To"] == "<m1@hopital-demo.mssante.fr>"
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    human, status, headers = list(dsn.iter_parts())
    text = human.get_content()
    assert "dr.durand@labo.mssante.fr : statut 5.1.1" in text
    assert "dr.petit@labo.mssante.fr: status 4.4.1" in text
    assert "28/11/2026 10:00 UTC" in text  # until when we retry, in French and English
    blocks = status.get_payload()
    assert blocks[0]["Reporting-MTA"] == "dns; mx.caducee.localhost"
    assert blocks[0]["Arrival-Date"] == "Mon, 23 Nov 2026 05:00:00 +0000"
    assert dict(blocks[1]) == {
        "Final-Recipient": "rfc822; dr.durand@labo.mssante.fr",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx.labo.mssante.fr",
        "Diagnostic-Code": "smtp; 550 5.1.1 unknown",
        "Last-Attempt-Date": "Mon, 23 Nov 2026 10:00:00 +0000",
    }
    assert blocks[2]["Action"] == "delayed"
    assert blocks[2]["Diagnostic-Code"] == "X-Caducee; no answer from the remote host"
    assert blocks[2]["Will-Retry-Until"] == "Sat, 28 Nov 2026 10:00:00 +0000"
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Message-ID: <m1@hopital-demo.mssante.fr>" in headers.get_content()
    assert b"HbA1c" not in raw and b"confidentiel" not in raw  # never the body
    assert dsn["Subject"] == "Message non distribué / Undelivered message"


def test_g4_no_dsn_about_a_bounce() -> None:
    assert not dsn_allowed("")
    assert not dsn_allowed("<>")
    assert dsn_allowed("claire.martin@hopital-demo.mssante.fr")
    with pytest.raises(ValueError, match="at least one recipient"):
        build_dsn(
            ORIGINAL, recipients=[], to="a@b.fr", reporting_mta="mx", arrival=datetime.now(UTC)
        )
