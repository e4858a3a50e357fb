"""Directory search (A3): names without accents or case, filters, pages, the red list."""

from __future__ import annotations

from pathlib import Path

import pytest

from caducee.directory.importer import import_file
from caducee.directory.normalise import fold
from caducee.directory.search import HitKind, SearchError, SearchPage, SearchQuery
from caducee.directory.service import search, set_red_list
from caducee.storage.db import Database

from .samples import org_line, per_line, rpps, write_mss


@pytest.fixture
def filled(database: Database, ps_sample: Path, tmp_path: Path) -> Database:
    """The real PS_LibreAcces sample plus a few mailboxes."""
    import_file(database, ps_sample)
    lines = [
        per_line("c.lefevre@medecin.mssante.fr", 1, "LEFÈVRE", "Céline", postal_code="75012"),
        per_line("j.lefebvre@medecin.mssante.fr", 2, "Lefebvre", "Jean", postal_code="69003"),
        per_line(
            "b.martin@medecin.mssante.fr",
            3,
            "MARTIN",
            "Bruno",
            profession=("21", "Pharmacien"),
            postal_code="01000",
        ),
        per_line(
            "a.dupont@medecin.mssante.fr",
            4,
            "DUPONT",
            "Anne",
            speciality=("SM54", "Médecine générale"),
            organisation="CLINIQUE LEFORT",
        ),
        per_line("z.roux@infirmier.mssante.fr", 5, "ROUX", "Zoé", profession=("60", "Infirmier")),
        per_line(
            "a.roux@infirmier.mssante.fr",
            6,
            "ROUX",
            "Adèle",
            profession=("69", "Infirmier psychiatrique"),
        ),
        org_line("accueil@lefort.mssante.fr", "010780054", "CLINIQUE LEFORT", service="Accueil"),
        org_line("pharma@centre.mssante.fr", "010000024", "PHARMACIE DU CENTRE"),
    ]
    import_file(database, write_mss(tmp_path / "mss.txt", lines))
    return database


def run(database: Database, **fields: object) -> SearchPage:
    with database.transaction() as session:
        return search(session, SearchQuery(**fields))  # type: ignore[arg-type]


def names(page: SearchPage) -> list[str]:
    return [hit.display_name for hit in page.items]


@pytest.mark.parametrize("text", ["lefe", "LEFÈ", "Léfé", "  lefe "])
def test_a3_name_prefix_ignores_accents_and_case(filled: Database, text: str) -> None:
    # "lefebvre jean" sorts before "lefevre celine" (b < v).
    assert names(run(filled, text=text)) == ["Jean Lefebvre", "Céline LEFÈVRE"]


def test_a3_family_then_given_name(filled: Database) -> None:
    assert names(run(filled, text="lefevre cel")) == ["Céline LEFÈVRE"]
    assert names(run(filled, text="lefevre-celine")) == ["Céline LEFÈVRE"]
    assert run(filled, text="celine lefevre").items == []  # the family name comes first


def test_a3_person_names_come_before_organisation_matches(filled: Database) -> None:
    page = run(filled, text="clinique")
    # The clinic's own mailbox is named after it; then the people who work at a
    # "clinique …", in the order of the organisation's name.
    assert names(page) == [
        "CLINIQUE LEFORT – Accueil",
        "Anaïs LEBRUN-CARPENTIER",  # CLINIQUE DE READAPTATION LES ARBELLES
        "Anne DUPONT",  # CLINIQUE LEFORT
    ]


def test_name_prefix_covers_practitioners_without_mailbox(filled: Database) -> None:
    page = run(filled, text="lebrun-carp")
    [hit] = page.items
    assert hit.kind is HitKind.ACTIVITY
    assert (hit.family_name, hit.national_id, hit.address) == (
        "LEBRUN-CARPENTIER",
        "0019402379",
        None,
    )


def test_a3_profession_by_code_or_label(filled: Database) -> None:
    by_code = run(filled, profession="28", limit=100)
    by_label = run(filled, profession="opticien", limit=100)
    assert len(by_code.items) == 5
    assert names(by_code) == names(by_label)
    assert all(hit.profession_code == "28" for hit in by_code.items)
    with pytest.raises(SearchError, match="unknown profession"):
        run(filled, profession="astronaute")


def test_profession_label_matching_several_codes(filled: Database) -> None:
    # "infirm" is both 60 (Infirmier) and 69 (Infirmier psychiatrique): merged in name order.
    assert names(run(filled, profession="infirm")) == ["Adèle ROUX", "Zoé ROUX"]
    assert names(run(filled, profession="infirm", limit=1, offset=1)) == ["Zoé ROUX"]
    assert names(run(filled, profession="60")) == ["Zoé ROUX"]


