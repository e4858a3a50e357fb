"""FHIR R4 resources of the record: a filed document as a DocumentReference (IHE MHD / ANS PDSm,
document-formats.md §6).

Pure mapping, no I/O: the API (:mod:`caducee.gateway.http.fhir_api`) and the patient's export
(:mod:`caducee.gateway.export`) build the same resource from the same row.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from caducee.records.identity import MailboxPatient
from caducee.records.models import RecordDocument

FHIR_JSON = "application/fhir+json"
RENDITION_SUFFIX = "-rendition"

LOINC_OID = "2.16.840.1.113883.6.1"
LOINC_URI = "http://loinc.org"
IDNATPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
IDNATSTRUCT_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"
RPPS_SYSTEM = "https://rpps.esante.gouv.fr"
FR_CORE_ID_TYPES = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
VISIBILITY_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.13"
FORMAT_SYSTEM = "urn:oid:1.3.6.1.4.1.19376.1.2.3"
URI_SYSTEM = "urn:ietf:rfc:3986"
MASQUE_PS = "MASQUE_PS"

_OID_PATTERN = re.compile(r"[0-2](\.\d+)+")
_UUID_PATTERN = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def instant(value: datetime) -> str:
    """A FHIR instant in UTC."""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _system_uri(oid: str | None) -> str | None:
    if not oid:
        return None
    if oid == LOINC_OID:
        return LOINC_URI
    return f"urn:oid:{oid}" if _OID_PATTERN.fullmatch(oid) else oid


def identifier_of(uid: str) -> dict[str, str]:
    """An XDS uniqueId (``root`` or ``root^extension``) as a FHIR Identifier."""
    root, caret, extension = uid.partition("^")
    if caret and extension and _OID_PATTERN.fullmatch(root):
        return {"system": f"urn:oid:{root}", "value": extension}
    if _OID_PATTERN.fullmatch(uid):
        return {"system": URI_SYSTEM, "value": f"urn:oid:{uid}"}
    if _UUID_PATTERN.fullmatch(uid):
        return {"system": URI_SYSTEM, "value": f"urn:uuid:{uid.lower()}"}
    return {"value": uid}


def _uuid_of(public_id: str) -> str:
    hex_id = public_id.lower()
    return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:32]}"


def _sha1_base64(hex_digest: str | None) -> str | None:
    if not hex_digest:
        return None
    try:
        return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")
    except ValueError:
        return None


def compact(value: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty members: FHIR JSON has no nulls and no empty arrays or objects."""
    return {key: item for key, item in value.items() if item not in (None, "", [], {})}


def _contained_author(document: RecordDocument) -> list[dict[str, Any]]:
    contained: list[dict[str, Any]] = []
    national_id = document.author_national_id
    if national_id or document.author_family:
        identifiers: list[dict[str, Any]] = []
        if national_id:
            identifiers.append(
                {
                    "type": {"coding": [{"system": FR_CORE_ID_TYPES, "code": "IDNPS"}]},
                    "system": IDNATPS_SYSTEM,
                    "value": national_id,
                }
            )
            if len(national_id) == 12 and national_id.startswith("8") and national_id.isdigit():
                identifiers.append(
                    {
                        "type": {"coding": [{"system": FR_CORE_ID_TYPES, "code": "RPPS"}]},
                        "system": RPPS_SYSTEM,
                        "value": national_id[1:],
                    }
                )
        name = compact(
            {
                "family": document.author_family,
                "given": [document.author_given] if document.author_given else None,
            }
        )
        contained.append(
            compact(
                {
                    "resourceType": "Practitioner",
                    "id": "author",
                    "identifier": identifiers,
                    "name": [name] if name else None,
                }
            )
        )
    if document.organisation_id or document.organisation_name:
        organisation_id = document.organisation_id
        identifier: dict[str, Any] | None = None
        if organisation_id:
            national = "^" not in organisation_id and not _OID_PATTERN.fullmatch(organisation_id)
            identifier = (
                {"system": IDNATSTRUCT_SYSTEM, "value": organisation_id}
                if national
                else identifier_of(organisation_id)
            )
        contained.append(
            compact(
                {
                    "resourceType": "Organization",
                    "id": "organisation",
                    "identifier": [identifier] if identifier else None,
                    "name": document.organisation_name,
                }
            )
        )
    return contained


