"""Activating a patient space from the webmail (I1): code + birth date, then password + TOTP.

Two forms, no session yet (the patient has no credentials until the end):

1. ``GET/POST /webmail/activate`` — the address, the activation code received by e-mail or
   SMS and the birth date. :func:`~caducee.mailboxes.accounts.lifecycle.start_activation`
   checks them and draws the TOTP secret to enrol; the page shows it as text and as an
   ``otpauth://`` URI (no QR code: no locked library draws one).
2. ``POST /webmail/activate/complete`` — a password (the national rules: 9 characters,
   lower, upper, digit, special) twice and the first value of the authenticator.
   :func:`~caducee.mailboxes.accounts.lifecycle.complete_activation` re-checks the code and
   the birth date, opens the space, and the browser is signed in at once: the TOTP step just
   used is claimed (:func:`~caducee.gateway.web.signin.claim_step`), so the same code cannot
   sign in a second browser.

The lifecycle service is the one the enrolment API and the CLI use; this module adds only
what a door adds. Every attempt goes through the identity service's failure limiter (keyed
by address and client address, shared with SMTP, IMAP, HTTP and the sign-in form, C1): a
wrong code, birth date or authenticator value counts as a failure, and a delayed client gets
``429`` without the lifecycle being asked. The lifecycle's own per-code attempt count (which
voids the code) applies underneath. A wrong address, code or birth date, an expired code and a
space that is not awaiting activation all get the same words (no existence oracle).

The forms carry the pre-session double-submit token of the sign-in form. Step 2 carries the
code, birth date and the secret being enrolled back in hidden fields, so that a refused
password shows the same secret again; every page is ``Cache-Control: no-store`` and the
code is re-checked by the lifecycle on completion, so the hidden values grant nothing.
"""

from __future__ import annotations

import re
import secrets
from datetime import date
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from caducee.gateway.lifecycle import policy_of
from caducee.gateway.web.security import same_origin
from caducee.gateway.web.sessions import csrf_matches, open_session
from caducee.gateway.web.signin import claim_step, matched_step
from caducee.mailboxes.accounts.identity.service import MAX_ADDRESS_LENGTH, source_key
from caducee.mailboxes.accounts.lifecycle import (
    LifecycleError,
    TotpEnrolment,
    complete_activation,
    password_problem,
    start_activation,
)
from caducee.mailboxes.accounts.store import normalise_address
from caducee.storage.db import utcnow

if TYPE_CHECKING:
    from caducee.gateway.web.app import Webmail

MAX_CODE = 40
MAX_PASSWORD = 256
SECRET_CHARS = 64
_FRENCH_DATE = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")


def _text(form: FormData, name: str, limit: int) -> str:
    value = form.get(name)
    return value[:limit].strip() if isinstance(value, str) else ""


def _birth_date(value: str) -> date | None:
    """``JJ/MM/AAAA`` as the national app asks it (``-`` or ``.`` too), or ISO ``AAAA-MM-JJ``."""
    french = _FRENCH_DATE.fullmatch(value.strip())
    try:
        if french is not None:
            day, month, year = (int(part) for part in french.groups())
            return date(year, month, day)
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


