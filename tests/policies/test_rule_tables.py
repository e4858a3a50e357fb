"""Every rule table of the product: one engine, one id syntax, every row tested, one generated page.

:data:`caducee.policies.tables.TABLES` lists the tables. For each, the example facts of the
table tests (SMTP chains, access, visibility, right changes, identity, D3, D4) must show every
row deciding and every row letting facts through; every id has the form
``<spec id>.<slug>``; ``docs/refusals.md`` is exactly what ``caducee rules`` prints; and every
decision is counted where the gateway's Prometheus collector reads it.
"""

from __future__ import annotations

import re
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from caducee.gateway.cli import main
from caducee.gateway.metrics import GatewayMetrics
from caducee.policies import access as access_rules
from caducee.policies.access import (
    ACCESS_RULES,
    Actor,
    Basis,
    DocumentFacts,
    DocumentFlag,
    ProfessionalStatus,
    RightChangeFacts,
)
from caducee.policies.identity import MESSAGE_RULE
from caducee.policies.tables import POLICY_MODULES, TABLES, Table, refusals_markdown
from caducee.policies.verdict import RULE_ID, Rule, first_match, rule_hits
from tests.policies import (
    test_access_table,
    test_header_tables,
    test_identity_table,
    test_smtp_rules_table,
)

ROOT = Path(__file__).resolve().parents[2]

_PRO = frozenset({DocumentFlag.HIDDEN_FROM_PROFESSIONALS})
_PATIENT = frozenset({DocumentFlag.HIDDEN_FROM_PATIENT})
_REPS = frozenset({DocumentFlag.HIDDEN_FROM_REPRESENTATIVES})

VISIBILITY_EXAMPLES: list[DocumentFacts] = [
    DocumentFacts(Basis.OWN_RECORD, _PATIENT),
    DocumentFacts(Basis.OWN_RECORD, _PRO | _REPS),
    DocumentFacts(Basis.REPRESENTATIVE, _REPS),
    DocumentFacts(Basis.REPRESENTATIVE, _PRO),
    DocumentFacts(Basis.KNOWN_PROFESSIONAL, _PRO),
    DocumentFacts(Basis.KNOWN_PROFESSIONAL, _PRO, author=True),
    DocumentFacts(Basis.EMERGENCY, _PRO),
    DocumentFacts(Basis.MEDECIN_TRAITANT, _PRO | _PATIENT | _REPS),
]

RIGHT_CHANGE_EXAMPLES = [
    RightChangeFacts(medecin_traitant=True, new_status=ProfessionalStatus.BLOCKED),
    RightChangeFacts(medecin_traitant=True, new_status=ProfessionalStatus.AUTHORISED),
    RightChangeFacts(medecin_traitant=False, new_status=ProfessionalStatus.BLOCKED),
]


def _examples() -> dict[str, list[Any]]:
    """The facts each table's tests judge, by table name."""
    found: dict[str, list[Any]] = {}
    smtp = test_smtp_rules_table
    for case in smtp.TABLE:
        found.setdefault(smtp.TABLE_NAMES[case.chain], []).append(case.facts)
    found["access.ACCESS_RULES"] = [
        facts for _, facts, *_ in test_access_table.TABLE + test_access_table.AUTHOR_TABLE
    ]
    found["access.VISIBILITY_RULES"] = VISIBILITY_EXAMPLES
    found["access.RIGHT_CHANGE_RULES"] = RIGHT_CHANGE_EXAMPLES
    identity = [facts for facts, _ in test_identity_table.IDENTITY_TABLE]
    found["identity.MAILBOX_RULES"] = identity
    found["identity.DOCUMENT_RULES"] = [facts for facts in identity if facts.structured]
    found["exchange.END_OF_EXCHANGE_RULES"] = [
        facts for _, facts, _ in test_header_tables.EXCHANGE_TABLE
    ]
    mss = [facts for _, facts, _ in test_header_tables.MSS_TABLE]
    for name in ("READABLE_RULES", "CODECDA_RULES", "INS_RULES", "NIL_RULES"):
        found[f"mss_headers.{name}"] = mss
    return found


EXAMPLES = _examples()

DEFAULT_ROWS = {"F2.not-authorised"}
"""Last rows that decide whatever reaches them (the table always answers)."""


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_every_row_has_the_one_id_syntax(table: Table) -> None:
    bad = [rule.id for rule in table.rules if not RULE_ID.match(rule.id)]
    assert not bad, bad
    ids = [rule.id for rule in table.rules]
    assert len(ids) == len(set(ids)), "a rule id appears twice in one table"
    assert all(rule.summary.strip() for rule in table.rules)


def test_ids_outside_the_tables_have_the_one_syntax_too() -> None:
    assert RULE_ID.match(MESSAGE_RULE)
    assert RULE_ID.match(access_rules.MEDECIN_TRAITANT_UNBLOCKABLE)


