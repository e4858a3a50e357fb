"""The columnar mapping of the mailbox extraction against the row mapper (K3, A3).

The row mapper (:func:`caducee.directory.formats.map_mss_row`) is the reference:
for every line, the columnar mapping must either give exactly the same row or
hand the line back (``unsure``), and every line the row mapper refuses must be
handed back, so that its refusal reason comes from the reference.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pytest
from sqlalchemy import inspect, select, text

from caducee.directory import columnar, importer
from caducee.directory.columnar import map_mss_block, read_blocks, strip_column
from caducee.directory.formats import MSS_HEADER, RowError, map_mss_row, read_header, split_row
from caducee.directory.identifiers import luhn_valid
from caducee.directory.importer import import_file
from caducee.directory.models import DirectoryEntry
from caducee.directory.normalise import fold
from caducee.storage.db import Database

from .samples import adeli, mss_line, org_line, per_line, rpps, with_key, write_mss, wrong_key

LAYOUT = read_header(MSS_HEADER)
HOSTED = frozenset({"hosted.example.fr"})
LIMITS = {
    "address": 254,
    "national_id": 32,
    "pp_identifier": 16,
    "civility": 50,
    "profession_code": 16,
    "category_code": 16,
    "speciality_code": 16,
    "structure_id": 32,
    "postal_code": 16,
    "dematerialisation": 16,
}


def varied_lines() -> list[str]:
    """Lines of every shape the mapping meets, good and bad."""
    lines = [
        per_line("doc1@medecin.mssante.fr", 1, "DUPONT", "Jean"),
        per_line("DOC2@Medecin.MSSante.fr", 2, "LEFÈVRE", "Éloïse", postal_code="20090"),
        per_line("doc3@x.fr", 3, "D'ARC", "Jeanne-Marie", postal_code="97411", city="ST PAUL"),
        per_line("doc4@x.fr", 4, "  ŒUVRE  ", "\u00a0Zoé\u00a0", postal_code="20200"),
        per_line("doc5@x.fr", 5, "", "", organisation="Cabinet Des Lilas"),
        per_line("doc6@x.fr", 6, "MÜLLER", "straße", postal_code="1234"),
        per_line("doc7@x.fr", 7, "BAD", "Key", rpps_value=wrong_key(rpps(7))),
        per_line("doc8@hosted.example.fr", 8, "HOSTED", "Here"),
        per_line("doc 9@x.fr", 9, "SPACE", "In address"),
        per_line("doc10@x", 10, "NO", "Dot"),
        per_line("doc11@x.fr", 11, "PHARMA", "Cien", profession=("21", "Pharmacien")),
        per_line("doc12@x.fr", 12, "X" * 300, "Long name", postal_code=""),
        mss_line(
            bal_type="PER",
            address="adeli1@x.fr",
            pp_id_type="0",
            pp_id=adeli(1),
            pp_national_id="0" + adeli(1),
            family_name="ADELI",
            l6="13001 MARSEILLE",
            postal_code="13001",
            department="13",
        ),
        mss_line(
            bal_type="PER",
            address="adeli2@x.fr",
            pp_id_type="0",
            pp_id=adeli(2),
            pp_national_id="0" + adeli(3),  # mismatch: refused
            family_name="MISMATCH",
        ),
        mss_line(bal_type="PER", address="notype@x.fr", pp_id=rpps(4), family_name="SANS TYPE"),
        mss_line(
            bal_type="PER",
            address="othertype@x.fr",
            pp_id_type="5",
            pp_id="ABC",
            pp_national_id="5ABC",
            family_name="AUTRE",
        ),
        mss_line(
            bal_type="PER",
            address="onlynational@x.fr",
            pp_id_type="8",
            pp_national_id="8" + rpps(5),
            family_name="NATIONAL",
        ),
        mss_line(bal_type="PER", address="noid@x.fr", family_name="SANS ID"),
        mss_line(bal_type="CAB", address="cab@x.fr", organisation_name="Cabinet", department="2a"),
        mss_line(bal_type="per", address="lower@x.fr", pp_id_type="8", pp_id=rpps(6)),
        mss_line(bal_type="XYZ", address="unknown@x.fr"),
        mss_line(bal_type="ORG", address=""),
        mss_line(bal_type="ORG", address="a" * 250 + "@x.fr"),
        mss_line(bal_type="ÖRG", address="accent@x.fr"),
        org_line("ch@ch.fr", "010780054", "CH DE TEST", service="Cardiologie"),
        org_line("ph@ph.fr", "010000024", "Pharmacie du Centre"),
        org_line("pui@ph.fr", "010000032", "Pharmacie à usage intérieur"),
        org_line("ofc@ph.fr", "2A0000016", "L'Officine", postal_code="20000", city="AJACCIO"),
        org_line("badfiness@x.fr", "01078005", "TOO SHORT"),
        mss_line(
            bal_type="ORG",
            address="siret@x.fr",
            structure_id_type="3",
            structure_id="3" + with_key("1234567890123"),
            trade_name="Enseigne Seule",
            l2="BATIMENT A",
            l5="LIEU DIT",
        ),
        mss_line(
            bal_type="ORG",
            address="siret2@x.fr",
            structure_id_type="3",
            structure_id="12345678901234",
            organisation_name="SANS PREFIXE",
        ),
        mss_line(
            bal_type="APP",
            address="app@x.fr",
            structure_id_type="4",
            structure_id="XYZ",
            organisation_name="Logiciel",
            service="Service",
        ),
        mss_line(bal_type="APP", address="noname@x.fr"),
        mss_line(bal_type="ORG", address="badsiret@x.fr", structure_id_type="3", structure_id="12"),
        mss_line(
            bal_type="ORG",
            address="civility@x.fr",
            civility="C" * 60,
            organisation_name="CIVILITE TROP LONGUE",
        ),
        mss_line(
            bal_type=" PER ",
            address=" spaced@x.fr ",
            pp_id_type=" 8 ",
            pp_id=f" {rpps(8)} ",
            family_name=" Espacé ",
            l4_number="3",
            l4_repetition="BIS",
            l6="75001 ",
            postal_code="75001",
            department="999",
        ),
    ]
    return lines


def columns_of(lines: list[str]) -> dict[str, pa.Array]:
    raw = [line.split("|") for line in lines]
    return {
        name: strip_column(pa.array([row[index].encode() for row in raw], pa.binary()))
        for name, index in LAYOUT.positions.items()
    }


def test_k3_columnar_mapping_agrees_with_the_row_mapper_line_by_line() -> None:
    lines = varied_lines()
    columns, unsure = map_mss_block(columns_of(lines), HOSTED, LIMITS)
    flags = unsure.to_pylist()
    vouched = 0
    for index, line in enumerate(lines):
        try:
            record = map_mss_row(split_row(line, LAYOUT))
            too_long = any(
                isinstance(record.get(name), str) and len(str(record[name])) > limit
                for name, limit in LIMITS.items()
            )
        except RowError:
            record, too_long = None, True
        if record is None or too_long:
            assert flags[index], f"line {index} is refused by the row mapper: {line!r}"
            continue
        if flags[index]:
            continue  # handed back: the row mapper maps it
        vouched += 1
        record["hosted"] = record["domain"] in HOSTED
        for name, values in columns.items():
            assert values[index].as_py() == record[name], (name, line)
    assert vouched >= 20  # most good lines are mapped a column at a time


def test_k3_blocks_keep_the_line_numbers_and_set_odd_lines_aside() -> None:
    good = per_line("doc1@x.fr", 1, "UN", "Premier")
    data = (
        "\n".join(
            [
                good,
                "",
                "PER|short",
                good.replace("UN", "D\x00EUX"),
                good + "|",
                good + "\r",
                "   ",
            ]
        )
        + "\n"
    ).encode() + per_line("latin@x.fr", 2, "Mé", "X").encode("latin-1")
    blocks = list(read_blocks(io.BytesIO(data), LAYOUT, 2, 65536, utf8=True))
    numbers = [number for block in blocks for number in block.numbers.to_pylist()]
    odd = [number for block in blocks for number, _raw in block.odd]
    assert numbers == [2, 6, 7]  # plain, trailing "|", CRLF
    assert odd == [3, 4, 5, 8, 9]  # blank, short, NUL, spaces, not UTF-8
    lines = [line for block in blocks for line in block.lines.to_pylist()]
    assert lines == [good.encode(), good.encode() + b"|", good.encode()]
    [fields] = [block.fields() for block in blocks if len(block.lines)]
    assert fields.num_rows == 3 and fields.num_columns == LAYOUT.width
    assert fields.column(LAYOUT.positions["address"]).to_pylist() == [b"doc1@x.fr"] * 3


@pytest.fixture
def columnar_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Map a column at a time even the few lines of a test file."""
    monkeypatch.setattr(importer, "COLUMNAR_MIN_ROWS", 1)


