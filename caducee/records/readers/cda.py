"""CDA R2 reader: the header of a French (CI-SIS) clinical document, and its level-1 body.

The header tells the record who the document is about (INS and identity traits, needed for
the identity check of spec E3), who wrote it, what it is (type code, title, date,
confidentiality) and which version it is (setId, versionNumber, RPLC parent, E4). A level-1
(N1) document carries its human-readable body as base64 in ``nonXMLBody``; it is decoded as
the document's rendition. Level-3 bodies are kept as they are in the content (their embedded
``observationMedia`` PDFs are not extracted).

Real documents are messy: no XML declaration, a misspelled xsi namespace, processing
instructions, CRLF, base64 on one 500 kB line, times with or without offsets and with any
precision. The reader accepts all of that, and reports what is missing as problems rather
than refusing the document. The base64 and HL7 time helpers here are shared with the HL7 v2
and XDS metadata readers.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lxml import etree

from caducee.records.model import (
    DEFAULT_LIMITS,
    IDNATPS_OID,
    IDNATSTRUCT_OID,
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
    visibility_flag,
)
from caducee.records.xmlsafe import all_text, local_name, namespace_of, parse_xml

CDA_NAMESPACE = "urn:hl7-org:v3"
CDA_MIME_TYPE = "text/xml"

_TS_PATTERN = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?"
)
_BASE64_WHITESPACE = re.compile(rb"[ \t\r\n]+")
_BASE64_ALPHABET = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


# ---------------------------------------------------------------------------------------------
# Shared helpers: base64 and HL7 timestamps


def decode_base64_lenient(text: str | bytes) -> bytes | None:
    """Decode base64 that may be wrapped or lack its ``=`` padding; ``None`` when invalid."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    raw = _BASE64_WHITESPACE.sub(b"", raw)
    if not _BASE64_ALPHABET.fullmatch(raw):
        return None
    unpadded = raw.rstrip(b"=")
    if len(unpadded) % 4 == 1:
        return None
    padded = unpadded + b"=" * (-len(unpadded) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


@cache
def french_time() -> tzinfo:
    """The zone a time without offset is read in: French legal time."""
    try:
        return ZoneInfo("Europe/Paris")
    except ZoneInfoNotFoundError:
        return timezone(timedelta(hours=1), "CET")


def parse_hl7_time(
    value: str | None, *, default_zone: tzinfo | None = None
) -> datetime | date | None:
    """Read an HL7 TS/DTM value (``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]``).

    Returns an aware datetime when a time of day is given (in ``default_zone``, French time by
    default, when the value has no offset), a date otherwise (month and day default to 1 for
    year or month precision), and ``None`` when the value is not a valid time.
    """
    if value is None:
        return None
    match = _TS_PATTERN.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        if hour is None:
            return date(int(year), int(month or 1), int(day or 1))
        zone: tzinfo = default_zone or french_time()
        if sign is not None:
            if int(off_h) > 14 or int(off_m) > 59:
                return None
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            zone = timezone(-offset if sign == "-" else offset)
        micros = int((fraction or "0").ljust(6, "0"))
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute or 0),
            int(second or 0),
            micros,
            tzinfo=zone,
        )
    except ValueError:
        return None


def parse_hl7_date(value: str | None) -> date | None:
    """A full calendar date (``YYYYMMDD``, any time part ignored); ``None`` otherwise."""
    if value is None or len(value.strip()) < 8:
        return None
    parsed = parse_hl7_time(value.strip()[:8])
    return parsed if isinstance(parsed, date) else None


def ins_key_is_valid(ins: str) -> bool:
    """Check the 2-digit key of a 15-character INS/NIR (Corsica 2A/2B count as 19/18)."""
    if len(ins) != 15 or not ins[13:].isdigit():
        return False
    nir = ins[:13].upper()
    department = nir[5:7]
    if department == "2A":
        nir = nir[:5] + "19" + nir[7:]
    elif department == "2B":
        nir = nir[:5] + "18" + nir[7:]
    if not nir.isdigit():
        return False
    return 97 - int(nir) % 97 == int(ins[13:])


