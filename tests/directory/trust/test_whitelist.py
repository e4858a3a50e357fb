"""A5 trust space: reading and importing the national MSSanté whitelist.

The counts below were found by reading the published file (grep and a short
script over ``<Domaine>`` blocks), not by running the code under test:

- 619 ``Domaine`` entries, all complete; the root element is never closed;
- 516 distinct names (case-insensitively), one written in upper case
  (``UC-CMP.mssante.fr``, entry 9);
- 80 names listed more than once: 75 under several operator DNs and 5 listed
  twice under the *same* DN (entries 59/60, 194/195, 451/452, 487/488, 552/553),
  hence 614 distinct (domain, operator DN) pairs;
- 35 distinct operator DNs; 1 entry whose DateMAJ (2025-03-14T15:34:10Z) is later
  than DateDeGeneration (2025-03-13T14:54:10Z).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from caducee.directory.trust_models import TrustDomain, add_trust_domain, is_trusted_domain
from caducee.directory.whitelist import (
    DEFAULT_MAX_BYTES,
    WhitelistReport,
    import_whitelist,
    read_whitelist,
)
from caducee.storage.db import Database

from .samples import DN_A, DN_B, domaine, whitelist

ENTRIES = 619
DISTINCT_NAMES = 516
DUPLICATED_NAMES = 80
MULTI_OPERATOR_NAMES = 75
REPEATED_PAIRS = 5
PAIRS = 614
OPERATOR_DNS = 35
GENERATED_AT = datetime(2025, 3, 13, 14, 54, 10, tzinfo=UTC)

_BLOCK = re.compile(rb"\s*<Domaine>.*?</Domaine>", re.DOTALL)


def rows(database: Database) -> list[tuple[int, str, str, str, str | None, datetime]]:
    with database.transaction() as session:
        found = session.execute(
            select(
                TrustDomain.id,
                TrustDomain.domain,
                TrustDomain.operator_dn,
                TrustDomain.source,
                TrustDomain.description,
                TrustDomain.imported_at,
            ).order_by(TrustDomain.id)
        ).all()
    return [tuple(row) for row in found]  # type: ignore[misc]


def trusted(database: Database, domain: str) -> bool:
    with database.transaction() as session:
        return is_trusted_domain(session, domain)


def without_entry(data: bytes, name: bytes, dn_fragment: bytes) -> bytes:
    """The document with the one ``Domaine`` naming ``name`` under a DN containing the fragment."""
    matches = [
        m
        for m in _BLOCK.finditer(data)
        if b"<Nom>" + name + b"</Nom>" in m.group(0) and dn_fragment in m.group(0)
    ]
    assert len(matches) == 1
    return data[: matches[0].start()] + data[matches[0].end() :]


def test_a5_sample_counts_as_read_by_hand(whitelist_bytes: bytes) -> None:
    # Guard: the sample is the file the counts were taken from.
    assert whitelist_bytes.count(b"<Domaine>") == ENTRIES
    assert whitelist_bytes.count(b"</Domaine>") == ENTRIES
    assert b"</ListeBlancheMSSante>" not in whitelist_bytes
    dns = set(re.findall(rb"<DNCertificatOperateur>(.*?)</", whitelist_bytes))
    assert len(dns) == OPERATOR_DNS


def test_a5_reader_yields_every_complete_entry_of_the_real_file(whitelist_path: Path) -> None:
    reader = read_whitelist(whitelist_path)
    entries = list(reader)
    assert len(entries) == ENTRIES
    assert reader.entries_read == ENTRIES
    assert reader.rejected_count == 0
    assert reader.generated_at == GENERATED_AT
    assert reader.truncated
    assert reader.list_complete
    assert reader.problem is not None
    assert "truncated after entry 619" in reader.problem
    assert [e.position for e in entries] == list(range(1, ENTRIES + 1))
    assert all(e.updated_at is not None and e.updated_at.tzinfo is not None for e in entries)
    assert len({e.operator_dn for e in entries}) == OPERATOR_DNS
    first = entries[0]
    assert first.domain == "nddtestasmae.mssante.fr"
    assert first.description == "BREST LA SAUVEGARDE"
    assert first.updated_at == datetime(2025, 3, 14, 15, 34, 10, tzinfo=UTC)
    assert first.operator_dn.startswith("CN=medimail-asip.mipih.fr,")


def test_a5_real_whitelist_import_counts(database: Database, whitelist_path: Path) -> None:
    report = import_whitelist(database, whitelist_path)
    assert report.entries_read == ENTRIES
    assert report.domains_distinct == DISTINCT_NAMES
    assert report.duplicates == DUPLICATED_NAMES
    assert report.multi_operator == MULTI_OPERATOR_NAMES
    assert report.repeated_entries == REPEATED_PAIRS
    assert report.pairs == PAIRS
    assert (report.added, report.updated, report.removed, report.unchanged) == (PAIRS, 0, 0, 0)
    assert report.rejected_count == 0 and report.rejected == []
    assert report.truncated and report.list_complete and not report.removals_skipped
    assert report.generated_at == GENERATED_AT
    assert report.dated_after_generation == 1
    assert report.imported
    assert any("truncated after entry 619" in line for line in report.summary_lines())
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(TrustDomain)) == PAIRS
        distinct = session.scalar(select(func.count(TrustDomain.domain.distinct())))
        assert distinct == DISTINCT_NAMES
        sources = set(session.scalars(select(TrustDomain.source).distinct()))
        assert sources == {"whitelist"}


def test_a5_upper_case_name_is_stored_lower_case(database: Database, whitelist_path: Path) -> None:
    import_whitelist(database, whitelist_path)
    with database.transaction() as session:
        stored = session.scalars(
            select(TrustDomain.domain).where(func.lower(TrustDomain.domain) == "uc-cmp.mssante.fr")
        ).all()
    assert stored == ["uc-cmp.mssante.fr"]
    assert trusted(database, "UC-CMP.mssante.fr")
    assert trusted(database, "uc-cmp.mssante.fr")
    assert not trusted(database, "not-listed.mssante.fr")


def test_a5_second_import_of_the_same_file_changes_nothing(
    database: Database, whitelist_path: Path
) -> None:
    import_whitelist(database, whitelist_path)
    before = rows(database)
    report = import_whitelist(database, whitelist_path)
    assert (report.added, report.updated, report.removed) == (0, 0, 0)
    assert report.unchanged == PAIRS
    assert rows(database) == before


def test_a5_repeated_pair_keeps_the_same_entry_whatever_the_order(database: Database) -> None:
    first = domaine("repete.mssante.fr", description="EHPAD ABRAPA")
    second = domaine("repete.mssante.fr", description="EHPAD Abrapa")
    report = import_whitelist(database, whitelist(first, second))
    assert report.repeated_entries == 1 and report.pairs == 1
    again = import_whitelist(database, whitelist(second, first))
    assert (again.added, again.updated, again.unchanged) == (0, 0, 1)


def test_a5_one_entry_removed_removes_exactly_that_row(
    database: Database, whitelist_bytes: bytes
) -> None:
    import_whitelist(database, whitelist_bytes)
    before = rows(database)
    # Entry 22: the second operator of a domain listed under two.
    smaller = without_entry(whitelist_bytes, b"3c-ccconcorde.mssante.fr", b"CN=smtp-2.")
    report = import_whitelist(database, smaller)
    assert report.entries_read == ENTRIES - 1
    assert (report.added, report.updated, report.removed) == (0, 0, 1)
    assert report.unchanged == PAIRS - 1
    after = rows(database)
    gone = set(before) - set(after)
    assert len(gone) == 1
    (_id, domain, operator_dn, *_rest) = gone.pop()
    assert domain == "3c-ccconcorde.mssante.fr"
    assert operator_dn.startswith("CN=smtp-2.sante.santnet.com,")
    assert set(after) < set(before)
    assert trusted(database, "3c-ccconcorde.mssante.fr")  # still listed by its other operator


def test_a5_changed_entries_are_updates(database: Database) -> None:
    import_whitelist(database, whitelist(domaine("a.mssante.fr"), domaine("b.mssante.fr")))
    (id_b, _, _, _, _, imported_b) = rows(database)[1]
    report = import_whitelist(
        database,
        whitelist(
            domaine("a.mssante.fr", description="Nouvelle description"),
            domaine("b.mssante.fr", DN_B),  # the operator changed
        ),
    )
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 2, 0, 0)
    after = rows(database)
    assert [(r[1], r[2], r[4]) for r in after] == [
        ("a.mssante.fr", DN_A, "Nouvelle description"),
        ("b.mssante.fr", DN_B, "Domaine de test"),
    ]
    assert after[1][0] == id_b  # the row of b was kept, its DN updated
    assert after[1][5] >= imported_b
    report = import_whitelist(database, whitelist(domaine("a.mssante.fr", date="2025-02-01")))
    assert (report.added, report.updated, report.removed) == (0, 1, 1)


def test_a5_manual_and_demo_rows_are_left_alone(database: Database) -> None:
    with database.transaction() as session:
        add_trust_domain(session, "manuel.example.org", source="manual")
        add_trust_domain(session, "demo.example.org", source="demo", operator_dn=DN_A)
        add_trust_domain(session, "partage.mssante.fr", source="manual", operator_dn=DN_A)
    report = import_whitelist(
        database, whitelist(domaine("liste.mssante.fr"), domaine("partage.mssante.fr"))
    )
    assert (report.added, report.held_by_other_source) == (1, 1)
    report = import_whitelist(database, whitelist(domaine("autre.mssante.fr")))
    assert (report.added, report.removed) == (1, 1)
    kept = {(r[1], r[3]) for r in rows(database)}
    assert kept == {
        ("manuel.example.org", "manual"),
        ("demo.example.org", "demo"),
        ("partage.mssante.fr", "manual"),
        ("autre.mssante.fr", "whitelist"),
    }


def test_a5_idn_domain_is_stored_as_its_a_label(database: Database) -> None:
    report = import_whitelist(database, whitelist(domaine("Hôpital-Exemple.mssante.fr")))
    assert report.added == 1
    with database.transaction() as session:
        row = session.scalars(select(TrustDomain)).one()
        assert row.domain == "xn--hpital-exemple-0ob.mssante.fr"
        assert row.display_name == "hôpital-exemple.mssante.fr"
    assert trusted(database, "hôpital-exemple.mssante.fr")
    assert trusted(database, "xn--hpital-exemple-0ob.mssante.fr")
    assert trusted(database, "HÔPITAL-EXEMPLE.mssante.fr")


def test_a5_file_without_namespace_is_read(database: Database) -> None:
    data = whitelist(domaine("a.mssante.fr"), domaine("b.mssante.fr"), namespace=False)
    report = import_whitelist(database, data)
    assert (report.entries_read, report.added, report.truncated) == (2, 2, False)
    assert report.problem is None


def test_a5_elements_of_another_namespace_are_not_entries(database: Database) -> None:
    data = whitelist(domaine("a.mssante.fr")).replace(
        b"</ListeDomaines>",
        b'<x:Domaine xmlns:x="urn:other"><x:Nom>b.mssante.fr</x:Nom></x:Domaine></ListeDomaines>',
    )
    report = import_whitelist(database, data)
    assert report.entries_read == 1
    other_root = data.replace(
        b'xmlns="https://listeblanche.mssante.fr/schema"', b'xmlns="urn:other"'
    )
    reader = read_whitelist(other_root)
    assert list(reader) == []
    assert reader.problem is not None and "not an MSSanté whitelist" in reader.problem


def test_a5_invalid_names_are_rejected_with_position_and_reason(database: Database) -> None:
    data = whitelist(
        domaine("ok.mssante.fr"),
        domaine("bad_name.mssante.fr"),
        domaine(""),
        domaine("localhost"),
        domaine("date.mssante.fr", date="hier"),
        domaine("fin.mssante.fr"),
    )
    report = import_whitelist(database, data)
    assert report.entries_read == 6
    assert report.added == 2
    assert report.rejected_count == 4
    by_position = {r.position: r for r in report.rejected}
    assert set(by_position) == {2, 3, 4, 5}
    assert by_position[2].name == "bad_name.mssante.fr"
    assert "not allowed" in by_position[2].reason
    assert "no domain name" in by_position[3].reason
    assert "single label" in by_position[4].reason
    assert "DateMAJ" in by_position[5].reason
    assert any("entry 2 ('bad_name.mssante.fr')" in line for line in report.summary_lines())


def test_a5_rejected_entry_keeps_the_rows_of_its_domain(database: Database) -> None:
    import_whitelist(database, whitelist(domaine("a.mssante.fr"), domaine("b.mssante.fr")))
    report = import_whitelist(
        database, whitelist(domaine("a.mssante.fr"), domaine("b.mssante.fr", date="31/12/2025"))
    )
    assert report.rejected_count == 1
    assert report.removed == 0
    assert trusted(database, "b.mssante.fr")


def test_a5_truncated_inside_the_list_reports_the_loss_and_removes_nothing(
    database: Database, whitelist_bytes: bytes
) -> None:
    import_whitelist(database, whitelist_bytes)
    cut = whitelist_bytes.index(b"<Nom>", whitelist_bytes.index(b"<Nom>UC-CMP") + 1)
    report = import_whitelist(database, whitelist_bytes[:cut])
    assert report.entries_read == 9
    assert report.truncated and not report.list_complete and report.removals_skipped
    assert report.problem == "document truncated after entry 9: the rest was not imported"
    assert (report.added, report.removed) == (0, 0)
    assert len(rows(database)) == PAIRS


def test_a5_malformed_document_keeps_what_came_before(database: Database) -> None:
    data = whitelist(domaine("a.mssante.fr"), domaine("b.mssante.fr"), domaine("c.mssante.fr"))
    broken = data.replace(b"<Nom>c.mssante.fr</Nom>", b"<Nom>c.mssante.fr</Nam>")
    report = import_whitelist(database, broken)
    assert (report.entries_read, report.added, report.truncated) == (2, 2, True)
    assert report.problem is not None
    assert "malformed at line 1, after entry 2: the rest was not imported" in report.problem


def test_a5_nothing_usable_changes_nothing(database: Database, whitelist_bytes: bytes) -> None:
    import_whitelist(database, whitelist_bytes)
    before = rows(database)
    for data in (b"", b"\x00\x01\x02", b"<a/>", whitelist(), whitelist(domaine("x"))):
        report = import_whitelist(database, data)
        assert not report.imported
        assert report.removals_skipped
        assert rows(database) == before


def test_a5_size_is_bounded(database: Database, whitelist_bytes: bytes) -> None:
    report = import_whitelist(database, whitelist_bytes, max_bytes=20_000)
    assert report.truncated and report.removals_skipped
    assert report.problem is not None and "larger than 20000 bytes" in report.problem
    assert 0 < report.entries_read < 40
    assert 40 * len(whitelist_bytes) < DEFAULT_MAX_BYTES


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE ListeBlancheMSSante [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">
<ListeDomaines><Domaine><Nom>a.mssante.fr</Nom><Description>&lol9;</Description></Domaine>
</ListeDomaines></ListeBlancheMSSante>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE ListeBlancheMSSante [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<ListeBlancheMSSante><ListeDomaines><Domaine><Nom>a.mssante.fr</Nom>
<Description>&x;</Description></Domaine></ListeDomaines></ListeBlancheMSSante>
"""


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "data",
    [
        BILLION_LAUGHS,
        XXE,
        BILLION_LAUGHS.decode("ascii").replace('<?xml version="1.0"?>', "").encode("utf-16"),
        b"<!-- padding -->" * 5000 + BILLION_LAUGHS.split(b"?>", 1)[1],
    ],
    ids=["billion-laughs", "xxe", "utf-16", "late-doctype"],
)
def test_a5_doctype_is_refused_quickly(database: Database, data: bytes) -> None:
    report = import_whitelist(database, data)
    assert not report.imported and report.entries_read == 0
    assert report.problem is not None and "DOCTYPE" in report.problem
    assert rows(database) == []


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["delete", "insert", "replace", "truncate"]),
        st.integers(min_value=0),
        st.binary(min_size=1, max_size=8),
    ),
    max_size=6,
)