@pytest.mark.usefixtures("columnar_always")
def test_k3_columnar_import_reports_refusals_with_their_lines(
    database: Database, tmp_path: Path
) -> None:
    lines = varied_lines()
    summary = import_file(database, write_mss(tmp_path / "v1.txt", lines))
    expected_refused = []
    for index, line in enumerate(lines):
        try:
            map_mss_row(split_row(line, LAYOUT))
        except RowError as error:
            expected_refused.append((index + 2, str(error)))
    refused = [(r.line, r.reason) for r in summary.rejections]
    assert [entry for entry in refused if "longer than" not in entry[1]] == expected_refused
    assert summary.read == len(lines)
    assert summary.added + summary.rejected == len(lines)
    with database.transaction() as session:
        entry = session.scalars(
            select(DirectoryEntry).where(DirectoryEntry.address == "doc2@medecin.mssante.fr")
        ).one()
        assert (entry.name_key, entry.department) == ("lefevre eloise", "2A")
        pharmacy = session.scalars(
            select(DirectoryEntry.address).where(DirectoryEntry.pharmacy.is_(True))
        ).all()
        assert sorted(pharmacy) == ["ofc@ph.fr", "ph@ph.fr"]  # not the PUI, not a PER
    again = import_file(database, write_mss(tmp_path / "v1.txt", lines))
    assert (again.added, again.changed, again.unchanged) == (0, 0, summary.added)