def identity_problems(patient: PatientIdentity | None, where: str | None) -> list[Problem]:
    """The E3 findings on a document's patient: no INS, an invalid INS, missing traits."""
    if patient is None or not patient.ins:
        return [Problem(ProblemCode.NO_INS, "document names no patient INS", where)]
    problems = []
    if not ins_key_is_valid(patient.ins):
        problems.append(Problem(ProblemCode.INS_INVALID, "INS has a wrong length or key", where))
    missing = patient.missing_traits()
    if missing:
        message = "INS identity traits missing: " + ", ".join(missing)
        problems.append(Problem(ProblemCode.INS_INCOMPLETE, message, where))
    return problems


# ---------------------------------------------------------------------------------------------
# Navigation in one CDA, whatever its namespace


class _Cda:
    """Path helpers bound to the namespace the document actually uses."""

    def __init__(self, root: etree._Element) -> None:
        namespace = namespace_of(root)
        self._prefix = f"{{{namespace}}}" if namespace else ""

    def _path(self, path: str) -> str:
        return "/".join(self._prefix + step for step in path.split("/"))

    def first(self, element: etree._Element | None, path: str) -> etree._Element | None:
        if element is None:
            return None
        return element.find(self._path(path))

    def every(self, element: etree._Element | None, path: str) -> list[etree._Element]:
        if element is None:
            return []
        return list(element.iterfind(self._path(path)))

    def text(self, element: etree._Element | None, path: str) -> str | None:
        return element_text(self.first(element, path))

    def attr(self, element: etree._Element | None, path: str, name: str) -> str | None:
        found = self.first(element, path)
        return clean(found.get(name)) if found is not None else None


def clean(value: str | None) -> str | None:
    """Collapse whitespace; empty strings become ``None``."""
    if value is None:
        return None
    collapsed = " ".join(value.split())
    return collapsed or None


