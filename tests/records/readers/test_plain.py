"""Unstructured attachments (E1: PDF, JPEG, PNG, TIFF, RTF, text) and the dispatcher that
sends each attachment, real samples included, to the right reader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from caducee.records.model import ProblemCode, ReaderLimits, SourceFormat
from caducee.records.readers import read_attachment
from caducee.records.readers.plain import read_plain

if TYPE_CHECKING:
    from tests.records.readers.conftest import Kit

MAGIC_CASES = [
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", SourceFormat.PDF, "application/pdf"),
    (b"\xef\xbb\xbf\r\n%PDF-1.4\n", SourceFormat.PDF, "application/pdf"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", SourceFormat.JPEG, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", SourceFormat.PNG, "image/png"),
    (b"II*\x00\x08\x00\x00\x00", SourceFormat.TIFF, "image/tiff"),
    (b"MM\x00*\x00\x00\x00\x08", SourceFormat.TIFF, "image/tiff"),
    (b"{\\rtf1\\ansi\\deff0 {\\fonttbl}}", SourceFormat.RTF, "application/rtf"),
]


@pytest.mark.parametrize(("data", "source_format", "mime_type"), MAGIC_CASES)
def test_e1_plain_formats_by_magic_number(
    data: bytes, source_format: SourceFormat, mime_type: str, kit: type[Kit]
) -> None:
    result = read_plain(data, file_name="report.bin", content_type="application/octet-stream")
    kit.assert_typed(result)
    assert result.format is source_format
    assert result.problems == ()
    (document,) = result.documents
    assert document.mime_type == mime_type
    assert document.metadata.mime_type == mime_type
    assert document.file_name == "report.bin"
    assert document.content == data


def test_e1_plain_magic_wins_over_declared_type(kit: type[Kit]) -> None:
    result = read_plain(kit.TINY_PDF, file_name="photo.png", content_type="image/png")
    assert result.format is SourceFormat.PDF
    assert result.documents[0].mime_type == "application/pdf"


@pytest.mark.parametrize(
    ("file_name", "content_type"),
    [("note.txt", None), ("note", "text/plain; charset=utf-8"), ("NOTE.TXT", "application/x")],
)
def test_e1_plain_text(file_name: str, content_type: str | None) -> None:
    data = "Compte rendu : tout va bien.\r\nÀ bientôt.\n".encode()
    result = read_plain(data, file_name=file_name, content_type=content_type)
    assert result.format is SourceFormat.TEXT
    assert result.documents[0].mime_type == "text/plain"


def test_e1_plain_text_in_latin1() -> None:
    data = "Résultats normaux.\n".encode("cp1252")
    assert read_plain(data, file_name="r.txt").format is SourceFormat.TEXT


@pytest.mark.parametrize(
    ("data", "file_name", "content_type"),
    [
        (b"GIF89a\x01\x00", "image.gif", "image/gif"),
        (b"MZ\x90\x00\x03", "setup.exe", "application/octet-stream"),
        (b"text\x00with\x00nul", "fake.txt", "text/plain"),
        (b"just some words", "words", None),
        (b"", "empty.pdf", "application/pdf"),
    ],
)
def test_e1_plain_unknown_is_unsupported_not_an_error(
    data: bytes, file_name: str, content_type: str | None, kit: type[Kit]
) -> None:
    result = read_plain(data, file_name=file_name, content_type=content_type)
    kit.assert_typed(result)
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.UNSUPPORTED_FORMAT}
    assert result.format is SourceFormat.UNKNOWN


def test_e6_plain_size_limit(kit: type[Kit]) -> None:
    limits = ReaderLimits(max_input_bytes=10)
    result = read_plain(kit.TINY_PDF, limits=limits)
    assert kit.codes(result) == {ProblemCode.TOO_LARGE}
    assert kit.codes(read_attachment("a.pdf", None, kit.TINY_PDF, limits=limits)) == {
        ProblemCode.TOO_LARGE
    }


# ---------------------------------------------------------------------------------------------
# Dispatcher, on every real sample

DISPATCH = {
    "DirectProject-nhin-d/samplexdm-xd-common.zip": SourceFormat.XDM,
    "DirectProject-nhin-d/samplexdm-xdmail.zip": SourceFormat.XDM,
    "ansforge-hl7V2-exemples/MDM_Transmission_initiale/ack.er7": SourceFormat.HL7V2,
    "ansforge-hl7V2-exemples/ORU_Transmission_initiale/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7": (
        SourceFormat.HL7V2
    ),
    "yokoinc-hprimtool/test-file.hpr": SourceFormat.HPRIM_MEDECIN,
    "yokoinc-hprimtool/test-fixtures/header-solabio.hpm": SourceFormat.HPRIM_MEDECIN,
    "yokoinc-hprimtool/test-fixtures/text.hpr": SourceFormat.HPRIM_MEDECIN,
    "ansforge-hl7V2-exemples/MDM_Transmission_initiale/CR_Radio_CDAN1_v1.XML": SourceFormat.CDA,
    "ansforge-TestContenuCDA-3-0/ExemplesCDA/LDL-SES_2022.01.xml": SourceFormat.CDA,
}


@pytest.mark.parametrize("relative", sorted(DISPATCH))
def test_e1_dispatch_real_samples(
    relative: str, sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    result = read_attachment(Path(relative).name, None, sample_bytes(relative))
    kit.assert_typed(result)
    assert result.format is DISPATCH[relative]


def test_e1_dispatch_ignores_misleading_names_and_types(kit: type[Kit]) -> None:
    cda = kit.cda()
    assert read_attachment("report.pdf", "application/pdf", cda).format is SourceFormat.CDA
    pdf = read_attachment("IHE_XDM.zip", "application/zip", kit.TINY_PDF)
    assert pdf.format is SourceFormat.PDF
    xdm = kit.xdm({"SUBSET01": [kit.Entry("A", "DOC0001.XML", cda)]})
    assert read_attachment("scan.pdf", "application/pdf", xdm).format is SourceFormat.XDM


def test_e1_dispatch_falls_back_on_names_and_types(kit: type[Kit]) -> None:
    assert read_attachment("x.zip", None, b"garbage").format is SourceFormat.XDM
    assert read_attachment("x.hl7", None, b"garbage").format is SourceFormat.HL7V2
    assert read_attachment("x.xml", None, b"garbage").format is SourceFormat.CDA
    assert read_attachment("x.hpr", None, b"garbage").format is SourceFormat.HPRIM_MEDECIN
    text = read_attachment("x.txt", "text/plain", b"Bonjour")
    assert text.format is SourceFormat.TEXT
    other = read_attachment("x.docx", None, b"garbage")
    assert kit.codes(other) == {ProblemCode.UNSUPPORTED_FORMAT}


def test_e1_dispatch_utf16_cda_and_hl7_batch(kit: type[Kit]) -> None:
    utf16 = kit.cda().replace(b'encoding="UTF-8"', b'encoding="UTF-16"').decode().encode("utf-16")
    result = read_attachment("document", None, utf16)
    assert result.format is SourceFormat.CDA
    assert result.problems == ()
    batch = read_attachment("batch", None, b"FHS|^~\\&|LAB\rMSH|^~\\&|A|B|C|D|1||ACK|1|P|2.5")
    assert batch.format is SourceFormat.HL7V2
