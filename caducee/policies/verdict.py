"""Verdicts and rule chains: the shape every decision of the product takes.

A :class:`Rule` is one line of a table: an id naming the spec rule it
implements, a predicate over facts saying when it refuses, and the refusal.
:func:`first_refusal` walks a chain in order; the first rule that fires decides
(Mailman's chains, maddy's ``CheckResult``). An accepted stage is ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

# Contravariant: a rule written for a narrow protocol of facts serves any richer facts type.
FactsT = TypeVar("FactsT", contravariant=True)


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


@dataclass(frozen=True)
class Verdict:
    """A refusal together with the rule that decided it."""

    rule: str
    refusal: Refusal

    def smtp_reply(self) -> str:
        """The reply line, e.g. ``550 5.7.1 <text>``."""
        return f"{self.refusal.code} {self.refusal.enhanced} {self.refusal.text}"


@dataclass(frozen=True)
class Rule(Generic[FactsT]):
    """One line of a rule table: refuse with ``refusal`` when ``refuses(facts)``."""

    id: str
    refuses: Callable[[FactsT], bool]
    refusal: Refusal
    summary: str


def first_refusal(chain: Sequence[Rule[FactsT]], facts: FactsT) -> Verdict | None:
    """The verdict of the first rule of ``chain`` that refuses, or None to accept."""
    for rule in chain:
        if rule.refuses(facts):
            return Verdict(rule=rule.id, refusal=rule.refusal)
    return None