@pytest.mark.parametrize(
    ("rule_id", "valid"),
    [
        ("B3.sender-not-listed", True),
        ("E3.904-matricule", True),
        ("K4.connections-per-address", True),
        ("F2-own-record", False),
        ("E3-904-matricule", False),
        ("limits.size", False),
        ("B3.Sender", False),
        ("B3.", False),
        ("B3.sender--listed", False),
    ],
)
def test_the_id_syntax(rule_id: str, valid: bool) -> None:
    assert bool(RULE_ID.match(rule_id)) is valid


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_every_row_decides_and_lets_facts_through(table: Table) -> None:
    """Each row: some tested facts make it the deciding row, others make it pass (the
    table then accepts, or a later row decides)."""
    examples = EXAMPLES[table.name]
    ids = [rule.id for rule in table.rules]
    decided = {rule.id for facts in examples if (rule := first_match(table.rules, facts))}
    assert decided == set(ids), ("rows never shown deciding", sorted(set(ids) - decided))
    for position, rule in enumerate(table.rules):
        if rule.id in DEFAULT_ROWS:
            continue
        # the walk went past this row: it did not apply (rows are asked in order only)
        passing = [
            facts
            for facts in examples
            if (winner := first_match(table.rules, facts)) is None
            or ids.index(winner.id) > position
        ]
        assert passing, f"{rule.id} is never shown letting facts through"


def _module_tables(module: types.ModuleType) -> list[str]:
    return [
        f"{module.__name__.rsplit('.', 1)[1]}.{name}"
        for name, value in vars(module).items()
        if isinstance(value, tuple)
        and value
        and all(isinstance(v, Rule) for v in value)
        and name.isupper()
    ]


@pytest.mark.parametrize("module", POLICY_MODULES, ids=lambda m: m.__name__)
def test_every_table_of_the_policy_modules_is_listed(module: types.ModuleType) -> None:
    listed = {table.name for table in TABLES}
    # parts of listed tables, or a table imported by another module
    shared = {
        "inbound.RECIPIENT_STATE_RULES",
        "submission.RECIPIENT_STATE_RULES",
        "mss_headers.TABLES",
    }
    missing = [name for name in _module_tables(module) if name not in listed | shared]
    assert not missing


def test_docs_refusals_md_is_generated_from_the_tables() -> None:
    written = (ROOT / "docs" / "refusals.md").read_text(encoding="utf-8")
    assert written == refusals_markdown(), "run: caducee rules > docs/refusals.md"
    for table in TABLES:
        for rule in table.rules:
            assert f"| `{rule.id}` |" in written


def test_caducee_rules_prints_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules"]) == 0
    assert capsys.readouterr().out == refusals_markdown()


def _doc_table_ids(path: Path, first: str) -> list[str]:
    """The ids of the first column of the Markdown table that starts with row ``first``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| `{first}` |"))
    ids = []
    for line in lines[start:]:
        match = re.match(r"^\| `([^`]+)` \|", line)
        if match is None:
            break
        ids.append(match.group(1))
    return ids


@pytest.mark.parametrize(
    "rules", [ACCESS_RULES, access_rules.VISIBILITY_RULES], ids=["access", "visibility"]
)
def test_the_hand_written_tables_of_docs_access_md_follow_the_code(
    rules: tuple[Rule[Any, Any], ...],
) -> None:
    ids = [rule.id for rule in rules]
    assert _doc_table_ids(ROOT / "docs" / "access.md", ids[0]) == ids


def test_the_refusals_quoted_in_docs_lifecycle_md_are_the_rows() -> None:
    text = (ROOT / "docs" / "lifecycle.md").read_text(encoding="utf-8")
    quoted = re.findall(r"`(\d{3}) (\d\.\d+\.\d+) ([^`]+)` \(`([^`]+)`\)", text)
    assert quoted
    rows = {rule.id: rule.outcome for table in TABLES for rule in table.rules}
    for code, enhanced, reply, rule_id in quoted:
        refusal = rows[rule_id]
        assert (refusal.code, refusal.enhanced, refusal.text) == (int(code), enhanced, reply)


def test_every_decision_is_counted_and_scraped() -> None:
    patient = replace(test_access_table.PATIENT)
    assert patient.actor is Actor.PATIENT
    before = rule_hits().get("F2.own-record", 0)
    rule = first_match(ACCESS_RULES, patient)
    assert rule is not None and rule.id == "F2.own-record"
    assert rule_hits()["F2.own-record"] == before + 1
    assert first_match(access_rules.RIGHT_CHANGE_RULES, RIGHT_CHANGE_EXAMPLES[1]) is None
    families = {family.name: family for family in GatewayMetrics().collect()}
    samples = {
        sample.labels["rule"]: sample.value
        for sample in families["caducee_rule_hits"].samples
        if sample.name == "caducee_rule_hits_total"
    }
    assert samples["F2.own-record"] == rule_hits()["F2.own-record"]
