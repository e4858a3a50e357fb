"""IHE XDM reader: the real DirectProject archives, lenient layouts (E1), merged metadata
(E2, E3, E5), and the safety checks on untrusted archives (E6)."""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from caducee.records.model import (
    ProblemCode,
    ReaderLimits,
    SourceFormat,
    VisibilityFlag,
)
from caducee.records.readers.xdm import read_xdm, safe_entry_name, stream_entry

if TYPE_CHECKING:
    from tests.records.readers.conftest import Kit

XD_COMMON = "DirectProject-nhin-d/samplexdm-xd-common.zip"
XDMAIL = "DirectProject-nhin-d/samplexdm-xdmail.zip"
GIB = 1024 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Real archives


def test_e1_xdm_sample_with_extra_top_folder_and_lowercase_names(
    sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    result = read_xdm(sample_bytes(XD_COMMON))
    kit.assert_typed(result)
    assert result.format is SourceFormat.XDM
    (document,) = result.documents
    assert document.file_name == "samplexdm/IHE_XDM/SUBSET01/Document01.xml"
    assert document.mime_type == "text/xml"
    metadata = document.metadata
    # The hash slot was checked against the bytes (E6).
    assert metadata.hash_sha1 == "2f016bdeba83855ec76bd1102d9da6a79590f1a9"
    assert hashlib.sha1(document.content, usedforsecurity=False).hexdigest() == metadata.hash_sha1
    # CDA header values win; XDS fills what the header lacks (E2).
    assert metadata.title == "Good Health Clinic Continuity of Care Document"
    assert metadata.type_code == "34133-9"
    assert metadata.class_code == "History and Physical"
    assert metadata.format_code == "CDAR2/IHE 1.0"
    assert metadata.xds_entry_id == "Document01"
    # A US document: no INS (E3), and its CDA id is not the XDS uniqueId.
    assert kit.codes(result) == {ProblemCode.NO_INS, ProblemCode.METADATA_MISMATCH}
    assert ProblemCode.HASH_MISMATCH not in kit.codes(result)


def test_e1_xdm_sample_with_backslashes_and_no_ihe_xdm_folder(
    sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    result = read_xdm(sample_bytes(XDMAIL))
    kit.assert_typed(result)
    (document,) = result.documents
    # No URI slot and the entry id "Document01" names no file: the only candidate is used.
    assert document.file_name == "SUBSET01/DOCUMENT.xml"
    assert document.metadata.type_code == "34133-9"
    assert document.metadata.hash_sha1 is None


# ---------------------------------------------------------------------------------------------
# Synthetic French archives


def test_e1_xdm_french_n1_document_with_full_metadata(
    cda_sample: Callable[[str], bytes], kit: type[Kit]
) -> None:
    content = cda_sample("DOC_NON_STRUCTURE_CDA-R2-N1.xml")
    spec = kit.Entry("DOC1", "DOC0001.XML", content, confidentiality=("N", "MASQUE_PS"))
    readme = [("README.TXT", b"Caducee tests"), ("INDEX.HTM", b"<html/>")]
    result = read_xdm(kit.xdm({"SUBSET01": [spec]}, extras=readme))
    kit.assert_typed(result)
    # The synthetic metadata gives another uniqueId than the sample's CDA id.
    assert kit.codes(result) == {ProblemCode.METADATA_MISMATCH}
    (document,) = result.documents
    metadata = document.metadata
    assert document.file_name == "IHE_XDM/SUBSET01/DOC0001.XML"
    assert document.content == content
    assert document.rendition is not None and document.rendition.startswith(b"%PDF")
    assert metadata.document_id == "1.3.6.1.4.1.19376.1.2.20.12345.1.1"
    assert metadata.patient is not None and metadata.patient.ins == kit.TEST_INS
    assert metadata.visibility == (VisibilityFlag.MASQUE_PS,)
    assert metadata.size == len(content)
    assert metadata.class_code == "10"


def test_e1_xdm_several_submission_sets(kit: type[Kit]) -> None:
    first = kit.Entry("A", "DOC0001.XML", kit.cda(document_id="1.2.250.1.999.1.1"))
    second = kit.Entry("B", "DOC0001.XML", kit.cda(document_id="1.2.250.1.999.1.1"))
    result = read_xdm(kit.xdm({"SUBSET01": [first], "SUBSET02": [second]}))
    assert result.problems == ()
    names = [document.file_name for document in result.documents]
    assert names == ["IHE_XDM/SUBSET01/DOC0001.XML", "IHE_XDM/SUBSET02/DOC0001.XML"]


def test_e1_xdm_several_documents_in_one_set(kit: type[Kit]) -> None:
    specs = [
        kit.Entry("A", "DOC0001.XML", kit.cda()),
        kit.Entry("B", "DOC0002.PDF", kit.TINY_PDF, mime_type="application/pdf"),
    ]
    result = read_xdm(kit.xdm({"SUBSET01": specs}))
    assert result.problems == ()
    xml, pdf = result.documents
    assert xml.mime_type == "text/xml"
    assert pdf.mime_type == "application/pdf"
    assert pdf.content == kit.TINY_PDF
    assert pdf.metadata.patient is not None and pdf.metadata.patient.ins == kit.TEST_INS


def test_e1_xdm_case_of_names_and_prefix_folder(kit: type[Kit]) -> None:
    spec = kit.Entry("A", "doc0001.xml", kit.cda())
    archive = kit.xdm(
        {"subset01": [spec]}, top="download/", metadata_name="metadata.xml", xdm_folder="ihe_xdm"
    )
    result = read_xdm(archive)
    assert result.problems == ()
    (document,) = result.documents
    assert document.file_name == "download/ihe_xdm/subset01/doc0001.xml"


def test_e1_xdm_uri_matches_whatever_the_case(kit: type[Kit]) -> None:
    content = kit.cda()
    metadata = kit.metadata([kit.Entry("A", "DOC0001.XML", content)])
    archive = kit.zip(
        [("IHE_XDM/SUBSET01/METADATA.XML", metadata), ("ihe_xdm/subset01/Doc0001.xml", content)]
    )
    (document,) = read_xdm(archive).documents
    assert document.file_name == "ihe_xdm/subset01/Doc0001.xml"


def test_e1_xdm_windows_separators(kit: type[Kit]) -> None:
    content = kit.cda()
    metadata = kit.metadata([kit.Entry("A", "DOC0001.XML", content)])
    archive = kit.zip(
        [("IHE_XDM\\SUBSET01\\METADATA.XML", metadata), ("IHE_XDM\\SUBSET01\\DOC0001.XML", content)]
    )
    (document,) = read_xdm(archive).documents
    assert document.file_name == "IHE_XDM/SUBSET01/DOC0001.XML"


def test_e1_xdm_document_found_by_hash_without_uri(kit: type[Kit]) -> None:
    content = kit.cda()
    metadata = kit.metadata([kit.Entry("A", None, content)])
    archive = kit.zip(
        [
            ("IHE_XDM/SUBSET01/METADATA.XML", metadata),
            ("IHE_XDM/SUBSET01/OTHER.XML", b"<other/>"),
            ("IHE_XDM/SUBSET01/REPORT.XML", content),
        ]
    )
    (document,) = read_xdm(archive).documents
    assert document.file_name == "IHE_XDM/SUBSET01/REPORT.XML"


# ---------------------------------------------------------------------------------------------
# Integrity (E6) and identity (E3)


def test_e6_xdm_hash_mismatch_drops_the_document(kit: type[Kit]) -> None:
    spec = kit.Entry("A", "DOC0001.XML", kit.cda(), hash_override="0" * 40)
    result = read_xdm(kit.xdm({"SUBSET01": [spec]}))
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.HASH_MISMATCH}
    assert result.problems[0].where == "IHE_XDM/SUBSET01/DOC0001.XML"


def test_e6_xdm_size_mismatch_drops_the_document(kit: type[Kit]) -> None:
    spec = kit.Entry("A", "DOC0001.XML", kit.cda(), size_override="12")
    result = read_xdm(kit.xdm({"SUBSET01": [spec]}))
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.SIZE_MISMATCH}


