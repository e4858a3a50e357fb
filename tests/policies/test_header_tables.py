"""D3 and D4 as tables: the headers that end an exchange, and the MSSanté header findings.

Pure: facts in, outcome out. Neither table refuses anything: D3 withdraws the patient's
right to answer, D4 records findings on a delivered message.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from caducee.policies.exchange import ExchangeFacts, ends_exchange
from caducee.policies.mss_headers import MssHeaderFacts, mss_findings

PLAIN = ExchangeFacts(subject="Compte rendu", mss_mes="")

# (case, facts, ends the exchange)
EXCHANGE_TABLE: list[tuple[str, ExchangeFacts, bool]] = [
    ("ordinary subject", PLAIN, False),
    ("[FIN] subject", replace(PLAIN, subject="[FIN]"), True),
    ("[FIN] with spaces around", replace(PLAIN, subject="  [FIN] "), True),
    ("[FIN] inside a subject", replace(PLAIN, subject="Re: [FIN] suite"), False),
    ("X-MSS-MES: FIN", replace(PLAIN, mss_mes="FIN"), True),
    ("X-MSS-MES: fin", replace(PLAIN, mss_mes=" fin "), True),
    ("X-MSS-MES: other", replace(PLAIN, mss_mes="SUITE"), False),
    ("both", ExchangeFacts(subject="[FIN]", mss_mes="FIN"), True),
]


@pytest.mark.parametrize(
    ("facts", "ends"), [pytest.param(f, e, id=case) for case, f, e in EXCHANGE_TABLE]
)
def test_d3_end_of_exchange_table(facts: ExchangeFacts, ends: bool) -> None:
    assert ends_exchange(facts) is ends


# A message whose XDM holds one CDA of type 11488-4 with a qualified INS, described exactly.
AGREEING = MssHeaderFacts(
    codecda=frozenset({"11488-4"}),
    codecda_present=True,
    ins=("O",),
    nil=("Logiciel 1.0",),
    cda_type_codes=frozenset({"11488-4"}),
    has_cda=True,
    cdas_qualified=True,
)
NO_CDA = MssHeaderFacts()

# (case, facts, findings)
MSS_TABLE: list[tuple[str, MssHeaderFacts, list[str]]] = [
    ("headers agree", AGREEING, []),
    ("no header, no CDA", NO_CDA, []),
    ("unreadable", replace(AGREEING, readable=False), ["X-MSS:unreadable"]),
    (
        "CODECDA without CDA",
        replace(NO_CDA, codecda=frozenset({"11488-4"}), codecda_present=True),
        ["X-MSS-CODECDA:unexpected"],
    ),
    (
        "CODECDA lists another type",
        replace(AGREEING, codecda=frozenset({"18748-4"})),
        ["X-MSS-CODECDA:mismatch"],
    ),
    (
        "CODECDA present but empty",
        replace(AGREEING, codecda=frozenset()),
        ["X-MSS-CODECDA:mismatch"],
    ),
    (
        "CDA without CODECDA",
        replace(AGREEING, codecda=frozenset(), codecda_present=False),
        ["X-MSS-CODECDA:missing"],
    ),
    ("INS neither O nor N", replace(AGREEING, ins=("X",)), ["X-MSS-INS:invalid"]),
    ("INS twice", replace(AGREEING, ins=("O", "O")), ["X-MSS-INS:invalid"]),
    ("INS without CDA", replace(NO_CDA, ins=("O",)), ["X-MSS-INS:unexpected"]),
    ("INS O, not qualified", replace(AGREEING, cdas_qualified=False), ["X-MSS-INS:mismatch"]),
    ("INS N, qualified", replace(AGREEING, ins=("N",)), ["X-MSS-INS:mismatch"]),
    ("INS N, not qualified", replace(AGREEING, ins=("N",), cdas_qualified=False), []),
    ("CDA without INS", replace(AGREEING, ins=()), ["X-MSS-INS:missing"]),
    ("NIL twice", replace(AGREEING, nil=("a", "b")), ["X-MSS-NIL:invalid"]),
    ("NIL empty", replace(AGREEING, nil=("",)), ["X-MSS-NIL:invalid"]),
    ("NIL too long", replace(AGREEING, nil=("x" * 101,)), ["X-MSS-NIL:invalid"]),
    ("NIL at the limit", replace(AGREEING, nil=("x" * 100,)), []),
    ("no NIL", replace(AGREEING, nil=()), []),
    (
        "one finding per header",
        replace(AGREEING, codecda_present=False, codecda=frozenset(), ins=(), nil=("", "")),
        ["X-MSS-CODECDA:missing", "X-MSS-INS:missing", "X-MSS-NIL:invalid"],
    ),
    (
        "unreadable hides the rest",
        replace(NO_CDA, readable=False, ins=("X",)),
        ["X-MSS:unreadable"],
    ),
]


@pytest.mark.parametrize(
    ("facts", "findings"), [pytest.param(f, c, id=case) for case, f, c in MSS_TABLE]
)
def test_d4_mss_header_findings(facts: MssHeaderFacts, findings: list[str]) -> None:
    assert mss_findings(facts) == findings
