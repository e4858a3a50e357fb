"""E1, E2, E4, E5: every real public example of the corpus, read as its authors mean it.

One row per sample file under ``tests/samples`` (see SOURCES.md there) that a report reader
is meant to read: what it is (a document to file, a deletion request, or nothing), and the
fields the record keeps — type code, date, author id, INS, version, the version it
replaces, the author's visibility flags and whether it withdraws a document. The table is
the reference: a reader change that alters how a national example is read fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pytest

from caducee.records.model import DocumentMetadata, ProblemCode, ReadResult
from caducee.records.readers import read_attachment

CDA = "ansforge-TestContenuCDA-3-0/ExemplesCDA"
HL7 = "ansforge-hl7V2-exemples"
DEMO_INS = "279035121518989"
IP, IRL = "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"
RADIO_V1 = "1.2.250.1.71.4.2.2.120456789.71024000081"
RADIO_V2 = "1.2.250.1.71.4.2.2.120456789.71024000082"


@dataclass(frozen=True)
class Expected:
    """What one sample holds. ``kind``: ``document``, ``withdrawal`` or ``none``."""

    kind: str
    type_code: str | None = None
    day: str | None = None
    author: str | None = None
    ins: str | None = None
    version: int | None = None
    replaces: str | None = None
    visibility: tuple[str, ...] = ()
    document_id: str | None = None
    problems: frozenset[ProblemCode] = frozenset()


def _problems(*codes: ProblemCode) -> frozenset[ProblemCode]:
    return frozenset(codes)


CORPUS: dict[str, Expected] = {
    # ANS TestContenuCDA: CDA R2 N1 and N3, and an auto-presentable CR-BIO (#14 point 3)
    f"{CDA}/DOC_NON_STRUCTURE_CDA-R2-N1.xml": Expected(
        "document",
        "11502-2",
        "2021-04-01",
        "801234534765",
        DEMO_INS,
        1,
        None,
        (),
        "1.3.6.1.4.1.19376.1.2.20.12345.1.1",
    ),
    f"{CDA}/IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml": Expected(
        "document",
        "18748-4",
        "2021-01-08",
        "801234560801",
        DEMO_INS,
        2,
        "90E1C8EC-F951-4B26-A305-A34848818DD6",
        (),
        "1.2.250.1.213.1.1.1.45.2024.2.1",
    ),
    f"{CDA}/BIO-CR-BIO_2024.01_TSH_1.xml": Expected(
        "document",
        "11502-2",
        "2021-04-01",
        "801234534765",
        DEMO_INS,
        1,
        None,
        (),
        "1.2.250.1.213.1.1.1.55.2024.9.1",
    ),
    f"{CDA}/BIO-CR-BIO_2024.01_CR-2nde-intention-PDF.xml": Expected(
        "document",
        "11502-2",
        "2024-01-04",
        "801234534765",
        DEMO_INS,
        1,
        None,
        (),
        "1.2.250.1.213.1.1.1.55.2024.1.1",
    ),
    f"{CDA}/LDL-SES_2022.01.xml": Expected(
        "document",
        "11490-0",
        "2019-12-03",
        "801234567897",
        DEMO_INS,
        1,
        None,
        (),
        "1.2.250.1.213.1.1.1.29.2022.1.1",
    ),
    f"{CDA}/BIO-CR-BIO_2021.01_Auto-Presentable.xml": Expected(
        "document",
        "11502-2",
        "2021-04-01",
        "801234534765",
        DEMO_INS,
        1,
        None,
        (),
        "1.2.250.1.213.1.1.1.55.2021.1.1",
    ),
    # hl7V2-exemples, volet "transmission au LPS … courriel MSSanté" V1.1 (MDM)
    f"{HL7}/MDM_Transmission_initiale/CR_Radio_CDAN1_v1.XML": Expected(
        "document", "18748-4", "2005-04-11", "801234564895", DEMO_INS, 1, None, (), RADIO_V1
    ),
    f"{HL7}/MDM_Transmission_initiale/message_MDM__LPS_MSS_CR_Radio_INIT_N1_Base64.er7": Expected(
        "document",
        "18748-4",
        "2005-04-11",
        "801234564895",
        DEMO_INS,
        1,
        None,
        (IP, IRL),
        RADIO_V1,
    ),
    f"{HL7}/MDM_Transmission_initiale/message_MDM__LPS_MSS_CR_Radio_INIT_N1.er7": Expected(
        "none", problems=_problems(ProblemCode.NOT_WELL_FORMED, ProblemCode.NO_DOCUMENT)
    ),
    f"{HL7}/MDM_Transmission_initiale/ack.er7": Expected(
        "none", problems=_problems(ProblemCode.NO_DOCUMENT)
    ),
    # volet "transmission de documents CDA en HL7v2" V2.1: initial, replacement, deletions
    f"{HL7}/ORU_Transmission_initiale/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7": Expected(
        "document",
        "11502-2",
        "2021-01-04",
        "801234534765",
        DEMO_INS,
        1,
        None,
        (),
        "1.2.250.1.213.1.1.9",
        _problems(ProblemCode.BAD_BASE64),
    ),
    f"{HL7}/Trans_Doc_V2.1_MDM_Transmission_initiale/message_MDM_CR_Radio_INIT_N1_Base64.er7": (
        Expected(
            "document",
            "18748-4",
            "2005-04-11",
            "801234564895",
            DEMO_INS,
            1,
            None,
            (IP, IRL),
            RADIO_V1,
        )
    ),
    f"{HL7}/Trans_Doc_V2.1_MDM_Remplacement/message_MDM_CR_Radio_RPLC_N1.er7": Expected(
        "document", "18748-4", "2005-04-11", "801234564895", DEMO_INS, 2, RADIO_V1, (), RADIO_V2
    ),
    f"{HL7}/Trans_Doc_V2.1_MDM_Suppression/message_MDM_CR_Radio_DEL_N1.er7": Expected(
        "withdrawal",
        "18748-4",
        "2005-04-11",
        "801234564895",
        DEMO_INS,
        2,
        RADIO_V1,
        (),
        RADIO_V2,
    ),
    # The ORU deletion example carries a CDA about another INS than its PID: E3 will refuse it.
    f"{HL7}/Trans_Doc_V2.1_ORU_Suppression/message_ORU_CR_Bio_DEL_N3_SEGUR.hl7": Expected(
        "withdrawal",
        "11502-2",
        "2021-01-04",
        "801234534765",
        "277076322082910",
        2,
        "1.2.250.1.213.1.1.10",
        (),
        "1.2.250.1.213.1.1.12",
        _problems(ProblemCode.BAD_BASE64, ProblemCode.METADATA_MISMATCH),
    ),
    # volet V2.0: short deletions whose OBX-1 is a placeholder; MDM names the document in TXA-12
    f"{HL7}/Trans_Doc_V2.0_MDM_Suppression/message_MDM_CR_Radio_DEL_N1.er7": Expected(
        "withdrawal",
        "18748-4",
        None,
        "801234564895",
        "274075176079430",
        None,
        None,
        (),
        "1.2.250.1.71.4.2.2.120456789.A71024000082",
        _problems(ProblemCode.NOT_WELL_FORMED),
    ),
    f"{HL7}/Trans_Doc_V2.0_ORU_Suppression/message_ORU_CR_Bio_DEL_N1_N3.er7": Expected(
        "withdrawal",
        None,
        None,
        None,
        "277076322082910",
        None,
        None,
        (),
        None,
        _problems(
            ProblemCode.NOT_WELL_FORMED, ProblemCode.BAD_BASE64, ProblemCode.WITHDRAWAL_WITHOUT_ID
        ),
    ),
    # volet V1.2: flags without the MetaDMPMSS coding system; OBX-1 is a placeholder
    f"{HL7}/Trans_Doc_V1.2_MDM/message.hl7": Expected(
        "none", problems=_problems(ProblemCode.NOT_WELL_FORMED, ProblemCode.NO_DOCUMENT)
    ),
    f"{HL7}/Trans_Doc_V1.2_ORU/message.hl7": Expected(
        "none", problems=_problems(ProblemCode.NOT_WELL_FORMED, ProblemCode.NO_DOCUMENT)
    ),
}


def _day(value: datetime | date | None) -> str | None:
    if value is None:
        return None
    return (value.date() if isinstance(value, datetime) else value).isoformat()


def _read(sample_bytes: Callable[[str], bytes], path: str) -> ReadResult:
    return read_attachment(path.rsplit("/", 1)[-1], None, sample_bytes(path))


@pytest.mark.parametrize("path", sorted(CORPUS), ids=lambda p: p.rsplit("/", 2)[-2][-30:])
def test_e2_e4_e5_national_corpus_table(path: str, sample_bytes: Callable[[str], bytes]) -> None:
    expected = CORPUS[path]
    result = _read(sample_bytes, path)
    assert {p.code for p in result.problems} == set(expected.problems)
    if expected.kind == "none":
        assert (result.documents, result.withdrawals) == ((), ())
        return
    withdrawal = expected.kind == "withdrawal"
    found: list[DocumentMetadata] = (
        [w.metadata for w in result.withdrawals]
        if withdrawal
        else [d.metadata for d in result.documents]
    )
    assert len(found) == 1, "one document (or one deletion request) per sample"
    assert (result.documents == ()) is withdrawal
    metadata = found[0]
    actual = Expected(
        kind="withdrawal" if result.withdrawals else "document",
        type_code=metadata.type_code,
        day=_day(metadata.effective_time),
        author=metadata.author.national_id if metadata.author else None,
        ins=metadata.patient.ins if metadata.patient else None,
        version=metadata.version,
        replaces=metadata.replaces,
        visibility=tuple(flag.value for flag in metadata.visibility),
        document_id=metadata.document_id,
        problems=expected.problems,
    )
    assert actual == expected


def test_e1_national_corpus_covers_every_vendored_report(samples_dir: Path) -> None:
    """Every HL7 v2 message and CDA example vendored is in the table (count in #14's note)."""
    root = samples_dir
    vendored = {
        str(p.relative_to(root))
        for folder in (CDA, HL7)
        for p in (root / folder).rglob("*")
        if p.suffix.lower() in (".xml", ".hl7", ".er7")
    }
    assert vendored == set(CORPUS)
    assert len(CORPUS) == 19