def test_e6_xdm_uri_to_a_missing_file(kit: type[Kit]) -> None:
    metadata = kit.metadata([kit.Entry("A", "DOC0009.XML", b"<x/>")])
    result = read_xdm(kit.zip([("IHE_XDM/SUBSET01/METADATA.XML", metadata)]))
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.MISSING_ENTRY}


def test_e6_xdm_uri_path_traversal_refused(kit: type[Kit]) -> None:
    metadata = kit.metadata([kit.Entry("A", "../../etc/passwd", b"<x/>")])
    result = read_xdm(kit.zip([("IHE_XDM/SUBSET01/METADATA.XML", metadata)]))
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.UNSAFE_PATH}


def test_e3_xdm_patient_of_metadata_differs_from_cda(kit: type[Kit]) -> None:
    spec = kit.Entry("A", "DOC0001.XML", kit.cda(), patient_ins="185012A12345678")
    result = read_xdm(kit.xdm({"SUBSET01": [spec]}))
    (document,) = result.documents
    assert kit.codes(result) == {ProblemCode.METADATA_MISMATCH}
    assert document.metadata.patient is not None
    assert document.metadata.patient.ins == kit.TEST_INS


def test_e3_xdm_several_patients_are_flagged(kit: type[Kit]) -> None:
    other = "185012A123456"
    other_ins = f"{other}{97 - int(other.replace('2A', '19')) % 97:02d}"
    specs = [
        kit.Entry("A", "DOC0001.XML", kit.cda()),
        kit.Entry("B", "DOC0002.XML", kit.cda(ins=other_ins), patient_ins=other_ins),
    ]
    result = read_xdm(kit.xdm({"SUBSET01": specs}))
    assert len(result.documents) == 2
    assert kit.codes(result) == {ProblemCode.SEVERAL_PATIENTS}


