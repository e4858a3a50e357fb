"""Shared fixtures of the records tests: the real samples, and builders of synthetic input.

The real files under ``tests/samples`` are read as they are (see SOURCES.md there);
synthetic CDA, METADATA.XML and zip archives are built here for the cases no sample shows.
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from caducee.records.model import Problem, ProblemCode, ReadResult, SourceFormat

CDA_SAMPLES = {
    "DOC_NON_STRUCTURE_CDA-R2-N1.xml": "ansforge-TestContenuCDA-3-0/ExemplesCDA",
    "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml": "ansforge-TestContenuCDA-3-0/ExemplesCDA",
    "BIO-CR-BIO_2024.01_TSH_1.xml": "ansforge-TestContenuCDA-3-0/ExemplesCDA",
    "BIO-CR-BIO_2024.01_CR-2nde-intention-PDF.xml": "ansforge-TestContenuCDA-3-0/ExemplesCDA",
    "LDL-SES_2022.01.xml": "ansforge-TestContenuCDA-3-0/ExemplesCDA",
    "CR_Radio_CDAN1_v1.XML": "ansforge-hl7V2-exemples/MDM_Transmission_initiale",
}

READER_SAMPLES = (
    *(f"{folder}/{name}" for name, folder in CDA_SAMPLES.items()),
    "DirectProject-nhin-d/samplexdm-xd-common.zip",
    "DirectProject-nhin-d/samplexdm-xdmail.zip",
    "DirectProject-nhin-d/submitobjectrequest.xml",
    "ansforge-hl7V2-exemples/MDM_Transmission_initiale/ack.er7",
    "ansforge-hl7V2-exemples/MDM_Transmission_initiale/message_MDM__LPS_MSS_CR_Radio_INIT_N1.er7",
    "ansforge-hl7V2-exemples/MDM_Transmission_initiale/"
    "message_MDM__LPS_MSS_CR_Radio_INIT_N1_Base64.er7",
    "ansforge-hl7V2-exemples/ORU_Transmission_initiale/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7",
    "yokoinc-hprimtool/test-file.hpr",
    "yokoinc-hprimtool/test-fixtures/header-solabio.hpm",
    "yokoinc-hprimtool/test-fixtures/pipes.hpr",
    "yokoinc-hprimtool/test-fixtures/tags.hpr",
    "yokoinc-hprimtool/test-fixtures/text.hpr",
)
"""Every sample a reader is meant to read, relative to the samples folder."""

TEST_INS = "279035121518989"
TEST_INS_OID = "1.2.250.1.213.1.4.10"
TINY_PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture(scope="session")
def sample_bytes(samples_dir: Path) -> Callable[[str], bytes]:
    """Read a sample by its path relative to the samples folder."""

    def read(relative: str) -> bytes:
        return (samples_dir / relative).read_bytes()

    return read


@pytest.fixture(scope="session")
def cda_sample(samples_dir: Path) -> Callable[[str], bytes]:
    """Read one of the CDA samples by file name."""

    def read(name: str) -> bytes:
        return (samples_dir / CDA_SAMPLES[name] / name).read_bytes()

    return read


def assert_typed(result: ReadResult) -> None:
    """What every reader promises: a ReadResult whose problems are all typed."""
    assert isinstance(result, ReadResult)
    assert isinstance(result.format, SourceFormat)
    assert isinstance(result.documents, tuple)
    assert isinstance(result.problems, tuple)
    for problem in result.problems:
        assert isinstance(problem, Problem)
        assert isinstance(problem.code, ProblemCode)
        assert isinstance(problem.message, str) and problem.message
    for document in result.documents:
        assert isinstance(document.content, bytes)
        assert isinstance(document.file_name, str)
        assert isinstance(document.mime_type, str)


def codes(result: ReadResult) -> set[ProblemCode]:
    return {problem.code for problem in result.problems}


# ---------------------------------------------------------------------------------------------
# Synthetic CDA


def make_cda(
    *,
    ins: str | None = TEST_INS,
    ins_oid: str = TEST_INS_OID,
    birth_time: str | None = "19790328",
    effective_time: str = "20240104160527+0100",
    type_code: str = "11502-2",
    document_id: str = "1.2.250.1.999.1.1",
    set_id: str | None = "1.2.250.1.999.1",
    version: str | None = "1",
    replaces: str | None = None,
    body_base64: str | None = None,
    declaration: bool = True,
    line_end: str = "\n",
) -> bytes:
    """A small CI-SIS-like CDA R2 level 1, with the given header values."""
    body = body_base64 if body_base64 is not None else base64.b64encode(TINY_PDF).decode()
    ins_id = f'<id root="{ins_oid}" extension="{ins}"/>' if ins else ""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>' if declaration else "",
        '<?xml-stylesheet type="text/xsl" href="../FeuilleDeStyle/CDA-FO.xsl"?>',
        '<ClinicalDocument xmlns="urn:hl7-org:v3">',
        '<typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>',
        f'<id root="{document_id}"/>',
        f'<code code="{type_code}" codeSystem="2.16.840.1.113883.6.1" displayName="CR"/>',
        "<title>Compte rendu</title>",
        f'<effectiveTime value="{effective_time}"/>',
        '<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>',
        '<languageCode code="fr-FR"/>',
        f'<setId root="{set_id}"/>' if set_id else "",
        f'<versionNumber value="{version}"/>' if version else "",
        "<recordTarget><patientRole>",
        ins_id,
        '<id root="1.2.3.4.567.8.9.10" extension="IPP42"/>',
        "<patient><name>",
        '<family qualifier="BR">TESTNOM</family><given>ALICE MARIE</given>',
        '<given qualifier="BR">ALICE</given>',
        "</name>",
        '<administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>',
        f'<birthTime value="{birth_time}"/>' if birth_time else "",
        "<birthplace><place><addr><county>63220</county></addr></place></birthplace>",
        "</patient></patientRole></recordTarget>",
        '<author><time value="20240104160527+0100"/><assignedAuthor>',
        '<id root="1.2.250.1.71.4.2.1" extension="801234567897"/>',
        "<assignedPerson><name><given>Jean</given><family>MEDECIN</family></name></assignedPerson>",
        "<representedOrganization>",
        '<id root="1.2.250.1.71.4.2.2" extension="1120459876"/><name>Labo test</name>',
        "</representedOrganization></assignedAuthor></author>",
        (
            f'<relatedDocument typeCode="RPLC"><parentDocument><id root="{replaces}"/>'
            "</parentDocument></relatedDocument>"
            if replaces
            else ""
        ),
        "<component><nonXMLBody>",
        f'<text mediaType="application/pdf" representation="B64">{body}</text>',
        "</nonXMLBody></component>",
        "</ClinicalDocument>",
    ]
    return line_end.join(line for line in lines if line).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Synthetic XDS metadata and XDM archives


@dataclass(frozen=True)
class EntrySpec:
    """One DocumentEntry of a synthetic METADATA.XML."""

    entry_id: str
    uri: str | None
    content: bytes
    mime_type: str = "text/xml"
    patient_ins: str = TEST_INS
    with_hash: bool = True
    with_size: bool = True
    hash_override: str | None = None
    size_override: str | None = None
    confidentiality: Sequence[str] = ("N",)


AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"


def _slot(name: str, *values: str) -> str:
    inner = "".join(f"<rim:Value>{value}</rim:Value>" for value in values)
    return f'<rim:Slot name="{name}"><rim:ValueList>{inner}</rim:ValueList></rim:Slot>'


def _classification(scheme: str, entry_id: str, code: str, *slots: str, name: str = "") -> str:
    label = f'<rim:Name><rim:LocalizedString value="{name}"/></rim:Name>' if name else ""
    return (
        f'<rim:Classification classificationScheme="{scheme}" classifiedObject="{entry_id}"'
        f' nodeRepresentation="{code}" id="{entry_id}-{code or "author"}">'
        + "".join(slots)
        + label
        + "</rim:Classification>"
    )


def _external_id(scheme: str, entry_id: str, value: str) -> str:
    return (
        f'<rim:ExternalIdentifier identificationScheme="{scheme}" registryObject="{entry_id}"'
        f' value="{value}" id="{entry_id}-{scheme[-4:]}"/>'
    )


def _extrinsic_object(spec: EntrySpec) -> str:
    entry_id = spec.entry_id
    patient_cx = f"{spec.patient_ins}^^^&amp;{TEST_INS_OID}&amp;ISO^NH"
    slots = [_slot("creationTime", "20240104150527")]
    if spec.with_hash:
        digest = hashlib.sha1(spec.content, usedforsecurity=False).hexdigest()
        slots.append(_slot("hash", spec.hash_override or digest))
    if spec.with_size:
        slots.append(_slot("size", spec.size_override or str(len(spec.content))))
    if spec.uri is not None:
        slots.append(_slot("URI", spec.uri))
    slots.append(_slot("sourcePatientId", patient_cx))
    slots.append(
        _slot(
            "sourcePatientInfo",
            "PID-5|TESTNOM^ALICE^^^^^L",
            "PID-7|19790328",
            "PID-8|F",
            "PID-11|^^^^^^BDL^^63220",
        )
    )
    author = _classification(
        AUTHOR,
        entry_id,
        "",
        _slot(
            "authorPerson",
            "801234567897^MEDECIN^Jean^^^^^^&amp;1.2.250.1.71.4.2.1&amp;ISO^D^^^IDNPS",
        ),
        _slot(
            "authorInstitution", "Labo test^^^^^&amp;1.2.250.1.71.4.2.2&amp;ISO^IDNST^^^1120459876"
        ),
    )
    codes = [
        author,
        _classification(
            TYPE_CODE,
            entry_id,
            "11502-2",
            _slot("codingScheme", "2.16.840.1.113883.6.1"),
            name="CR d&apos;examens biologiques",
        ),
        _classification(CLASS_CODE, entry_id, "10", _slot("codingScheme", "1.2.250.1.213.1.1.4.1")),
        _classification(
            FORMAT_CODE,
            entry_id,
            "urn:ihe:iti:xds-sd:pdf:2008",
            _slot("codingScheme", "1.3.6.1.4.1.19376.1.2.3"),
        ),
        *(
            _classification(CONFIDENTIALITY, entry_id, code, _slot("codingScheme", "x"))
            for code in spec.confidentiality
        ),
        _external_id(PATIENT_ID, entry_id, patient_cx),
        _external_id(UNIQUE_ID, entry_id, "1.2.250.1.999.1.1"),
    ]
    return (
        f'<rim:ExtrinsicObject id="{entry_id}" mimeType="{spec.mime_type}"'
        ' objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">'
        + "".join(slots)
        + '<rim:Name><rim:LocalizedString value="Compte rendu"/></rim:Name>'
        + "".join(codes)
        + "</rim:ExtrinsicObject>"
    )


def _association(kind: str, source: str, target: str) -> str:
    return (
        f'<rim:Association id="{source}-{target}" associationType="{kind}"'
        f' sourceObject="{source}" targetObject="{target}"/>'
    )


def make_metadata(
    entries: Sequence[EntrySpec], *, replaces: tuple[str, str] | None = None
) -> bytes:
    """An ebRIM SubmitObjectsRequest listing the given entries, French style."""
    associations = [_association(HAS_MEMBER, "SubmissionSet01", e.entry_id) for e in entries]
    if replaces is not None:
        associations.append(_association(RPLC, *replaces))
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"'
        ' xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>'
        + "".join(_extrinsic_object(spec) for spec in entries)
        + '<rim:RegistryPackage id="SubmissionSet01"/>'
        '<rim:Classification classifiedObject="SubmissionSet01"'
        ' classificationNode="urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd" id="ss"/>'
        + "".join(associations)
        + "</rim:RegistryObjectList></lcm:SubmitObjectsRequest>"
    )
    return xml.encode("utf-8")


def make_zip(files: Sequence[tuple[str, bytes]]) -> bytes:
    """A deflated zip holding the given (name, content) pairs, names kept as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files:
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def make_xdm(
    subsets: dict[str, Sequence[EntrySpec]],
    *,
    top: str = "",
    extras: Sequence[tuple[str, bytes]] = (),
    metadata_name: str = "METADATA.XML",
    xdm_folder: str = "IHE_XDM",
) -> bytes:
    """An XDM zip: one folder per submission set, with METADATA.XML and the documents."""
    files: list[tuple[str, bytes]] = list(extras)
    for subset, entries in subsets.items():
        folder = f"{top}{xdm_folder}/{subset}" if xdm_folder else f"{top}{subset}"
        files.append((f"{folder}/{metadata_name}", make_metadata(entries)))
        files += [(f"{folder}/{spec.uri or spec.entry_id}", spec.content) for spec in entries]
    return make_zip(files)


