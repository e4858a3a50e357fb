"""The FHIR R4 API of the record: DocumentReference search and read, Binary (F2, F3, F4, E4, E5).

One API for everyone who may read a record, all under ``/fhir``:

- ``GET /fhir/metadata``: the CapabilityStatement (no authentication);
- ``GET /fhir/openapi.json``: an OpenAPI 3 description of these routes (no authentication);
- ``GET /fhir/DocumentReference?patient.identifier=&type=&date=&author=&status=&_count=&_offset=``:
  a ``searchset`` Bundle;
- ``GET /fhir/DocumentReference/{id}``: one document, current or superseded;
- ``GET /fhir/Binary/{id}``: the document's bytes with their content type (``{id}-rendition``
  for the PDF a CDA level 1 carries), or a Binary resource when ``Accept`` asks for
  ``application/fhir+json``.

Who is calling is settled before any handler runs, by Starlette's ``AuthenticationMiddleware``
with :class:`~caducee.gateway.http.fhir_auth_backend.IdentityBackend` (HTTP Basic with a
mailbox address and an app password through the identity service; a Pro Santé Connect bearer
token for professionals). Which record: ``patient.identifier=<INS>`` names it; without it, a
patient reads their own, and a professional reading one document by id reads it in whichever
record holds it (a search needs the INS). What the caller sees is decided by the access table
(:mod:`caducee.gateway.http.fhir_access`): a refusal such as a blocked professional or a
declared pharmacy is 403 with an ``OperationOutcome`` naming the rule; a document the caller
may not see (hidden by a flag, quarantined, offered, someone else's) is a plain 404, so that
the API does not tell which ids exist. Emergency access: the HL7 ``PurposeOfUse`` in
``_purposeOfUse`` or ``X-Purpose-Of-Use``: ``ETREAT`` for the SAMU, ``BTG`` for break-glass,
which needs a reason in ``X-Break-Glass-Reason`` (ASCII) or ``_reason`` (any text); a reason
alone means ``BTG``. The reason is kept in the audit event for the patient to read, never logged.

DocumentReference follows IHE MHD / ANS PDSm (:mod:`caducee.gateway.http.fhir_resources`).
Every error is an ``OperationOutcome`` with the matching status, from one set of handlers.
Database and blob work runs in threads; nothing here blocks the event loop.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from starlette.applications import Starlette
from starlette.authentication import AuthenticationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL, QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from caducee import __version__
from caducee.directory.identifiers import IdentifierError, parse_ins
from caducee.gateway.http.fhir_access import Outcome, RecordReader
from caducee.gateway.http.fhir_auth import (
    REALM,
    Authenticator,
    OidcAuthenticator,
    Principal,
    basic_authenticator,
)
from caducee.gateway.http.fhir_auth_backend import (
    CredentialsThrottled,
    IdentityBackend,
    authentication,
    principal_of,
)
from caducee.gateway.http.fhir_resources import (
    FHIR_JSON,
    IDNATPS_SYSTEM,
    LOINC_OID,
    LOINC_URI,
    RENDITION_SUFFIX,
    RPPS_SYSTEM,
    compact,
)
from caducee.gateway.http.fhir_resources import document_reference as document_reference
from caducee.gateway.runtime import Gateway
from caducee.mailboxes.access.rights import AccessSettings
from caducee.mailboxes.accounts.identity.oidc import TokenVerifier
from caducee.mailboxes.accounts.store import AccountKind
from caducee.policies.access import AccessVerdict, Purpose
from caducee.policies.identity import PRODUCTION_INS_OIDS, TEST_INS_OIDS
from caducee.records.models import VersionStatus
from caducee.records.readers.cda import french_time
from caducee.records.service import (
    DEFAULT_PAGE,
    MAX_PAGE,
    DateFilter,
    DocumentQuery,
    TypeFilter,
)
from caducee.storage.audit import Action

log = logging.getLogger("caducee.http.fhir")

FHIR_VERSION = "4.0.1"
PATIENT_PARAMETER = "patient.identifier"
REASON_PARAMETER = "_reason"
BREAK_GLASS_HEADER = "x-break-glass-reason"
PURPOSE_PARAMETER = "_purposeOfUse"
PURPOSE_HEADER = "x-purpose-of-use"
PURPOSE_SYSTEMS = frozenset(
    {"http://terminology.hl7.org/CodeSystem/v3-ActReason", "urn:oid:2.16.840.1.113883.5.8"}
)
"""HL7 v3 ActReason, where ``ETREAT`` and ``BTG`` are defined (``system|code`` or the code)."""
ACCESS_RULE_SYSTEM = "urn:caducee:access-rule"
MAX_REASON = 200
PUBLIC_PATHS = frozenset({"/metadata", "/openapi.json"})

_ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_DATE_PATTERN = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d{1,9})?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_PREFIXES = ("eq", "ne", "lt", "le", "gt", "ge", "sa", "eb", "ap")
_SEARCH_PARAMETERS = frozenset(
    {"type", "date", "author", "author.identifier", "status", "_count", "_offset", "_format"}
)
_ACCESS_PARAMETERS = frozenset({PATIENT_PARAMETER, REASON_PARAMETER, PURPOSE_PARAMETER})
_SYSTEM_OIDS = {LOINC_URI: LOINC_OID}
_NO_STORE = {"Cache-Control": "no-store"}
_SECURITY_SERVICES = "http://terminology.hl7.org/CodeSystem/restful-security-service"
_INS_SYSTEMS = frozenset(f"urn:oid:{oid}" for oid in PRODUCTION_INS_OIDS | TEST_INS_OIDS)
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'
"""The Basic challenge (RFC 7617). Header values stay ASCII (RFC 9110 §5.5): the realm is
spelt without its accent, which neither HTTP clients nor Starlette's test client mangle."""
BOTH_CHALLENGES = f'{CHALLENGE}, Bearer realm="{REALM}"'
"""After wrong credentials: either scheme may be tried again."""