def test_e6_xdm_broken_cda_inside(kit: type[Kit]) -> None:
    spec = kit.Entry("A", "DOC0001.XML", b"<ClinicalDocument><unclosed>")
    result = read_xdm(kit.xdm({"SUBSET01": [spec]}))
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.NOT_WELL_FORMED}


# ---------------------------------------------------------------------------------------------
# Safety of the archive (E6)


@pytest.mark.parametrize(
    "name",
    [
        "../evil.xml",
        "IHE_XDM/../../evil.xml",
        "IHE_XDM\\..\\..\\evil.xml",
        "/etc/passwd",
        "\\\\server\\share\\evil.xml",
        "C:\\Windows\\evil.xml",
        "c:evil.xml",
        "IHE_XDM/SUBSET01/DOC\x01.XML",
    ],
)
def test_e6_zip_path_traversal_refused(name: str, kit: type[Kit]) -> None:
    spec = kit.Entry("A", "DOC0001.XML", kit.cda())
    archive = kit.xdm({"SUBSET01": [spec]}, extras=[(name, b"owned")])
    result = read_xdm(archive)
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.UNSAFE_PATH}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("IHE_XDM/SUBSET01/DOC0001.XML", "IHE_XDM/SUBSET01/DOC0001.XML"),
        ("SUBSET01\\DOCUMENT.xml", "SUBSET01/DOCUMENT.xml"),
        ("./IHE_XDM//SUBSET01/./DOC.XML", "IHE_XDM/SUBSET01/DOC.XML"),
        ("a/../b", None),
        ("", None),
        ("D:/x", None),
        ("x/file.txt:stream", None),
    ],
)
def test_e6_zip_entry_names(raw: str, expected: str | None) -> None:
    assert safe_entry_name(raw) == expected


def test_e6_zip_symlink_refused(kit: type[Kit]) -> None:
    link = kit.RawEntry(
        name="IHE_XDM/SUBSET01/DOC0001.XML",
        data=b"/etc/passwd",
        method=zipfile.ZIP_STORED,
        crc=zlib.crc32(b"/etc/passwd"),
        file_size=11,
        external_attr=(stat.S_IFLNK | 0o777) << 16,
    )
    result = read_xdm(kit.raw_zip([link]))
    assert kit.codes(result) == {ProblemCode.UNSAFE_PATH}


def test_e6_zip_duplicate_names_refused(kit: type[Kit]) -> None:
    content = kit.cda()
    metadata = kit.metadata([kit.Entry("A", "DOC0001.XML", content)])
    archive = kit.zip(
        [
            ("IHE_XDM/SUBSET01/METADATA.XML", metadata),
            ("IHE_XDM/SUBSET01/DOC0001.XML", content),
            ("ihe_xdm/subset01/doc0001.xml", b"<other/>"),
        ]
    )
    result = read_xdm(archive)
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.DUPLICATE_ENTRY}


def test_e6_zip_too_many_entries(kit: type[Kit]) -> None:
    spec = kit.Entry("A", "DOC0001.XML", kit.cda())
    extras = [(f"IHE_XDM/SUBSET01/F{i:04d}.TXT", b"x") for i in range(1001)]
    result = read_xdm(kit.xdm({"SUBSET01": [spec]}, extras=extras))
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.TOO_MANY_ENTRIES}
    small = ReaderLimits(max_entries=3)
    few = kit.xdm({"SUBSET01": [spec]}, extras=extras[:2])
    assert kit.codes(read_xdm(few, limits=small)) == {ProblemCode.TOO_MANY_ENTRIES}


@pytest.mark.timeout(5)
def test_e6_zip_bomb_of_one_gib_refused(kit: type[Kit]) -> None:
    stream, crc = kit.deflate_zeros(GIB)
    bomb = kit.RawEntry(
        name="IHE_XDM/SUBSET01/METADATA.XML",
        data=stream,
        method=zipfile.ZIP_DEFLATED,
        crc=crc,
        file_size=GIB,
    )
    result = read_xdm(kit.raw_zip([bomb]))
    assert result.documents == ()
    assert kit.codes(result) <= {ProblemCode.COMPRESSION_RATIO, ProblemCode.TOO_LARGE}
    assert result.problems


