"""The FHIR R4 API of the patient's record: DocumentReference search and read, Binary (F2, E4).

Routes, all under ``/fhir``:

- ``GET /fhir/metadata``: the CapabilityStatement (no authentication);
- ``GET /fhir/openapi.json``: an OpenAPI 3 description of these routes (no authentication);
- ``GET /fhir/DocumentReference?type=&date=&author=&status=&_count=&_offset=``: a
  ``searchset`` Bundle of the caller's own record;
- ``GET /fhir/DocumentReference/{id}``: one document, current or superseded;
- ``GET /fhir/Binary/{id}``: the document's bytes with their content type (``{id}-rendition``
  for the PDF a CDA level 1 carries), or a Binary resource when ``Accept`` asks for
  ``application/fhir+json``.

Only patients, for now, with HTTP Basic (mailbox address + app password, see
:mod:`caducee.gateway.http.fhir_auth`); professionals (F2) come with their own issue. A
patient sees the documents filed in their own record, not quarantined, offered, hidden from
them (``INVISIBLE_PATIENT``) or someone else's: those are all a plain 404, so that the API
does not tell which ids exist. DocumentReference follows IHE MHD / ANS PDSm
(document-formats.md §6). Every error is an ``OperationOutcome`` with the matching status.
Database and blob work runs in threads; nothing here blocks the event loop.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL, QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from caducee import __version__
from caducee.gateway.http.fhir_auth import (
    REALM,
    AuthenticationFailed,
    AuthenticationThrottled,
    Authenticator,
    BasicAuthenticator,
    Principal,
)
from caducee.gateway.runtime import Gateway
from caducee.records.identity import MailboxPatient
from caducee.records.models import RecordDocument, VersionStatus
from caducee.records.readers.cda import french_time
from caducee.records.service import (
    DEFAULT_PAGE,
    MAX_PAGE,
    DateFilter,
    DocumentQuery,
    SearchPage,
    TypeFilter,
    Viewer,
    get_document,
    read_content,
    record_owner,
    replaced_versions,
    search_documents,
)

log = logging.getLogger("caducee.http.fhir")

FHIR_JSON = "application/fhir+json"
FHIR_VERSION = "4.0.1"
RENDITION_SUFFIX = "-rendition"
PATIENT_KIND = "patient"

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

_ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_OID_PATTERN = re.compile(r"[0-2](\.\d+)+")
_UUID_PATTERN = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_DATE_PATTERN = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d{1,9})?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_PREFIXES = ("eq", "ne", "lt", "le", "gt", "ge", "sa", "eb", "ap")
_SEARCH_PARAMETERS = frozenset(
    {"type", "date", "author", "author.identifier", "status", "_count", "_offset", "_format"}
)
_SYSTEM_OIDS = {LOINC_URI: LOINC_OID}
_NO_STORE = {"Cache-Control": "no-store"}
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'
"""The Basic challenge (RFC 7617). Header values stay ASCII (RFC 9110 §5.5): the realm is
spelt without its accent, which neither HTTP clients nor Starlette's test client mangle."""


# ---------------------------------------------------------------------------------------------
# Errors