# ---------------------------------------------------------------------------------------------
# Errors: one set of handlers, every refusal an OperationOutcome


@dataclass
class FhirError(Exception):
    """A refusal, said as an OperationOutcome with an HTTP status (``rule``: the access rule
    that refused, in the issue's ``details``)."""

    status: int
    code: str
    diagnostics: str
    headers: Mapping[str, str] | None = None
    rule: str | None = None


def operation_outcome(
    code: str, diagnostics: str, severity: str = "error", rule: str | None = None
) -> dict[str, Any]:
    """A FHIR OperationOutcome with one issue."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if rule:
        issue["details"] = {"coding": [{"system": ACCESS_RULE_SYSTEM, "code": rule}], "text": rule}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def fhir_json(body: Mapping[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(
        dict(body), status_code=status, media_type=FHIR_JSON, headers={**_NO_STORE, **headers}
    )


def _error_response(error: FhirError) -> JSONResponse:
    body = operation_outcome(error.code, error.diagnostics, rule=error.rule)
    return fhir_json(body, error.status, **(error.headers or {}))


_HTTP_CODES = {404: "not-found", 405: "not-supported", 400: "invalid"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "processing")
    return _error_response(FhirError(exc.status_code, code, str(exc.detail)))


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return _error_response(exc)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("FHIR request failed", extra={"reason": type(exc).__name__})
    return _error_response(FhirError(500, "exception", "internal error"))


def _authentication_error(connection: HTTPConnection, exc: AuthenticationError) -> Response:
    """The middleware's refusal of wrong credentials: 401 with both challenges, or 429."""
    if isinstance(exc, CredentialsThrottled):
        retry = {"Retry-After": str(exc.retry_after)}
        return _error_response(FhirError(429, "throttled", "too many failed sign-ins", retry))
    challenge = {"WWW-Authenticate": BOTH_CHALLENGES}
    return _error_response(FhirError(401, "login", "authentication failed", challenge))


def _denied(verdict: AccessVerdict) -> FhirError:
    message = f"access denied by rule {verdict.rule}: {verdict.summary}"
    return FhirError(403, "forbidden", message, rule=verdict.rule)


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
    unknown = sorted(set(params.keys()) - _SEARCH_PARAMETERS - _ACCESS_PARAMETERS)
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
# Access parameters


def _reason(request: Request, settings: AccessSettings) -> str | None:
    """The break-glass reason, printable and bounded; too short a reason is a 400."""
    raw = request.query_params.get(REASON_PARAMETER) or request.headers.get(BREAK_GLASS_HEADER)
    if raw is None:
        return None
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in raw).split())[:MAX_REASON]
    if len(cleaned) < settings.min_reason_length:
        raise FhirError(
            400,
            "invalid",
            f"a break-glass reason needs at least {settings.min_reason_length} characters",
        )
    return cleaned


