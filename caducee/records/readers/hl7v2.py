"""HL7 v2 reader: CDA documents carried in ORU^R01 and MDM^T02 messages (CI-SIS).

Labs, imaging systems and MSSanté platforms send a CDA document inside an HL7 v2 message:
an ``OBX`` of type ED whose value is ``^TEXT^XML^Base64^<CDA>`` (any case). The CDA goes
through the CDA reader; the message adds what the CDA cannot say: the French ``MetaDMPMSS``
flags (``OBX … MASQUE_PS^…^MetaDMPMSS||Y``) that set a document's visibility (spec E5), and
the patient of ``PID`` (INS in PID-3, traits in PID-5/7/8/11) when the CDA names none.

Messages met in practice break the standard in small ways, and the reader copes: segments
separated by LF or CRLF instead of CR (normalised before the ``hl7`` package sees them),
base64 without its ``=`` padding, and a broken base64 in another OBX (a mail body), which
only yields a problem. An acknowledgement or any message without a document yields
``NO_DOCUMENT``, not an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

import hl7

from caducee.records.model import (
    DEFAULT_LIMITS,
    INS_OIDS,
    Document,
    PatientIdentity,
    Problem,
    ProblemCode,
    ReaderLimits,
    ReadResult,
    SourceFormat,
    VisibilityFlag,
)
from caducee.records.readers.cda import (
    clean,
    decode_base64_lenient,
    identity_problems,
    parse_hl7_date,
    read_cda,
)

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_VISIBILITY_CODES = {
    "MASQUE_PS": VisibilityFlag.MASQUE_PS,
    "INVISIBLE_PATIENT": VisibilityFlag.INVISIBLE_PATIENT,
    "INVISIBLE_REP_LEGAUX": VisibilityFlag.INVISIBLE_REPRESENTANTS_LEGAUX,
    "INVISIBLE_REPRESENTANTS_LEGAUX": VisibilityFlag.INVISIBLE_REPRESENTANTS_LEGAUX,
}
_META_SYSTEM = "METADMPMSS"


@dataclass(frozen=True, slots=True)
class _Encoding:
    """The delimiters a message declares in MSH-1 and MSH-2."""

    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str

    @classmethod
    def of(cls, first_segment: str) -> _Encoding | None:
        if len(first_segment) < 8 or not first_segment.startswith("MSH"):
            return None
        field, chars = first_segment[3], first_segment[4:8]
        if field.isalnum() or field.isspace() or len(set(field + chars)) != 5:
            return None
        return cls(field, chars[0], chars[1], chars[2], chars[3])

    def unescape(self, text: str) -> str:
        if self.escape not in text:
            return text
        replacements = {
            "F": self.field,
            "S": self.component,
            "R": self.repetition,
            "E": self.escape,
            "T": self.subcomponent,
        }
        pattern = re.escape(self.escape) + r"([FSRET])" + re.escape(self.escape)
        return re.sub(pattern, lambda match: replacements[match.group(1)], text)


def _segments(text: str, encoding: _Encoding) -> list[str]:
    """Split on any line break; a line that does not start a segment continues the last."""
    segment_start = re.compile(r"[A-Z][A-Z0-9]{2}(" + re.escape(encoding.field) + r"|$)")
    segments: list[str] = []
    for line in _LINE_BREAK.split(text):
        if not line.strip():
            continue
        if segment_start.match(line) or not segments:
            segments.append(line)
        else:
            segments[-1] += line
    return segments


def _decode_text(data: bytes) -> str:
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _skip_batch_headers(text: str) -> str:
    """Start at the first MSH of a file or batch (FHS/BHS headers carry no document)."""
    if not text.startswith(("FHS", "BHS")):
        return text
    position = text.find("MSH")
    return text[position:] if position >= 0 else text


class _Segment:
    """One parsed segment, with fields numbered as in the standard (MSH-9 is ``field(9)``)."""

    def __init__(self, parsed: Iterable[object], encoding: _Encoding) -> None:
        self._fields = [str(value) for value in parsed]
        self._encoding = encoding

    @property
    def name(self) -> str:
        return self._fields[0] if self._fields else ""

    def field(self, number: int) -> str:
        return self._fields[number] if number < len(self._fields) else ""

    def repetitions(self, number: int) -> list[str]:
        return self.field(number).split(self._encoding.repetition)

    def components(self, value: str) -> list[str]:
        return value.split(self._encoding.component)

    def component(self, value: str, index: int) -> str | None:
        parts = self.components(value)
        return clean(self._encoding.unescape(parts[index])) if index < len(parts) else None

    def subcomponent(self, value: str, index: int, sub_index: int) -> str | None:
        parts = self.components(value)
        if index >= len(parts):
            return None
        subparts = parts[index].split(self._encoding.subcomponent)
        return clean(subparts[sub_index]) if sub_index < len(subparts) else None


def _parse(segments: list[str], encoding: _Encoding) -> list[_Segment] | None:
    try:
        message = hl7.parse("\r".join(segments))
        return [_Segment(segment, encoding) for segment in message]
    except (hl7.ParseException, ValueError, IndexError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# Segments


def _patient(pid: _Segment) -> PatientIdentity:
    ins = ins_oid = None
    for identifier in pid.repetitions(3):
        oid = pid.subcomponent(identifier, 3, 1)
        if oid in INS_OIDS and pid.component(identifier, 0):
            ins, ins_oid = pid.component(identifier, 0), oid
            break
    names = pid.repetitions(5)
    legal = next((n for n in names if pid.component(n, 6) == "L"), names[0])
    used = next((n for n in names if pid.component(n, 6) == "D"), None)
    birthplace = next(
        (pid.component(a, 8) for a in pid.repetitions(11) if pid.component(a, 6) == "BDL"), None
    )
    return PatientIdentity(
        ins=ins,
        ins_oid=ins_oid,
        birth_family_name=pid.component(legal, 0),
        given_name=pid.component(legal, 1),
        birth_date=parse_hl7_date(pid.field(7)),
        sex=clean(pid.field(8)),
        birthplace_code=birthplace,
        family_name=pid.component(used, 0) if used else pid.component(legal, 0),
    )


def _set_id(obx: _Segment, position: int) -> str:
    set_id = obx.field(1).strip()
    return f"OBX-{set_id if set_id.isdigit() else position}"


@dataclass
class _Findings:
    documents: list[Document]
    problems: list[Problem]
    visibility: list[VisibilityFlag]


def _read_ed(
    obx: _Segment, where: str, stem: str, findings: _Findings, limits: ReaderLimits
) -> None:
    value = obx.field(5)
    subtype = (obx.component(value, 2) or "").upper()
    encoding = (obx.component(value, 3) or "").upper()
    if encoding != "BASE64":
        return
    parts = obx.components(value)
    payload = parts[4] if len(parts) > 4 else ""
    decoded = decode_base64_lenient(payload)
    if decoded is None:
        findings.problems.append(Problem(ProblemCode.BAD_BASE64, "OBX value is not base64", where))
        return
    file_name = f"{stem}_{where}"
    if subtype == "XML":
        result = read_cda(decoded, file_name=f"{file_name}.xml", limits=limits)
        findings.documents += result.documents
        findings.problems += result.problems
    elif subtype == "PDF":
        if decoded.startswith(b"%PDF-"):
            pdf = Document(
                content=decoded, file_name=f"{file_name}.pdf", mime_type="application/pdf"
            )
            findings.documents.append(pdf)
        else:
            message = "OBX value declared PDF is not a PDF"
            findings.problems.append(Problem(ProblemCode.BAD_VALUE, message, where))


def _read_flag(obx: _Segment, findings: _Findings) -> None:
    observation = obx.field(3)
    if (obx.component(observation, 2) or "").upper() != _META_SYSTEM:
        return
    flag = _VISIBILITY_CODES.get((obx.component(observation, 0) or "").upper())
    if flag is not None and (obx.component(obx.field(5), 0) or "").upper() == "Y":
        findings.visibility.append(flag)


def _with_message_context(
    document: Document, findings: _Findings, pid_patient: PatientIdentity | None, where: str
) -> Document:
    metadata = document.metadata
    visibility = tuple(dict.fromkeys(metadata.visibility + tuple(findings.visibility)))
    patient = metadata.patient
    cda_ins = patient.ins if patient else None
    pid_ins = pid_patient.ins if pid_patient else None
    if cda_ins and pid_ins and cda_ins != pid_ins:
        message = "PID INS differs from the CDA INS"
        findings.problems.append(Problem(ProblemCode.METADATA_MISMATCH, message, where))
    if not cda_ins and pid_ins:
        findings.problems = [
            p
            for p in findings.problems
            if not (p.where == document.file_name and p.code == ProblemCode.NO_INS)
        ]
        findings.problems += identity_problems(pid_patient, document.file_name)
        patient = pid_patient
    return replace(document, metadata=replace(metadata, visibility=visibility, patient=patient))


def read_hl7v2(
    data: bytes, *, file_name: str = "message.hl7", limits: ReaderLimits = DEFAULT_LIMITS
) -> ReadResult:
    """Read the documents an HL7 v2 message carries, with their visibility flags."""
    if len(data) > limits.max_input_bytes:
        problem = Problem(ProblemCode.TOO_LARGE, "attachment exceeds the size limit", file_name)
        return ReadResult.refused(SourceFormat.HL7V2, problem)
    text = _skip_batch_headers(_decode_text(data).lstrip())
    encoding = _Encoding.of(text[:8])
    if encoding is None:
        problem = Problem(ProblemCode.UNSUPPORTED_FORMAT, "not an HL7 v2 message", file_name)
        return ReadResult.refused(SourceFormat.HL7V2, problem)
    segments = _parse(_segments(text, encoding), encoding)
    if segments is None:
        problem = Problem(ProblemCode.NOT_WELL_FORMED, "HL7 message could not be parsed", file_name)
        return ReadResult.refused(SourceFormat.HL7V2, problem)
    stem = file_name.rpartition(".")[0] or file_name
    findings = _Findings(documents=[], problems=[], visibility=[])
    pid_patient = None
    for position, segment in enumerate(segments, start=1):
        if segment.name == "PID" and pid_patient is None:
            pid_patient = _patient(segment)
        elif segment.name == "OBX":
            where = _set_id(segment, position)
            if segment.field(2).strip().upper() == "ED":
                _read_ed(segment, where, stem, findings, limits)
            else:
                _read_flag(segment, findings)
    documents = [
        _with_message_context(document, findings, pid_patient, file_name)
        for document in findings.documents
    ]
    if not documents:
        message = "HL7 message carries no document"
        findings.problems.append(Problem(ProblemCode.NO_DOCUMENT, message, file_name))
    return ReadResult(
        documents=tuple(documents), problems=tuple(findings.problems), format=SourceFormat.HL7V2
    )