def test_speciality_by_code_or_label(filled: Database) -> None:
    assert names(run(filled, speciality="sm20")) == ["Zakaria BENHOUCHAME"]
    assert names(run(filled, speciality="gynéco")) == ["Zakaria BENHOUCHAME"]
    assert names(run(filled, speciality="Médecine gén")) == ["Anne DUPONT"]


def test_postal_code_prefix_and_department(filled: Database) -> None:
    in_ain = run(filled, department="01", limit=100)
    assert len(in_ain.items) == 11  # ten activities of the sample and Bruno MARTIN
    assert names(run(filled, postal_code="01500", limit=100)) == names(
        run(filled, postal_code="015", limit=100)
    )
    assert len(run(filled, postal_code="015", limit=100).items) == 2
    assert names(run(filled, text="mart", department="01")) == ["Bruno MARTIN"]
    assert run(filled, text="mart", department="75").items == []
    with pytest.raises(SearchError, match="postal code"):
        run(filled, postal_code="75-012")
    with pytest.raises(SearchError, match="department"):
        run(filled, department="Ain")


def test_a3_national_id_with_or_without_prefix(filled: Database) -> None:
    assert names(run(filled, text="019402379")) == ["Anaïs LEBRUN-CARPENTIER"]
    assert names(run(filled, text="0019402379")) == ["Anaïs LEBRUN-CARPENTIER"]
    assert names(run(filled, national_id="0019402379")) == ["Anaïs LEBRUN-CARPENTIER"]
    assert names(run(filled, text=rpps(1))) == ["Céline LEFÈVRE"]
    assert names(run(filled, text="010780054")) == ["CLINIQUE LEFORT – Accueil"]
    assert names(run(filled, text="1010780054")) == ["CLINIQUE LEFORT – Accueil"]


def test_address_exact_and_prefix(filled: Database) -> None:
    assert names(run(filled, text="C.Lefevre@Medecin.MSSante.fr")) == ["Céline LEFÈVRE"]
    prefix = run(filled, address="a", limit=100)
    assert [hit.address for hit in prefix.items] == [
        "accueil@lefort.mssante.fr",  # "clinique lefort accueil" sorts first
        "a.dupont@medecin.mssante.fr",
        "a.roux@infirmier.mssante.fr",
    ]
    assert names(run(filled, address="a.", text="dup")) == ["Anne DUPONT"]
    assert run(filled, address="a.", text="lef").items == []


def test_a3_red_listed_entries_are_never_returned(filled: Database) -> None:
    with filled.transaction() as session:
        set_red_list(session, "c.lefevre@medecin.mssante.fr")
        set_red_list(session, "0019402379")
    for fields in (
        {"text": "lefevre"},
        {"text": "c.lefevre@medecin.mssante.fr"},
        {"text": rpps(1)},
        {"postal_code": "75012"},
        {"text": "lebrun"},
        {"profession": "94", "limit": 100},
    ):
        page = run(filled, **fields)
        shown = {hit.display_name for hit in page.items}
        assert "Céline LEFÈVRE" not in shown, fields
        assert "Anaïs LEBRUN-CARPENTIER" not in shown, fields
    with filled.transaction() as session:
        set_red_list(session, "0019402379", False)
    assert names(run(filled, text="lebrun")) == ["Anaïs LEBRUN-CARPENTIER"]


def test_pages_cover_everything_once(filled: Database) -> None:
    everything = run(filled, limit=100)
    assert not everything.has_more
    seen: list[str] = []
    offset = 0
    while True:
        page = run(filled, limit=4, offset=offset)
        seen += [f"{hit.kind}:{hit.id}" for hit in page.items]
        if not page.has_more:
            assert page.next_offset is None
            break
        assert page.next_offset == offset + 4
        offset = page.next_offset
    assert seen == [f"{hit.kind}:{hit.id}" for hit in everything.items]
    assert len(seen) == 30  # 22 activities and 8 mailboxes


def test_results_are_in_byte_order_of_the_folded_name(filled: Database) -> None:
    page = run(filled, limit=100)
    keys = [
        fold(" ".join(filter(None, (hit.family_name, hit.given_name))) or hit.display_name)
        for hit in page.items
    ]
    assert keys == sorted(keys)  # the same order on SQLite and PostgreSQL
    assert keys[:3] == ["balfourier xavier", "benhouchame zakaria", "blanc elodie"]


def test_kind_restriction(filled: Database) -> None:
    mailboxes = run(filled, text="lef", kinds=frozenset({HitKind.MAILBOX}))
    assert {hit.kind for hit in mailboxes.items} == {HitKind.MAILBOX}
    activities = run(filled, profession="10", kinds=frozenset({HitKind.ACTIVITY}))
    assert names(activities) == ["Zakaria BENHOUCHAME"]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 10_001}, "offset"),
        ({"text": "---"}, "nothing to search"),
    ],
)
def test_invalid_queries(database: Database, fields: dict[str, object], words: str) -> None:
    with pytest.raises(SearchError, match=words):
        run(database, **fields)