@dataclass
class FhirError(Exception):
    """A refusal, said as an OperationOutcome with an HTTP status."""

    status: int
    code: str
    diagnostics: str
    headers: Mapping[str, str] | None = None


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    """A FHIR OperationOutcome with one issue."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def fhir_json(body: Mapping[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(
        dict(body), status_code=status, media_type=FHIR_JSON, headers={**_NO_STORE, **headers}
    )


def _error_response(error: FhirError) -> JSONResponse:
    return fhir_json(
        operation_outcome(error.code, error.diagnostics), error.status, **(error.headers or {})
    )


_HTTP_CODES = {404: "not-found", 405: "not-supported", 400: "invalid"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "processing")
    return fhir_json(operation_outcome(code, str(exc.detail)), exc.status_code)


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return _error_response(exc)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("FHIR request failed", extra={"reason": type(exc).__name__})
    return fhir_json(operation_outcome("exception", "internal error"), 500)


# ---------------------------------------------------------------------------------------------
# Search parameters


def _system_oid(system: str) -> str:
    if system.startswith("urn:oid:"):
        return system[len("urn:oid:") :]
    return _SYSTEM_OIDS.get(system, system)


def _tokens(values: Sequence[str], name: str) -> list[list[str]]:
    groups: list[list[str]] = []
    for value in values:
        tokens = [token.strip() for token in value.split(",")]
        if not all(tokens):
            raise FhirError(400, "invalid", f"empty value in search parameter '{name}'")
        groups.append(tokens)
    return groups


def _type_filters(values: Sequence[str]) -> tuple[tuple[TypeFilter, ...], ...]:
    groups = []
    for tokens in _tokens(values, "type"):
        alternatives = []
        for token in tokens:
            system, bar, code = token.rpartition("|")
            if not code:
                raise FhirError(400, "invalid", "search parameter 'type' needs a code")
            alternatives.append(TypeFilter(code, _system_oid(system) if bar and system else None))
        groups.append(tuple(alternatives))
    return tuple(groups)


def _author_filters(values: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    groups = []
    for tokens in _tokens(values, "author"):
        alternatives = []
        for token in tokens:
            system, bar, value = token.rpartition("|")
            if not value or (bar and system and system not in (IDNATPS_SYSTEM, RPPS_SYSTEM)):
                message = "search parameter 'author' takes a national id (IdNatPs or RPPS)"
                raise FhirError(400, "invalid", message)
            alternatives.append(value)
        groups.append(tuple(alternatives))
    return tuple(groups)


def _range_end(start: datetime, precision: str, fraction: str | None) -> datetime:
    match precision:
        case "year":
            return start.replace(year=start.year + 1)
        case "month":
            if start.month == 12:
                return start.replace(year=start.year + 1, month=1)
            return start.replace(month=start.month + 1)
        case "day":
            return start + timedelta(days=1)
        case "minute":
            return start + timedelta(minutes=1)
        case _:
            if fraction:
                return start + timedelta(microseconds=1)
            return start + timedelta(seconds=1)


def parse_date_filter(value: str, zone: tzinfo | None = None) -> DateFilter:
    """One FHIR ``date`` search value (prefix + partial date or dateTime) as an instant range.

    Values without a zone are read in French legal time.
    """
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    text = value[2:] if value[:2] in _PREFIXES else value
    if prefix in ("sa", "eb", "ap"):
        raise FhirError(400, "not-supported", f"date prefix '{prefix}' is not supported")
    match = _DATE_PATTERN.fullmatch(text)
    if match is None:
        raise FhirError(400, "invalid", "search parameter 'date' is not a FHIR date")
    parts = match.groupdict()
    local = zone or french_time()
    if parts["zone"]:
        if parts["zone"] == "Z":
            local = UTC
        else:
            sign = -1 if parts["zone"][0] == "-" else 1
            hours, minutes = int(parts["zone"][1:3]), int(parts["zone"][4:6])
            local = timezone(sign * timedelta(hours=hours, minutes=minutes))
    fraction = parts["fraction"]
    try:
        start = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int((fraction or ".0")[1:7].ljust(6, "0")),
            tzinfo=local,
        )
    except ValueError:
        raise FhirError(400, "invalid", "search parameter 'date' is not a valid date") from None
    if parts["hour"] is not None and parts["second"] is None:
        precision = "minute"
    elif parts["second"] is not None:
        precision = "second"
    elif parts["day"] is not None:
        precision = "day"
    elif parts["month"] is not None:
        precision = "month"
    else:
        precision = "year"
    end = _range_end(start, precision, fraction)
    return DateFilter(prefix=prefix, start=start.astimezone(UTC), end=end.astimezone(UTC))


def _integer(params: QueryParams, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 9:
        raise FhirError(400, "invalid", f"'{name}' must be a non-negative integer")
    return int(raw)


def parse_search(params: QueryParams) -> DocumentQuery:
    """A :class:`DocumentQuery` from FHIR search parameters; 400 for anything unsupported."""
    unknown = sorted(set(params.keys()) - _SEARCH_PARAMETERS)
    if unknown:
        raise FhirError(400, "not-supported", f"unsupported search parameter '{unknown[0]}'")
    statuses: tuple[str, ...] = (VersionStatus.CURRENT.value,)
    status_values = params.getlist("status")
    if status_values:
        allowed = {status.value for status in VersionStatus}
        tokens = [token for group in _tokens(status_values, "status") for token in group]
        if not set(tokens) <= allowed:
            raise FhirError(400, "invalid", "'status' is current or superseded")
        statuses = tuple(dict.fromkeys(tokens))
    return DocumentQuery(
        types=_type_filters(params.getlist("type")),
        dates=tuple(parse_date_filter(value) for value in params.getlist("date")),
        authors=_author_filters(params.getlist("author") + params.getlist("author.identifier")),
        statuses=statuses,
        count=min(_integer(params, "_count", DEFAULT_PAGE), MAX_PAGE),
        offset=_integer(params, "_offset", 0),
    )


# ---------------------------------------------------------------------------------------------
# Resources


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


def _compact(value: Mapping[str, Any]) -> dict[str, Any]:
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
        name = _compact(
            {
                "family": document.author_family,
                "given": [document.author_given] if document.author_given else None,
            }
        )
        contained.append(
            _compact(
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
            _compact(
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
        _compact(
            {
                "attachment": _compact(
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
                "attachment": _compact(
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
    type_coding = _compact(
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
    return _compact(
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
                _compact({"coding": [type_coding], "text": document.type_display})
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


# ---------------------------------------------------------------------------------------------
# The API


class FhirApi:
    """Request handlers, bound to one gateway and a list of authenticators."""

    def __init__(self, gateway: Gateway, authenticators: Sequence[Authenticator]) -> None:
        self.gateway = gateway
        self.authenticators = list(authenticators)

    async def _patient(self, request: Request) -> Principal:
        """The authenticated patient, or a 401/403 refusal."""
        challenge = {"WWW-Authenticate": CHALLENGE}
        principal: Principal | None = None
        try:
            for authenticator in self.authenticators:
                principal = await authenticator.authenticate(request)
                if principal is not None:
                    break
        except AuthenticationThrottled as throttled:
            retry = {"Retry-After": str(throttled.retry_after)}
            raise FhirError(429, "throttled", "too many failed sign-ins", retry) from None
        except AuthenticationFailed:
            raise FhirError(401, "login", "authentication failed", challenge) from None
        if principal is None:
            raise FhirError(401, "login", "authentication required", challenge)
        if principal.kind != PATIENT_KIND:
            raise FhirError(403, "forbidden", "this API serves patients' own records only")
        return principal

    @staticmethod
    def _base(request: Request) -> str:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return str(URL(str(request.url)).replace(path=root + "/", query=""))

    # -- metadata -----------------------------------------------------------------------------

    async def metadata(self, request: Request) -> Response:
        return fhir_json(capability_statement(self._base(request)))

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(self._base(request)))

    # -- DocumentReference --------------------------------------------------------------------

    def _search(
        self, account_id: int, query: DocumentQuery, base: str
    ) -> tuple[SearchPage, list[dict[str, Any]]]:
        with self.gateway.database.transaction() as session:
            page = search_documents(session, account_id, query, Viewer.PATIENT)
            owner = record_owner(session, account_id)
            resources = [
                document_reference(doc, owner, base, page.replaced.get(doc.id, ()))
                for doc in page.documents
            ]
        return page, resources

    async def search(self, request: Request) -> Response:
        principal = await self._patient(request)
        query = parse_search(request.query_params)
        base = self._base(request)
        page, resources = await run_in_threadpool(self._search, principal.account_id, query, base)
        links = [{"relation": "self", "url": str(request.url)}]
        if query.offset + len(resources) < page.total and query.count > 0:
            next_offset = str(query.offset + query.count)
            links.append(
                {
                    "relation": "next",
                    "url": str(request.url.include_query_params(_offset=next_offset)),
                }
            )
        if query.offset > 0:
            previous = str(max(query.offset - query.count, 0))
            links.append(
                {
                    "relation": "previous",
                    "url": str(request.url.include_query_params(_offset=previous)),
                }
            )
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": page.total,
            "link": links,
            "entry": [
                {
                    "fullUrl": f"{base}DocumentReference/{resource['id']}",
                    "resource": resource,
                    "search": {"mode": "match"},
                }
                for resource in resources
            ],
        }
        return fhir_json(_compact(bundle))

    def _read(self, account_id: int, public_id: str, base: str) -> dict[str, Any] | None:
        with self.gateway.database.transaction() as session:
            document = get_document(session, account_id, public_id, Viewer.PATIENT)
            if document is None:
                return None
            owner = record_owner(session, account_id)
            replaced = replaced_versions(session, [document]).get(document.id, ())
            return document_reference(document, owner, base, replaced)

    async def read(self, request: Request) -> Response:
        principal = await self._patient(request)
        public_id = str(request.path_params["id"])
        resource = None
        if _ID_PATTERN.fullmatch(public_id):
            resource = await run_in_threadpool(
                self._read, principal.account_id, public_id, self._base(request)
            )
        if resource is None:
            raise FhirError(404, "not-found", "no such DocumentReference")
        return fhir_json(resource)

    # -- Binary -------------------------------------------------------------------------------

    def _binary(self, account_id: int, binary_id: str) -> tuple[bytes, str] | None:
        rendition = binary_id.endswith(RENDITION_SUFFIX)
        public_id = binary_id.removesuffix(RENDITION_SUFFIX) if rendition else binary_id
        with self.gateway.database.transaction() as session:
            document = get_document(session, account_id, public_id, Viewer.PATIENT)
            if document is None:
                return None
            data = read_content(session, self.gateway.blobs, document, rendition=rendition)
            if data is None:
                return None
            content_type = (
                document.rendition_mime_type if rendition else document.mime_type
            ) or "application/octet-stream"
            return data, content_type

    async def binary(self, request: Request) -> Response:
        principal = await self._patient(request)
        binary_id = str(request.path_params["id"])
        found = None
        if _ID_PATTERN.fullmatch(binary_id):
            found = await run_in_threadpool(self._binary, principal.account_id, binary_id)
        if found is None:
            raise FhirError(404, "not-found", "no such Binary")
        data, content_type = found
        accept = request.headers.get("accept", "")
        if FHIR_JSON in accept or "application/json" in accept:
            return fhir_json(
                {
                    "resourceType": "Binary",
                    "id": binary_id,
                    "contentType": content_type,
                    "data": base64.b64encode(data).decode("ascii"),
                }
            )
        return Response(
            data,
            media_type=content_type,
            headers={
                **_NO_STORE,
                "Content-Disposition": "attachment",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
            },
        )


def fhir_routes(
    gateway: Gateway, *, authenticators: Sequence[Authenticator] | None = None
) -> list[BaseRoute]:
    """The ``/fhir`` routes, for ``build_http_app(gateway, extra_routes=fhir_routes(gateway))``.

    ``authenticators`` are tried in order (default: HTTP Basic with app passwords); the
    webmail will add its session here.
    """
    api = FhirApi(
        gateway, authenticators or [BasicAuthenticator(gateway.database, identity=gateway.identity)]
    )
    app = Starlette(
        routes=[
            Route("/metadata", api.metadata, methods=["GET"], name="metadata"),
            Route("/openapi.json", api.openapi, methods=["GET"], name="openapi"),
            Route("/DocumentReference", api.search, methods=["GET"], name="search"),
            Route("/DocumentReference/{id}", api.read, methods=["GET"], name="document"),
            Route("/Binary/{id}", api.binary, methods=["GET"], name="binary"),
        ],
        exception_handlers={
            HTTPException: _http_error,
            FhirError: _fhir_error,
            Exception: _server_error,
        },
    )
    return [Mount("/fhir", app=app, name="fhir")]


# ---------------------------------------------------------------------------------------------
# CapabilityStatement and OpenAPI


def _search_parameters() -> list[dict[str, str]]:
    return [
        {
            "name": "type",
            "type": "token",
            "documentation": "Document type: 'system|code' or 'code' (LOINC, JDV_J07).",
        },
        {
            "name": "date",
            "type": "date",
            "documentation": "The document's date (its creation time, else the mail's date); "
            "prefixes eq, ne, lt, le, gt, ge.",
        },
        {
            "name": "author",
            "type": "token",
            "documentation": "Author's national id (IdNatPs, or an 11-digit RPPS).",
        },
        {
            "name": "status",
            "type": "token",
            "documentation": "current (default) or superseded.",
        },
        {"name": "_count", "type": "number", "documentation": f"Page size, at most {MAX_PAGE}."},
        {"name": "_offset", "type": "number", "documentation": "Index of the first result."},
    ]


def capability_statement(base: str) -> dict[str, Any]:
    """What this FHIR endpoint does."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "kind": "instance",
        "software": {"name": "Caducée", "version": __version__},
        "implementation": {"description": "Caducée patient document record", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "restful-security-service",
                                    "code": "Basic",
                                }
                            ]
                        }
                    ],
                    "description": "HTTP Basic: mailbox address and app password (patients).",
                },
                "resource": [
                    {
                        "type": "DocumentReference",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": _search_parameters(),
                    },
                    {"type": "Binary", "interaction": [{"code": "read"}]},
                ],
            }
        ],
    }


