"""The MSSanté headers against the attachment they describe (D4), as rule tables.

``X-MSS-CODECDA`` lists the type codes of the CDA documents of the ``IHE_XDM.zip``,
``X-MSS-INS`` says ``O`` when they carry a qualified INS (matricule, OID and identity traits)
and ``N`` otherwise, ``X-MSS-NIL`` is the sending software's reference (ECO.2.4.1–2.4.3). A
mismatch is a *finding* recorded on the message, never a refusal: the message is delivered.

One table per header; each gives at most one finding, the outcome of its first line that
applies (``<header>:<what>``, which is what the operator sees on the message). A header block
that cannot be read gives only ``X-MSS:unreadable``.
"""

from __future__ import annotations

from dataclasses import dataclass

from caducee.policies.verdict import Rule, first_match

MAX_NIL_LENGTH = 100


@dataclass(frozen=True)
class MssHeaderFacts:
    """The three headers as the message carries them, and what the filing job read."""

    readable: bool = True
    codecda: frozenset[str] = frozenset()
    """Type codes ``X-MSS-CODECDA`` lists (all its fields, split on commas)."""
    codecda_present: bool = False
    ins: tuple[str, ...] = ()
    """Every ``X-MSS-INS`` field, stripped and upper-cased."""
    nil: tuple[str, ...] = ()
    """Every ``X-MSS-NIL`` field, stripped."""
    cda_type_codes: frozenset[str] = frozenset()
    """Type codes of the CDA documents read from the message's XDM archives."""
    has_cda: bool = False
    cdas_qualified: bool = False
    """Every CDA document carries an INS with all its identity traits."""


MssRule = Rule[MssHeaderFacts, str]

READABLE_RULES: tuple[MssRule, ...] = (
    Rule(
        "D4.unreadable",
        lambda f: not f.readable,
        "X-MSS:unreadable",
        "The MSSanté headers cannot be read: nothing else is checked.",
    ),
)

CODECDA_RULES: tuple[MssRule, ...] = (
    Rule(
        "D4.codecda-unexpected",
        lambda f: f.codecda_present and not f.has_cda,
        "X-MSS-CODECDA:unexpected",
        "X-MSS-CODECDA on a message with no CDA document in an XDM archive.",
    ),
    Rule(
        "D4.codecda-mismatch",
        lambda f: f.codecda_present and f.codecda != f.cda_type_codes,
        "X-MSS-CODECDA:mismatch",
        "X-MSS-CODECDA does not list the type codes of the CDA documents.",
    ),
    Rule(
        "D4.codecda-missing",
        lambda f: not f.codecda_present and f.has_cda,
        "X-MSS-CODECDA:missing",
        "CDA documents in an XDM archive without X-MSS-CODECDA.",
    ),
)

INS_RULES: tuple[MssRule, ...] = (
    Rule(
        "D4.ins-invalid",
        lambda f: bool(f.ins) and (len(f.ins) > 1 or f.ins[0] not in ("O", "N")),
        "X-MSS-INS:invalid",
        "X-MSS-INS must be one field, O or N.",
    ),
    Rule(
        "D4.ins-unexpected",
        lambda f: bool(f.ins) and not f.has_cda,
        "X-MSS-INS:unexpected",
        "X-MSS-INS on a message with no CDA document in an XDM archive.",
    ),
    Rule(
        "D4.ins-mismatch",
        lambda f: bool(f.ins) and (f.ins[0] == "O") != f.cdas_qualified,
        "X-MSS-INS:mismatch",
        "X-MSS-INS says O and an INS is not qualified, or N and every INS is.",
    ),
    Rule(
        "D4.ins-missing",
        lambda f: not f.ins and f.has_cda,
        "X-MSS-INS:missing",
        "CDA documents in an XDM archive without X-MSS-INS.",
    ),
)

NIL_RULES: tuple[MssRule, ...] = (
    Rule(
        "D4.nil-invalid",
        lambda f: bool(f.nil) and (len(f.nil) > 1 or not 0 < len(f.nil[0]) <= MAX_NIL_LENGTH),
        "X-MSS-NIL:invalid",
        f"X-MSS-NIL must be one non-empty field of at most {MAX_NIL_LENGTH} characters.",
    ),
)

TABLES: tuple[tuple[MssRule, ...], ...] = (CODECDA_RULES, INS_RULES, NIL_RULES)


def mss_findings(facts: MssHeaderFacts) -> list[str]:
    """The D4 findings of one message, one per header at most (empty: the headers agree)."""
    unreadable = first_match(READABLE_RULES, facts)
    if unreadable is not None:
        return [unreadable.outcome]
    return [rule.outcome for table in TABLES if (rule := first_match(table, facts)) is not None]
