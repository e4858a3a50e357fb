"""HL7 v2 reader: CDA documents carried in ORU^R01 and MDM^T02/T10/T04 messages (CI-SIS).

Labs, imaging systems and MSSanté platforms send a CDA document inside an HL7 v2 message:
an ``OBX`` of type ED whose value is ``^TEXT^XML^Base64^<CDA>`` (any case). The CDA goes
through the CDA reader; the message adds what the CDA cannot say:

- the French visibility flags (spec E5), in every form the volet has used: ``OBX …
  MASQUE_PS^…^MetaDMPMSS||Y^^expandedYes-NoIndicator`` (V2.1), ``…^MetaDMPMSS||Y^^HL70136``
  (V2.0), ``INVISIBLE_PATIENT^…||Y`` without a coding system (V1.2), the short
  ``INVISIBLE_REP_LEGAUX`` and the long ``INVISIBLE_REPRESENTANTS_LEGAUX``. A flag whose value
  is neither yes nor no (or is both) fails safe: the flag is set, and an
  ``AMBIGUOUS_VISIBILITY`` problem on the document says why;
- the patient of ``PID`` (INS in PID-3, traits in PID-5/7/8/11) when the CDA names none; when
  both name an INS, the PID's is kept as an *envelope patient* so that the identity check
  (E3) quarantines the document unless they agree;
- deletion requests (E4, volet "transmission de documents CDA en HL7v2"): ``OBX-11 = D`` on
  the OBX carrying the CDA, with ``ORC-1 = CA`` and, for MDM, the trigger ``T04``. Any of
  these marks the message a deletion (an inconsistent mix is also reported as
  ``METADATA_MISMATCH``): its CDA is not a document to file but a
  :class:`~caducee.records.model.WithdrawalRequest` naming the document to withdraw, from
  the CDA it carries or, when it carries a placeholder, from TXA-12 (unique document id).

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
    Author,
    Document,
    DocumentMetadata,
    PatientIdentity,
    Problem,
    ProblemCode,
    ReaderLimits,
    ReadResult,
    SourceFormat,
    VisibilityFlag,
    WithdrawalRequest,
    visibility_flag,
)
from caducee.records.readers.cda import (
    clean,
    decode_base64_lenient,
    identity_problems,
    parse_hl7_date,
    read_cda,
)

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_YES = frozenset({"Y", "YES", "O", "OUI", "1", "TRUE", "T"})
_NO = frozenset({"N", "NO", "NON", "0", "FALSE"})
_DELETION_RESULT_STATUS = "D"
_CANCEL_ORDER_CONTROL = "CA"
_DELETION_TRIGGER = "T04"


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
    flag_values: dict[VisibilityFlag, set[bool]]
    ambiguous_flags: list[str]


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


def _read_flag(obx: _Segment, where: str, findings: _Findings) -> None:
    """A visibility flag in any form (E5): the code in OBX-3 with or without its coding
    system (``MetaDMPMSS`` since V2.0, none in V1.2), or the code itself as the value."""
    flag = visibility_flag(obx.component(obx.field(3), 0))
    value = (obx.component(obx.field(5), 0) or "").strip().upper()
    if flag is None:
        flag = visibility_flag(value)
        if flag is None:
            return
        value = "Y"
    if value in _YES:
        findings.flag_values.setdefault(flag, set()).add(True)
    elif value in _NO:
        findings.flag_values.setdefault(flag, set()).add(False)
    else:
        findings.flag_values.setdefault(flag, set()).add(True)
        findings.ambiguous_flags.append(where)
    if findings.flag_values[flag] == {True, False}:
        findings.ambiguous_flags.append(where)
    if True in findings.flag_values[flag] and flag not in findings.visibility:
        findings.visibility.append(flag)


def _with_message_context(
    document: Document, findings: _Findings, pid_patient: PatientIdentity | None, where: str
) -> Document:
    metadata = document.metadata
    visibility = tuple(dict.fromkeys(metadata.visibility + tuple(findings.visibility)))
    if findings.ambiguous_flags:
        message = "visibility flag unreadable or contradictory: document hidden (fail safe)"
        findings.problems.append(
            Problem(ProblemCode.AMBIGUOUS_VISIBILITY, message, document.file_name)
        )
    patient = metadata.patient
    cda_ins = patient.ins if patient else None
    pid_ins = pid_patient.ins if pid_patient else None
    envelope: tuple[PatientIdentity, ...] = ()
    if cda_ins and pid_patient is not None and pid_ins:
        envelope = (pid_patient,)
        if not _same_ins(patient, pid_patient):
            message = "PID INS differs from the CDA INS"
            findings.problems.append(Problem(ProblemCode.METADATA_MISMATCH, message, where))
            findings.problems.append(
                Problem(ProblemCode.METADATA_MISMATCH, message, document.file_name)
            )
    if not cda_ins and pid_ins:
        findings.problems = [
            p
            for p in findings.problems
            if not (p.where == document.file_name and p.code == ProblemCode.NO_INS)
        ]
        findings.problems += identity_problems(pid_patient, document.file_name)
        patient = pid_patient
    return replace(
        document,
        metadata=replace(
            metadata, visibility=visibility, patient=patient, envelope_patients=envelope
        ),
    )


def _same_ins(one: PatientIdentity | None, other: PatientIdentity | None) -> bool:
    """Two identities name the same INS: same matricule, same OID when both give one."""
    if one is None or other is None or not one.ins or not other.ins:
        return False
    if one.ins.strip().upper() != other.ins.strip().upper():
        return False
    return one.ins_oid is None or other.ins_oid is None or one.ins_oid == other.ins_oid


def _is_cda_obx(obx: _Segment) -> bool:
    """The OBX that carries the CDA: type ED, subtype XML (not a mail body or a flag)."""
    if obx.field(2).strip().upper() != "ED":
        return False
    return (obx.component(obx.field(5), 2) or "").upper() == "XML"


def _txa_document_id(txa: _Segment | None) -> str | None:
    """TXA-12, the unique document number: ``root`` or ``ext^^root^ISO`` (XDS ``root^ext``)."""
    if txa is None:
        return None
    value = txa.repetitions(12)[0]
    first, universal = txa.component(value, 0), txa.component(value, 2)
    if universal and first:
        return f"{universal}^{first}"
    return first or universal


@dataclass
class _Deletion:
    """What the message says about deletion, from its three markers."""

    trigger: bool
    cancel: bool
    obx_marked: list[str]
    cda_obx: list[str]

    @property
    def requested(self) -> bool:
        return self.trigger or self.cancel or bool(self.obx_marked)

    @property
    def consistent(self) -> bool:
        """Every CDA OBX is marked ``D`` (what the volet mandates for a deletion)."""
        return bool(self.cda_obx) and set(self.obx_marked) == set(self.cda_obx)


def _withdrawals(
    deletion: _Deletion,
    documents: list[Document],
    txa: _Segment | None,
    pid_patient: PatientIdentity | None,
    findings: _Findings,
    file_name: str,
) -> list[WithdrawalRequest]:
    """The deletion requests of a message marked a deletion (E4)."""
    if not deletion.consistent:
        message = "deletion markers (OBX-11, ORC-1, MSH-9) disagree: read as a deletion"
        findings.problems.append(Problem(ProblemCode.METADATA_MISMATCH, message, file_name))
    if documents:
        return [WithdrawalRequest(where=d.file_name, metadata=d.metadata) for d in documents]
    document_id = _txa_document_id(txa)
    author_id = txa.component(txa.field(22), 0) if txa is not None else None
    metadata = DocumentMetadata(
        document_id=document_id,
        type_code=txa.component(txa.field(2), 0) if txa is not None else None,
        patient=pid_patient,
        author=Author(national_id=author_id) if author_id else None,
    )
    if document_id is None:
        message = "deletion request names no document"
        findings.problems.append(Problem(ProblemCode.WITHDRAWAL_WITHOUT_ID, message, file_name))
    return [WithdrawalRequest(where=file_name, metadata=metadata)]


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
    findings = _Findings(
        documents=[], problems=[], visibility=[], flag_values={}, ambiguous_flags=[]
    )
    pid_patient = None
    txa = None
    trigger = segments[0].component(segments[0].field(9), 1) or ""
    deletion = _Deletion(
        trigger=trigger.upper() == _DELETION_TRIGGER, cancel=False, obx_marked=[], cda_obx=[]
    )
    for position, segment in enumerate(segments, start=1):
        if segment.name == "PID" and pid_patient is None:
            pid_patient = _patient(segment)
        elif segment.name == "TXA" and txa is None:
            txa = segment
        elif segment.name == "ORC":
            if segment.field(1).strip().upper() == _CANCEL_ORDER_CONTROL:
                deletion.cancel = True
        elif segment.name == "OBX":
            where = _set_id(segment, position)
            if _is_cda_obx(segment):
                deletion.cda_obx.append(where)
                if segment.field(11).strip().upper() == _DELETION_RESULT_STATUS:
                    deletion.obx_marked.append(where)
            if segment.field(2).strip().upper() == "ED":
                _read_ed(segment, where, stem, findings, limits)
            else:
                _read_flag(segment, where, findings)
    documents = [
        _with_message_context(document, findings, pid_patient, file_name)
        for document in findings.documents
    ]
    withdrawals: list[WithdrawalRequest] = []
    if deletion.requested:
        withdrawals = _withdrawals(deletion, documents, txa, pid_patient, findings, file_name)
        documents = []
    elif not documents:
        message = "HL7 message carries no document"
        findings.problems.append(Problem(ProblemCode.NO_DOCUMENT, message, file_name))
    return ReadResult(
        documents=tuple(documents),
        problems=tuple(findings.problems),
        format=SourceFormat.HL7V2,
        withdrawals=tuple(withdrawals),
    )
