"""The patient's rights API under ``/api/patient`` (F1, F2, F3, F4, G1, E5).

What the webmail's settings pages (H2) call, and any client a patient uses: the patient
authenticates like on the FHIR API (Starlette's ``AuthenticationMiddleware`` with the same
:class:`~caducee.gateway.http.fhir_auth_backend.IdentityBackend` and authenticators, so one
credential cache, one failure limiter and one login event per fresh check) and acts on their
own space only:

======  ==========================================  ============================================
GET     ``/professionals``                          the known professionals (D2/F1), with names
                                                    from the directory, never their addresses
POST    ``/professionals/{id}/block``               block one (refused for the médecin traitant)
POST    ``/professionals/{id}/authorise``           authorise one again
PUT     ``/medecin-traitant``                       ``{"professional": id}``: name the médecin
                                                    traitant (replaces the previous one)
GET/PUT ``/emergency-access``                       ``samu``, ``break_glass``, ``masked`` (F2
                                                    switches), ``enabled``: both accesses
GET     ``/documents/offered``                      documents offered under the ``patient-choice``
                                                    policy, waiting to be added (E1)
POST    ``/documents/{id}/add``                     add one to the record (E1 patient-choice)
PUT     ``/documents/{id}/visibility``              ``{"hidden_from_professionals": bool}`` (E5)
GET     ``/history?limit=&before=&action=``         who did what in the space, newest first
GET     ``/notifications``, PUT/PATCH same          contact e-mail/phone, language, channels,
                                                    per-type choices (G1)
GET     ``/representatives``                        who acts for the patient, and for whom they
                                                    act (F3; the operator registers them)
======  ==========================================  ============================================

Every change is an audit event written with the change; refusals are ``application/problem+
json`` (RFC 9457) with a ``rule`` member when a rule of the access table refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.authentication import AuthenticationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from caducee.directory.models import DirectoryEntry
from caducee.directory.service import find_by_address, find_by_national_id
from caducee.gateway.http.app import PROBLEM_JSON
from caducee.gateway.http.fhir_api import default_authenticators, fhir_routes
from caducee.gateway.http.fhir_auth import Authenticator, Principal
from caducee.gateway.http.fhir_auth_backend import (
    CredentialsThrottled,
    IdentityBackend,
    authentication,
    principal_of,
)
from caducee.gateway.runtime import Gateway
from caducee.mailboxes.access.rights import (
    AccessSettings,
    Actor,
    RightsError,
    emergency_access,
    emergency_settings,
    known_professionals,
    representatives_of,
    represented_by,
    set_emergency_access,
    set_emergency_switches,
    set_medecin_traitant,
    set_professional_status,
)
from caducee.mailboxes.accounts.store import Account, AccountKind
from caducee.mailboxes.notifications.patients import (
    NotificationSettings,
    PreferenceError,
    preferences,
    update_preferences,
)
from caducee.policies.access import EmergencySwitches, ProfessionalStatus, is_minor
from caducee.records.filing import (
    add_offered_document,
    offered_documents,
    set_hidden_from_professionals,
)
from caducee.records.readers.cda import french_time
from caducee.storage.audit import Action, ActorKind, AuditEvent, Result, history, record_event

MAX_BODY = 16 * 1024
CHALLENGE = 'Basic realm="Caducee", charset="UTF-8"'


@dataclass
class ApiError(Exception):
    """A refusal, said as problem+json."""

    status: int
    title: str
    detail: str | None = None
    rule: str | None = None
    retry_after: int | None = None


def _problem(error: ApiError) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": error.title, "status": error.status}
    if error.detail:
        body["detail"] = error.detail
    if error.rule:
        body["rule"] = error.rule
    headers = {"Cache-Control": "no-store"}
    if error.status == 401:
        headers["WWW-Authenticate"] = CHALLENGE
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return JSONResponse(body, status_code=error.status, media_type=PROBLEM_JSON, headers=headers)


_SWITCHES = ("samu", "break_glass", "masked")


def _switches_json(switches: EmergencySwitches) -> dict[str, bool]:
    return {"enabled": switches.any, **{name: getattr(switches, name) for name in _SWITCHES}}


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _instant(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


class _Names:
    """Directory names for professionals, looked up once per request (never addresses)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._cache: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _describe(entry: DirectoryEntry | None) -> dict[str, Any]:
        if entry is None:
            return {"name": None, "profession": None, "organisation": None}
        person = " ".join(part for part in (entry.given_name, entry.family_name) if part)
        return {
            "name": person or entry.organisation_name or None,
            "profession": entry.profession_label,
            "organisation": entry.organisation_name,
        }

    def by_address(self, address: str) -> dict[str, Any]:
        key = f"a:{address}"
        if key not in self._cache:
            self._cache[key] = self._describe(find_by_address(self.session, address))
        return self._cache[key]

    def by_national_id(self, national_id: str) -> dict[str, Any]:
        key = f"n:{national_id}"
        if key not in self._cache:
            entries = find_by_national_id(self.session, national_id)
            self._cache[key] = self._describe(entries[0] if entries else None)
        return self._cache[key]

    def actor(self, event: AuditEvent, patient_id: int) -> dict[str, Any]:
        described: dict[str, Any] = {"kind": event.actor_kind}
        if event.actor_id == f"account:{patient_id}":
            described["self"] = True
        elif event.actor_id.startswith("idnat:"):
            described.update(self.by_national_id(event.actor_id.removeprefix("idnat:")))
        elif event.actor_id.startswith("account:") and event.actor_kind in (
            ActorKind.PROFESSIONAL.value,
            ActorKind.ORGANISATION.value,
        ):
            account = self.session.get(Account, int(event.actor_id.removeprefix("account:")))
            if account is not None:
                described.update(self.by_address(account.address))
        return described


class PatientApi:
    """Handlers bound to one gateway; every one needs an authenticated patient."""

    def __init__(
        self,
        gateway: Gateway,
        access: AccessSettings,
        notifications: NotificationSettings,
        today: Callable[[], date] | None = None,
    ) -> None:
        self.gateway = gateway
        self.access = access
        self.notifications = notifications
        self.today = today or (lambda: datetime.now(french_time()).date())

    async def _patient(self, request: Request) -> Principal:
        """The authenticated patient (the middleware put them in ``request.user``)."""
        principal = principal_of(request)
        if principal is None:
            raise ApiError(401, "Authentication required")
        if principal.kind != AccountKind.PATIENT.value:
            raise ApiError(403, "Forbidden", "this API serves patients' own spaces only")
        return principal

    @staticmethod
    async def _body(request: Request) -> Mapping[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise ApiError(413, "Request body too large")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise ApiError(400, "Bad request", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Bad request", "the body must be a JSON object")
        return body

    @staticmethod
    def _path_int(request: Request, name: str) -> int:
        raw = str(request.path_params[name])
        if not raw.isdigit() or len(raw) > 18:
            raise ApiError(404, "Not found")
        return int(raw)

    def _run(self, work: Callable[[Session], Any]) -> Any:
        with self.gateway.database.transaction() as session:
            try:
                return work(session)
            except RightsError as error:
                return error  # committed: the refused change's audit event stays

    async def _in_thread(self, work: Callable[[Session], Any]) -> Any:
        try:
            result = await run_in_threadpool(self._run, work)
        except PreferenceError as error:
            raise ApiError(400, "Bad request", str(error)) from None
        if isinstance(result, RightsError):
            status = 404 if result.rule == "F1.not-known" else 409
            raise ApiError(status, "Refused", str(result), rule=result.rule)
        return result

    # -- professionals (F1) ----------------------------------------------------------------------

    def _professionals(self, session: Session, patient_id: int) -> dict[str, Any]:
        names = _Names(session)
        return {
            "professionals": [
                {
                    "id": item.id,
                    **names.by_address(item.address),
                    "status": item.status,
                    "medecin_traitant": item.medecin_traitant,
                    "can_reply": item.can_reply,
                    "first_contact_at": _instant(item.first_contact_at),
                    "last_message_at": _instant(item.last_message_at),
                }
                for item in known_professionals(session, patient_id)
            ],
            "emergency_access": emergency_access(session, patient_id, self.access),
        }

    async def professionals(self, request: Request) -> Response:
        principal = await self._patient(request)
        body = await self._in_thread(
            lambda session: self._professionals(session, principal.account_id)
        )
        return _json(body)

    async def _status(self, request: Request, status: ProfessionalStatus) -> Response:
        principal = await self._patient(request)
        known_id = self._path_int(request, "id")
        actor = Actor.patient(principal.account_id)

        def change(session: Session) -> dict[str, Any]:
            set_professional_status(session, principal.account_id, known_id, status, actor)
            return self._professionals(session, principal.account_id)

        return _json(await self._in_thread(change))

    async def block(self, request: Request) -> Response:
        return await self._status(request, ProfessionalStatus.BLOCKED)

    async def authorise(self, request: Request) -> Response:
        return await self._status(request, ProfessionalStatus.AUTHORISED)

    async def medecin_traitant(self, request: Request) -> Response:
        principal = await self._patient(request)
        body = await self._body(request)
        known_id = body.get("professional")
        if not isinstance(known_id, int) or isinstance(known_id, bool):
            raise ApiError(400, "Bad request", "'professional' must be the id of a professional")
        actor = Actor.patient(principal.account_id)

        def change(session: Session) -> dict[str, Any]:
            set_medecin_traitant(session, principal.account_id, known_id, actor)
            return self._professionals(session, principal.account_id)

        return _json(await self._in_thread(change))

    # -- emergency access (F2) ---------------------------------------------------------------------

    async def emergency(self, request: Request) -> Response:
        """F2: the emergency access switches of the national app's "Accès en cas d'urgence"
        screen: ``samu`` (ETREAT), ``break_glass`` (BTG), ``masked`` (masked documents in an
        emergency read), and ``enabled``, true when SAMU or break-glass is on.

        PUT takes either ``{"enabled": bool}`` (both emergency accesses at once, as before
        the three switches) or any of the three switches (the others keep their value);
        masked documents only ever open to an emergency access, so ``masked`` stays off
        while SAMU and break-glass both are.
        """
        principal = await self._patient(request)
        patient_id = principal.account_id
        if request.method != "PUT":
            current = await self._in_thread(
                lambda session: emergency_settings(session, patient_id, self.access)
            )
            return _json(_switches_json(current))
        body = await self._body(request)
        unknown = set(body) - {"enabled", *_SWITCHES}
        given = {name: body[name] for name in _SWITCHES if name in body}
        if (
            unknown
            or ("enabled" in body) == bool(given)
            or not all(
                isinstance(value, bool) for value in (*given.values(), body.get("enabled", True))
            )
        ):
            raise ApiError(
                400,
                "Bad request",
                "give 'enabled', or any of 'samu', 'break_glass', 'masked', as true or false",
            )
        actor = Actor.patient(patient_id)

        def change(session: Session) -> EmergencySwitches:
            if "enabled" in body:
                set_emergency_access(session, patient_id, body["enabled"], actor)
            else:
                current = emergency_settings(session, patient_id, self.access)
                wanted = {name: given.get(name, getattr(current, name)) for name in _SWITCHES}
                set_emergency_switches(session, patient_id, actor, settings=self.access, **wanted)
            return emergency_settings(session, patient_id, self.access)

        return _json(_switches_json(await self._in_thread(change)))

    # -- document visibility (E5) ------------------------------------------------------------------

    async def visibility(self, request: Request) -> Response:
        principal = await self._patient(request)
        public_id = str(request.path_params["id"])
        body = await self._body(request)
        hidden = body.get("hidden_from_professionals")
        if not isinstance(hidden, bool):
            raise ApiError(400, "Bad request", "'hidden_from_professionals' must be true or false")
        if not (0 < len(public_id) <= 64 and public_id.isalnum()):
            raise ApiError(404, "Not found")
        patient_id = principal.account_id

        def change(session: Session) -> bool:
            if not set_hidden_from_professionals(session, patient_id, public_id, hidden):
                return False
            record_event(
                session,
                actor_kind=ActorKind.PATIENT.value,
                actor_id=f"account:{patient_id}",
                action=Action.DOCUMENT_VISIBILITY.value,
                object_type="document",
                object_id=public_id,
                result=Result.OK.value,
                rule="E5.hidden-from-professionals" if hidden else "E5.shown-to-professionals",
                subject_account_id=patient_id,
                channel="http",
            )
            return True

        if not await self._in_thread(change):
            raise ApiError(404, "Not found", "no such document in your record")
        return _json({"id": public_id, "hidden_from_professionals": hidden})

    # -- offered documents (E1 patient-choice) ----------------------------------------------------

    async def offered(self, request: Request) -> Response:
        principal = await self._patient(request)
        patient_id = principal.account_id

        def read(session: Session) -> list[dict[str, Any]]:
            return [
                {
                    "id": document.public_id,
                    "title": document.title,
                    "type": document.type_display or document.type_code,
                    "mime_type": document.mime_type,
                    "size": document.size,
                    "date": _instant(document.document_date),
                    "received_at": _instant(document.received_at),
                }
                for document in offered_documents(session, patient_id)
            ]

        return _json({"documents": await self._in_thread(read)})

    async def add_document(self, request: Request) -> Response:
        principal = await self._patient(request)
        public_id = str(request.path_params["id"])
        if not (0 < len(public_id) <= 64 and public_id.isalnum()):
            raise ApiError(404, "Not found", "no such offered document")
        patient_id = principal.account_id

        def change(session: Session) -> bool:
            document = add_offered_document(session, patient_id, public_id)
            if document is None:
                return False
            record_event(
                session,
                actor_kind=ActorKind.PATIENT.value,
                actor_id=f"account:{patient_id}",
                action=Action.DOCUMENT_FILE.value,
                object_type="document",
                object_id=public_id,
                result=Result.OK.value,
                rule="E1.patient-choice",
                subject_account_id=patient_id,
                channel="http",
            )
            return True

        if not await self._in_thread(change):
            raise ApiError(404, "Not found", "no such offered document")
        return _json({"id": public_id, "state": "filed"})

    # -- history (F4) ----------------------------------------------------------------------------

    async def history(self, request: Request) -> Response:
        principal = await self._patient(request)
        patient_id = principal.account_id
        params = request.query_params
        limit_raw = params.get("limit", "50")
        before_raw = params.get("before")
        if not limit_raw.isdigit() or (before_raw is not None and not before_raw.isdigit()):
            raise ApiError(400, "Bad request", "'limit' and 'before' are positive integers")
        limit = max(1, min(int(limit_raw), self.access.history_page_max))
        before = int(before_raw) if before_raw is not None else None
        actions = tuple(params.getlist("action"))

        def read(session: Session) -> dict[str, Any]:
            names = _Names(session)
            events = history(session, patient_id, limit=limit, before=before, actions=actions)
            entries = []
            for event in events:
                entry: dict[str, Any] = {
                    "position": int(event.position),
                    "at": _instant(event.occurred_at),
                    "actor": names.actor(event, patient_id),
                    "action": event.action,
                    "object": {"type": event.object_type, "id": event.object_id},
                    "result": event.result,
                    "rule": event.rule,
                    "channel": event.channel,
                }
                if event.reason:
                    entry["reason"] = event.reason
                entries.append(entry)
            page: dict[str, Any] = {"events": entries}
            if len(events) == limit:
                page["next_before"] = int(events[-1].position)
            return page

        return _json(await self._in_thread(read))

    # -- notifications (G1) ------------------------------------------------------------------------

    async def notification_settings(self, request: Request) -> Response:
        principal = await self._patient(request)
        patient_id = principal.account_id
        if request.method in ("PUT", "PATCH"):
            body = await self._body(request)

            def change(session: Session) -> dict[str, Any]:
                return update_preferences(
                    session,
                    patient_id,
                    body,
                    self.notifications,
                    actor_kind=ActorKind.PATIENT.value,
                    actor_id=f"account:{patient_id}",
                    channel="http",
                ).public()

            return _json(await self._in_thread(change))
        value = await self._in_thread(
            lambda session: preferences(session, patient_id, self.notifications).public()
        )
        return _json(value)

    # -- representatives (F3) ----------------------------------------------------------------------

    async def representatives(self, request: Request) -> Response:
        principal = await self._patient(request)
        patient_id = principal.account_id
        today = self.today()

        def read(session: Session) -> dict[str, Any]:
            def active(birth: date | None) -> bool:
                return birth is not None and is_minor(birth, today)

            return {
                "representatives": [
                    {
                        "account": item.representative_account_id,
                        "since": _instant(item.created_at),
                        "active": active(item.minor_birth_date),
                    }
                    for item in representatives_of(session, patient_id)
                ],
                "represents": [
                    {
                        "account": item.minor_account_id,
                        "address": item.minor_address,
                        "since": _instant(item.created_at),
                        "active": active(item.minor_birth_date),
                    }
                    for item in represented_by(session, patient_id)
                ],
            }

        return _json(await self._in_thread(read))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _problem(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _problem(ApiError(exc.status_code, str(exc.detail)))


def _authentication_error(connection: HTTPConnection, exc: AuthenticationError) -> Response:
    """The middleware's refusal of wrong credentials, as problem+json: 401, or 429."""
    if isinstance(exc, CredentialsThrottled):
        detail = f"try again in {exc.retry_after} s"
        error = ApiError(429, "Too many failed sign-ins", detail, retry_after=exc.retry_after)
        return _problem(error)
    return _problem(ApiError(401, "Authentication failed"))


def patient_routes(
    gateway: Gateway,
    *,
    authenticators: Sequence[Authenticator] | None = None,
    access: AccessSettings | None = None,
    notifications: NotificationSettings | None = None,
    today: Callable[[], date] | None = None,
) -> list[BaseRoute]:
    """The ``/api/patient`` routes; pass the FHIR API's authenticators to share them."""
    backend = IdentityBackend(authenticators or default_authenticators(gateway))
    api = PatientApi(
        gateway,
        access or AccessSettings.from_settings(gateway.settings),
        notifications or NotificationSettings.from_settings(gateway.settings),
        today,
    )
    app = Starlette(
        routes=[
            Route("/professionals", api.professionals, methods=["GET"]),
            Route("/professionals/{id}/block", api.block, methods=["POST"]),
            Route("/professionals/{id}/authorise", api.authorise, methods=["POST"]),
            Route("/medecin-traitant", api.medecin_traitant, methods=["PUT"]),
            Route("/emergency-access", api.emergency, methods=["GET", "PUT"]),
            Route("/documents/offered", api.offered, methods=["GET"]),
            Route("/documents/{id}/add", api.add_document, methods=["POST"]),
            Route("/documents/{id}/visibility", api.visibility, methods=["PUT"]),
            Route("/history", api.history, methods=["GET"]),
            Route("/notifications", api.notification_settings, methods=["GET", "PUT", "PATCH"]),
            Route("/representatives", api.representatives, methods=["GET"]),
        ],
        middleware=[authentication(backend, _authentication_error)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    return [Mount("/api/patient", app=app, name="patient-api")]


def access_routes(gateway: Gateway, *, today: Callable[[], date] | None = None) -> list[BaseRoute]:
    """``/fhir`` (patients, representatives, professionals) and ``/api/patient`` with the same
    authenticators (one Basic credential cache, one OIDC token cache): what ``serve`` mounts.

    ``today`` is the French date the age of majority is judged on (tests move it).
    """
    authenticators = default_authenticators(gateway)
    return [
        *fhir_routes(gateway, authenticators=authenticators, today=today),
        *patient_routes(gateway, authenticators=authenticators, today=today),
    ]