def _security_labels(document: RecordDocument) -> list[dict[str, Any]]:
    labels: list[dict[str, Any]] = []
    if document.confidentiality:
        coding = {"system": CONFIDENTIALITY_SYSTEM, "code": document.confidentiality}
        labels.append({"coding": [coding]})
    flags = [flag for flag in document.author_flags.split(",") if flag and flag != MASQUE_PS]
    if document.hidden_from_professionals:
        flags.append(MASQUE_PS)
    labels += [{"coding": [{"system": VISIBILITY_SYSTEM, "code": flag}]} for flag in flags]
    return labels


def _content(document: RecordDocument, base: str) -> list[dict[str, Any]]:
    format_coding = (
        {"system": FORMAT_SYSTEM, "code": document.format_code} if document.format_code else None
    )
    content = [
        compact(
            {
                "attachment": compact(
                    {
                        "contentType": document.mime_type,
                        "language": document.language,
                        "url": f"{base}Binary/{document.public_id}",
                        "size": document.size,
                        "hash": _sha1_base64(document.sha1),
                        "title": document.title,
                        "creation": instant(document.document_date),
                    }
                ),
                "format": format_coding,
            }
        )
    ]
    if document.rendition_blob_id is not None:
        content.append(
            {
                "attachment": compact(
                    {
                        "contentType": document.rendition_mime_type,
                        "url": f"{base}Binary/{document.public_id}{RENDITION_SUFFIX}",
                        "size": document.rendition_size,
                        "hash": _sha1_base64(document.rendition_sha1),
                        "title": document.title,
                        "creation": instant(document.document_date),
                    }
                )
            }
        )
    return content


def document_reference(
    document: RecordDocument,
    owner: MailboxPatient | None,
    base: str,
    replaced: Sequence[str] = (),
) -> dict[str, Any]:
    """The FHIR R4 DocumentReference of a filed document (IHE MHD mapping, §6.1)."""
    contained = _contained_author(document)
    authors: list[dict[str, Any]] = [{"reference": f"#{item['id']}"} for item in contained]
    if not authors and document.sender:
        authors.append(
            {
                "identifier": {"system": URI_SYSTEM, "value": f"mailto:{document.sender}"},
                "display": document.sender,
            }
        )
    relates = [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{public_id}"}}
        for public_id in replaced
    ]
    if not relates and document.replaces_uid:
        relates.append(
            {"code": "replaces", "target": {"identifier": identifier_of(document.replaces_uid)}}
        )
    type_coding = compact(
        {
            "system": _system_uri(document.type_system),
            "code": document.type_code,
            "display": document.type_display,
        }
    )
    related: list[dict[str, Any]] = []
    if document.mail_message_id:
        message_id = document.mail_message_id.strip().removeprefix("<").removesuffix(">")
        related.append({"identifier": {"system": URI_SYSTEM, "value": f"mid:{message_id}"}})
    if document.message_id is not None:
        related.append(
            {"identifier": {"type": {"text": "Caducée message"}, "value": str(document.message_id)}}
        )
    subject = None
    if owner is not None and owner.ins and owner.ins_oid:
        subject = {"identifier": {"system": f"urn:oid:{owner.ins_oid}", "value": owner.ins}}
    return compact(
        {
            "resourceType": "DocumentReference",
            "id": document.public_id,
            "meta": {"lastUpdated": instant(document.updated_at)},
            "contained": contained,
            "masterIdentifier": (
                identifier_of(document.document_uid) if document.document_uid else None
            ),
            "identifier": [
                {
                    "use": "official",
                    "system": URI_SYSTEM,
                    "value": f"urn:uuid:{_uuid_of(document.public_id)}",
                }
            ],
            "status": document.status,
            "type": (
                compact({"coding": [type_coding], "text": document.type_display})
                if document.type_code
                else None
            ),
            "category": (
                [{"coding": [{"code": document.class_code}]}] if document.class_code else None
            ),
            "subject": subject,
            "date": instant(document.document_date),
            "author": authors,
            "securityLabel": _security_labels(document),
            "relatesTo": relates,
            "content": _content(document, base),
            "context": {"related": related} if related else None,
        }
    )
