"""The one rule engine: every decision of the product is a table of :class:`Rule` rows.

A :class:`Rule` is one line of a table: an id naming the spec rule it implements
(``<spec id>.<slug>``, e.g. ``B3.sender-not-listed``), a predicate over facts saying when the
line applies, the outcome it decides and a one-line summary. :func:`first_match` walks a
table in order; the first line that applies decides (Mailman's chains, maddy's
``CheckResult``). The outcome is whatever the table decides: an SMTP :class:`Refusal`, an
access basis, an identity error code, a D4 finding.

Every decision is counted by rule id (:func:`rule_hits`) so an operator sees which lines fire:
the gateway's Prometheus collector reads the counts at scrape time. The count is the only
state of this package; it is per process, like every Prometheus counter.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

# Contravariant: a rule written for a narrow protocol of facts serves any richer facts type.
FactsT = TypeVar("FactsT", contravariant=True)
OutcomeT = TypeVar("OutcomeT")
F = TypeVar("F")
Out = TypeVar("Out")

RULE_ID = re.compile(r"^[A-K][0-9]{1,2}\.[a-z0-9]+(?:-[a-z0-9]+)*$")
"""The one id syntax: ``<spec id>.<slug>`` (spec ids are A1…K9; slug in kebab case)."""


@dataclass(frozen=True)
class Refusal:
    """How a refusal is said in SMTP: code, enhanced status code, generic text."""

    code: int
    enhanced: str
    text: str

    @property
    def temporary(self) -> bool:
        """4xx refusals ask the sender to retry later."""
        return 400 <= self.code < 500

    def smtp_reply(self) -> str:
        """The reply line, e.g. ``550 5.7.1 <text>``."""
        return f"{self.code} {self.enhanced} {self.text}"


@dataclass(frozen=True)
class Verdict:
    """A refusal together with the rule that decided it."""

    rule: str
    refusal: Refusal

    def smtp_reply(self) -> str:
        """The reply line, e.g. ``550 5.7.1 <text>``."""
        return self.refusal.smtp_reply()


@dataclass(frozen=True)
class Rule(Generic[FactsT, OutcomeT]):
    """One line of a rule table: when ``when(facts)`` holds, the outcome is ``outcome``."""

    id: str
    when: Callable[[FactsT], bool]
    outcome: OutcomeT
    summary: str

    # The names the SMTP tables were first written with.
    @property
    def refuses(self) -> Callable[[FactsT], bool]:
        return self.when

    @property
    def refusal(self) -> OutcomeT:
        return self.outcome


SmtpRule: TypeAlias = Rule[FactsT, Refusal]
"""A line of an SMTP table: its outcome is the refusal a client reads."""

_hits: Counter[str] = Counter()
_hits_lock = threading.Lock()


def record_hit(rule: str) -> None:
    """Count one decision of ``rule`` (:func:`first_match` calls it for every decision)."""
    with _hits_lock:
        _hits[rule] += 1


def rule_hits() -> dict[str, int]:
    """Decisions per rule id since the process started (read by the metrics collector)."""
    with _hits_lock:
        return dict(_hits)


def first_match(table: Sequence[Rule[F, Out]], facts: F) -> Rule[F, Out] | None:
    """The first line of ``table`` that applies to ``facts`` (counted), or None."""
    for rule in table:
        if rule.when(facts):
            record_hit(rule.id)
            return rule
    return None


def first_refusal(chain: Sequence[Rule[F, Refusal]], facts: F) -> Verdict | None:
    """The verdict of the first rule of an SMTP ``chain`` that refuses, or None to accept."""
    rule = first_match(chain, facts)
    return None if rule is None else Verdict(rule=rule.id, refusal=rule.outcome)