def _fhir_response(description: str, schema: str = "Resource") -> dict[str, Any]:
    return {
        "description": description,
        "content": {FHIR_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _errors() -> dict[str, Any]:
    return {
        "400": _fhir_response("Bad search parameter", "OperationOutcome"),
        "401": _fhir_response("Authentication required or failed", "OperationOutcome"),
        "403": _fhir_response("Not a patient account", "OperationOutcome"),
    }


def openapi_document(base: str) -> dict[str, Any]:
    """An OpenAPI 3 description of the ``/fhir`` routes."""
    parameters = [
        {
            "name": item["name"],
            "in": "query",
            "required": False,
            "description": item["documentation"],
            "schema": {"type": "integer" if item["type"] == "number" else "string"},
        }
        for item in _search_parameters()
    ]
    id_parameter = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    secured: list[dict[str, list[str]]] = [{"basic": []}]
    not_found = _fhir_response("Not found (or not yours)", "OperationOutcome")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Caducée FHIR API (patient record)",
            "version": __version__,
            "description": "FHIR R4 DocumentReference and Binary of the caller's own record.",
        },
        "servers": [{"url": base.rstrip("/")}],
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Resource": {
                    "type": "object",
                    "required": ["resourceType"],
                    "properties": {"resourceType": {"type": "string"}},
                },
                "OperationOutcome": {
                    "type": "object",
                    "required": ["resourceType", "issue"],
                    "properties": {
                        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
                        "issue": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
        "paths": {
            "/metadata": {
                "get": {
                    "summary": "CapabilityStatement",
                    "security": [],
                    "responses": {"200": _fhir_response("The CapabilityStatement")},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3 document"}},
                }
            },
            "/DocumentReference": {
                "get": {
                    "summary": "Search the caller's documents (searchset Bundle)",
                    "security": secured,
                    "parameters": parameters,
                    "responses": {"200": _fhir_response("A searchset Bundle"), **_errors()},
                }
            },
            "/DocumentReference/{id}": {
                "get": {
                    "summary": "Read one DocumentReference (current or superseded)",
                    "security": secured,
                    "parameters": [id_parameter],
                    "responses": {
                        "200": _fhir_response("The DocumentReference"),
                        "404": not_found,
                        **_errors(),
                    },
                }
            },
            "/Binary/{id}": {
                "get": {
                    "summary": "The document's bytes ('{id}-rendition': its PDF rendition)",
                    "security": secured,
                    "parameters": [id_parameter],
                    "responses": {
                        "200": {
                            "description": "The bytes with their content type, or a Binary "
                            "resource when Accept asks for application/fhir+json",
                            "content": {
                                "*/*": {"schema": {"type": "string", "format": "binary"}},
                                FHIR_JSON: {"schema": {"$ref": "#/components/schemas/Resource"}},
                            },
                        },
                        "404": not_found,
                        **_errors(),
                    },
                }
            },
        },
    }