@pytest.mark.timeout(5)
def test_e6_zip_bomb_with_lying_header_refused(kit: type[Kit]) -> None:
    stream, _ = kit.deflate_zeros(GIB)
    liar = kit.RawEntry(
        name="IHE_XDM/SUBSET01/METADATA.XML",
        data=stream,
        method=zipfile.ZIP_DEFLATED,
        crc=0,
        file_size=1000,
    )
    result = read_xdm(kit.raw_zip([liar]))
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.BAD_ARCHIVE}


@pytest.mark.timeout(5)
def test_e6_zip_stream_caps_do_not_trust_headers(kit: type[Kit]) -> None:
    payload = bytes(3 * 1024 * 1024)
    archive = zipfile.ZipFile(io.BytesIO(kit.zip([("big.bin", payload)])))
    info = archive.infolist()[0]
    over_budget = stream_entry(archive, info, budget=1024 * 1024, ratio_cap=10**9)
    assert not isinstance(over_budget, bytes)
    assert over_budget.code is ProblemCode.TOO_LARGE
    over_ratio = stream_entry(archive, info, budget=10**9, ratio_cap=1024 * 1024)
    assert not isinstance(over_ratio, bytes)
    assert over_ratio.code is ProblemCode.COMPRESSION_RATIO
    whole = stream_entry(archive, info, budget=10**9, ratio_cap=10**9)
    assert whole == payload


def test_e6_zip_total_size_budget(kit: type[Kit]) -> None:
    spec = kit.Entry("A", "DOC0001.XML", kit.cda())
    limits = ReaderLimits(max_total_bytes=1000)
    result = read_xdm(kit.xdm({"SUBSET01": [spec]}), limits=limits)
    assert kit.codes(result) == {ProblemCode.TOO_LARGE}


def test_e6_zip_ratio_limit_applies_past_the_grace(kit: type[Kit]) -> None:
    spec = kit.Entry("A", "DOC0001.XML", kit.cda())
    padded = [("IHE_XDM/SUBSET01/PAD.TXT", b" " * 200_000)]
    archive = kit.xdm({"SUBSET01": [spec]}, extras=padded)
    assert read_xdm(archive).problems == ()
    strict = ReaderLimits(max_ratio=10, ratio_grace_bytes=1000)
    assert kit.codes(read_xdm(archive, limits=strict)) == {ProblemCode.COMPRESSION_RATIO}


def test_e6_zip_encrypted_entry_refused(kit: type[Kit]) -> None:
    metadata = kit.metadata([kit.Entry("A", "DOC0001.XML", b"<x/>")])
    entry = kit.RawEntry(
        name="IHE_XDM/SUBSET01/METADATA.XML",
        data=metadata,
        method=zipfile.ZIP_STORED,
        crc=zlib.crc32(metadata),
        file_size=len(metadata),
        flags=0x1,
    )
    assert kit.codes(read_xdm(kit.raw_zip([entry]))) == {ProblemCode.BAD_ARCHIVE}


def test_e6_zip_corrupt_crc_refused(kit: type[Kit]) -> None:
    metadata = kit.metadata([kit.Entry("A", "DOC0001.XML", b"<x/>")])
    entry = kit.RawEntry(
        name="IHE_XDM/SUBSET01/METADATA.XML",
        data=metadata,
        method=zipfile.ZIP_STORED,
        crc=zlib.crc32(metadata) ^ 1,
        file_size=len(metadata),
    )
    assert kit.codes(read_xdm(kit.raw_zip([entry]))) == {ProblemCode.BAD_ARCHIVE}


def test_e6_not_a_zip(kit: type[Kit]) -> None:
    result = read_xdm(b"PK\x03\x04 this is not a zip")
    assert kit.codes(result) == {ProblemCode.BAD_ARCHIVE}


def test_e1_zip_without_xdm_structure_is_unsupported(kit: type[Kit]) -> None:
    result = read_xdm(kit.zip([("holiday.jpg", b"\xff\xd8\xff")]))
    assert kit.codes(result) == {ProblemCode.UNSUPPORTED_FORMAT}
    no_metadata = read_xdm(kit.zip([("IHE_XDM/SUBSET01/DOC0001.XML", kit.cda())]))
    assert kit.codes(no_metadata) == {ProblemCode.MISSING_ENTRY}


def test_e6_xdm_metadata_with_doctype_refused(kit: type[Kit]) -> None:
    hostile = b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    result = read_xdm(kit.zip([("IHE_XDM/SUBSET01/METADATA.XML", hostile)]))
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.FORBIDDEN_DTD}