def test_k3_a_search_index_left_dropped_is_built_again(database: Database, tmp_path: Path) -> None:
    """A bulk load interrupted after dropping the search indexes heals on the next import."""
    with database.transaction() as session:
        session.execute(text("DROP INDEX ix_directory_entries_name_key"))
    import_file(database, write_mss(tmp_path / "v1.txt", varied_lines()))
    # The directory's own engine: on SQLite its tables are in a file of their own.
    indexes = inspect(database.directory_engine).get_indexes("directory_entries")
    assert "ix_directory_entries_name_key" in {index["name"] for index in indexes}


def test_k3_columnar_folding_agrees_with_fold_on_every_latin_letter() -> None:
    """A3 search keys: the kernels that fold ASCII and accented Latin names give exactly
    :func:`fold`'s key, and the values they cannot fold (œ, ß, ø, other scripts, Unicode
    spaces) are folded by :func:`fold` itself."""
    singles = [chr(code) for code in range(1, 0x250)]
    names = [
        "LEFÈVRE",
        "Éloïse-Marie",
        "D'ARC  Jeanne",
        "ŒUVRE",
        "straße",
        "Ørsted",
        "Þór Ðóra",
        "ÀÉÎÕÜ àéîõü ÿ",
        "Ñúñez\u00a0Ç",
        "e\u0301cole",
        "Ελένη",
        "ﬁlle",
        "  ",
        "",
    ]
    mixed = [f"{names[index % len(names)]}{char}x {char}" for index, char in enumerate(singles)]
    values = [*singles, *names, *mixed]
    folded = columnar._fold_values(pa.array([*values, None], pa.string())).to_pylist()
    assert folded == [fold(value) for value in values] + [""]


def test_k3_columnar_luhn_agrees_with_the_reference() -> None:
    """A3 RPPS and ADELI keys: the integer Luhn kernel accepts exactly what
    :func:`luhn_valid` accepts."""
    numbers = [f"{value:011d}" for value in range(10**10, 10**10 + 3000, 7)]
    numbers += [rpps(index) for index in range(200)] + [
        wrong_key(rpps(index)) for index in range(50)
    ]
    shorter = [f"{value:09d}" for value in range(0, 3000, 3)] + [
        adeli(index) for index in range(50)
    ]
    for ids, length in ((numbers, 11), (shorter, 9)):
        flags = columnar._luhn(pa.array(ids, pa.string()), length).to_pylist()
        assert flags == [luhn_valid(value) for value in ids]
        assert any(flags) and not all(flags)


def test_k3_blocks_check_lone_carriage_returns_nuls_and_wide_spaces() -> None:
    """K3 rejection report: in a file with CRLF line ends, a lone "\\r" inside a line still
    sends it to the row-by-row path (as a NUL does); a block with a non-ASCII space is
    marked so, and its fields are stripped of it as str.strip() would."""
    good = per_line("doc1@x.fr", 1, "UN", "Premier")
    spaced = per_line("doc2@x.fr", 2, "\u00a0DEUX\u2003", "Second")
    lines = [good, good.replace("UN", "U\rN"), spaced, good.replace("UN", "U\x00N"), good]
    data = ("\r\n".join(lines) + "\r\n").encode()
    [block] = list(read_blocks(io.BytesIO(data), LAYOUT, 2, 65536, utf8=True))
    assert block.numbers.to_pylist() == [2, 4, 6]
    assert [number for number, _raw in block.odd] == [3, 5]
    assert (
        block.py_lines == block.lines.to_pylist() == [good.encode(), spaced.encode(), good.encode()]
    )
    assert block.wide_spaces
    fields = block.fields()
    family = fields.column(LAYOUT.positions["family_name"])
    assert strip_column(family, wide_spaces=True).to_pylist() == ["UN", "DEUX", "UN"]
    [plain] = list(
        read_blocks(io.BytesIO(f"{good}\n{good}\n".encode()), LAYOUT, 2, 65536, utf8=True)
    )
    assert not plain.wide_spaces and plain.numbers.to_pylist() == [2, 3]
