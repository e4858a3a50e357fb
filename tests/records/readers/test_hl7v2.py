"""HL7 v2 reader: the ANS ORU and MDM examples (E1), MetaDMPMSS visibility flags (E5),
the PID patient (E3), separators and base64 quirks met in real messages."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from caducee.records.model import ProblemCode, SourceFormat, VisibilityFlag
from caducee.records.readers.hl7v2 import read_hl7v2

if TYPE_CHECKING:
    from tests.records.readers.conftest import Kit

MDM_DIR = "ansforge-hl7V2-exemples/MDM_Transmission_initiale"
ORU = "ansforge-hl7V2-exemples/ORU_Transmission_initiale/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"
MDM_FULL = f"{MDM_DIR}/message_MDM__LPS_MSS_CR_Radio_INIT_N1_Base64.er7"
MDM_SHORT = f"{MDM_DIR}/message_MDM__LPS_MSS_CR_Radio_INIT_N1.er7"
ACK = f"{MDM_DIR}/ack.er7"


def test_e1_hl7_oru_carries_a_structured_lab_cda(
    sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    result = read_hl7v2(sample_bytes(ORU), file_name="oru.hl7")
    kit.assert_typed(result)
    assert result.format is SourceFormat.HL7V2
    (document,) = result.documents
    assert document.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert document.mime_type == "text/xml"
    metadata = document.metadata
    assert metadata.type_code == "11502-2"
    assert metadata.patient is not None
    assert metadata.patient.ins == "279035121518989"
    assert metadata.patient.ins_oid == "1.2.250.1.213.1.4.10"
    # Every MetaDMPMSS visibility flag of this message is "N".
    assert metadata.visibility == ()
    # OBX-12 (CORPSMAIL_PS) holds 93 characters of base64: a problem, not an error.
    (problem,) = result.problems
    assert problem.code is ProblemCode.BAD_BASE64
    assert problem.where == "OBX-12"


def test_e5_hl7_mdm_with_unpadded_base64_and_visibility_flags(
    sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    result = read_hl7v2(sample_bytes(MDM_FULL), file_name="mdm.er7")
    kit.assert_typed(result)
    assert result.problems == ()
    (document,) = result.documents
    stand_alone = sample_bytes(f"{MDM_DIR}/CR_Radio_CDAN1_v1.XML")
    # The embedded CDA is the stand-alone file with CRLF line ends, except for one telecom
    # address of the author (SOURCES.md says they differ only in line ends: not quite).
    embedded_lines = document.content.replace(b"\r\n", b"\n").split(b"\n")
    differing = [a for a, b in zip(embedded_lines, stand_alone.split(b"\n"), strict=True) if a != b]
    assert len(differing) == 1 and b"telecom" in differing[0]
    metadata = document.metadata
    assert metadata.type_code == "18748-4"
    assert metadata.visibility == (
        VisibilityFlag.INVISIBLE_PATIENT,
        VisibilityFlag.INVISIBLE_REPRESENTANTS_LEGAUX,
    )
    assert VisibilityFlag.MASQUE_PS not in metadata.visibility
    assert document.rendition is not None and document.rendition.startswith(b"%PDF")
    assert metadata.author is not None and metadata.author.national_id == "801234564895"


def test_e1_hl7_mdm_with_placeholder_instead_of_cda(
    sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    result = read_hl7v2(sample_bytes(MDM_SHORT), file_name="mdm.er7")
    kit.assert_typed(result)
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.NOT_WELL_FORMED, ProblemCode.NO_DOCUMENT}


def test_e1_hl7_acknowledgement_has_no_document(
    sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    result = read_hl7v2(sample_bytes(ACK), file_name="ack.er7")
    kit.assert_typed(result)
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.NO_DOCUMENT}


def _message(cda: bytes, *, separator: str = "\r", subtype: str = "^TEXT^XML^Base64^") -> bytes:
    encoded = base64.b64encode(cda).decode().rstrip("=")
    segments = [
        "MSH|^~\\&|LAB|FAC|PFI|FAC|202401041600||ORU^R01^ORU_R01|1|P|2.5|||||FRA|UNICODE UTF-8",
        "PID|||279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS||"
        "TESTNOM^ALICE^ALICE^^^^L||19790328|F|||^^^^^^BDL^^63220",
        "OBR|1|||11502-2^CR d'examens biologiques^LN",
        f"OBX|1|ED|11502-2^CR^LN||{subtype}{encoded}||||||F",
        "OBX|2|CE|MASQUE_PS^Masqué^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F",
        "OBX|3|CE|INVISIBLE_PATIENT^Invisible^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F",
    ]
    return separator.join(segments).encode("utf-8")


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"])
def test_e1_hl7_segment_separators(separator: str, kit: type[Kit]) -> None:
    result = read_hl7v2(_message(kit.cda(), separator=separator))
    assert result.problems == ()
    (document,) = result.documents
    assert document.metadata.visibility == (VisibilityFlag.MASQUE_PS,)
    assert document.rendition == kit.TINY_PDF


@pytest.mark.parametrize("subtype", ["^text^XML^Base64^", "^TEXT^xml^BASE64^", "^^XML^base64^"])
def test_e1_hl7_ed_subtype_in_any_case(subtype: str, kit: type[Kit]) -> None:
    (document,) = read_hl7v2(_message(kit.cda(), subtype=subtype)).documents
    assert document.metadata.type_code == "11502-2"


def test_e3_hl7_pid_patient_completes_a_cda_without_ins(kit: type[Kit]) -> None:
    result = read_hl7v2(_message(kit.cda(ins=None)))
    assert result.problems == ()
    (document,) = result.documents
    patient = document.metadata.patient
    assert patient is not None
    assert patient.ins == "279035121518989"
    assert patient.birth_family_name == "TESTNOM"
    assert patient.birthplace_code == "63220"
    assert patient.missing_traits() == ()


def test_e3_hl7_pid_and_cda_patients_differ(kit: type[Kit]) -> None:
    other = "185012A123456"
    other_ins = f"{other}{97 - int(other.replace('2A', '19')) % 97:02d}"
    result = read_hl7v2(_message(kit.cda(ins=other_ins)))
    assert kit.codes(result) == {ProblemCode.METADATA_MISMATCH}
    (document,) = result.documents
    assert document.metadata.patient is not None
    assert document.metadata.patient.ins == other_ins


def test_e1_hl7_base64_wrapped_over_lines(kit: type[Kit]) -> None:
    message = _message(kit.cda()).decode()
    head, _, tail = message.partition("^TEXT^XML^Base64^")
    payload, _, rest = tail.partition("|")
    wrapped = "\n".join(payload[i : i + 76] for i in range(0, len(payload), 76))
    result = read_hl7v2(f"{head}^TEXT^XML^Base64^{wrapped}|{rest}".encode())
    assert result.problems == ()
    assert len(result.documents) == 1


def test_e1_hl7_pdf_in_obx(kit: type[Kit]) -> None:
    encoded = base64.b64encode(kit.TINY_PDF).decode()
    message = (
        "MSH|^~\\&|A|B|C|D|202401041600||ORU^R01|1|P|2.5\r"
        f"OBX|1|ED|11502-2^CR^LN||^APPLICATION^PDF^Base64^{encoded}||||||F"
    ).encode()
    (document,) = read_hl7v2(message).documents
    assert document.mime_type == "application/pdf"
    assert document.content == kit.TINY_PDF


def test_e6_hl7_not_hl7(kit: type[Kit]) -> None:
    for data in (b"", b"hello", b"MSH", b"MSHA^~\\&|x", b"\x00\x01"):
        result = read_hl7v2(data)
        kit.assert_typed(result)
        assert kit.codes(result) == {ProblemCode.UNSUPPORTED_FORMAT}


def test_j2_hl7_problems_do_not_quote_the_message(
    sample_bytes: Callable[[str], bytes],
) -> None:
    for name in (ORU, MDM_FULL, MDM_SHORT):
        result = read_hl7v2(sample_bytes(name), file_name="m.hl7")
        for problem in result.problems:
            assert "PAT-TROIS" not in f"{problem.message} {problem.where}"
            assert "XDM/1.0/DDM" not in f"{problem.message} {problem.where}"


def test_e1_hl7_batch_headers_are_skipped(kit: type[Kit]) -> None:
    batch = b"FHS|^~\\&|LAB\rBHS|^~\\&|LAB\r" + _message(kit.cda()) + b"\rBTS|1\rFTS|1"
    result = read_hl7v2(batch)
    assert result.problems == ()
    assert len(result.documents) == 1
