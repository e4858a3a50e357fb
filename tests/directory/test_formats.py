"""Header recognition and row mapping of the two extractions (pure, no database)."""

from __future__ import annotations

import pytest

from caducee.directory.formats import (
    MSS_HEADER,
    PS_COLUMNS,
    FormatError,
    RowError,
    SourceKind,
    department_of,
    header_key,
    looks_like_pharmacy,
    map_mss_row,
    map_ps_row,
    read_header,
    split_row,
)

from .samples import mss_line, org_line, per_line, rpps, wrong_key

MSS = read_header(MSS_HEADER)


def mss(line: str) -> dict[str, object]:
    return map_mss_row(split_row(line, MSS))


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("Libellé civilité d'exercice", "Libellé civilité exercice"),
        ("Code postal (coord. structure)", "CODE POSTAL (coord. Structure)"),
        ("Prénom d'exercice", "Prenom d’exercice"),
        ("Code Département (structure)", "code departement  (structure)"),
    ],
)
def test_header_spellings_fold_to_one_key(left: str, right: str) -> None:
    assert header_key(left) == header_key(right)


def test_mss_header_is_recognised() -> None:
    assert MSS.kind is SourceKind.MSS_EXTRACTION
    assert MSS.width == 31
    assert MSS.unknown_columns == ()


def test_ps_header_with_trailing_pipe_and_52_columns(ps_lines: list[str]) -> None:
    layout = read_header(ps_lines[0])
    assert layout.kind is SourceKind.PS_LIBREACCES
    assert ps_lines[0].endswith("|")
    assert layout.width == 52
    assert layout.unknown_columns == ()


def test_ps_header_2026_variant_with_56_columns() -> None:
    names = [name for _field, name in PS_COLUMNS]
    assert len(names) == 56
    header = "|".join(
        name.upper().replace("coord. structure", "coord. Structure") for name in names
    )
    layout = read_header(header + "|")
    assert layout.kind is SourceKind.PS_LIBREACCES
    assert layout.width == 56
    assert {"function_code", "activity_kind_label"} <= set(layout.positions)


def test_ps_header_in_another_order_is_read_by_name(ps_lines: list[str]) -> None:
    names = ps_lines[0][:-1].split("|")  # without the trailing "|"
    reordered = list(reversed(names))
    layout = read_header("|".join(reordered))
    values = ps_lines[-1][:-1].split("|")
    row = split_row("|".join(reversed(values)), layout)
    assert row["pp_national_id"] == "810106476764"
    assert row["family_name"] == "BENHOUCHAME"


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("a|b|c", "not an Extraction_Correspondance_MSSante"),
        ("Type de BAL|Adresse BAL|Type de BAL", "appears twice"),
        ("Identification nationale PP|Code profession", "lacks the columns"),
    ],
)
def test_unknown_headers_are_refused(header: str, words: str) -> None:
    with pytest.raises(FormatError, match=words):
        read_header(header)


def test_split_row_counts_fields() -> None:
    line = per_line("a@b.fr", 1, "A", "B")
    assert split_row(line + "|", MSS)["address"] == "a@b.fr"  # a trailing '|' is tolerated
    with pytest.raises(RowError, match="expected 31 fields, found 30"):
        split_row(line.rpartition("|")[0], MSS)


def test_a3_per_row_with_rpps() -> None:
    record = mss(per_line("Claire.Martin@Medecin.MSSante.fr", 7, "MARTIN", "Claire"))
    assert record["address"] == record["key"] == "claire.martin@medecin.mssante.fr"
    assert record["domain"] == "medecin.mssante.fr"
    assert record["bal_type"] == "PER"
    assert record["national_id"] == "8" + rpps(7)
    assert record["id_type"] == "RPPS"
    assert record["name_key"] == "martin claire"
    assert record["address_lines"] == "12 R DES LILAS\n75012 PARIS"
    assert record["city"] == "PARIS"
    assert record["department"] == "75"
    assert record["pharmacy"] is False


def test_a3_per_row_with_wrong_rpps_key_is_refused() -> None:
    line = per_line("a@b.fr", 7, "MARTIN", "Claire", rpps_value=wrong_key(rpps(7)))
    with pytest.raises(RowError, match=r"RPPS .* wrong check digit"):
        mss(line)