def element_text(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    return clean(all_text(element))


def instance_id(element: etree._Element | None) -> str | None:
    """An II as ``root`` or ``root^extension`` (the XDS uniqueId convention)."""
    if element is None:
        return None
    root = clean(element.get("root"))
    extension = clean(element.get("extension"))
    if root and extension:
        return f"{root}^{extension}"
    return root or extension


def _has_qualifier(element: etree._Element, qualifier: str) -> bool:
    return qualifier in (element.get("qualifier") or "").split()


# ---------------------------------------------------------------------------------------------
# Header sections


def _patient(cda: _Cda, root: etree._Element) -> PatientIdentity | None:
    role = cda.first(root, "recordTarget/patientRole")
    if role is None:
        return None
    ins = ins_oid = None
    for identifier in cda.every(role, "id"):
        oid = clean(identifier.get("root"))
        extension = clean(identifier.get("extension"))
        if oid in INS_OIDS and extension:
            ins, ins_oid = extension, oid
            break
    person = cda.first(role, "patient")
    name = cda.first(person, "name")
    families = cda.every(name, "family")
    givens = cda.every(name, "given")
    birth_family = next((f for f in families if _has_qualifier(f, "BR")), None)
    if birth_family is None:
        birth_family = next((f for f in families if not f.get("qualifier")), None)
    used_family = next((f for f in families if _has_qualifier(f, "CL")), None)
    first_given = next((g for g in givens if _has_qualifier(g, "BR")), None)
    given_name = element_text(first_given)
    if given_name is None:
        unqualified = next((g for g in givens if not g.get("qualifier")), None)
        all_givens = element_text(unqualified)
        given_name = all_givens.split()[0] if all_givens else None
    return PatientIdentity(
        ins=ins,
        ins_oid=ins_oid,
        birth_family_name=element_text(birth_family),
        given_name=given_name,
        birth_date=parse_hl7_date(cda.attr(person, "birthTime", "value")),
        sex=cda.attr(person, "administrativeGenderCode", "code"),
        birthplace_code=cda.text(person, "birthplace/place/addr/county"),
        family_name=element_text(used_family) or element_text(birth_family),
    )


def _author(cda: _Cda, root: etree._Element) -> Author | None:
    assigned = cda.first(root, "author/assignedAuthor")
    if assigned is None:
        return None
    national_id = next(
        (
            clean(i.get("extension"))
            for i in cda.every(assigned, "id")
            if clean(i.get("root")) == IDNATPS_OID
        ),
        None,
    )
    person_name = cda.first(assigned, "assignedPerson/name")
    organisation = cda.first(assigned, "representedOrganization")
    org_ids = cda.every(organisation, "id")
    national_org = next((i for i in org_ids if clean(i.get("root")) == IDNATSTRUCT_OID), None)
    org_id_element = national_org if national_org is not None else next(iter(org_ids), None)
    organisation_id = None
    if org_id_element is not None:
        organisation_id = (
            clean(org_id_element.get("extension"))
            if national_org is not None
            else instance_id(org_id_element)
        )
    return Author(
        national_id=national_id,
        family=cda.text(person_name, "family"),
        given=cda.text(person_name, "given"),
        organisation_id=organisation_id,
        organisation_name=cda.text(organisation, "name"),
    )


def _replaced_parent(cda: _Cda, root: etree._Element) -> str | None:
    for related in cda.every(root, "relatedDocument"):
        if (related.get("typeCode") or "").strip().upper() == "RPLC":
            return instance_id(cda.first(related, "parentDocument/id"))
    return None


def _version(cda: _Cda, root: etree._Element, problems: list[Problem], where: str) -> int | None:
    value = cda.attr(root, "versionNumber", "value")
    if value is None:
        return None
    if value.isdigit() and len(value) < 10:
        return int(value)
    problems.append(Problem(ProblemCode.BAD_VALUE, "versionNumber is not a number", where))
    return None


def _effective_time(
    cda: _Cda, root: etree._Element, problems: list[Problem], where: str
) -> datetime | date | None:
    value = cda.attr(root, "effectiveTime", "value")
    if value is None:
        problems.append(Problem(ProblemCode.MISSING_FIELD, "CDA has no effectiveTime", where))
        return None
    parsed = parse_hl7_time(value)
    if parsed is None:
        problems.append(Problem(ProblemCode.BAD_VALUE, "CDA effectiveTime is not a time", where))
    return parsed


def read_header(root: etree._Element, *, where: str) -> tuple[DocumentMetadata, list[Problem]]:
    """The metadata of a parsed ``ClinicalDocument``, and what is missing or wrong in it."""
    cda = _Cda(root)
    problems: list[Problem] = []
    document_id = instance_id(cda.first(root, "id"))
    if document_id is None:
        problems.append(Problem(ProblemCode.MISSING_FIELD, "CDA has no id", where))
    type_code = cda.attr(root, "code", "code")
    if type_code is None:
        problems.append(Problem(ProblemCode.MISSING_FIELD, "CDA has no document type code", where))
    patient = _patient(cda, root)
    confidentiality = cda.attr(root, "confidentialityCode", "code")
    flag = visibility_flag(confidentiality)
    metadata = DocumentMetadata(
        document_id=document_id,
        set_id=instance_id(cda.first(root, "setId")),
        version=_version(cda, root, problems, where),
        replaces=_replaced_parent(cda, root),
        type_code=type_code,
        type_code_system=cda.attr(root, "code", "codeSystem"),
        type_display=cda.attr(root, "code", "displayName"),
        title=cda.text(root, "title"),
        effective_time=_effective_time(cda, root, problems, where),
        confidentiality=None if flag else confidentiality,
        language=cda.attr(root, "languageCode", "code"),
        mime_type=CDA_MIME_TYPE,
        patient=patient,
        author=_author(cda, root),
        visibility=(flag,) if flag else (),
    )
    problems.extend(identity_problems(patient, where))
    return metadata, problems


# ---------------------------------------------------------------------------------------------
# Level-1 body


def _rendition(
    root: etree._Element, problems: list[Problem], where: str
) -> tuple[bytes | None, str | None]:
    cda = _Cda(root)
    body_text = cda.first(root, "component/nonXMLBody/text")
    if body_text is None:
        return None, None
    media_type = clean(body_text.get("mediaType")) or "text/plain"
    payload = all_text(body_text)
    if (body_text.get("representation") or "").strip().upper() != "B64":
        text = payload.strip()
        return (text.encode("utf-8"), media_type) if text else (None, None)
    decoded = decode_base64_lenient(payload)
    if decoded is None:
        problems.append(Problem(ProblemCode.BAD_BASE64, "CDA body is not valid base64", where))
        return None, None
    if media_type == "application/pdf" and not decoded.startswith(b"%PDF-"):
        problems.append(Problem(ProblemCode.BAD_VALUE, "CDA body declared PDF is not", where))
    return decoded, media_type


# ---------------------------------------------------------------------------------------------
# Entry points


def is_clinical_document(root: etree._Element) -> bool:
    return local_name(root) == "ClinicalDocument"


XSLT_NAMESPACE = "http://www.w3.org/1999/XSL/Transform"
AUTO_PRESENTABLE_MIME_TYPE = "text/xml"
"""An auto-presentable file displays itself (``<?xml-stylesheet href="#"?>``) in a browser."""


def embedded_clinical_document(root: etree._Element) -> etree._Element | None:
    """The one ``ClinicalDocument`` an auto-presentable CDA embeds, if ``root`` is one.

    An auto-presentable document (CI-SIS, e.g. CR-BIO "autoprésentable") is an XSL
    stylesheet that renders itself: the ``ClinicalDocument`` sits inside it (under a
    ``data:Contenu`` element in the ANS examples). Exactly one is required.
    """
    if local_name(root) not in ("stylesheet", "transform") or namespace_of(root) != XSLT_NAMESPACE:
        return None
    found = list(root.iter(f"{{{CDA_NAMESPACE}}}ClinicalDocument"))
    return found[0] if len(found) == 1 else None


def read_cda_root(root: etree._Element, content: bytes, *, file_name: str) -> ReadResult:
    """Read an already parsed CDA whose bytes are ``content``.

    An auto-presentable CDA is read through its embedded ``ClinicalDocument``: the
    document's content is that ``ClinicalDocument`` (a plain CDA any consumer can read) and,
    unless its body carries a rendition of its own, the auto-presentable file as received is
    its rendition (it displays itself).
    """
    self_presenting: bytes | None = None
    if not is_clinical_document(root):
        embedded = embedded_clinical_document(root)
        if embedded is None:
            problem = Problem(
                ProblemCode.UNSUPPORTED_FORMAT, "XML is not a CDA document", file_name
            )
            return ReadResult.refused(SourceFormat.CDA, problem)
        self_presenting = content
        root = embedded
        content = etree.tostring(embedded, xml_declaration=True, encoding="UTF-8")
    metadata, problems = read_header(root, where=file_name)
    rendition, rendition_type = _rendition(root, problems, file_name)
    if rendition is None and self_presenting is not None:
        rendition, rendition_type = self_presenting, AUTO_PRESENTABLE_MIME_TYPE
    document = Document(
        content=content,
        file_name=file_name,
        mime_type=CDA_MIME_TYPE,
        metadata=metadata,
        rendition=rendition,
        rendition_mime_type=rendition_type,
    )
    return ReadResult(documents=(document,), problems=tuple(problems), format=SourceFormat.CDA)


def read_cda(
    data: bytes, *, file_name: str = "document.xml", limits: ReaderLimits = DEFAULT_LIMITS
) -> ReadResult:
    """Read a CDA R2 document from its bytes."""
    parsed = parse_xml(data, max_bytes=limits.max_xml_bytes, where=file_name)
    if isinstance(parsed, Problem):
        return ReadResult.refused(SourceFormat.CDA, parsed)
    return read_cda_root(parsed, data, file_name=file_name)
