"""The patient's account pages: app passwords, export, closure and reopening (C1, I2, I3).

=====  ================================================  =====================================
GET    ``/webmail/account``                              app passwords, sessions, export, close
POST   ``/webmail/account/app-passwords``                create one (shown once, on that page)
POST   ``/webmail/account/app-passwords/{id}/revoke``    revoke one
POST   ``/webmail/account/export``                       the lifecycle export zip (I3)
GET    ``/webmail/account/close``, POST                  closure, the export offered first (I2)
GET    ``/webmail/closed``                               what closure means, how to reopen
GET    ``/webmail/reopen``, POST                         reopen with password + TOTP (I2)
=====  ================================================  =====================================

Every change is the service the CLI and the admin API call, with the patient as actor
(channel ``webmail``): app passwords through :mod:`caducee.gateway.accounts_admin` (argon2id
hashes in ``app_passwords``, the clear text shown once, audited), the export through
:func:`caducee.gateway.export.export_to_file` (the archive ``caducee patient export`` writes:
mbox per folder, the record's documents, a FHIR Bundle, a manifest), closure and reopening
through :func:`~caducee.mailboxes.accounts.lifecycle.close_space` (the patient's own password
is asked, as the lifecycle requires) and :func:`~caducee.mailboxes.accounts.lifecycle.
reopen_space`, with the purge job scheduled by :func:`caducee.gateway.lifecycle.
schedule_purge`. Closure ends every webmail session of the account.

A closed space cannot sign in, so reopening is a door of its own: the address, the password
and a TOTP value, checked like the sign-in (argon2id, a TOTP step accepted once) and through
the identity service's failure limiter; a space that is not closed, a wrong value and an
unknown address get the same answer.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from caducee.gateway.accounts_admin import app_passwords, new_app_password, revoke_app_password
from caducee.gateway.export import export_to_file
from caducee.gateway.lifecycle import policy_of, schedule_purge
from caducee.gateway.web.security import same_origin
from caducee.gateway.web.sessions import WebSession, csrf_matches, open_session
from caducee.gateway.web.signin import claim_step, matched_step
from caducee.mailboxes.accounts.identity.service import MAX_ADDRESS_LENGTH, source_key
from caducee.mailboxes.accounts.lifecycle import (
    AccountCredentials,
    Actor,
    LifecycleError,
    SpaceStatus,
    audit,
    close_space,
    reopen_space,
    space_status,
)
from caducee.mailboxes.accounts.passwords import verify_password
from caducee.mailboxes.accounts.store import AccountKind, find_account, normalise_address
from caducee.storage.db import utcnow

if TYPE_CHECKING:
    from caducee.gateway.web.app import Webmail
    from caducee.gateway.web.sessions import Signed

CHANNEL = "webmail"
MAX_LABEL = 100
MAX_PASSWORD = 256


class AccountPages:
    """The account pages of one webmail."""

    def __init__(self, web: Webmail) -> None:
        self.web = web
        self.gateway = web.gateway
        self.limiter = web.gateway.identity.limiter

    def _actor(self, signed: Signed) -> Actor:
        return Actor.patient(signed.account_id, CHANNEL)

    # -- the account page and app passwords -------------------------------------------------

    async def _page(
        self,
        request: Request,
        signed: Signed,
        *,
        created: tuple[str, str] | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        def read() -> list[Any]:
            with self.gateway.database.reading() as session:
                return list(app_passwords(session, signed.address))

        listed = await run_in_threadpool(read)
        return self.web._render(
            request,
            "account.html",
            {
                "passwords": listed,
                "created": created,
                "error": error,
                "revoked": request.query_params.get("revoked") == "1",
            },
            signed=signed,
            status=status,
        )

    async def account(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        return await self._page(request, signed)

    async def create_password(self, request: Request) -> Response:
        """A new app password, shown once in this response (never stored in clear)."""
        signed, form = await self.web._post(request)
        value = form.get("label")
        label = " ".join(value.split())[:MAX_LABEL] if isinstance(value, str) else ""
        if not label:
            return await self._page(request, signed, error="no-label", status=422)

        def create() -> str:
            with self.gateway.database.transaction() as session:
                _id, password = new_app_password(
                    session, signed.address, label, self._actor(signed)
                )
                return password

        password = await run_in_threadpool(create)
        return await self._page(request, signed, created=(label, password))

    async def revoke_password(self, request: Request) -> Response:
        from caducee.gateway.web.app import NotFound

        signed, _form = await self.web._post(request)
        password_id = request.path_params["id"]
        if not isinstance(password_id, int) or not 0 < password_id < 2**62:
            raise NotFound

        def revoke() -> bool:
            with self.gateway.database.transaction() as session:
                try:
                    revoke_app_password(session, signed.address, password_id, self._actor(signed))
                except LifecycleError:
                    return False
                return True

        if not await run_in_threadpool(revoke):
            raise NotFound
        return RedirectResponse("/webmail/account?revoked=1", status_code=303)

    # -- export -----------------------------------------------------------------------------

    async def export(self, request: Request) -> Response:
        """The lifecycle's export zip (I3), written to a private temporary file, then sent."""
        signed, _form = await self.web._post(request)

        def work() -> Path:
            with self.gateway.database.transaction() as session:
                audit(session, self._actor(signed), "space.export", signed.account_id)
            folder = Path(tempfile.mkdtemp(prefix="caducee-webmail-export-"))
            path = folder / "export.zip"
            try:
                export_to_file(
                    self.gateway.database,
                    self.gateway.blobs,
                    signed.account_id,
                    path,
                    base_url=f"https://{self.gateway.settings.gateway.hostname}/fhir/",
                )
            except BaseException:
                folder.rmdir()
                raise
            return path

        path = await run_in_threadpool(work)

        def cleanup() -> None:
            path.unlink(missing_ok=True)
            path.parent.rmdir()

        return FileResponse(
            path,
            media_type="application/zip",
            filename="mon-espace-sante.zip",
            background=BackgroundTask(cleanup),
        )

    # -- closure ----------------------------------------------------------------------------

    async def close_page(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        return self.web._render(request, "account_close.html", {"error": None}, signed=signed)

    async def close(self, request: Request) -> Response:
        """Close with the patient's password (the lifecycle checks it); sessions end."""
        from caducee.gateway.web.app import SESSION_COOKIE

        signed, form = await self.web._post(request)
        value = form.get("password")
        password = value[:MAX_PASSWORD] if isinstance(value, str) else ""
        deletion = form.get("deletion") == "yes"
        policy = policy_of(self.gateway)

        def work() -> str | None:
            with self.gateway.database.transaction() as session:
                try:
                    space = close_space(
                        session,
                        signed.address,
                        self._actor(signed),
                        policy,
                        deletion_requested=deletion,
                        password=password,
                    )
                except LifecycleError as error:
                    return error.code
                schedule_purge(self.gateway, session, space.account_id)
                session.execute(
                    update(WebSession)
                    .where(
                        WebSession.account_id == signed.account_id,
                        WebSession.revoked_at.is_(None),
                    )
                    .values(revoked_at=utcnow())
                )
            return None

        error = await run_in_threadpool(work)
        if error is not None:
            return self.web._render(
                request,
                "account_close.html",
                {"error": "password" if error == "password-refused" else "refused"},
                signed=signed,
                status=403 if error == "password-refused" else 409,
            )
        target = "/webmail/closed" + ("?deletion=1" if deletion else "")
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True)
        return response

    async def closed(self, request: Request) -> Response:
        return self.web._render(
            request,
            "account_closed.html",
            {"deletion": request.query_params.get("deletion") == "1"},
        )

    # -- reopening --------------------------------------------------------------------------

    def _reopen_form(
        self,
        request: Request,
        *,
        address: str = "",
        error: str | None = None,
        status: int = 200,
        wait: int | None = None,
    ) -> Response:
        from caducee.gateway.web.app import SIGNIN_COOKIE

        token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
        response = self.web._render(
            request,
            "account_reopen.html",
            {"address": address, "error": error, "wait": wait, "signin_token": token},
            status=status,
            headers={"Retry-After": str(wait)} if wait else None,
        )
        response.set_cookie(
            SIGNIN_COOKIE, token, path="/", secure=True, httponly=True, samesite="strict"
        )
        return response

    async def reopen_page(self, request: Request) -> Response:
        return self._reopen_form(request)

    def _reopen(self, address: str, password: str, code: str, agent: str | None) -> str | None:
        """The new session's token when the closed space reopened, else None."""
        now = utcnow()
        with self.gateway.database.transaction() as session:
            account = find_account(session, address)
            if account is None or account.kind != AccountKind.PATIENT.value:
                return None
            if space_status(session, account.id) != SpaceStatus.CLOSED.value:
                return None
            credentials = session.get(AccountCredentials, account.id)
            if credentials is None or not verify_password(credentials.password_hash, password):
                return None
            step = matched_step(session, self.gateway.blobs, account.id, code, now)
            if step is None or not claim_step(session, account.id, step, now):
                return None
            reopen_space(session, account.address, Actor.patient(account.id, CHANNEL))
            return open_session(session, account.id, agent)

    async def reopen(self, request: Request) -> Response:
        from caducee.gateway.web.app import SIGNIN_COOKIE, Forbidden

        if not same_origin(request):
            raise Forbidden
        form = await request.form(max_files=0, max_fields=10)
        cookie = request.cookies.get(SIGNIN_COOKIE)
        given = form.get("signin_token")
        if not cookie or not csrf_matches(cookie, given if isinstance(given, str) else None):
            raise Forbidden

        def text(name: str, limit: int) -> str:
            value = form.get(name)
            return value[:limit] if isinstance(value, str) else ""

        address = normalise_address(text("address", 320))[:MAX_ADDRESS_LENGTH]
        password = text("password", MAX_PASSWORD)
        code = "".join(text("code", 20).split())
        source = source_key(request.client.host if request.client is not None else "unknown")
        decision = self.limiter.check(address, source)
        if not decision.allowed:
            return self._reopen_form(
                request,
                address=address,
                error="throttled",
                status=429,
                wait=decision.retry_after_seconds,
            )
        token = None
        if address and password and code.isdigit() and len(code) <= 10:
            agent = request.headers.get("user-agent")
            token = await run_in_threadpool(self._reopen, address, password, code, agent)
        if token is None:
            self.limiter.failed(address, source)
            return self._reopen_form(request, address=address, error="refused", status=401)
        self.limiter.succeeded(address, source)
        response = RedirectResponse("/webmail/conversations", status_code=303)
        self.web._session_cookie(response, token)
        response.delete_cookie(SIGNIN_COOKIE, path="/", secure=True, httponly=True)
        return response


def account_routes(web: Webmail) -> list[BaseRoute]:
    """The account pages, under ``/webmail``."""
    pages = AccountPages(web)
    return [
        Route("/account", pages.account, methods=["GET"]),
        Route("/account/app-passwords", pages.create_password, methods=["POST"]),
        Route("/account/app-passwords/{id:int}/revoke", pages.revoke_password, methods=["POST"]),
        Route("/account/export", pages.export, methods=["POST"]),
        Route("/account/close", pages.close_page, methods=["GET"]),
        Route("/account/close", pages.close, methods=["POST"]),
        Route("/closed", pages.closed, methods=["GET"]),
        Route("/reopen", pages.reopen_page, methods=["GET"]),
        Route("/reopen", pages.reopen, methods=["POST"]),
    ]