def _grouped(secret: str) -> str:
    """The base32 secret in groups of four, easier to type into an app."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


class ActivationPages:
    """The two activation forms of one webmail."""

    def __init__(self, web: Webmail) -> None:
        self.web = web
        self.gateway = web.gateway
        self.limiter = web.gateway.identity.limiter

    # -- helpers ----------------------------------------------------------------------------

    def _page(
        self, request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        from caducee.gateway.web.app import SIGNIN_COOKIE

        token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
        headers = None
        if context.get("wait"):
            headers = {"Retry-After": str(context["wait"])}
        response = self.web._render(
            request, template, {**context, "signin_token": token}, status=status, headers=headers
        )
        response.set_cookie(
            SIGNIN_COOKIE, token, path="/", secure=True, httponly=True, samesite="strict"
        )
        return response

    async def _form(self, request: Request) -> FormData:
        """The posted form, after the same-origin and double-submit checks (else 403)."""
        from caducee.gateway.web.app import SIGNIN_COOKIE, Forbidden

        if not same_origin(request):
            raise Forbidden
        form = await request.form(max_files=0, max_fields=12)
        cookie = request.cookies.get(SIGNIN_COOKIE)
        given = form.get("signin_token")
        if not cookie or not csrf_matches(cookie, given if isinstance(given, str) else None):
            raise Forbidden
        return form

    @staticmethod
    def _ip(request: Request) -> str:
        return request.client.host if request.client is not None else "unknown"

    def _first(
        self,
        request: Request,
        *,
        address: str = "",
        birth: str = "",
        error: str | None = None,
        status: int = 200,
        wait: int | None = None,
    ) -> Response:
        return self._page(
            request,
            "activate.html",
            {"address": address, "birth": birth, "error": error, "wait": wait},
            status,
        )

    # -- step 1 -----------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        if await self.web._signed(request) is not None:
            return RedirectResponse("/webmail/conversations", status_code=303)
        return self._first(request)

    async def start(self, request: Request) -> Response:
        form = await self._form(request)
        address = _text(form, "address", 320)
        code = _text(form, "code", MAX_CODE)
        birth_text = _text(form, "birth_date", 12)
        named = normalise_address(address)[:MAX_ADDRESS_LENGTH]
        source = source_key(self._ip(request))
        decision = self.limiter.check(named, source)
        if not decision.allowed:
            return self._first(
                request,
                address=address,
                birth=birth_text,
                error="throttled",
                status=429,
                wait=decision.retry_after_seconds,
            )
        birth = _birth_date(birth_text)
        result: TotpEnrolment | LifecycleError | None = None
        if named and code and birth is not None:
            policy = policy_of(self.gateway)

            def work() -> TotpEnrolment | LifecycleError:
                with self.gateway.database.transaction() as session:
                    return start_activation(session, self.gateway.blobs, named, code, birth, policy)

            result = await run_in_threadpool(work)
        if not isinstance(result, TotpEnrolment):
            self.limiter.failed(named, source)
            return self._first(
                request, address=address, birth=birth_text, error="refused", status=403
            )
        return self._second(request, named, code, birth_text, result.secret_base32, result.uri)

    # -- step 2 -----------------------------------------------------------------------------

    def _second(
        self,
        request: Request,
        address: str,
        code: str,
        birth: str,
        secret: str,
        uri: str,
        *,
        error: str | None = None,
        problem: str | None = None,
        status: int = 200,
        wait: int | None = None,
    ) -> Response:
        return self._page(
            request,
            "activate_password.html",
            {
                "address": address,
                "code": code,
                "birth": birth,
                "secret": secret,
                "secret_grouped": _grouped(secret),
                "uri": uri,
                "error": error,
                "problem": problem,
                "wait": wait,
            },
            status,
        )

    async def complete(self, request: Request) -> Response:
        form = await self._form(request)
        address = normalise_address(_text(form, "address", 320))[:MAX_ADDRESS_LENGTH]
        code = _text(form, "code", MAX_CODE)
        birth_text = _text(form, "birth_date", 12)
        secret = "".join(ch for ch in _text(form, "secret", SECRET_CHARS) if ch.isalnum())
        uri = _text(form, "uri", 400)
        value = form.get("password")
        password = value[:MAX_PASSWORD] if isinstance(value, str) else ""
        again = form.get("password_again")
        totp = "".join(_text(form, "totp", 12).split())
        birth = _birth_date(birth_text)
        if not uri.startswith("otpauth://totp/"):
            uri = ""

        def again_page(error: str, status: int, **extra: Any) -> Response:
            return self._second(
                request, address, code, birth_text, secret, uri, error=error, status=status, **extra
            )

        problem = password_problem(password)
        if problem is not None:
            return again_page("weak-password", 422, problem=problem)
        if again != password:
            return again_page("mismatch", 422)
        source = source_key(self._ip(request))
        decision = self.limiter.check(address, source)
        if not decision.allowed:
            return again_page("throttled", 429, wait=decision.retry_after_seconds)
        if not (address and code and birth is not None and totp.isdigit() and len(totp) <= 10):
            self.limiter.failed(address, source)
            return again_page("totp", 403)
        policy = policy_of(self.gateway)
        agent = request.headers.get("user-agent")

        def work() -> str | LifecycleError:
            now = utcnow()
            with self.gateway.database.transaction() as session:
                done = complete_activation(
                    session, self.gateway.blobs, address, code, birth, password, totp, policy
                )
                if isinstance(done, LifecycleError):
                    return done
                step = matched_step(session, self.gateway.blobs, done, totp, now)
                if step is not None:
                    claim_step(session, done, step, now)
                return open_session(session, done, agent)

        outcome = await run_in_threadpool(work)
        if isinstance(outcome, LifecycleError):
            self.limiter.failed(address, source)
            if outcome.code == "totp-refused":
                return again_page("totp", 403)
            return self._first(
                request, address=address, birth=birth_text, error="refused", status=403
            )
        self.limiter.succeeded(address, source)
        from caducee.gateway.web.app import SIGNIN_COOKIE

        response = RedirectResponse("/webmail/conversations?activated=1", status_code=303)
        self.web._session_cookie(response, outcome)
        response.delete_cookie(SIGNIN_COOKIE, path="/", secure=True, httponly=True)
        return response


def activation_routes(web: Webmail) -> list[BaseRoute]:
    """``/activate`` (step 1) and ``/activate/complete`` (step 2), under ``/webmail``."""
    pages = ActivationPages(web)
    return [
        Route("/activate", pages.page, methods=["GET"]),
        Route("/activate", pages.start, methods=["POST"]),
        Route("/activate/complete", pages.complete, methods=["POST"]),
    ]
