"""HPRIM reader: the French lab report formats that predate CDA, still mailed every day.

Two families share the name (document-formats.md §5.2–5.3):

- **HPRIM Médecin**, a text report for the general practitioner (Apicrypt, HPRIM Net): a
  12-line header (patient code, name, first name, address, birth date, NIR, file number,
  exam date, sender and recipient codes), free text, an optional machine part of ``RES|`` /
  ``TEX|`` lines between ``****LAB****`` and ``****FIN****``, and ``****FINFICHIER****``;
- **HPRIM Santé**, ASTM-like records ``H|``, ``P|``, ``OBR|``, ``OBX|``, ``L|`` whose
  delimiters are declared by the ``H`` record.

The document filed is the file as received (``text/x-hprim``); the reader only lifts what
the record needs from the header: patient name and birth date, exam date, sending lab.
HPRIM carries no qualified INS, so the patient never has one here. Files are Latin-1 as
often as UTF-8, headers are sometimes short, and results come in many shapes; nothing here
is strict, and a file with none of the HPRIM marks is reported as unsupported.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from caducee.records.model import (
    DEFAULT_LIMITS,
    Author,
    Document,
    DocumentMetadata,
    PatientIdentity,
    Problem,
    ProblemCode,
    ReaderLimits,
    ReadResult,
    SourceFormat,
)
from caducee.records.readers.cda import clean, parse_hl7_date, parse_hl7_time

HPRIM_MIME_TYPE = "text/x-hprim"
_MARKERS = ("****LAB****", "****FIN****", "****FINFICHIER****")
_RESULT_LINE = re.compile(r"(RES|TEX)\|")
_FRENCH_DATE = re.compile(r"(\d{2})/(\d{2})/(\d{4})")
_NIR = re.compile(r"[12378]\d{4}(\d{2}|2A|2B)\d{6}(\d{2})?")
_SENDER_CODE_WIDTH = 10
_HEADER_BIRTH_DATE_LINE = 6
_HEADER_EXAM_DATE_LINE = 9


def _decode_text(data: bytes) -> str:
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _sante_delimiters(first_line: str) -> tuple[str, str] | None:
    """Field and component separators declared by an HPRIM Santé ``H`` record."""
    if len(first_line) < 6 or first_line[0] != "H":
        return None
    field = first_line[1]
    if field.isalnum() or field.isspace():
        return None
    end = first_line.find(field, 2)
    if end not in (5, 6):
        return None
    declared = first_line[2:end]
    component = "~" if "~" in declared else ("^" if "^" in declared else declared[0])
    return field, component


def _french_date(line: str | None) -> date | None:
    match = _FRENCH_DATE.fullmatch((line or "").strip())
    if match is None:
        return None
    day, month, year = (int(group) for group in match.groups())
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _first_content_line(lines: list[str]) -> str:
    return next((line.strip() for line in lines if line.strip()), "")


def looks_like_hprim(data: bytes) -> bool:
    """Whether bytes carry the marks of an HPRIM Médecin or HPRIM Santé file."""
    lines = _decode_text(data[: 64 * 1024]).splitlines()
    if _sante_delimiters(_first_content_line(lines)) is not None:
        return True
    if any(line.strip() in _MARKERS or _RESULT_LINE.match(line) for line in lines):
        return True
    return len(lines) > _HEADER_BIRTH_DATE_LINE and bool(
        _french_date(lines[_HEADER_BIRTH_DATE_LINE])
    )


# ---------------------------------------------------------------------------------------------
# HPRIM Médecin


def _sex_from_nir(line: str) -> str | None:
    nir = line.replace(" ", "").upper()
    if not _NIR.fullmatch(nir):
        return None
    return {"1": "M", "2": "F"}.get(nir[0])


def _code_and_name(line: str) -> tuple[str | None, str | None]:
    return clean(line[:_SENDER_CODE_WIDTH]), clean(line[_SENDER_CODE_WIDTH:])


def _medecin_metadata(lines: list[str]) -> DocumentMetadata:
    header = lines[:12]
    birth_date = (
        _french_date(header[_HEADER_BIRTH_DATE_LINE])
        if len(header) > _HEADER_BIRTH_DATE_LINE
        else None
    )
    if birth_date is None:
        return DocumentMetadata(mime_type=HPRIM_MIME_TYPE)
    full_header = len(header) == 12 and _french_date(header[_HEADER_EXAM_DATE_LINE]) is not None
    patient = PatientIdentity(
        family_name=clean(header[1]),
        given_name=clean(header[2]),
        birth_date=birth_date,
        sex=_sex_from_nir(header[7]) if full_header else None,
    )
    author = None
    exam_date = None
    if full_header:
        exam_date = _french_date(header[_HEADER_EXAM_DATE_LINE])
        code, name = _code_and_name(header[10])
        author = Author(organisation_id=code, organisation_name=name) if code or name else None
    return DocumentMetadata(
        mime_type=HPRIM_MIME_TYPE, patient=patient, author=author, effective_time=exam_date
    )


# ---------------------------------------------------------------------------------------------
# HPRIM Santé


def _field(parts: list[str], number: int) -> str | None:
    """Field ``number`` of a record, numbered as in the standard (H.1 is the record type)."""
    return clean(parts[number - 1]) if 0 < number <= len(parts) else None


def _sante_metadata(
    lines: list[str], field: str, component: str
) -> tuple[DocumentMetadata, list[Problem]]:
    problems: list[Problem] = []
    header = _first_content_line(lines).split(field)
    patients = [line.split(field) for line in lines if line.startswith("P" + field)]
    author = None
    sender = _field(header, 5)
    if sender:
        code, _, name = sender.partition(component)
        author = Author(organisation_id=clean(code), organisation_name=clean(name))
    timestamp = _field(header, 14)
    effective_time: datetime | date | None = parse_hl7_time(timestamp) if timestamp else None
    patient = None
    if patients:
        record = patients[0]
        names = (_field(record, 6) or "").split(component)
        patient = PatientIdentity(
            family_name=clean(names[0]),
            given_name=clean(names[1]) if len(names) > 1 else None,
            birth_family_name=_field(record, 7),
            birth_date=parse_hl7_date(_field(record, 8)),
            sex=_field(record, 9),
        )
    distinct = {(_field(p, 6) or "", _field(p, 8) or "") for p in patients}
    if len(distinct) > 1:
        message = "HPRIM file names several patients"
        problems.append(Problem(ProblemCode.SEVERAL_PATIENTS, message))
    metadata = DocumentMetadata(
        mime_type=HPRIM_MIME_TYPE, patient=patient, author=author, effective_time=effective_time
    )
    return metadata, problems


# ---------------------------------------------------------------------------------------------
# Entry point


def read_hprim(
    data: bytes, *, file_name: str = "report.hpr", limits: ReaderLimits = DEFAULT_LIMITS
) -> ReadResult:
    """Read an HPRIM Médecin or HPRIM Santé file as one document."""
    if len(data) > limits.max_input_bytes:
        problem = Problem(ProblemCode.TOO_LARGE, "attachment exceeds the size limit", file_name)
        return ReadResult.refused(SourceFormat.HPRIM_MEDECIN, problem)
    if not looks_like_hprim(data):
        problem = Problem(ProblemCode.UNSUPPORTED_FORMAT, "not an HPRIM file", file_name)
        return ReadResult.refused(SourceFormat.HPRIM_MEDECIN, problem)
    lines = _decode_text(data).splitlines()
    delimiters = _sante_delimiters(_first_content_line(lines))
    if delimiters is not None:
        content_lines = [line.strip() for line in lines if line.strip()]
        metadata, problems = _sante_metadata(content_lines, *delimiters)
        problems = [Problem(p.code, p.message, file_name) for p in problems]
        source_format = SourceFormat.HPRIM_SANTE
    else:
        metadata, problems = _medecin_metadata(lines), []
        source_format = SourceFormat.HPRIM_MEDECIN
    document = Document(
        content=data, file_name=file_name, mime_type=HPRIM_MIME_TYPE, metadata=metadata
    )
    return ReadResult(documents=(document,), problems=tuple(problems), format=source_format)