def _purpose(request: Request, reason: str | None) -> Purpose | None:
    """The stated purpose of use: ``ETREAT`` (SAMU) or ``BTG`` (break-glass, a reason needed);
    a reason alone is ``BTG``; anything else is a 400."""
    raw = request.query_params.get(PURPOSE_PARAMETER) or request.headers.get(PURPOSE_HEADER)
    if raw is None:
        return Purpose.BTG if reason else None
    system, bar, code = raw.strip()[:200].rpartition("|")
    if (bar and system and system not in PURPOSE_SYSTEMS) or code not in set(Purpose):
        raise FhirError(400, "invalid", "the purpose of use is ETREAT (SAMU) or BTG (break-glass)")
    purpose = Purpose(code)
    if purpose is Purpose.BTG and not reason:
        raise FhirError(400, "required", "a break-glass access (BTG) needs a stated reason")
    return purpose


def named_ins(params: QueryParams) -> str | None:
    """The INS of ``patient.identifier`` (``system|value`` or the value), ``None`` if absent."""
    values = params.getlist(PATIENT_PARAMETER)
    if not values:
        return None
    if len(values) > 1 or "," in values[0]:
        raise FhirError(400, "invalid", f"'{PATIENT_PARAMETER}' names one patient")
    system, bar, ins = values[0].rpartition("|")
    if bar and system and system not in _INS_SYSTEMS:
        raise FhirError(400, "invalid", f"'{PATIENT_PARAMETER}' takes an INS (NIR or NIA OID)")
    try:
        return parse_ins(ins)
    except IdentifierError:
        raise FhirError(400, "invalid", f"'{PATIENT_PARAMETER}' is not a valid INS") from None


# ---------------------------------------------------------------------------------------------
# The API


class FhirApi:
    """Request handlers, bound to one gateway; the caller is already in ``request.user``."""

    def __init__(self, reader: RecordReader) -> None:
        self.reader = reader

    @staticmethod
    def _principal(request: Request) -> Principal:
        """The authenticated caller, or a 401 with the Basic challenge."""
        principal = principal_of(request)
        if principal is None:
            raise FhirError(
                401, "login", "authentication required", {"WWW-Authenticate": CHALLENGE}
            )
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

    async def search(self, request: Request) -> Response:
        principal = self._principal(request)
        ins = named_ins(request.query_params)
        if ins is None and principal.kind != AccountKind.PATIENT.value:
            raise FhirError(
                400, "required", f"name the patient's record with '{PATIENT_PARAMETER}=<INS>'"
            )
        reason = _reason(request, self.reader.settings)
        purpose = _purpose(request, reason)
        query = parse_search(request.query_params)
        base = self._base(request)
        outcome = await run_in_threadpool(
            self.reader.search, principal, ins, query, reason, base, purpose
        )
        if not outcome.found:
            raise FhirError(404, "not-found", "no such patient")
        if outcome.verdict is None or not outcome.verdict.allowed:
            assert outcome.verdict is not None
            raise _denied(outcome.verdict)
        links = [{"relation": "self", "url": str(request.url)}]
        if query.offset + len(outcome.resources) < outcome.total and query.count > 0:
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
            "total": outcome.total,
            "link": links,
            "entry": [
                {
                    "fullUrl": f"{base}DocumentReference/{resource['id']}",
                    "resource": resource,
                    "search": {"mode": "match"},
                }
                for resource in outcome.resources
            ],
        }
        return fhir_json(compact(bundle))

    async def _one(
        self, request: Request, action: Action, public_id: str, rendition: bool = False
    ) -> Outcome:
        principal = self._principal(request)
        ins = named_ins(request.query_params)
        reason = _reason(request, self.reader.settings)
        purpose = _purpose(request, reason)
        outcome = Outcome()
        if _ID_PATTERN.fullmatch(public_id):
            outcome = await run_in_threadpool(
                self.reader.document,
                principal,
                public_id,
                ins,
                reason,
                action,
                self._base(request),
                rendition,
                purpose,
            )
        if outcome.verdict is not None and not outcome.verdict.allowed:
            raise _denied(outcome.verdict)
        if not outcome.found:
            what = "Binary" if action is Action.DOCUMENT_CONTENT else "DocumentReference"
            raise FhirError(404, "not-found", f"no such {what}")
        return outcome

    async def read(self, request: Request) -> Response:
        public_id = str(request.path_params["id"])
        outcome = await self._one(request, Action.DOCUMENT_READ, public_id)
        return fhir_json(outcome.resources[0])

    # -- Binary -------------------------------------------------------------------------------

    async def binary(self, request: Request) -> Response:
        binary_id = str(request.path_params["id"])
        rendition = binary_id.endswith(RENDITION_SUFFIX)
        public_id = binary_id.removesuffix(RENDITION_SUFFIX) if rendition else binary_id
        outcome = await self._one(request, Action.DOCUMENT_CONTENT, public_id, rendition)
        accept = request.headers.get("accept", "")
        if FHIR_JSON in accept or "application/json" in accept:
            return fhir_json(
                {
                    "resourceType": "Binary",
                    "id": binary_id,
                    "contentType": outcome.content_type,
                    "data": base64.b64encode(outcome.content).decode("ascii"),
                }
            )
        return Response(
            outcome.content,
            media_type=outcome.content_type,
            headers={
                **_NO_STORE,
                "Content-Disposition": "attachment",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
            },
        )


