"""XDS metadata reader: the ebRIM SubmitObjectsRequest samples and French-style metadata
(spec E2 metadata, E5 visibility codes, E4 RPLC associations, E6 declared hash and size)."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from datetime import UTC, date, datetime
from io import BytesIO
from typing import TYPE_CHECKING

from caducee.records.model import Problem, ProblemCode, VisibilityFlag
from caducee.records.readers.xds_metadata import (
    SubmissionMetadata,
    read_submission_metadata,
    scheme_key,
)

if TYPE_CHECKING:
    from tests.records.readers.conftest import Kit

SUBMIT_OBJECTS = "DirectProject-nhin-d/submitobjectrequest.xml"


def _problem_codes(result: SubmissionMetadata) -> set[ProblemCode]:
    return {problem.code for problem in result.problems}


def test_e2_xds_submitobjectrequest_sample_wrapped_in_quotes(
    sample_bytes: Callable[[str], bytes],
) -> None:
    data = sample_bytes(SUBMIT_OBJECTS)
    assert data.startswith(b'"') and data.endswith(b'"')
    result = read_submission_metadata(data)
    assert result.problems == ()
    (entry,) = result.entries
    metadata = entry.metadata
    assert entry.entry_id == "eabf9010-c6e4-49e9-ae5a-b62368977cf1"
    assert entry.uri is None
    assert entry.patient_id == "AAA^^^&BBB"
    assert metadata.type_code == "34133-9"
    assert metadata.type_code_system == "LOINC"
    # The classCode scheme is written "uuid:…" without "urn:" in this sample.
    assert metadata.class_code == "History and Physical"
    assert metadata.format_code == "TEXT"
    assert metadata.mime_type == "text/plain"
    assert metadata.document_id == "eabf9010-c6e4-49e9-ae5a-b62368977cf1"
    assert metadata.effective_time == datetime(2010, 1, 1, tzinfo=UTC)
    assert metadata.author is not None
    assert metadata.author.organisation_name == "BBB"
    assert metadata.author.national_id is None
    assert metadata.patient is not None
    assert metadata.patient.ins is None
    assert metadata.patient.birth_date == date(2010, 9, 1)


def test_e2_xds_metadata_of_the_xdm_sample(sample_bytes: Callable[[str], bytes]) -> None:
    archive = zipfile.ZipFile(BytesIO(sample_bytes("DirectProject-nhin-d/samplexdm-xd-common.zip")))
    result = read_submission_metadata(archive.read("samplexdm/IHE_XDM/SUBSET01/METADATA.xml"))
    assert result.problems == ()
    (entry,) = result.entries
    metadata = entry.metadata
    assert entry.entry_id == "Document01"
    assert metadata.hash_sha1 == "2f016bdeba83855ec76bd1102d9da6a79590f1a9"
    assert metadata.size is None
    assert metadata.title == "Physical"
    assert metadata.type_display == "Outpatient Evaluation And Management"
    assert metadata.document_id == "1.3.6.1.4.1.21367.2005.3.9999.32"
    assert metadata.confidentiality == "1.3.6.1.4.1.21367.2006.7.101"
    assert metadata.language == "en-us"
    assert metadata.author is not None
    assert (metadata.author.family, metadata.author.given) == ("Allscripts", "Provider")
    assert metadata.author.organisation_name == "Cleveland Clinic"
    assert metadata.patient is not None
    assert metadata.patient.birth_family_name == "Doe"
    assert metadata.patient.birth_date == date(1956, 5, 27)
    assert metadata.patient.sex == "M"


def test_e2_xds_french_metadata(kit: type[Kit]) -> None:
    content = kit.cda()
    spec = kit.Entry(
        "DOC1", "DOC0001.XML", content, confidentiality=("N", "MASQUE_PS", "INVISIBLE_PATIENT")
    )
    result = read_submission_metadata(kit.metadata([spec]))
    assert result.problems == ()
    (entry,) = result.entries
    metadata = entry.metadata
    assert entry.uri == "DOC0001.XML"
    assert metadata.size == len(content)
    assert metadata.hash_sha1 is not None and len(metadata.hash_sha1) == 40
    assert metadata.type_code == "11502-2"
    assert metadata.type_code_system == "2.16.840.1.113883.6.1"
    assert metadata.type_display == "CR d'examens biologiques"
    assert metadata.class_code == "10"
    assert metadata.format_code == "urn:ihe:iti:xds-sd:pdf:2008"
    assert metadata.confidentiality == "N"
    assert metadata.visibility == (VisibilityFlag.MASQUE_PS, VisibilityFlag.INVISIBLE_PATIENT)
    assert metadata.effective_time == datetime(2024, 1, 4, 15, 5, 27, tzinfo=UTC)
    assert metadata.author is not None
    assert metadata.author.national_id == "801234567897"
    assert metadata.author.organisation_id == "1120459876"
    assert metadata.author.organisation_name == "Labo test"
    assert metadata.patient is not None
    assert metadata.patient.ins == kit.TEST_INS
    assert metadata.patient.ins_oid == kit.TEST_INS_OID
    assert metadata.patient.birth_family_name == "TESTNOM"
    assert metadata.patient.given_name == "ALICE"
    assert metadata.patient.birthplace_code == "63220"


def test_e4_xds_rplc_association(kit: type[Kit]) -> None:
    spec = kit.Entry("NEW", "DOC0001.XML", b"<x/>")
    result = read_submission_metadata(kit.metadata([spec], replaces=("NEW", "urn:uuid:old")))
    (entry,) = result.entries
    assert entry.metadata.replaces == "urn:uuid:old"


def test_e6_xds_bad_size_and_hash_slots_are_reported(kit: type[Kit]) -> None:
    spec = kit.Entry("D", "D.XML", b"<x/>", size_override="12kB", hash_override="zz")
    result = read_submission_metadata(kit.metadata([spec]))
    assert _problem_codes(result) == {ProblemCode.BAD_VALUE}
    assert result.entries[0].metadata.size is None


def test_e2_xds_split_uri_values_are_joined() -> None:
    xml = (
        b'<SubmitObjectsRequest><ExtrinsicObject id="a" mimeType="text/xml">'
        b'<Slot name="URI"><ValueList><Value>2|0001.XML</Value><Value>1|DOC</Value>'
        b"</ValueList></Slot></ExtrinsicObject></SubmitObjectsRequest>"
    )
    (entry,) = read_submission_metadata(xml).entries
    assert entry.uri == "DOC0001.XML"


def test_e6_xds_not_xml_or_empty(kit: type[Kit]) -> None:
    assert _problem_codes(read_submission_metadata(b"not xml")) == {ProblemCode.NOT_WELL_FORMED}
    empty = read_submission_metadata(b"<SubmitObjectsRequest/>")
    assert empty.entries == ()
    assert _problem_codes(empty) == {ProblemCode.NO_DOCUMENT}
    for problem in empty.problems:
        assert isinstance(problem, Problem)


def test_e2_xds_scheme_keys() -> None:
    expected = "f0306f51-975f-434e-a61c-c59651d33983"
    assert scheme_key("urn:uuid:F0306F51-975F-434E-A61C-C59651D33983") == expected
    assert scheme_key("uuid:f0306f51-975f-434e-a61c-c59651d33983") == expected
    assert scheme_key(None) == ""
