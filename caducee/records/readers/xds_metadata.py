"""XDS metadata reader: the ebRIM 3.0 ``SubmitObjectsRequest`` of an XDM submission set.

``METADATA.XML`` describes each document of an IHE_XDM archive (``ExtrinsicObject``): its
file name in the archive (``URI`` slot), SHA-1 ``hash`` and ``size`` (checked by the XDM
reader, spec E6), its codes (type, class, format, confidentiality and the French visibility
codes of E5), author, patient and unique id (E2). Coded values are ``Classification``s and
identifiers ``ExternalIdentifier``s, told apart by the IHE scheme UUIDs listed in
document-formats.md §3.

Producers differ: JAXB output names elements ``ExtrinsicObjectType``, schemes may be written
``uuid:…`` without ``urn:``, slots are missing, and a stored sample is even wrapped in double
quotes. The reader is namespace-agnostic and accepts all of that; it reports values it cannot
read as problems and keeps going.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC

from lxml import etree

from caducee.records.model import (
    DEFAULT_LIMITS,
    IDNATPS_OID,
    INS_OIDS,
    Author,
    DocumentMetadata,
    PatientIdentity,
    Problem,
    ProblemCode,
    ReaderLimits,
    VisibilityFlag,
    visibility_flag,
)
from caducee.records.readers.cda import clean, parse_hl7_date, parse_hl7_time
from caducee.records.xmlsafe import all_text, local_name, parse_xml

# Scheme UUIDs (document-formats.md §3.1), written without their ``urn:uuid:`` prefix.
AUTHOR_SCHEME = "93606bcf-9494-43ec-9b4e-a7748d1a838d"
CLASS_CODE_SCHEME = "41a5887f-8865-4c09-adf7-e362475b143a"
CONFIDENTIALITY_SCHEME = "f4f85eac-e6cb-4883-b524-f2705394840f"
FORMAT_CODE_SCHEME = "a09d5840-386c-46f2-b5ad-9c3699a4309d"
TYPE_CODE_SCHEME = "f0306f51-975f-434e-a61c-c59651d33983"
PATIENT_ID_SCHEME = "58a6f841-87b3-4a3e-92fd-a8ffeff98427"
UNIQUE_ID_SCHEME = "2e82c1f6-a085-4c72-9da3-8640a32e42ab"

_EXTRINSIC_OBJECT_NAMES = frozenset({"ExtrinsicObject", "ExtrinsicObjectType"})
_ASSOCIATION_NAMES = frozenset({"Association", "AssociationType1", "AssociationType"})
_SPLIT_URI_VALUE = re.compile(r"(\d+)\|(.*)", re.DOTALL)
_SHA1_HEX = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True, slots=True)
class XdsEntry:
    """One DocumentEntry: where its file is in the archive, and what the metadata says."""

    entry_id: str | None
    uri: str | None
    metadata: DocumentMetadata
    patient_id: str | None = None
    """The raw CX of ``patientId`` (or ``sourcePatientId``), whatever its authority."""


@dataclass(frozen=True, slots=True)
class SubmissionMetadata:
    """Every DocumentEntry of one ``SubmitObjectsRequest``, and the problems met."""

    entries: tuple[XdsEntry, ...]
    problems: tuple[Problem, ...]


def scheme_key(value: str | None) -> str:
    """A scheme or node id reduced to its bare lower-case UUID (``urn:uuid:`` optional)."""
    key = (value or "").strip().lower()
    for prefix in ("urn:uuid:", "uuid:", "urn:"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _unquote(data: bytes) -> bytes:
    """Strip whitespace, a UTF-8 BOM and one pair of surrounding double quotes."""
    data = data.removeprefix(b"\xef\xbb\xbf").strip()
    if len(data) >= 2 and data.startswith(b'"') and data.endswith(b'"'):
        data = data[1:-1].strip()
    return data


# ---------------------------------------------------------------------------------------------
# HL7 v2 data types as written in XDS values (CX, XCN, XON, PID-x)


def _components(value: str) -> list[str]:
    return value.split("^")


def _component(parts: list[str], index: int) -> str | None:
    return clean(parts[index]) if index < len(parts) else None


def assigning_authority_oid(cx: str) -> str | None:
    """The universal id (``&OID&ISO``) of the first component that carries one."""
    for part in _components(cx)[1:]:
        if "&" in part:
            subparts = part.split("&")
            if len(subparts) > 1 and clean(subparts[1]):
                return clean(subparts[1])
    return None


def _author(values_by_slot: dict[str, list[str]]) -> Author | None:
    person = next(iter(values_by_slot.get("authorPerson", [])), None)
    institution = next(iter(values_by_slot.get("authorInstitution", [])), None)
    if person is None and institution is None:
        return None
    national_id = family = given = None
    if person is not None:
        parts = _components(person)
        if len(parts) == 1:
            family = clean(person)
        else:
            family, given = _component(parts, 1), _component(parts, 2)
            id_type = _component(parts, 12)
            if assigning_authority_oid(person) == IDNATPS_OID or id_type == "IDNPS":
                national_id = _component(parts, 0)
    organisation_id = organisation_name = None
    if institution is not None:
        parts = _components(institution)
        organisation_name = _component(parts, 0)
        organisation_id = _component(parts, 9) or _component(parts, 2)
    return Author(
        national_id=national_id,
        family=family,
        given=given,
        organisation_id=organisation_id,
        organisation_name=organisation_name,
    )


def _birthplace(addresses: str) -> str | None:
    """The INSEE code of the birth place: XAD.9 of the address whose type (XAD.7) is BDL."""
    for address in addresses.split("~"):
        parts = _components(address)
        if _component(parts, 6) == "BDL":
            return _component(parts, 8)
    return None


def _patient(patient_cx: str | None, source_info: list[str]) -> PatientIdentity | None:
    ins = ins_oid = None
    if patient_cx is not None:
        oid = assigning_authority_oid(patient_cx)
        if oid in INS_OIDS:
            ins, ins_oid = _component(_components(patient_cx), 0), oid
    birth_family = used_family = given = sex = None
    birth_date = birthplace = None
    for line in source_info:
        field_name, _, value = line.partition("|")
        field_name = field_name.strip().upper().replace("-", "")
        parts = _components(value)
        if field_name == "PID5":
            name_type = _component(parts, 6)
            if name_type in (None, "L") and birth_family is None:
                birth_family, given = _component(parts, 0), _component(parts, 1)
            elif name_type == "D" and used_family is None:
                used_family = _component(parts, 0)
        elif field_name == "PID7":
            birth_date = parse_hl7_date(value)
        elif field_name == "PID8":
            sex = clean(value)
        elif field_name == "PID11" and birthplace is None:
            birthplace = _birthplace(value)
    if ins is None and birth_family is None and birth_date is None:
        return None
    return PatientIdentity(
        ins=ins,
        ins_oid=ins_oid,
        birth_family_name=birth_family,
        given_name=given,
        birth_date=birth_date,
        sex=sex,
        birthplace_code=birthplace,
        family_name=used_family or birth_family,
    )


# ---------------------------------------------------------------------------------------------
# ebRIM structure


def _children(element: etree._Element, name: str) -> list[etree._Element]:
    return [child for child in element if local_name(child) == name]


def _localized_name(element: etree._Element) -> str | None:
    for name in _children(element, "Name"):
        for localized in _children(name, "LocalizedString"):
            text = clean(localized.get("value"))
            if text:
                return text
    return None


def _slots(element: etree._Element) -> dict[str, list[str]]:
    slots: dict[str, list[str]] = {}
    for slot in _children(element, "Slot"):
        name = (slot.get("name") or "").strip()
        values = [
            all_text(value).strip()
            for value_list in _children(slot, "ValueList")
            for value in _children(value_list, "Value")
        ]
        slots.setdefault(name, []).extend(values)
    return slots


def _joined_uri(values: list[str]) -> str | None:
    """The ``URI`` slot, re-joined when a long value was split into ``n|part`` values."""
    if not values:
        return None
    split = [_SPLIT_URI_VALUE.fullmatch(value) for value in values]
    if len(values) > 1 and all(split):
        ordered = sorted((int(m.group(1)), m.group(2)) for m in split if m is not None)
        return clean("".join(part for _, part in ordered))
    return clean(values[0])


@dataclass
class _Codes:
    type_code: str | None = None
    type_code_system: str | None = None
    type_display: str | None = None
    class_code: str | None = None
    format_code: str | None = None
    confidentiality: str | None = None
    author: Author | None = None


def _classifications(
    entry: etree._Element,
) -> tuple[_Codes, list[VisibilityFlag]]:
    codes = _Codes()
    visibility: list[VisibilityFlag] = []
    for classification in _children(entry, "Classification"):
        scheme = scheme_key(classification.get("classificationScheme"))
        code = clean(classification.get("nodeRepresentation"))
        if scheme == AUTHOR_SCHEME and codes.author is None:
            codes.author = _author(_slots(classification))
        elif scheme == TYPE_CODE_SCHEME and codes.type_code is None:
            codes.type_code = code
            codes.type_code_system = next(
                iter(_slots(classification).get("codingScheme", [])), None
            )
            codes.type_display = _localized_name(classification)
        elif scheme == CLASS_CODE_SCHEME and codes.class_code is None:
            codes.class_code = code
        elif scheme == FORMAT_CODE_SCHEME and codes.format_code is None:
            codes.format_code = code
        elif scheme == CONFIDENTIALITY_SCHEME and code:
            flag = visibility_flag(code)
            if flag is not None:
                visibility.append(flag)
            elif codes.confidentiality is None:
                codes.confidentiality = code
    return codes, visibility


def _external_ids(entry: etree._Element) -> dict[str, str]:
    found: dict[str, str] = {}
    for identifier in _children(entry, "ExternalIdentifier"):
        scheme = scheme_key(identifier.get("identificationScheme"))
        value = clean(identifier.get("value"))
        if value and scheme not in found:
            found[scheme] = value
    return found


def _declared_size(values: list[str], problems: list[Problem], where: str) -> int | None:
    if not values:
        return None
    text = values[0].strip()
    if text.isdigit() and len(text) <= 15:
        return int(text)
    problems.append(Problem(ProblemCode.BAD_VALUE, "size slot is not a number", where))
    return None


def _declared_hash(values: list[str], problems: list[Problem], where: str) -> str | None:
    if not values:
        return None
    text = values[0].strip().lower()
    if not _SHA1_HEX.fullmatch(text):
        problems.append(Problem(ProblemCode.BAD_VALUE, "hash slot is not a SHA-1 hex", where))
    return text


def _entry(entry: etree._Element, problems: list[Problem], where: str) -> XdsEntry:
    slots = _slots(entry)
    codes, visibility = _classifications(entry)
    identifiers = _external_ids(entry)
    patient_cx = identifiers.get(PATIENT_ID_SCHEME) or next(
        iter(slots.get("sourcePatientId", [])), None
    )
    creation = next(iter(slots.get("creationTime", [])), None)
    effective_time = parse_hl7_time(creation, default_zone=UTC) if creation else None
    if creation and effective_time is None:
        problems.append(Problem(ProblemCode.BAD_VALUE, "creationTime is not a time", where))
    metadata = DocumentMetadata(
        document_id=identifiers.get(UNIQUE_ID_SCHEME),
        type_code=codes.type_code,
        type_code_system=clean(codes.type_code_system),
        type_display=codes.type_display,
        class_code=codes.class_code,
        format_code=codes.format_code,
        title=_localized_name(entry),
        effective_time=effective_time,
        confidentiality=codes.confidentiality,
        language=clean(next(iter(slots.get("languageCode", [])), None)),
        mime_type=clean(entry.get("mimeType")),
        patient=_patient(patient_cx, slots.get("sourcePatientInfo", [])),
        author=codes.author,
        visibility=tuple(dict.fromkeys(visibility)),
        hash_sha1=_declared_hash(slots.get("hash", []), problems, where),
        size=_declared_size(slots.get("size", []), problems, where),
        xds_entry_id=clean(entry.get("id")),
    )
    return XdsEntry(
        entry_id=clean(entry.get("id")),
        uri=_joined_uri(slots.get("URI", [])),
        metadata=metadata,
        patient_id=patient_cx,
    )


def _replacements(root: etree._Element) -> dict[str, str]:
    """Map a new entry id to the entry id it replaces (RPLC associations)."""
    replaced: dict[str, str] = {}
    for element in root.iter():
        if local_name(element) not in _ASSOCIATION_NAMES:
            continue
        kind = (element.get("associationType") or "").strip().upper()
        source, target = clean(element.get("sourceObject")), clean(element.get("targetObject"))
        if kind.endswith("RPLC") and source and target:
            replaced[source] = target
    return replaced


def read_submission_root(root: etree._Element, *, where: str) -> SubmissionMetadata:
    """Read the DocumentEntries of an already parsed submission."""
    problems: list[Problem] = []
    replaced = _replacements(root)
    entries = []
    for element in root.iter():
        if local_name(element) in _EXTRINSIC_OBJECT_NAMES:
            entry = _entry(element, problems, where)
            target = replaced.get(entry.entry_id or "")
            if target and entry.metadata.replaces is None:
                entry = replace(entry, metadata=replace(entry.metadata, replaces=target))
            entries.append(entry)
    if not entries:
        problems.append(Problem(ProblemCode.NO_DOCUMENT, "XDS metadata lists no document", where))
    return SubmissionMetadata(entries=tuple(entries), problems=tuple(problems))


def read_submission_metadata(
    data: bytes, *, where: str = "METADATA.XML", limits: ReaderLimits = DEFAULT_LIMITS
) -> SubmissionMetadata:
    """Read an XDS ``SubmitObjectsRequest`` from its bytes (surrounding quotes tolerated)."""
    parsed = parse_xml(_unquote(data), max_bytes=limits.max_xml_bytes, where=where)
    if isinstance(parsed, Problem):
        return SubmissionMetadata(entries=(), problems=(parsed,))
    return read_submission_root(parsed, where=where)
