"""The end of an exchange (D3), as a rule table.

A professional ends the exchange with a patient by a subject that is exactly ``[FIN]`` or by
the header ``X-MSS-MES: FIN``; the patient may then no longer answer that professional until
their next message. Read at DATA from the header block, on every port a professional writes
through (operators' port, submission, the webmail).
"""

from __future__ import annotations

from dataclasses import dataclass

from caducee.policies.verdict import Rule, first_match


@dataclass(frozen=True)
class ExchangeFacts:
    """The header fields that may end the exchange, as the message carries them (decoded)."""

    subject: str
    mss_mes: str


END_OF_EXCHANGE_RULES: tuple[Rule[ExchangeFacts, bool], ...] = (
    Rule(
        "D3.fin-subject",
        lambda f: f.subject.strip() == "[FIN]",
        True,
        "A subject that is exactly [FIN] ends the exchange.",
    ),
    Rule(
        "D3.fin-header",
        lambda f: f.mss_mes.strip().upper() == "FIN",
        True,
        "The header X-MSS-MES: FIN ends the exchange (the message itself is delivered).",
    ),
)


def ends_exchange(facts: ExchangeFacts) -> bool:
    """Does this message end the exchange? (the first line that applies decides)"""
    rule = first_match(END_OF_EXCHANGE_RULES, facts)
    return rule is not None and rule.outcome
