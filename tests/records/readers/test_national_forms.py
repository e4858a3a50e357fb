"""The readers read the national formats the way their authors mean them (#14).

E4: HL7 v2 deletion requests (``OBX-11 = D``, ``ORC-1 = CA``, ``MDM^T04``) are withdrawal
requests, never documents. E5: visibility flags in every form the CI-SIS volets have used,
and an ambiguous one fails safe. E3: a PID naming another INS than the CDA is kept as an
envelope patient for the identity check. E1: an auto-presentable CDA is read through the
``ClinicalDocument`` it embeds.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from caducee.records.model import ProblemCode, SourceFormat, VisibilityFlag, visibility_flag
from caducee.records.readers import read_attachment, read_cda
from caducee.records.readers.hl7v2 import read_hl7v2

if TYPE_CHECKING:
    from tests.records.readers.conftest import Kit

HL7 = "ansforge-hl7V2-exemples"
MDM_DEL_V21 = f"{HL7}/Trans_Doc_V2.1_MDM_Suppression/message_MDM_CR_Radio_DEL_N1.er7"
MDM_DEL_V20 = f"{HL7}/Trans_Doc_V2.0_MDM_Suppression/message_MDM_CR_Radio_DEL_N1.er7"
ORU_DEL_V20 = f"{HL7}/Trans_Doc_V2.0_ORU_Suppression/message_ORU_CR_Bio_DEL_N1_N3.er7"
MDM_V12 = f"{HL7}/Trans_Doc_V1.2_MDM/message.hl7"
AUTO_PRESENTABLE = "ansforge-TestContenuCDA-3-0/ExemplesCDA/BIO-CR-BIO_2021.01_Auto-Presentable.xml"
RADIO_V2 = "1.2.250.1.71.4.2.2.120456789.71024000082"
IP = VisibilityFlag.INVISIBLE_PATIENT
IRL = VisibilityFlag.INVISIBLE_REPRESENTANTS_LEGAUX
PID = (
    "PID|||279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS||"
    "TESTNOM^ALICE^ALICE^^^^L||19790328|F|||^^^^^^BDL^^63220"
)


def _message(
    cda: bytes,
    *,
    event: str = "ORU^R01^ORU_R01",
    orc: str = "NW",
    status: str = "F",
    flags: tuple[str, ...] = (),
    txa: str | None = None,
) -> bytes:
    encoded = base64.b64encode(cda).decode()
    segments = [
        f"MSH|^~\\&|LAB|FAC|PFI|FAC|202401041600||{event}|1|P|2.5|||||FRA|UNICODE UTF-8",
        PID,
        f"ORC|{orc}|",
        "OBR|1|||11502-2^CR d'examens biologiques^LN",
        *([txa] if txa else []),
        f"OBX|1|ED|11502-2^CR^LN||^TEXT^XML^Base64^{encoded}||||||{status}",
        *(f"OBX|{n}|CE|{flag}||||||F" for n, flag in enumerate(flags, start=2)),
    ]
    return "\r".join(segments).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# E4: deletion requests


def test_e4_hl7_deletion_sample_is_a_withdrawal_request_not_a_document(
    sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    result = read_hl7v2(sample_bytes(MDM_DEL_V21), file_name="del.er7")
    kit.assert_typed(result)
    assert result.documents == ()
    (request,) = result.withdrawals
    assert request.metadata.document_id == RADIO_V2
    assert request.metadata.patient is not None
    assert request.metadata.patient.ins == "279035121518989"
    assert request.metadata.author is not None
    assert request.metadata.author.national_id == "801234564895"
    assert result.problems == ()


@pytest.mark.parametrize(
    ("event", "orc", "status", "consistent"),
    [
        ("MDM^T04^MDM_T02", "CA", "D", True),  # MDM, as the volet V2.1 writes it
        ("ORU^R01^ORU_R01", "CA", "D", True),  # ORU, V2.1
        ("ORU^R01^ORU_R01", "SC", "D", True),  # ORU, V2.0: OBX-11 alone
        ("ORU^R01^ORU_R01", "CA", "F", False),  # ORC-1 says cancel, OBX-11 does not
        ("MDM^T04^MDM_T02", "NW", "F", False),  # the trigger alone
    ],
)
def test_e4_hl7_deletion_markers(
    event: str, orc: str, status: str, consistent: bool, kit: type[Kit]
) -> None:
    result = read_hl7v2(_message(kit.cda(), event=event, orc=orc, status=status))
    assert result.documents == ()
    (request,) = result.withdrawals
    assert request.metadata.document_id == "1.2.250.1.999.1.1"
    assert request.metadata.set_id == "1.2.250.1.999.1"
    mismatch = ProblemCode.METADATA_MISMATCH in kit.codes(result)
    assert mismatch is not consistent


def test_e4_hl7_initial_and_replacement_are_documents(kit: type[Kit]) -> None:
    for event, orc, status in (("MDM^T02^MDM_T02", "NW", "F"), ("MDM^T10^MDM_T02", "RO", "C")):
        result = read_hl7v2(_message(kit.cda(), event=event, orc=orc, status=status))
        assert len(result.documents) == 1 and result.withdrawals == ()


def test_e4_hl7_short_deletion_names_its_document_by_txa_12(
    sample_bytes: Callable[[str], bytes],
) -> None:
    result = read_hl7v2(sample_bytes(MDM_DEL_V20), file_name="del.er7")
    (request,) = result.withdrawals
    assert request.metadata.document_id == "1.2.250.1.71.4.2.2.120456789.A71024000082"
    assert request.metadata.type_code == "18748-4"
    assert request.metadata.author is not None
    assert request.metadata.author.national_id == "801234564895"


def test_e4_hl7_txa_12_in_ei_form_is_root_and_extension(kit: type[Kit]) -> None:
    txa = "TXA|1|11502-2|TEXT|202401041600||||||||DOC42^^1.2.250.1.999^ISO"
    placeholder = b"not a CDA"
    result = read_hl7v2(_message(placeholder, status="D", txa=txa))
    (request,) = result.withdrawals
    assert request.metadata.document_id == "1.2.250.1.999^DOC42"


def test_e4_hl7_deletion_naming_no_document(
    sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    result = read_hl7v2(sample_bytes(ORU_DEL_V20), file_name="del.er7")
    (request,) = result.withdrawals
    assert request.metadata.document_id is None
    assert ProblemCode.WITHDRAWAL_WITHOUT_ID in kit.codes(result)
    assert ProblemCode.NO_DOCUMENT not in kit.codes(result)


# ---------------------------------------------------------------------------------------------
# E5: visibility flags in every form


@pytest.mark.parametrize(
    "flag",
    [
        "INVISIBLE_PATIENT^Invisible^MetaDMPMSS||Y^^expandedYes-NoIndicator",  # V2.1
        "INVISIBLE_PATIENT^Invisible^MetaDMPMSS||Y^^HL70136",  # V2.0
        "INVISIBLE_PATIENT^Document Non Visible par le patient||Y",  # V1.2: no coding system
        "INVISIBLE_PATIENT^Invisible^1.2.250.1.213.1.1.4.13||Y",  # TRE_A07 OID as the system
        "invisible_patient^Invisible^metadmpmss||y",  # case
        "VISIBILITE^Visibilite||INVISIBLE_PATIENT",  # the code as the value
    ],
)
def test_e5_hl7_invisible_patient_in_every_form(flag: str, kit: type[Kit]) -> None:
    result = read_hl7v2(_message(kit.cda(), flags=(flag,)))
    assert result.problems == ()
    (document,) = result.documents
    assert document.metadata.visibility == (IP,)


@pytest.mark.parametrize(
    "code", ["INVISIBLE_REP_LEGAUX", "INVISIBLE_REPRESENTANTS_LEGAUX", "Invisible-Rep-Legaux"]
)
def test_e5_hl7_representatives_flag_in_both_spellings(code: str, kit: type[Kit]) -> None:
    (document,) = read_hl7v2(_message(kit.cda(), flags=(f"{code}^x||Y",))).documents
    assert document.metadata.visibility == (IRL,)


def test_e5_hl7_no_means_visible(kit: type[Kit]) -> None:
    flags = ("MASQUE_PS^x^MetaDMPMSS||N^^HL70136", "INVISIBLE_PATIENT^x||NON")
    result = read_hl7v2(_message(kit.cda(), flags=flags))
    assert result.problems == ()
    assert result.documents[0].metadata.visibility == ()


@pytest.mark.parametrize(
    "flags",
    [
        ("INVISIBLE_PATIENT^x^MetaDMPMSS||",),  # no value
        ("INVISIBLE_PATIENT^x^MetaDMPMSS||U^^HL70136",),  # unknown
        ("INVISIBLE_PATIENT^x||PEUT-ETRE",),  # anything else
        ("INVISIBLE_PATIENT^x^MetaDMPMSS||Y", "INVISIBLE_PATIENT^x^MetaDMPMSS||N"),  # both
        ("INVISIBLE_PATIENT^x^MetaDMPMSS||N", "INVISIBLE_PATIENT^x^MetaDMPMSS||Y"),
    ],
)
def test_e5_hl7_ambiguous_flag_fails_safe_hidden_and_says_why(
    flags: tuple[str, ...], kit: type[Kit]
) -> None:
    result = read_hl7v2(_message(kit.cda(), flags=flags), file_name="m.hl7")
    (document,) = result.documents
    assert IP in document.metadata.visibility
    ambiguous = [p for p in result.problems if p.code is ProblemCode.AMBIGUOUS_VISIBILITY]
    assert [p.where for p in ambiguous] == [document.file_name]


def test_e5_hl7_v1_2_message_flags_without_coding_system(
    sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    """The V1.2 example's OBX-1 is a placeholder: put a CDA there, read the flags as written."""
    message = sample_bytes(MDM_V12).decode("utf-8")
    placeholder = "RG9jdW1lbnQgbcOpZGljYWwgYXUgZm9ybWF0IENEQQ"
    assert placeholder in message
    cda = kit.cda(ins="276037510669380", ins_oid="1.2.250.1.213.1.4.8")
    result = read_hl7v2(message.replace(placeholder, base64.b64encode(cda).decode()).encode())
    (document,) = result.documents
    # MASQUE_PS N, INVISIBLE_PATIENT Y, INVISIBLE_REPRESENTANTS_LEGAUX Y (no MetaDMPMSS)
    assert document.metadata.visibility == (IP, IRL)