def default_authenticators(gateway: Gateway) -> list[Authenticator]:
    """HTTP Basic through the process's identity service, then Pro Santé Connect tokens."""
    verifier = TokenVerifier(gateway.settings)
    return [basic_authenticator(gateway), OidcAuthenticator(verifier, gateway.database)]


def fhir_routes(
    gateway: Gateway,
    *,
    authenticators: Sequence[Authenticator] | None = None,
    settings: AccessSettings | None = None,
    today: Callable[[], date] | None = None,
) -> list[BaseRoute]:
    """The ``/fhir`` routes, for ``build_http_app(gateway, extra_routes=fhir_routes(gateway))``.

    ``authenticators`` are tried in order by the authentication middleware (default:
    :func:`default_authenticators`); share them with the patient API
    (:func:`caducee.gateway.http.patient_api.access_routes` does). ``today`` is the French
    date the age of majority is judged on (tests move it).
    """
    reader = RecordReader(
        gateway, settings or AccessSettings.from_settings(gateway.settings), today=today
    )
    api = FhirApi(reader)
    backend = IdentityBackend(authenticators or default_authenticators(gateway), PUBLIC_PATHS)
    app = Starlette(
        routes=[
            Route("/metadata", api.metadata, methods=["GET"], name="metadata"),
            Route("/openapi.json", api.openapi, methods=["GET"], name="openapi"),
            Route("/DocumentReference", api.search, methods=["GET"], name="search"),
            Route("/DocumentReference/{id}", api.read, methods=["GET"], name="document"),
            Route("/Binary/{id}", api.binary, methods=["GET"], name="binary"),
        ],
        middleware=[authentication(backend, _authentication_error)],
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
            "name": PATIENT_PARAMETER,
            "type": "token",
            "documentation": "The record's INS ('system|value' or the value): required for "
            "professionals and representatives; a patient reads their own without it.",
        },
        {
            "name": REASON_PARAMETER,
            "type": "string",
            "documentation": "Break-glass reason (or the X-Break-Glass-Reason header): a "
            "professional the patient does not know, emergency access enabled (F2).",
        },
        {
            "name": PURPOSE_PARAMETER,
            "type": "token",
            "documentation": "HL7 PurposeOfUse (or the X-Purpose-Of-Use header): ETREAT for "
            "a SAMU professional, BTG for break-glass with a reason (a reason alone is BTG); "
            "each needs the patient's switch (F2).",
        },
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
        "implementation": {"description": "Caducée document record", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {"coding": [{"system": _SECURITY_SERVICES, "code": code}]}
                        for code in ("Basic", "OAuth")
                    ],
                    "description": "HTTP Basic: mailbox address and app password (patients, "
                    "representatives, hosted professionals); Bearer: a Pro Santé Connect "
                    "access token (professionals). What each caller sees is decided by the "
                    "access table; a refusal is 403 naming its rule.",
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
        "403": _fhir_response(
            "Refused by a rule of the access table (the rule in issue.details)",
            "OperationOutcome",
        ),
        "429": _fhir_response("Too many failed sign-ins (Retry-After)", "OperationOutcome"),
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
    access_parameters = [item for item in parameters if item["name"] in _ACCESS_PARAMETERS]
    secured: list[dict[str, list[str]]] = [{"basic": []}, {"bearer": []}]
    not_found = _fhir_response("Not found (or not visible to the caller)", "OperationOutcome")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Caducée FHIR API (document record)",
            "version": __version__,
            "description": "FHIR R4 DocumentReference and Binary of a patient's record, for "
            "the patient, their legal representatives and the professionals the access "
            "table allows.",
        },
        "servers": [{"url": base.rstrip("/")}],
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
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
                    "summary": "Search a record's documents (searchset Bundle)",
                    "security": secured,
                    "parameters": parameters,
                    "responses": {"200": _fhir_response("A searchset Bundle"), **_errors()},
                }
            },
            "/DocumentReference/{id}": {
                "get": {
                    "summary": "Read one DocumentReference (current or superseded)",
                    "security": secured,
                    "parameters": [id_parameter, *access_parameters],
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
                    "parameters": [id_parameter, *access_parameters],
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
