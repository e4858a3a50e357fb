"""CDA R2 reader: header fields of the real ANS samples (E2), identity findings (E3),
versions (E4), the level-1 rendition, and tolerance of messy documents."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from caducee.records.model import ProblemCode, SourceFormat, VisibilityFlag
from caducee.records.readers.cda import (
    decode_base64_lenient,
    ins_key_is_valid,
    parse_hl7_time,
    read_cda,
)

if TYPE_CHECKING:
    from tests.records.readers.conftest import Kit

PLUS_ONE = timezone(timedelta(hours=1))

EXPECTED = {
    # file: (type code, document id, set id, version, effective time, author national id)
    "DOC_NON_STRUCTURE_CDA-R2-N1.xml": (
        "11502-2",
        "1.3.6.1.4.1.19376.1.2.20.12345.1.1",
        "1.3.6.1.4.1.19376.1.2.20.12345.1",
        1,
        datetime(2021, 4, 1, 13, 47, 45, tzinfo=PLUS_ONE),
        "801234534765",
    ),
    "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml": (
        "18748-4",
        "1.2.250.1.213.1.1.1.45.2024.2.1",
        "1.2.250.1.213.1.1.1.45.2024.2",
        2,
        datetime(2021, 1, 8, 11, 17, tzinfo=PLUS_ONE),
        "801234560801",
    ),
    "BIO-CR-BIO_2024.01_TSH_1.xml": (
        "11502-2",
        "1.2.250.1.213.1.1.1.55.2024.9.1",
        "1.2.250.1.213.1.1.1.55.2024.9",
        1,
        datetime(2021, 4, 1, 17, 10, tzinfo=PLUS_ONE),
        "801234534765",
    ),
    "BIO-CR-BIO_2024.01_CR-2nde-intention-PDF.xml": (
        "11502-2",
        "1.2.250.1.213.1.1.1.55.2024.1.1",
        "1.2.250.1.213.1.1.1.55.2024.1",
        1,
        datetime(2024, 1, 4, 16, 5, 27, tzinfo=PLUS_ONE),
        "801234534765",
    ),
    "LDL-SES_2022.01.xml": (
        "11490-0",
        "1.2.250.1.213.1.1.1.29.2022.1.1",
        "1.2.250.1.213.1.1.1.29.2022.1",
        1,
        datetime(2019, 12, 3, 13, 30, tzinfo=PLUS_ONE),
        "801234567897",
    ),
    "CR_Radio_CDAN1_v1.XML": (
        "18748-4",
        "1.2.250.1.71.4.2.2.120456789.71024000081",
        None,
        1,
        None,  # no offset in the file: checked separately
        "801234564895",
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_e2_cda_header_fields_of_every_sample(
    name: str, cda_sample: Callable[[str], bytes], kit: type[Kit]
) -> None:
    content = cda_sample(name)
    result = read_cda(content, file_name=name)
    kit.assert_typed(result)
    assert result.format is SourceFormat.CDA
    assert result.problems == ()
    (document,) = result.documents
    type_code, document_id, set_id, version, effective_time, author_id = EXPECTED[name]
    metadata = document.metadata
    assert document.content == content
    assert document.mime_type == "text/xml"
    assert metadata.type_code == type_code
    assert metadata.type_code_system == "2.16.840.1.113883.6.1"
    assert metadata.document_id == document_id
    assert metadata.set_id == set_id
    assert metadata.version == version
    if effective_time is not None:
        assert metadata.effective_time == effective_time
    assert metadata.confidentiality == "N"
    assert metadata.language == "fr-FR"
    assert metadata.patient is not None
    assert metadata.patient.ins == "279035121518989"
    assert metadata.patient.ins_oid == "1.2.250.1.213.1.4.10"
    assert metadata.patient.birth_family_name == "PAT-TROIS"
    assert metadata.patient.given_name == "DOMINIQUE"
    assert metadata.patient.birth_date == date(1979, 3, 28)
    assert metadata.patient.sex == "F"
    assert metadata.patient.missing_traits() == ()
    assert metadata.author is not None
    assert metadata.author.national_id == author_id
    assert metadata.visibility == ()


def test_e2_cda_n1_lab_report_fields_and_pdf_rendition(
    cda_sample: Callable[[str], bytes],
) -> None:
    result = read_cda(cda_sample("DOC_NON_STRUCTURE_CDA-R2-N1.xml"))
    (document,) = result.documents
    metadata = document.metadata
    assert metadata.type_display == "CR d'examens biologiques"
    assert metadata.title == "Compte rendu d'examens biologiques"
    assert metadata.patient is not None
    assert metadata.patient.birthplace_code == "51215"
    assert metadata.author is not None
    assert metadata.author.rpps == "01234534765"
    assert (metadata.author.family, metadata.author.given) == ("CAMPARINI", "Marcel")
    assert metadata.author.organisation_id == "1120459876"
    assert metadata.author.organisation_name == "Laboratoire des charmes"
    assert document.rendition is not None
    assert document.rendition.startswith(b"%PDF")
    assert document.rendition.rstrip().endswith(b"%%EOF")
    assert document.rendition_mime_type == "application/pdf"


def test_e4_cda_replacement_names_its_rplc_parent(cda_sample: Callable[[str], bytes]) -> None:
    (document,) = read_cda(cda_sample("IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml")).documents
    assert document.metadata.version == 2
    assert document.metadata.replaces == "90E1C8EC-F951-4B26-A305-A34848818DD6"
    assert document.metadata.title is not None
    assert document.metadata.title.startswith("CR d’imagerie médicale")
    assert document.rendition is not None and document.rendition.startswith(b"%PDF")


def test_e2_cda_without_declaration_setid_and_with_misspelled_xsi(
    cda_sample: Callable[[str], bytes],
) -> None:
    content = cda_sample("CR_Radio_CDAN1_v1.XML")
    assert not content.startswith(b"<?xml")
    (document,) = read_cda(content, file_name="CR_Radio_CDAN1_v1.XML").documents
    metadata = document.metadata
    assert metadata.set_id is None
    assert metadata.title == "Pelvis Masculin"
    # "20050411103328": no offset, read as French legal time (summer time in April).
    assert metadata.effective_time == datetime(2005, 4, 11, 8, 33, 28, tzinfo=UTC)
    assert metadata.patient is not None
    assert metadata.patient.birthplace_code == "63220"
    assert metadata.author is not None
    assert metadata.author.organisation_name == "Organisation-Y"
    assert document.rendition is not None and document.rendition.startswith(b"%PDF")


def test_e2_cda_level3_has_no_rendition(cda_sample: Callable[[str], bytes]) -> None:
    (document,) = read_cda(cda_sample("BIO-CR-BIO_2024.01_TSH_1.xml")).documents
    assert document.rendition is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20210401134745+0100", datetime(2021, 4, 1, 13, 47, 45, tzinfo=PLUS_ONE)),
        (
            "20210409094914.827-0330",
            datetime(
                2021, 4, 9, 9, 49, 14, 827000, tzinfo=timezone(-timedelta(hours=3, minutes=30))
            ),
        ),
        ("202401041120+0100", datetime(2024, 1, 4, 11, 20, tzinfo=PLUS_ONE)),
        ("2024010411+0000", datetime(2024, 1, 4, 11, tzinfo=UTC)),
        ("20240104", date(2024, 1, 4)),
        ("20240104+0100", date(2024, 1, 4)),
        ("202401", date(2024, 1, 1)),
        ("2024", date(2024, 1, 1)),
        ("20241304", None),
        ("2024010425", None),
        ("20240104120000+2500", None),
        ("not a time", None),
        ("", None),
    ],
)
def test_e2_cda_effective_time_formats(value: str, expected: date | None) -> None:
    assert parse_hl7_time(value) == expected


def test_e2_cda_time_without_offset_is_aware() -> None:
    winter = parse_hl7_time("20240104120000")
    assert isinstance(winter, datetime)
    assert winter.utcoffset() == timedelta(hours=1)


def test_e3_cda_without_ins_reports_no_ins(kit: type[Kit]) -> None:
    result = read_cda(kit.cda(ins=None))
    assert kit.codes(result) == {ProblemCode.NO_INS}
    (document,) = result.documents
    assert document.metadata.patient is not None
    assert document.metadata.patient.ins is None


def test_e3_cda_with_missing_traits_reports_ins_incomplete(kit: type[Kit]) -> None:
    result = read_cda(kit.cda(birth_time=None))
    assert kit.codes(result) == {ProblemCode.INS_INCOMPLETE}
    (problem,) = result.problems
    assert "birth_date" in problem.message


def test_e3_cda_with_wrong_ins_key_reports_ins_invalid(kit: type[Kit]) -> None:
    result = read_cda(kit.cda(ins="279035121518988"))
    assert kit.codes(result) == {ProblemCode.INS_INVALID}


def test_a1_ins_key_check() -> None:
    assert ins_key_is_valid("279035121518989")
    assert not ins_key_is_valid("279035121518988")
    assert not ins_key_is_valid("27903512151898")
    corsican = "185012A123456"
    key = 97 - int(corsican.replace("2A", "19")) % 97
    assert ins_key_is_valid(f"{corsican}{key:02d}")
    assert not ins_key_is_valid(f"{corsican}{(key + 1) % 97:02d}")


def test_e4_cda_rplc_parent_with_extension(kit: type[Kit]) -> None:
    (document,) = read_cda(kit.cda(replaces="1.2.250.1.999.1.0", version="2")).documents
    assert document.metadata.replaces == "1.2.250.1.999.1.0"
    assert document.metadata.version == 2


def test_e2_cda_tolerates_crlf_no_declaration_and_processing_instructions(
    kit: type[Kit],
) -> None:
    result = read_cda(kit.cda(declaration=False, line_end="\r\n"))
    assert result.problems == ()
    (document,) = result.documents
    assert document.rendition == kit.TINY_PDF


def test_e2_cda_base64_wrapped_and_unpadded(kit: type[Kit]) -> None:
    encoded = base64.b64encode(kit.TINY_PDF + b"12").decode().rstrip("=")
    assert len(encoded) % 4 != 0
    wrapped = "\n".join(encoded[i : i + 10] for i in range(0, len(encoded), 10))
    (document,) = read_cda(kit.cda(body_base64=wrapped)).documents
    assert document.rendition == kit.TINY_PDF + b"12"


def test_e2_cda_bad_base64_body_is_a_problem_not_an_error(kit: type[Kit]) -> None:
    result = read_cda(kit.cda(body_base64="JVBERi0*%%%"))
    assert kit.codes(result) == {ProblemCode.BAD_BASE64}
    (document,) = result.documents
    assert document.rendition is None


def test_e2_cda_missing_header_fields_are_reported(kit: type[Kit]) -> None:
    content = b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>x</title></ClinicalDocument>'
    result = read_cda(content)
    assert {ProblemCode.MISSING_FIELD, ProblemCode.NO_INS} == kit.codes(result)
    assert len(result.documents) == 1


def test_e6_cda_other_xml_is_unsupported(kit: type[Kit]) -> None:
    result = read_cda(b"<html><body>hello</body></html>")
    assert kit.codes(result) == {ProblemCode.UNSUPPORTED_FORMAT}
    assert result.documents == ()


def test_e6_cda_not_well_formed(kit: type[Kit]) -> None:
    result = read_cda(b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>')
    assert kit.codes(result) == {ProblemCode.NOT_WELL_FORMED}


def test_e2_base64_helper_edge_cases() -> None:
    assert decode_base64_lenient("QQ") == b"A"
    assert decode_base64_lenient("QQ==") == b"A"
    assert decode_base64_lenient("Q") is None
    assert decode_base64_lenient("QQ==QQ==") is None
    assert decode_base64_lenient("é") is None
    assert decode_base64_lenient("") == b""


def test_j2_cda_repr_and_problems_hold_no_identity(
    cda_sample: Callable[[str], bytes], kit: type[Kit]
) -> None:
    result = read_cda(kit.cda(birth_time=None))
    text = repr(result)
    for secret in ("TESTNOM", "ALICE", kit.TEST_INS, "MEDECIN"):
        assert secret not in text
    sample = repr(read_cda(cda_sample("DOC_NON_STRUCTURE_CDA-R2-N1.xml")))
    assert "PAT-TROIS" not in sample and "JVBERi" not in sample


def test_e5_cda_has_no_visibility_of_its_own(kit: type[Kit]) -> None:
    (document,) = read_cda(kit.cda()).documents
    assert VisibilityFlag.MASQUE_PS not in document.metadata.visibility