@pytest.mark.parametrize(
    ("code", "flag"),
    [
        ("MASQUE_PS", VisibilityFlag.MASQUE_PS),
        ("masque_ps", VisibilityFlag.MASQUE_PS),
        (" INVISIBLE_PATIENT ", IP),
        ("INVISIBLE_REP_LEGAUX", IRL),
        ("INVISIBLE_REPRESENTANTS_LEGAUX", IRL),
        ("N", None),
        ("", None),
        (None, None),
    ],
)
def test_e5_visibility_codes_in_every_spelling(code: str | None, flag: VisibilityFlag) -> None:
    assert visibility_flag(code) == flag


def test_e5_cda_confidentiality_code_carrying_a_visibility_flag(kit: type[Kit]) -> None:
    cda = kit.cda().replace(
        b'<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>',
        b'<confidentialityCode code="INVISIBLE_PATIENT" codeSystem="1.2.250.1.213.1.1.4.13"/>',
    )
    (document,) = read_cda(cda).documents
    assert document.metadata.visibility == (IP,)
    assert document.metadata.confidentiality is None


# ---------------------------------------------------------------------------------------------
# E3: PID and CDA name the patient


def test_e3_hl7_pid_other_ins_is_kept_as_envelope_patient(kit: type[Kit]) -> None:
    other = "185012A123456"
    other_ins = f"{other}{97 - int(other.replace('2A', '19')) % 97:02d}"
    (document,) = read_hl7v2(_message(kit.cda(ins=other_ins))).documents
    assert document.metadata.patient is not None
    assert document.metadata.patient.ins == other_ins
    (envelope,) = document.metadata.envelope_patients
    assert envelope.ins == "279035121518989"


