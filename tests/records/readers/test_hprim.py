"""HPRIM reader: the HPRIM Médecin samples and synthetic HPRIM Santé files (spec E1, E2)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from caducee.records.model import ProblemCode, SourceFormat
from caducee.records.readers.hprim import looks_like_hprim, read_hprim

if TYPE_CHECKING:
    from tests.records.readers.conftest import Kit

HPRIM_DIR = "yokoinc-hprimtool"


def test_e1_hprim_medecin_full_header(sample_bytes: Callable[[str], bytes], kit: type[Kit]) -> None:
    data = sample_bytes(f"{HPRIM_DIR}/test-fixtures/header-solabio.hpm")
    result = read_hprim(data, file_name="header-solabio.hpm")
    kit.assert_typed(result)
    assert result.format is SourceFormat.HPRIM_MEDECIN
    assert result.problems == ()
    (document,) = result.documents
    assert document.content == data
    assert document.mime_type == "text/x-hprim"
    metadata = document.metadata
    assert metadata.patient is not None
    assert metadata.patient.family_name == "DUPONT"
    assert metadata.patient.given_name == "JEAN"
    assert metadata.patient.birth_date == date(1950, 1, 1)
    assert metadata.patient.sex == "M"
    assert metadata.patient.ins is None
    assert metadata.effective_time == date(2026, 6, 24)
    assert metadata.author is not None
    assert metadata.author.organisation_id == "SOLABIO"
    assert metadata.author.organisation_name == "SOLABIO"


def test_e1_hprim_medecin_short_header(sample_bytes: Callable[[str], bytes]) -> None:
    result = read_hprim(sample_bytes(f"{HPRIM_DIR}/test-fixtures/text.hpr"))
    (document,) = result.documents
    patient = document.metadata.patient
    assert patient is not None
    assert (patient.family_name, patient.given_name) == ("MARTIN", "DENISE")
    assert patient.birth_date == date(1957, 3, 14)
    # Lines 8 and later are results here, not NIR, sender and exam date.
    assert patient.sex is None
    assert document.metadata.author is None
    assert document.metadata.effective_time is None


@pytest.mark.parametrize(
    "name", ["test-file.hpr", "test-fixtures/pipes.hpr", "test-fixtures/tags.hpr"]
)
def test_e1_hprim_result_lines_without_header(
    name: str, sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    data = sample_bytes(f"{HPRIM_DIR}/{name}")
    result = read_hprim(data, file_name=name)
    kit.assert_typed(result)
    assert result.format is SourceFormat.HPRIM_MEDECIN
    assert result.problems == ()
    (document,) = result.documents
    assert document.content == data
    assert document.metadata.patient is None


SANTE = (
    "H|~^\\&|LAB042.HPR||133002782~LABO TEST||ORU|||MED01~Cabinet test||P|H2.2~C|202401041530\r"
    "P|1|PID42|||TESTNOM~ALICE|JEUNEFILLE|19790328|F\r"
    "OBR|1||ORD1|GLU~Glucose~L\r"
    "OBX|1|NM|GLU~Glucose~L||5.2|mmol/L|3.5-6.5|N||F\r"
    "L|1\r"
)


def test_e1_hprim_sante_records(kit: type[Kit]) -> None:
    data = SANTE.encode("latin-1")
    result = read_hprim(data, file_name="LAB042.HPR")
    kit.assert_typed(result)
    assert result.format is SourceFormat.HPRIM_SANTE
    assert result.problems == ()
    (document,) = result.documents
    metadata = document.metadata
    assert metadata.patient is not None
    assert (metadata.patient.family_name, metadata.patient.given_name) == ("TESTNOM", "ALICE")
    assert metadata.patient.birth_family_name == "JEUNEFILLE"
    assert metadata.patient.birth_date == date(1979, 3, 28)
    assert metadata.patient.sex == "F"
    assert metadata.author is not None
    assert metadata.author.organisation_id == "133002782"
    assert metadata.author.organisation_name == "LABO TEST"
    assert isinstance(metadata.effective_time, datetime)
    assert metadata.effective_time.replace(tzinfo=None) == datetime(2024, 1, 4, 15, 30)
    assert metadata.effective_time.utcoffset() == timedelta(hours=1)


def test_e1_hprim_sante_deviant_delimiters_and_latin1(kit: type[Kit]) -> None:
    data = (
        "H|\\^&~|CLIR949.hpr||LAB~Labo Évry||ORU|||||P|H2.0\\:C|200410291528\n"
        "P|1|X|||BÉRANGER~Zoé||20010101|F\n"
        "L|1\n"
    ).encode("cp1252")
    result = read_hprim(data)
    assert result.format is SourceFormat.HPRIM_SANTE
    (document,) = result.documents
    assert document.metadata.patient is not None
    assert document.metadata.patient.family_name == "BÉRANGER"
    assert document.metadata.patient.given_name == "Zoé"
    assert document.metadata.author is not None
    assert document.metadata.author.organisation_name == "Labo Évry"


def test_e3_hprim_sante_with_several_patients(kit: type[Kit]) -> None:
    data = (SANTE + "P|2|PID43|||AUTRE~BOB||19800101|M\r").encode()
    result = read_hprim(data, file_name="multi.hpr")
    assert kit.codes(result) == {ProblemCode.SEVERAL_PATIENTS}
    assert len(result.documents) == 1


def test_e1_hprim_medecin_header_in_latin1(kit: type[Kit]) -> None:
    lines = [
        "P123",
        "HÉLÈNE",
        "Zoé",
        "1 rue du Test",
        "",
        "76000 ROUEN",
        "02/03/1980",
        "2800376000000 00",
        "DOSSIER1",
        "05/06/2024",
        "LABO1     Laboratoire Été",
        "MED1      Dr Test",
        "Texte du compte rendu",
        "****LAB****",
        "RES|GLUCOSE|GLU|N|5.2|mmol/L|3.5|6.5|N|F",
        "****FIN****",
        "****FINFICHIER****",
    ]
    data = "\r\n".join(lines).encode("cp1252")
    result = read_hprim(data)
    (document,) = result.documents
    patient = document.metadata.patient
    assert patient is not None
    assert (patient.family_name, patient.given_name, patient.sex) == ("HÉLÈNE", "Zoé", "F")
    assert document.metadata.effective_time == date(2024, 6, 5)
    assert document.metadata.author is not None
    assert document.metadata.author.organisation_name == "Laboratoire Été"


def test_e1_hprim_not_hprim(kit: type[Kit]) -> None:
    for data in (b"", b"Bonjour docteur,\nvoici le compte rendu.", b"%PDF-1.4", b"\xff" * 50):
        result = read_hprim(data)
        kit.assert_typed(result)
        assert kit.codes(result) == {ProblemCode.UNSUPPORTED_FORMAT}
        assert not looks_like_hprim(data)