@dataclass(frozen=True)
class RawEntry:
    """One entry of a hand-made zip, headers written exactly as given (may lie)."""

    name: str
    data: bytes
    method: int
    crc: int
    file_size: int
    flags: int = 0
    external_attr: int = 0


def make_raw_zip(entries: Sequence[RawEntry]) -> bytes:
    """Write a zip byte by byte, so that tests can declare sizes and flags that lie."""
    body = bytearray()
    central = bytearray()
    for entry in entries:
        name = entry.name.encode("utf-8")
        offset = len(body)
        body += struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            20,
            entry.flags,
            entry.method,
            0,
            0x21,
            entry.crc,
            len(entry.data),
            entry.file_size,
            len(name),
            0,
        )
        body += name + entry.data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            (3 << 8) | 20,
            20,
            entry.flags,
            entry.method,
            0,
            0x21,
            entry.crc,
            len(entry.data),
            entry.file_size,
            len(name),
            0,
            0,
            0,
            0,
            entry.external_attr,
            offset,
        )
        central += name
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(body), 0
    )
    return bytes(body + central + end)


def deflate_zeros(total: int, chunk: int = 1024 * 1024) -> tuple[bytes, int]:
    """Raw deflate of ``total`` zero bytes, built fast from one repeated block; and its CRC."""
    zeros = bytes(chunk)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = total // chunk
    stream = block + again * (repeat - 1) + compressor.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(repeat):
        crc = zlib.crc32(zeros, crc)
    return stream, crc


class Kit:
    """The helpers above, handed to tests through the ``kit`` fixture.

    Test modules cannot import this conftest reliably (pytest imports every ``conftest.py``
    under the same module name), so they receive the helpers as a fixture instead.
    """

    assert_typed = staticmethod(assert_typed)
    codes = staticmethod(codes)
    cda = staticmethod(make_cda)
    Entry = EntrySpec
    metadata = staticmethod(make_metadata)
    zip = staticmethod(make_zip)
    xdm = staticmethod(make_xdm)
    RawEntry = RawEntry
    raw_zip = staticmethod(make_raw_zip)
    deflate_zeros = staticmethod(deflate_zeros)
    TEST_INS = TEST_INS
    TEST_INS_OID = TEST_INS_OID
    TINY_PDF = TINY_PDF
    READER_SAMPLES = READER_SAMPLES
    CDA_SAMPLES = CDA_SAMPLES


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit
