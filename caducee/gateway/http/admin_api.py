"""The operator's admin API under ``/admin`` and the patient's enrolment API under
``/api/enrolment`` (I1–I3, accounts, app passwords, queue, audit).

Admin calls carry ``Authorization: Bearer cdt_…`` (``caducee admin token create --scope …``);
each operation needs one scope. Every call that reaches an operation is audited (actor
``token:<id>``, channel ``admin``), refusals included. Errors are
``application/problem+json`` (RFC 9457) with a stable ``code``. ``GET /admin/openapi.json``
describes every operation (no authentication).

The enrolment routes need no account (the patient has none yet): the activation code and the
birth date are the credentials, attempts are counted per code and void it after
``[lifecycle] activation_max_attempts``.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from caducee import __version__
from caducee.gateway.accounts_admin import (
    account_view,
    app_passwords,
    create_hosted_account,
    new_app_password,
    revoke_app_password,
    set_account_state,
)
from caducee.gateway.export import export_to_file
from caducee.gateway.http.admin_operations import KINDS, MAX_JOB_ID, OperationsApi
from caducee.gateway.http.admin_problems import ApiProblem, problem
from caducee.gateway.http.admin_schemas import RESPONSES
from caducee.gateway.http.app import PROBLEM_JSON
from caducee.gateway.lifecycle import (
    deliver_activation_code,
    policy_of,
    schedule_opening,
    schedule_purge,
    set_contact,
)
from caducee.gateway.runtime import Gateway
from caducee.mailboxes.access.rights import Actor as RightsActor
from caducee.mailboxes.access.rights import RightsError, add_representative
from caducee.mailboxes.accounts.lifecycle import (
    Actor,
    LifecycleError,
    QualifiedIdentity,
    TotpEnrolment,
    audit,
    close_space,
    complete_activation,
    create_space,
    new_activation_code,
    oppose,
    opposition_proof,
    reopen_space,
    show_space,
    start_activation,
)
from caducee.mailboxes.accounts.store import AccountKind, AccountState, find_account
from caducee.mailboxes.notifications.patients import PreferenceError
from caducee.storage.admin_tokens import AdminToken, verify_token
from caducee.storage.audit import verify_chain
from caducee.storage.traces import verify_checkpoints

MAX_BODY = 16 * 1024
_ADDRESS = r"^[^/@\s\x00-\x1f]{1,64}@[^/@\s\x00-\x1f]{1,253}$"


_ADDRESS_RE = re.compile(_ADDRESS)


# ---------------------------------------------------------------------------------------------
# Request bodies (also the OpenAPI schemas)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatientCreate(_Body):
    ins: str = Field(min_length=15, max_length=15)
    oid: str = Field(default="1.2.250.1.213.1.4.8", max_length=64)
    birth_name: str = Field(min_length=1, max_length=200)
    given_name: str = Field(min_length=1, max_length=200)
    birth_date: date
    sex: str = Field(pattern="^[MF]$")
    birthplace: str = Field(min_length=5, max_length=5)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    representatives: list[str] = Field(default_factory=list, max_length=4)


class CloseBody(_Body):
    deletion_requested: bool = False


class AccountCreate(_Body):
    address: str = Field(min_length=3, max_length=320, pattern=_ADDRESS)


class AppPasswordCreate(_Body):
    label: str = Field(min_length=1, max_length=100)


class EnrolmentStart(_Body):
    address: str = Field(min_length=3, max_length=320, pattern=_ADDRESS)
    code: str = Field(min_length=1, max_length=40)
    birth_date: date


class EnrolmentComplete(EnrolmentStart):
    password: str = Field(min_length=1, max_length=256)
    totp: str = Field(min_length=1, max_length=12)


async def _body(request: Request, model: type[BaseModel], *, optional: bool = False) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiProblem(413, "body-too-large", f"at most {MAX_BODY} bytes")
    if not raw.strip() and optional:
        return model()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiProblem(400, "invalid-json", "the body is not JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ApiProblem(422, "invalid-body", f"{where}: {first['msg']}") from None


# ---------------------------------------------------------------------------------------------
# The admin API


Handler = Callable[[Request, AdminToken], Awaitable[Response]]


class AdminApi:
    """Handlers bound to one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    # -- authentication, scopes, audit -------------------------------------------------------

    def _token(self, header: str) -> tuple[int, frozenset[str]] | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        with self.gateway.database.transaction() as session:
            row = verify_token(session, value.strip())
            return None if row is None else (row.id, row.scope_set)

    def _audit_refusal(self, token_id: int, action: str, code: str) -> None:
        with self.gateway.database.transaction() as session:
            audit(
                session, self._actor(token_id), action, None, result="denied", rule=code,
                object_type="admin", object_id="-",
            )  # fmt: skip

    @staticmethod
    def _actor(token_id: int) -> Actor:
        return Actor.operator(channel="admin", actor_id=f"token:{token_id}")

    def guarded(
        self, scope: str, action: str, handler: Callable[[Request, Actor], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            found = await run_in_threadpool(self._token, request.headers.get("authorization", ""))
            if found is None:
                return problem(
                    401, "unauthenticated", "a valid bearer token is required",
                    **{"WWW-Authenticate": 'Bearer realm="caducee-admin"'},
                )  # fmt: skip
            token_id, scopes = found
            address = request.path_params.get("address")
            if address is not None and not _ADDRESS_RE.fullmatch(str(address)):
                return problem(404, "not-found", "no such space or account")
            if scope not in scopes:
                await run_in_threadpool(self._audit_refusal, token_id, action, "scope")
                return problem(403, "insufficient-scope", f"this operation needs {scope}")
            try:
                return await handler(request, self._actor(token_id))
            except ApiProblem as error:
                await run_in_threadpool(self._audit_refusal, token_id, action, error.code)
                return problem(error.status, error.code, error.detail)
            except LifecycleError as error:
                await run_in_threadpool(self._audit_refusal, token_id, action, error.code)
                return problem(error.status, error.code, str(error))

        return endpoint

    def _run(self, work: Callable[[Session], Any]) -> Any:
        with self.gateway.database.transaction() as session:
            return work(session)

    # -- patient spaces --------------------------------------------------------------------

    async def create_patient(self, request: Request, actor: Actor) -> Response:
        body: PatientCreate = await _body(request, PatientCreate)
        gateway = self.gateway
        policy = policy_of(gateway)

        def work(session: Session) -> tuple[int, str, str, Any]:
            representatives: list[int] = []
            for address in body.representatives:
                holder = find_account(session, address)
                if holder is None or holder.kind != AccountKind.PATIENT.value:
                    raise ApiProblem(422, "F3.not-a-patient", f"no patient space {address}")
                representatives.append(holder.id)
            created = create_space(
                session,
                QualifiedIdentity(
                    body.ins, body.oid, body.birth_name, body.given_name, body.birth_date,
                    body.sex, body.birthplace,
                ),
                policy,
                actor,
                representatives=tuple(representatives),
            )  # fmt: skip
            for representative_id in representatives:
                add_representative(
                    session,
                    created.account_id,
                    representative_id,
                    RightsActor(actor.kind, actor.id, actor.channel),
                )
            set_contact(session, created.account_id, email=body.email, phone=body.phone)
            schedule_opening(gateway, session, created.account_id, created.opens_at)
            return created.account_id, created.address, created.code, created.code_expires_at

        try:
            account_id, address, code, expires = await run_in_threadpool(self._run, work)
        except (PreferenceError, RightsError) as error:
            raise ApiProblem(422, "invalid-body", str(error)) from None
        channels = await run_in_threadpool(
            deliver_activation_code, gateway, account_id, code, expires
        )
        view = await run_in_threadpool(self._view, address)
        body_out: dict[str, Any] = {
            **view,
            "activation_code_channels": channels,
            "activation_code_expires_at": expires.isoformat(),
        }
        if not channels:  # the operator hands it over
            body_out["activation_code"] = code
        return JSONResponse(body_out, status_code=201)

    def _view(self, address: str) -> dict[str, Any]:
        with self.gateway.database.reading() as session:
            return show_space(session, address).public()

    async def show_patient(self, request: Request, actor: Actor) -> Response:
        address = str(request.path_params["address"])

        def work(session: Session) -> dict[str, Any]:
            view = show_space(session, address)
            audit(session, actor, "space.read", view.account_id)
            return view.public()

        return JSONResponse(await run_in_threadpool(self._run, work))

    async def activation_code(self, request: Request, actor: Actor) -> Response:
        address = str(request.path_params["address"])
        policy = policy_of(self.gateway)
        account_id, code, expires = await run_in_threadpool(
            self._run, lambda session: new_activation_code(session, address, policy, actor)
        )
        channels = await run_in_threadpool(
            deliver_activation_code, self.gateway, account_id, code, expires
        )
        out: dict[str, Any] = {"channels": channels, "expires_at": expires.isoformat()}
        if not channels:
            out["activation_code"] = code
        return JSONResponse(out)

    async def oppose_patient(self, request: Request, actor: Actor) -> Response:
        address = str(request.path_params["address"])
        policy = policy_of(self.gateway)

        def work(session: Session) -> str:
            result = oppose(session, address, actor, policy)
            if isinstance(result, LifecycleError):
                raise result
            return result

        reference = await run_in_threadpool(self._run, work)
        return JSONResponse(
            {**await run_in_threadpool(self._view, address), "reference": reference}
        )

    async def proof(self, request: Request, actor: Actor) -> Response:
        address = str(request.path_params["address"])

        def work(session: Session) -> bytes:
            data = opposition_proof(session, address)
            view = show_space(session, address)
            audit(session, actor, "space.opposition-proof", view.account_id)
            return data

        data = await run_in_threadpool(self._run, work)
        return Response(
            data,
            media_type="application/pdf",
            headers={"Content-Disposition": 'attachment; filename="opposition.pdf"'},
        )

    async def close_patient(self, request: Request, actor: Actor) -> Response:
        address = str(request.path_params["address"])
        body: CloseBody = await _body(request, CloseBody, optional=True)
        return await self._close(address, actor, body.deletion_requested)

    async def _close(self, address: str, actor: Actor, deletion: bool) -> Response:
        policy = policy_of(self.gateway)

        def work(session: Session) -> None:
            space = close_space(session, address, actor, policy, deletion_requested=deletion)
            schedule_purge(self.gateway, session, space.account_id)

        await run_in_threadpool(self._run, work)
        return JSONResponse(await run_in_threadpool(self._view, address))

    async def delete_patient(self, request: Request, actor: Actor) -> Response:
        return await self._close(str(request.path_params["address"]), actor, True)

    async def reopen_patient(self, request: Request, actor: Actor) -> Response:
        address = str(request.path_params["address"])
        await run_in_threadpool(self._run, lambda session: reopen_space(session, address, actor))
        return JSONResponse(await run_in_threadpool(self._view, address))

    async def export_patient(self, request: Request, actor: Actor) -> Response:
        address = str(request.path_params["address"])

        def work() -> Path:
            with self.gateway.database.transaction() as session:
                view = show_space(session, address)
                audit(session, actor, "space.export", view.account_id)
            folder = Path(tempfile.mkdtemp(prefix="caducee-export-"))
            path = folder / "export.zip"
            export_to_file(
                self.gateway.database,
                self.gateway.blobs,
                view.account_id,
                path,
                base_url=f"https://{self.gateway.settings.gateway.hostname}/fhir/",
            )
            return path

        path = await run_in_threadpool(work)

        def cleanup() -> None:
            path.unlink(missing_ok=True)
            path.parent.rmdir()

        return FileResponse(
            path,
            media_type="application/zip",
            filename="export.zip",
            background=BackgroundTask(cleanup),
        )

    # -- accounts --------------------------------------------------------------------------

    async def create_account(self, request: Request, actor: Actor) -> Response:
        body: AccountCreate = await _body(request, AccountCreate)
        view = await run_in_threadpool(
            self._run,
            lambda session: account_view(create_hosted_account(session, body.address, actor)),
        )
        return JSONResponse(view, status_code=201)

    async def show_account(self, request: Request, actor: Actor) -> Response:
        address = str(request.path_params["address"])

        def work(session: Session) -> dict[str, Any]:
            account = find_account(session, address)
            if account is None:
                raise LifecycleError("not-found", f"no hosted account {address}", 404)
            audit(session, actor, "account.read", account.id, object_type="account")
            return account_view(account)

        return JSONResponse(await run_in_threadpool(self._run, work))

    def state_endpoint(
        self, target: AccountState
    ) -> Callable[[Request, Actor], Awaitable[Response]]:
        async def endpoint(request: Request, actor: Actor) -> Response:
            address = str(request.path_params["address"])
            changed = await run_in_threadpool(
                self._run, lambda session: set_account_state(session, address, target, actor)
            )
            return JSONResponse({"address": address, "state": target.value, "changed": changed})

        return endpoint

    async def list_app_passwords(self, request: Request, actor: Actor) -> Response:
        address = str(request.path_params["address"])
        rows = await run_in_threadpool(
            self._run, lambda session: [row.public() for row in app_passwords(session, address)]
        )
        return JSONResponse({"app_passwords": rows})

    async def add_app_password(self, request: Request, actor: Actor) -> Response:
        address = str(request.path_params["address"])
        body: AppPasswordCreate = await _body(request, AppPasswordCreate)
        password_id, password = await run_in_threadpool(
            self._run, lambda session: new_app_password(session, address, body.label, actor)
        )
        return JSONResponse(
            {"id": password_id, "label": body.label, "password": password}, status_code=201
        )

    async def revoke_app_password(self, request: Request, actor: Actor) -> Response:
        address = str(request.path_params["address"])
        raw = str(request.path_params["password_id"])
        if not raw.isdigit() or len(raw) > 18:
            raise ApiProblem(404, "not-found", "no such app password")
        await run_in_threadpool(
            self._run,
            lambda session: revoke_app_password(session, address, int(raw), actor),
        )
        return Response(status_code=204)

    # -- operations ------------------------------------------------------------------------

    async def queue(self, request: Request, actor: Actor) -> Response:
        counts = await run_in_threadpool(self.gateway.queue.counts)
        return JSONResponse({"jobs": counts})

    async def audit_verify(self, request: Request, actor: Actor) -> Response:
        def work(session: Session) -> dict[str, Any]:
            report = verify_chain(session)
            forged = verify_checkpoints(session, self.gateway.keyring)
            audit(session, actor, "audit.verify", None, object_type="audit", object_id="chain")
            return {
                "intact": report.intact and forged is None,
                "checkpoints": forged or "ok",
                "events": report.events,
                "broken_at": report.broken_at,
                "problem": report.problem,
            }

        return JSONResponse(await run_in_threadpool(self._run, work))

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


# ---------------------------------------------------------------------------------------------
# Enrolment (the patient, no account yet)


class EnrolmentApi:
    """Activation and opposition by the patient with the code and the birth date."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _run(self, work: Callable[[Session], Any]) -> Any:
        with self.gateway.database.transaction() as session:
            return work(session)

    async def _handle(
        self, request: Request, work: Callable[[Any], Awaitable[Response]], model: type[BaseModel]
    ) -> Response:
        try:
            return await work(await _body(request, model))
        except ApiProblem as error:
            return problem(error.status, error.code, error.detail)
        except LifecycleError as error:
            return problem(error.status, error.code, str(error))

    async def start(self, request: Request) -> Response:
        policy = policy_of(self.gateway)

        async def work(body: EnrolmentStart) -> Response:
            result = await run_in_threadpool(
                self._run,
                lambda session: start_activation(
                    session, self.gateway.blobs, body.address, body.code, body.birth_date, policy
                ),
            )
            if isinstance(result, LifecycleError):
                raise result
            assert isinstance(result, TotpEnrolment)
            return JSONResponse(
                {"totp_secret": result.secret_base32, "otpauth_uri": result.uri},
                headers={"Cache-Control": "no-store"},
            )

        return await self._handle(request, work, EnrolmentStart)

    async def complete(self, request: Request) -> Response:
        policy = policy_of(self.gateway)

        async def work(body: EnrolmentComplete) -> Response:
            result = await run_in_threadpool(
                self._run,
                lambda session: complete_activation(
                    session, self.gateway.blobs, body.address, body.code, body.birth_date,
                    body.password, body.totp, policy,
                ),
            )  # fmt: skip
            if isinstance(result, LifecycleError):
                raise result
            return JSONResponse({"address": body.address, "status": "active"})

        return await self._handle(request, work, EnrolmentComplete)

    async def oppose(self, request: Request) -> Response:
        policy = policy_of(self.gateway)

        async def work(body: EnrolmentStart) -> Response:
            def inner(session: Session) -> bytes | LifecycleError:
                result = oppose(
                    session, body.address, Actor("patient", "-", "http"), policy,
                    code=body.code, birth_date=body.birth_date,
                )  # fmt: skip
                if isinstance(result, LifecycleError):
                    return result
                return opposition_proof(session, body.address)

            result = await run_in_threadpool(self._run, inner)
            if isinstance(result, LifecycleError):
                raise result
            return Response(
                result,
                media_type="application/pdf",
                headers={"Content-Disposition": 'attachment; filename="opposition.pdf"'},
            )

        return await self._handle(request, work, EnrolmentStart)


# ---------------------------------------------------------------------------------------------
# Routes


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return problem(exc.status_code, code, str(exc.detail))


async def _server_error(request: Request, exc: Exception) -> Response:
    return problem(500, "internal-error", "the request failed; the operator's logs say why")


def admin_routes(gateway: Gateway) -> list[BaseRoute]:
    """``/admin`` (operator) and ``/api/enrolment`` (patient), for ``build_http_app``."""
    api = AdminApi(gateway)
    ops = OperationsApi(gateway)
    g = api.guarded
    admin = Starlette(
        routes=[
            Route("/openapi.json", api.openapi, methods=["GET"]),
            Route(
                "/patients",
                g("patients:write", "space.create", api.create_patient),
                methods=["POST"],
            ),
            Route(
                "/patients/{address}",
                g("patients:read", "space.read", api.show_patient),
                methods=["GET"],
            ),
            Route(
                "/patients/{address}",
                g("patients:write", "space.delete-request", api.delete_patient),
                methods=["DELETE"],
            ),
            Route(
                "/patients/{address}/activation-code",
                g("patients:write", "space.activation-code", api.activation_code),
                methods=["POST"],
            ),
            Route(
                "/patients/{address}/oppose",
                g("patients:write", "space.oppose", api.oppose_patient),
                methods=["POST"],
            ),
            Route(
                "/patients/{address}/opposition-proof",
                g("patients:read", "space.opposition-proof", api.proof),
                methods=["GET"],
            ),
            Route(
                "/patients/{address}/close",
                g("patients:write", "space.close", api.close_patient),
                methods=["POST"],
            ),
            Route(
                "/patients/{address}/reopen",
                g("patients:write", "space.reopen", api.reopen_patient),
                methods=["POST"],
            ),
            Route(
                "/patients/{address}/export",
                g("patients:read", "space.export", api.export_patient),
                methods=["GET"],
            ),
            Route(
                "/accounts",
                g("accounts:write", "account.create", api.create_account),
                methods=["POST"],
            ),
            Route(
                "/accounts/{address}",
                g("accounts:read", "account.read", api.show_account),
                methods=["GET"],
            ),
            Route(
                "/accounts/{address}/suspend",
                g("accounts:write", "account-suspend", api.state_endpoint(AccountState.SUSPENDED)),
                methods=["POST"],
            ),
            Route(
                "/accounts/{address}/resume",
                g("accounts:write", "account-resume", api.state_endpoint(AccountState.ACTIVE)),
                methods=["POST"],
            ),
            Route(
                "/accounts/{address}/app-passwords",
                g("accounts:read", "app-password.list", api.list_app_passwords),
                methods=["GET"],
            ),
            Route(
                "/accounts/{address}/app-passwords",
                g("accounts:write", "app-password.add", api.add_app_password),
                methods=["POST"],
            ),
            Route(
                "/accounts/{address}/app-passwords/{password_id}",
                g("accounts:write", "app-password.revoke", api.revoke_app_password),
                methods=["DELETE"],
            ),
            Route("/queue", g("queue:read", "queue.read", api.queue), methods=["GET"]),
            Route("/queue/relay", g("queue:read", "queue.list", ops.relay_list), methods=["GET"]),
            Route(
                "/queue/relay/{job_id}",
                g("queue:read", "queue.show", ops.relay_show),
                methods=["GET"],
            ),
            Route(
                "/queue/relay/{job_id}",
                g("queue:write", "queue.delete", ops.relay_delete),
                methods=["DELETE"],
            ),
            Route(
                "/queue/relay/{job_id}/retry",
                g("queue:write", "queue.retry", ops.relay_retry),
                methods=["POST"],
            ),
            Route(
                "/queue/relay/{job_id}/bounce",
                g("queue:write", "queue.bounce", ops.relay_bounce),
                methods=["POST"],
            ),
            Route("/trust", g("trust:read", "trust.read", ops.trust), methods=["GET"]),
            Route(
                "/trust/domains/{domain}",
                g("trust:read", "trust.check", ops.trust_check),
                methods=["GET"],
            ),
            Route(
                "/trust/anchors",
                g("trust:write", "trust.anchor.add", ops.anchor_add),
                methods=["POST"],
            ),
            Route(
                "/trust/anchors/{fingerprint}",
                g("trust:write", "trust.anchor.remove", ops.anchor_remove),
                methods=["DELETE"],
            ),
            Route(
                "/trust/import",
                g("trust:write", "trust.import", ops.trust_import),
                methods=["POST"],
            ),
            Route(
                "/directory/import",
                g("directory:write", "directory.import", ops.directory_import),
                methods=["POST"],
            ),
            Route(
                "/audit/verify", g("audit:read", "audit.verify", api.audit_verify), methods=["GET"]
            ),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    enrolment_api = EnrolmentApi(gateway)
    enrolment = Starlette(
        routes=[
            Route("/start", enrolment_api.start, methods=["POST"]),
            Route("/complete", enrolment_api.complete, methods=["POST"]),
            Route("/oppose", enrolment_api.oppose, methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    return [Mount("/admin", app=admin), Mount("/api/enrolment", app=enrolment)]


# ---------------------------------------------------------------------------------------------
# OpenAPI


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("title", None)
    return schema


def _problem_responses(*statuses: int) -> dict[str, Any]:
    described = {
        400: "Malformed JSON",
        401: "No valid bearer token",
        403: "The token lacks the scope, or the code/password was refused",
        404: "No such space, account or app password",
        409: "Not possible in the current state",
        410: "The activation code expired",
        413: "Body too large",
        422: "Invalid body",
    }
    return {
        str(status): {
            "description": described[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


def _body_of(name: str, required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3 of ``/admin`` and ``/api/enrolment``."""
    address = {
        "name": "address",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": _ADDRESS, "maxLength": 320},
    }
    password_id = {
        "name": "password_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
    job_id = {
        "name": "job_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_JOB_ID - 1},
    }
    fingerprint = {
        "name": "fingerprint",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    }
    domain = {
        "name": "domain",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 253},
    }

    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema,
                "description": description}  # fmt: skip

    dry_run = query("dry_run", {"type": "boolean"}, "Say what would change, change nothing")
    confirm = query("confirm", {"type": "boolean"}, "Allow removing more than the configured share")
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    errors = (401, 403, 404, 409, 422)

    def op(
        summary: str,
        scope: str,
        ok: str,
        *,
        params: list[dict[str, Any]] | None = None,
        body: str | None = None,
        body_required: bool = True,
        status: str = "200",
        content: dict[str, Any] | None = None,
        problems: tuple[int, ...] = errors,
    ) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "summary": summary,
            "description": f"Scope: `{scope}`.",
            "security": secured,
            "parameters": params or [],
            "responses": {
                status: content or _json(ok),
                **_problem_responses(*problems),
            },
        }
        if body == "file":
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
            operation["responses"].update(_problem_responses(413))
        elif body:
            operation["requestBody"] = _body_of(body, body_required)
            operation["responses"].update(_problem_responses(400, 413))
        return operation

    pdf = {"description": "The proof PDF", "content": {"application/pdf": {"schema": {
        "type": "string", "format": "binary"}}}}  # fmt: skip
    zip_content = {"description": "The export zip", "content": {"application/zip": {"schema": {
        "type": "string", "format": "binary"}}}}  # fmt: skip
    enrolment_problems = _problem_responses(400, 403, 404, 409, 410, 413, 422)
    schemas = {
        name: _schema(model)
        for name, model in (
            ("PatientCreate", PatientCreate),
            ("CloseBody", CloseBody),
            ("AccountCreate", AccountCreate),
            ("AppPasswordCreate", AppPasswordCreate),
            ("EnrolmentStart", EnrolmentStart),
            ("EnrolmentComplete", EnrolmentComplete),
        )
    }
    schemas["Problem"] = {
        "type": "object",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
        },
    }
    schemas.update(RESPONSES)
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "Caducée admin API",
            "version": __version__,
            "description": "Patient spaces (I1–I3), hosted accounts, app passwords, trust "
            "space, directory imports, relay queue and audit, for the operator (bearer "
            "tokens with scopes); enrolment for the patient.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": {
            "/admin/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json("OpenAPI 3 document")},
                }
            },
            "/admin/patients": {
                "post": op(
                    "Create a patient space (A2, I1)",
                    "patients:write",
                    "",
                    body="PatientCreate",
                    status="201",
                    content=_json("The new space (code sent, or shown if no channel)"),
                ),
            },
            "/admin/patients/{address}": {
                "get": op(
                    "A space's identity, state and deadlines",
                    "patients:read",
                    "The space",
                    params=[address],
                ),
                "delete": op(
                    "Deletion request: closes the space, deleted within the delay",
                    "patients:write",
                    "The space",
                    params=[address],
                ),
            },
            "/admin/patients/{address}/activation-code": {
                "post": op(
                    "Issue a new activation code", "patients:write", "Delivery", params=[address]
                ),
            },
            "/admin/patients/{address}/oppose": {
                "post": op("Record an opposition", "patients:write", "The space", params=[address]),
            },
            "/admin/patients/{address}/opposition-proof": {
                "get": op(
                    "The opposition proof", "patients:read", "", params=[address], content=pdf
                ),
            },
            "/admin/patients/{address}/close": {
                "post": op(
                    "Close a space (I2)",
                    "patients:write",
                    "The space",
                    params=[address],
                    body="CloseBody",
                    body_required=False,
                ),
            },
            "/admin/patients/{address}/reopen": {
                "post": op(
                    "Reopen a closed space", "patients:write", "The space", params=[address]
                ),
            },
            "/admin/patients/{address}/export": {
                "get": op(
                    "The space's export zip (I3)",
                    "patients:read",
                    "",
                    params=[address],
                    content=zip_content,
                ),
            },
            "/admin/accounts": {
                "post": op(
                    "Create a hosted account from its directory entry",
                    "accounts:write",
                    "",
                    body="AccountCreate",
                    status="201",
                    content=_json("The account"),
                ),
            },
            "/admin/accounts/{address}": {
                "get": op("An account", "accounts:read", "The account", params=[address]),
            },
            "/admin/accounts/{address}/suspend": {
                "post": op("Suspend sign-ins", "accounts:write", "The state", params=[address]),
            },
            "/admin/accounts/{address}/resume": {
                "post": op("Resume sign-ins", "accounts:write", "The state", params=[address]),
            },
            "/admin/accounts/{address}/app-passwords": {
                "get": op(
                    "List app passwords (never their hashes)",
                    "accounts:read",
                    "The app passwords",
                    params=[address],
                ),
                "post": op(
                    "Create an app password (shown once)",
                    "accounts:write",
                    "",
                    params=[address],
                    body="AppPasswordCreate",
                    status="201",
                    content=_json("The new app password"),
                ),
            },
            "/admin/accounts/{address}/app-passwords/{password_id}": {
                "delete": op(
                    "Revoke an app password",
                    "accounts:write",
                    "",
                    status="204",
                    params=[address, password_id],
                    content={"description": "Revoked"},
                ),
            },
            "/admin/queue": {
                "get": op("Jobs by state", "queue:read", "Counts", problems=(401, 403)),
            },
            "/admin/queue/relay": {
                "get": op(
                    "Relay jobs waiting (all=true: also finished); codes, never content",
                    "queue:read",
                    "The jobs",
                    params=[query("all", {"type": "boolean"}, "Also the finished jobs")],
                    problems=(401, 403, 422),
                ),
            },
            "/admin/queue/relay/{job_id}": {
                "get": op(
                    "One relay job: recipients' domains, states, status codes",
                    "queue:read",
                    "The job",
                    params=[job_id],
                    problems=(401, 403, 404),
                ),
                "delete": op(
                    "Drop a relay job and its message; the sender is NOT told",
                    "queue:write",
                    "",
                    status="204",
                    params=[job_id],
                    content={"description": "Deleted"},
                    problems=(401, 403, 404, 409),
                ),
            },
            "/admin/queue/relay/{job_id}/retry": {
                "post": op(
                    "Attempt a waiting or dead relay job now",
                    "queue:write",
                    "The job",
                    params=[job_id],
                    problems=(401, 403, 404, 409),
                ),
            },
            "/admin/queue/relay/{job_id}/bounce": {
                "post": op(
                    "Fail the pending recipients now; the sender gets a failure DSN",
                    "queue:write",
                    "What was failed",
                    params=[job_id],
                    problems=(401, 403, 404, 409),
                ),
            },
            "/admin/trust": {
                "get": op(
                    "The trust space: domains by source, trust anchors",
                    "trust:read",
                    "The trust space",
                    problems=(401, 403),
                ),
            },
            "/admin/trust/domains/{domain}": {
                "get": op(
                    "Is a domain in the trust space?",
                    "trust:read",
                    "The answer",
                    params=[domain],
                    problems=(401, 403, 404, 422),
                ),
            },
            "/admin/trust/anchors": {
                "post": op(
                    "Add the CA certificates of a PEM body as trust anchors (idempotent)",
                    "trust:write",
                    "Added, already present and refused certificates",
                    body="file",
                    problems=(401, 403, 422),
                ),
            },
            "/admin/trust/anchors/{fingerprint}": {
                "delete": op(
                    "Remove the trust anchor with this SHA-256 fingerprint",
                    "trust:write",
                    "",
                    status="204",
                    params=[fingerprint],
                    content={"description": "Removed"},
                    problems=(401, 403, 404, 422),
                ),
            },
            "/admin/trust/import": {
                "post": op(
                    "Import the national whitelist XML (the body); dry run; confirmation",
                    "trust:write",
                    "What changed (or would)",
                    params=[dry_run, confirm],
                    body="file",
                    problems=(401, 403, 409, 422),
                ),
            },
            "/admin/directory/import": {
                "post": op(
                    "Import a directory extraction (the body); dry run; confirmation",
                    "directory:write",
                    "What changed (or would)",
                    params=[
                        query(
                            "mode",
                            {"type": "string", "enum": ["full", "merge"]},
                            "full (default): entries the file lacks are removed",
                        ),
                        query(
                            "kind",
                            {"type": "string", "enum": sorted(KINDS)},
                            "Refuse a file of the other kind",
                        ),
                        dry_run,
                        confirm,
                    ],
                    body="file",
                    problems=(401, 403, 409, 422),
                ),
            },
            "/admin/audit/verify": {
                "get": op(
                    "Verify the audit chain", "audit:read", "The report", problems=(401, 403)
                ),
            },
            "/api/enrolment/start": {
                "post": {
                    "summary": "Code + birth date: the TOTP secret to enrol",
                    "security": [],
                    "requestBody": _body_of("EnrolmentStart"),
                    "responses": {"200": _json("The TOTP secret"), **enrolment_problems},
                }
            },
            "/api/enrolment/complete": {
                "post": {
                    "summary": "Code + birth date + password + TOTP: the space opens",
                    "security": [],
                    "requestBody": _body_of("EnrolmentComplete"),
                    "responses": {"200": _json("Activated"), **enrolment_problems},
                }
            },
            "/api/enrolment/oppose": {
                "post": {
                    "summary": "Code + birth date: oppose; the proof PDF",
                    "security": [],
                    "requestBody": _body_of("EnrolmentStart"),
                    "responses": {"200": pdf, **enrolment_problems},
                }
            },
        },
    }
    for (path, method), name in _RETURNS.items():
        answer = next(iter(document["paths"][path][method]["responses"].values()))
        answer["content"]["application/json"]["schema"] = {"$ref": f"#/components/schemas/{name}"}
    return document


_RETURNS = {
    ("/admin/patients", "post"): "Space",
    ("/admin/patients/{address}", "get"): "Space",
    ("/admin/patients/{address}", "delete"): "Space",
    ("/admin/patients/{address}/activation-code", "post"): "ActivationCode",
    ("/admin/patients/{address}/oppose", "post"): "Space",
    ("/admin/patients/{address}/close", "post"): "Space",
    ("/admin/patients/{address}/reopen", "post"): "Space",
    ("/admin/accounts", "post"): "Account",
    ("/admin/accounts/{address}", "get"): "Account",
    ("/admin/accounts/{address}/suspend", "post"): "AccountState",
    ("/admin/accounts/{address}/resume", "post"): "AccountState",
    ("/admin/accounts/{address}/app-passwords", "get"): "AppPasswords",
    ("/admin/accounts/{address}/app-passwords", "post"): "NewAppPassword",
    ("/admin/queue", "get"): "JobCounts",
    ("/admin/queue/relay", "get"): "RelayJobs",
    ("/admin/queue/relay/{job_id}", "get"): "RelayJob",
    ("/admin/queue/relay/{job_id}/retry", "post"): "RelayJob",
    ("/admin/queue/relay/{job_id}/bounce", "post"): "Bounced",
    ("/admin/trust", "get"): "TrustSpace",
    ("/admin/trust/domains/{domain}", "get"): "TrustCheck",
    ("/admin/trust/import", "post"): "TrustImport",
    ("/admin/trust/anchors", "post"): "AnchorsAdded",
    ("/admin/directory/import", "post"): "DirectoryImport",
}
"""The schema of each operation's success answer (components from ``admin_schemas``)."""