def mutate(data: bytes, operations: list[tuple[str, int, bytes]]) -> bytes:
    for operation, where, chunk in operations:
        at = where % (len(data) + 1)
        if operation == "delete":
            data = data[:at] + data[at + len(chunk) :]
        elif operation == "insert":
            data = data[:at] + chunk + data[at:]
        elif operation == "replace":
            data = data[:at] + chunk + data[at + len(chunk) :]
        else:
            data = data[:at]
    return data


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(operations=MUTATIONS, random=st.binary(max_size=300), use_random=st.booleans())
def test_a5_mutated_or_random_bytes_only_give_reports(
    database: Database,
    whitelist_bytes: bytes,
    operations: list[tuple[str, int, bytes]],
    random: bytes,
    use_random: bool,
) -> None:
    base = whitelist_bytes[: whitelist_bytes.index(b"<Domaine>", 3000)]
    data = random if use_random else mutate(base, operations)
    report = import_whitelist(database, data)
    assert isinstance(report, WhitelistReport)
    assert report.entries_read <= data.count(b"</Domaine>") + data.count(b"/>")
    assert report.truncated or report.problem is None
    summary = report.summary_lines()
    assert summary and all(isinstance(line, str) for line in summary)


@settings(max_examples=50, deadline=None)
@given(cut=st.integers(min_value=0, max_value=400_000))
def test_a5_any_truncation_yields_exactly_the_complete_entries(
    whitelist_bytes: bytes, cut: int
) -> None:
    prefix = whitelist_bytes[:cut]
    reader = read_whitelist(prefix)
    entries = list(reader)
    assert len(entries) == reader.entries_read == prefix.count(b"</Domaine>")
    assert reader.truncated
    assert reader.problem is not None