def test_e3_hl7_pid_same_ins_recorded_as_agreeing(kit: type[Kit]) -> None:
    result = read_hl7v2(_message(kit.cda()))
    assert result.problems == ()
    (envelope,) = result.documents[0].metadata.envelope_patients
    assert envelope.ins == result.documents[0].metadata.patient.ins  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# E1: auto-presentable CDA


def test_e1_auto_presentable_cda_read_through_its_clinical_document(
    sample_bytes: Callable[[str], bytes], kit: type[Kit]
) -> None:
    data = sample_bytes(AUTO_PRESENTABLE)
    result = read_attachment("cr-bio.xml", "text/xml", data)
    kit.assert_typed(result)
    assert result.format is SourceFormat.CDA and result.problems == ()
    (document,) = result.documents
    assert document.mime_type == "text/xml"
    # The content is the embedded ClinicalDocument, a plain CDA that reads the same again.
    again = read_cda(document.content)
    assert again.problems == ()
    assert again.documents[0].metadata == document.metadata
    assert b"xsl:stylesheet" not in document.content.split(b">", 2)[1]
    assert document.metadata.type_code == "11502-2"
    assert document.metadata.document_id == "1.2.250.1.213.1.1.1.55.2021.1.1"
    # Its rendition is the auto-presentable file as received: it displays itself.
    assert document.rendition == data
    assert document.rendition_mime_type == "text/xml"


@pytest.mark.parametrize("count", [0, 2])
def test_e6_stylesheet_without_exactly_one_clinical_document_is_refused(
    count: int, kit: type[Kit]
) -> None:
    cda = kit.cda().split(b"?>", 2)[-1]
    wrapper = (
        b'<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        + b"<data>"
        + cda * count
        + b"</data></xsl:stylesheet>"
    )
    result = read_cda(wrapper)
    assert result.documents == ()
    assert kit.codes(result) == {ProblemCode.UNSUPPORTED_FORMAT}