def test_a3_national_id_must_match_the_practitioner_id() -> None:
    line = per_line("a@b.fr", 7, "MARTIN", "Claire").replace("8" + rpps(7), "8" + rpps(8))
    with pytest.raises(RowError, match="is not 8\\+RPPS"):
        mss(line)


def test_a3_adeli_practitioner() -> None:
    line = mss_line(
        bal_type="PER",
        address="x@y.fr",
        pp_id_type="0",
        pp_id="012600631",
        pp_national_id="0012600631",
        family_name="PETIT",
    )
    assert mss(line)["national_id"] == "0012600631"
    with pytest.raises(RowError, match="ADELI"):
        mss(line.replace("012600631|0012600631", "012600632|0012600632"))


def test_a3_org_row_with_finess_and_pharmacy_guess() -> None:
    record = mss(org_line("contact@pharma.fr", "010780054", "PHARMACIE DU CENTRE"))
    assert record["national_id"] == "1010780054"
    assert record["id_type"] == "FINESS"
    assert record["pharmacy"] is True
    assert record["name_key"] == "pharmacie du centre"
    with pytest.raises(RowError, match="FINESS"):
        mss(org_line("contact@pharma.fr", "0107800", "PHARMACIE DU CENTRE"))


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (mss_line(bal_type="XYZ", address="a@b.fr"), "unknown BAL type"),
        (mss_line(bal_type="ORG", address=""), "no mailbox address"),
        (mss_line(bal_type="ORG", address="not an address"), "not an e-mail address"),
        (mss_line(bal_type="PER", address="a@b.fr"), "PER mailbox without a practitioner id"),
    ],
)
def test_refused_mss_rows(line: str, words: str) -> None:
    with pytest.raises(RowError, match=words):
        mss(line)


@pytest.mark.parametrize(
    ("department", "postal_code", "expected"),
    [
        ("75", "75012", "75"),
        (None, "01300", "01"),
        ("Paris", "75012", "75"),
        (None, "20000", "2A"),
        (None, "20600", "2B"),
        (None, "97400", "974"),
        ("2b", None, "2B"),
        (None, None, None),
    ],
)
def test_department_of(department: str | None, postal_code: str | None, expected: str) -> None:
    assert department_of(department, postal_code) == expected


def test_pharmacy_guess() -> None:
    assert looks_like_pharmacy("ORG", "21", ())
    assert looks_like_pharmacy("ORG", None, ("Pharmacie des Arcades",))
    assert not looks_like_pharmacy("ORG", None, ("Pharmacie à usage intérieur du CH",))
    assert not looks_like_pharmacy("PER", "21", ())


def test_ps_rows_of_the_sample(ps_lines: list[str]) -> None:
    layout = read_header(ps_lines[0])
    records = [map_ps_row(split_row(line, layout)) for line in ps_lines[1:]]
    assert len(records) == 22
    rpps_record = records[-1]
    assert rpps_record["national_id"] == "810106476764"
    assert rpps_record["id_type"] == "RPPS"
    assert rpps_record["civility"] == "Docteur"
    assert rpps_record["speciality_code"] == "SM20"
    assert str(rpps_record["activity_key"]).startswith("810106476764:")
    assert records[0]["national_id"] == "0010001949"  # leading zeros kept
    assert records[0]["family_name"] == "JOLY"


def test_ps_activity_key_survives_a_change_of_name(ps_lines: list[str]) -> None:
    layout = read_header(ps_lines[0])
    line = ps_lines[5]
    first = map_ps_row(split_row(line, layout))
    changed = map_ps_row(split_row(line.replace("JOBERT", "JOBERT-MARTIN"), layout))
    assert first["activity_key"] == changed["activity_key"]
    assert changed["name_key"] == "jobert martin alexis"


def test_line_key_reads_only_the_key(ps_lines: list[str]) -> None:
    from caducee.directory.formats import line_key

    layout = read_header(ps_lines[0])
    for line in ps_lines[1:]:
        assert line_key(line, layout) == map_ps_row(split_row(line, layout))["activity_key"]
    line = per_line("Doc@Medecin.fr", 1, "A", "B")
    assert line_key(line, MSS) == "doc@medecin.fr"
    assert line_key(line + "|", MSS) == "doc@medecin.fr"
    assert line_key("PER|doc@medecin.fr", MSS) is None
