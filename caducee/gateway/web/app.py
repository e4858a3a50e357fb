"""The patient's webmail under ``/webmail``: server-rendered pages, plain forms (H2).

Every action is an HTML form POST followed by a redirect (no script needed, none served
inline: the CSP forbids it). Pages are Jinja2 templates rendered in the request's language
(:mod:`caducee.gateway.web.i18n`); security headers come from
:class:`~caducee.gateway.web.security.SecurityHeaders`.

=====  ============================================  =========================================
GET    ``/webmail``                                  to the conversations, or to sign in
GET    ``/webmail/sign-in``, POST same               password + TOTP (:mod:`.signin`)
POST   ``/webmail/sign-out``                         ends this session
GET    ``/webmail/conversations?page=``              the conversation list, paged
GET    ``/webmail/conversations/{id}``               a conversation; marks it read (G2 receipt)
POST   ``/webmail/conversations/{id}/reply``         reply, when the submission rules allow (C4)
GET    ``/webmail/new``, POST same                   write to one contact (C4, D2, D3)
GET    ``/webmail/messages/{id}``                    a message outside any conversation
GET    ``/webmail/messages/{id}/html``               its HTML body, sandboxed (own CSP)
GET    ``/webmail/messages/{id}/attachments/{n}``    download an attached file
GET    ``/webmail/sessions``                         the signed-in browsers
POST   ``/webmail/sessions/{id}/revoke``             end one of them
GET    ``/webmail/language?lang=&next=``             choose French or English (a cookie)
=====  ============================================  =========================================

Another patient's conversation, message or session is "not found" (404), the same answer as
an id that does not exist.

Acting as a caregiver (the profile switch of :mod:`.privacy`, F3): the messaging pages use the
helped person's mailbox — the principal the handlers give :class:`Mailbox` and the reply and
compose paths is theirs, with the caregiver as ``acting_account_id`` (:meth:`Webmail.acting`)
— every read and send is audited with the caregiver as actor and the helped person as subject
(F4), and a read marks the message seen in the helped person's mailbox, so the G2 receipt goes
as on the helped person's own read (docs/access.md, "Caregivers").
"""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from babel.dates import format_datetime as babel_datetime
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from caducee.gateway.runtime import Gateway
from caducee.gateway.web import i18n
from caducee.gateway.web.mailbox import (
    EntryRow,
    Mailbox,
    ShownMessage,
    attachment_bytes,
    html_of,
    parse,
    show,
)
from caducee.gateway.web.privacy import ActingFor, acting_for
from caducee.gateway.web.reply import (
    Replies,
    ReplyState,
)
from caducee.gateway.web.security import (
    DOWNLOAD_POLICY,
    SANDBOX_POLICY,
    SecurityHeaders,
    same_origin,
)
from caducee.gateway.web.sessions import (
    Signed,
    csrf_matches,
    find_session,
    live_sessions,
    open_session,
    revoke,
    revoke_session_id,
)
from caducee.gateway.web.signin import WebSignIn
from caducee.mailboxes.accounts.identity.audit import write_with_retries
from caducee.mailboxes.accounts.identity.principal import Principal
from caducee.mailboxes.accounts.store import AccountKind
from caducee.mailboxes.imap_store import ImapStore
from caducee.storage.audit import Action, ActorKind, Result, message_read_event, record_event

HERE = Path(__file__).parent
SESSION_COOKIE = "__Host-caducee-session"
SIGNIN_COOKIE = "__Host-caducee-signin"
LANGUAGE_YEAR = 365 * 24 * 3600
MAX_ID = 2**62
PARIS = ZoneInfo("Europe/Paris")


class NotFound(Exception):
    """Nothing of the signed-in patient's here (or nothing at all: the same answer)."""


class Forbidden(Exception):
    """A POST without a valid CSRF token or from another origin."""


class SignInNeeded(Exception):
    """No live session: a page sends the browser to the sign-in page."""


def _principal(signed: Signed) -> Principal:
    return Principal(signed.account_id, signed.address, signed.kind, "password+totp")


def reader_kind(principal: Principal) -> str:
    """The audit actor kind of a webmail principal: the patient, or (``acting_account_id``
    set: the webmail sets it for nothing else) a caregiver acting for them (F3, F4)."""
    if principal.acting_account_id is not None:
        return ActorKind.CAREGIVER.value
    return ActorKind.PATIENT.value


def _path_id(request: Request, name: str) -> int:
    value = request.path_params[name]
    if not isinstance(value, int) or not 0 < value < MAX_ID:
        raise NotFound
    return value


def _client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


class Webmail:
    """The webmail of one gateway process: its pages, its sessions, its sign-in."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.signin = WebSignIn(gateway)
        store = ImapStore(
            gateway.database,
            gateway.blobs,
            gateway.queue,
            reporting_host=gateway.settings.gateway.hostname,
        )
        self.mailbox = Mailbox(store)
        self.replies = Replies(gateway, self.mailbox)
        self.catalogues = i18n.load_all()
        self.environments = {
            language: self._environment(catalogue)
            for language, catalogue in self.catalogues.items()
        }

    # -- rendering -------------------------------------------------------------------------

    @staticmethod
    def _environment(catalogue: i18n.Catalogue) -> Environment:
        environment = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        environment.install_gettext_callables(  # type: ignore[attr-defined]
            catalogue.gettext, catalogue.ngettext, newstyle=True
        )
        language = catalogue.language

        def when(value: datetime) -> str:
            return str(babel_datetime(value, "d MMM yyyy HH:mm", tzinfo=PARIS, locale=language))

        def size(value: int) -> str:
            if value < 1024:
                return f"{value} o" if language == "fr" else f"{value} B"
            if value < 1024 * 1024:
                return f"{value / 1024:.0f} ko" if language == "fr" else f"{value / 1024:.0f} KB"
            unit = "Mo" if language == "fr" else "MB"
            return f"{value / 1024 / 1024:.1f} {unit}"

        environment.filters["when"] = when
        environment.filters["size"] = size
        return environment

    def _render(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        status: int = 200,
        signed: Signed | None = None,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        language = i18n.negotiate(
            request.cookies.get(i18n.COOKIE), request.headers.get("accept-language")
        )
        other = "en" if language == "fr" else "fr"
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        body = (
            self.environments[language]
            .get_template(template)
            .render(
                lang=language,
                other_language=other,
                language_href=f"/webmail/language?lang={other}&next={quote(here, safe='')}",
                signed=signed,
                csrf=signed.csrf_token if signed is not None else "",
                **context,
            )
        )
        return HTMLResponse(body, status_code=status, headers=headers)

    # -- sessions -------------------------------------------------------------------------

    def _lookup(self, token: str) -> Signed | None:
        with self.gateway.database.transaction() as session:
            return find_session(session, token)

    async def _signed(self, request: Request) -> Signed | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        return await run_in_threadpool(self._lookup, token)

    async def _page_session(self, request: Request) -> Signed:
        signed = await self._signed(request)
        if signed is None:
            raise SignInNeeded
        return signed

    async def _post(self, request: Request) -> tuple[Signed, FormData]:
        """A state-changing request: same origin, a live session, its CSRF token."""
        if not same_origin(request):
            raise Forbidden
        signed = await self._signed(request)
        form = await request.form(max_files=0, max_fields=20)
        if signed is None:
            raise SignInNeeded
        given = form.get("csrf")
        if not csrf_matches(signed.csrf_token, given if isinstance(given, str) else None):
            raise Forbidden
        return signed, form

    @staticmethod
    def _session_cookie(response: Response, token: str) -> None:
        response.set_cookie(
            SESSION_COOKIE, token, path="/", secure=True, httponly=True, samesite="strict"
        )

    async def acting(self, request: Request, signed: Signed) -> tuple[Principal, ActingFor]:
        """Whose mailbox the messaging pages use: the signed-in patient's, or, acting as a
        caregiver (:func:`~caducee.gateway.web.privacy.acting_for`, judged on every request),
        the helped person's, with the caregiver as ``acting_account_id``. A representative
        keeps their own mailbox: mail to a minor goes to the minor's own address (F3)."""
        acting = await acting_for(self, request, signed)
        if not acting.caregiver or acting.address is None:
            return _principal(signed), acting
        principal = Principal(
            acting.record_id,
            acting.address,
            AccountKind.PATIENT.value,
            "password+totp",
            acting_account_id=signed.account_id,
        )
        return principal, acting

    def audit_send(self, principal: Principal, message_id: str) -> None:
        """F4: a message a caregiver sent from the helped person's mailbox (actor: the
        caregiver; subject: the helped person; object: its Message-ID, never its content)."""
        if principal.acting_account_id is None:
            return  # the patient's own sends are in their Sent folder, as ever

        def work(session: Any) -> None:
            record_event(
                session,
                actor_kind=ActorKind.CAREGIVER.value,
                actor_id=f"account:{principal.acting_account_id}",
                action=Action.MESSAGE_SEND.value,
                object_type="message",
                object_id=message_id.strip("<>")[:80] or "-",
                result=Result.OK.value,
                subject_account_id=principal.account_id,
                channel="webmail",
            )

        write_with_retries(self.gateway.database, work)

    # -- pages: sign-in and out --------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        signed = await self._signed(request)
        target = "/webmail/conversations" if signed is not None else "/webmail/sign-in"
        return RedirectResponse(target, status_code=303)

    async def sign_in_page(self, request: Request) -> Response:
        if await self._signed(request) is not None:
            return RedirectResponse("/webmail/conversations", status_code=303)
        return self._sign_in_form(request)

    def _sign_in_form(
        self,
        request: Request,
        *,
        error: str | None = None,
        address: str = "",
        status: int = 200,
        retry_after: int | None = None,
    ) -> Response:
        token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        response = self._render(
            request,
            "sign_in.html",
            {
                "error": error,
                "address": address,
                "signin_token": token,
                "wait": retry_after,
                "signed_out": request.query_params.get("signed-out") == "1",
            },
            status=status,
            headers=headers,
        )
        response.set_cookie(
            SIGNIN_COOKIE, token, path="/", secure=True, httponly=True, samesite="strict"
        )
        return response

    async def sign_in(self, request: Request) -> Response:
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

        address = text("address", 320).strip()
        outcome = await self.signin.sign_in(
            address, text("password", 300), text("code", 20), ip=_client_ip(request)
        )
        if outcome.retry_after is not None:
            return self._sign_in_form(
                request,
                error="throttled",
                address=address,
                status=429,
                retry_after=outcome.retry_after,
            )
        if outcome.account_id is None:
            return self._sign_in_form(request, error="refused", address=address, status=401)
        account_id = outcome.account_id
        agent = request.headers.get("user-agent")

        def create() -> str:
            with self.gateway.database.transaction() as session:
                return open_session(session, account_id, agent)

        token = await run_in_threadpool(create)
        response = RedirectResponse("/webmail/conversations", status_code=303)
        self._session_cookie(response, token)
        response.delete_cookie(SIGNIN_COOKIE, path="/", secure=True, httponly=True)
        return response

    async def sign_out(self, request: Request) -> Response:
        signed, _form = await self._post(request)

        def end() -> None:
            with self.gateway.database.transaction() as session:
                revoke_session_id(session, signed.session_id)

        await run_in_threadpool(end)
        response = RedirectResponse("/webmail/sign-in?signed-out=1", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True)
        return response

    # -- pages: conversations ------------------------------------------------------------------

    async def conversations(self, request: Request) -> Response:
        signed = await self._page_session(request)
        raw_page = request.query_params.get("page", "1")
        page = int(raw_page) if raw_page.isdigit() and len(raw_page) < 7 else 1
        principal, acting = await self.acting(request, signed)
        listed, pages = await run_in_threadpool(self.mailbox.conversations, principal, page)
        page = min(max(1, page), pages)
        return self._render(
            request,
            "conversations.html",
            {
                "conversations": listed,
                "page": page,
                "pages": pages,
                "sent": request.query_params.get("sent") == "1",
                "activated": request.query_params.get("activated") == "1",
                "deleted": request.query_params.get("deleted") == "1",
                "acting": acting,
            },
            signed=signed,
        )

    def _audit_reads(self, principal: Principal, entries: list[EntryRow]) -> None:
        """F4: one ``message.read`` (channel ``webmail``) per message shown, before it is; a
        caregiver's read names the caregiver as reader, the helped person as subject."""

        def work(session: Any) -> None:
            for entry in entries:
                message_read_event(
                    session,
                    reader_account_id=principal.authenticated_account_id,
                    reader_kind=reader_kind(principal),
                    message_id=entry.message_id,
                    mailbox_account_id=principal.account_id,
                    channel="webmail",
                )

        write_with_retries(self.gateway.database, work)

    def _read(
        self,
        signed: Signed,
        entries: list[EntryRow],
        professional: str | None,
        principal: Principal | None = None,
        own_name: str | None = None,
    ) -> list[ShownMessage]:
        """The messages shown, read audited first, then marked read (G2): in ``principal``'s
        mailbox (the signed-in patient's unless a caregiver acts; ``own_name`` then names the
        helped person on the messages they sent)."""
        principal = principal or _principal(signed)
        self._audit_reads(principal, entries)
        shown: list[ShownMessage] = []
        for entry in entries:
            raw = self.mailbox.raw(principal, entry)
            if raw is None:
                continue
            if entry.mine:
                sender = own_name or signed.display_name or signed.address
            else:
                sender = self.mailbox.correspondent_name(professional or entry.envelope_from)
            shown.append(show(entry, raw, sender))
        self.mailbox.mark_read(principal, entries)
        return shown

    async def conversation(self, request: Request) -> Response:
        signed = await self._page_session(request)
        conversation_id = _path_id(request, "id")
        principal, acting = await self.acting(request, signed)
        entries, professional = await run_in_threadpool(
            self.mailbox.conversation_entries, principal, conversation_id
        )
        if not entries or professional is None:
            raise NotFound
        messages = await run_in_threadpool(
            self._read, signed, entries, professional, principal, acting.helped_name
        )
        theirs = [message for message in messages if not message.mine]
        target = await run_in_threadpool(
            self.mailbox.reply_target, principal, professional, theirs[-1] if theirs else None
        )
        state = await self.replies.state(principal, target)
        drafts = await run_in_threadpool(self.mailbox.reply_drafts, principal)
        return self._render(
            request,
            "conversation.html",
            {
                "messages": messages,
                "reply": state,
                "reply_action": f"/webmail/conversations/{conversation_id}/reply",
                "sent": request.query_params.get("sent") == "1",
                "error": None,
                "draft": "",
                "reply_draft": drafts.get(conversation_id),
                "acting": acting,
            },
            signed=signed,
        )

    async def message(self, request: Request) -> Response:
        signed = await self._page_session(request)
        entry_id = _path_id(request, "id")
        principal, acting = await self.acting(request, signed)
        entry = await run_in_threadpool(self.mailbox.entry, principal, entry_id)
        if entry is None:
            raise NotFound
        if entry.conversation_id is not None:
            return RedirectResponse(
                f"/webmail/conversations/{entry.conversation_id}", status_code=303
            )
        messages = await run_in_threadpool(
            self._read, signed, [entry], None, principal, acting.helped_name
        )
        return self._render(
            request,
            "conversation.html",
            {
                "messages": messages,
                "reply": ReplyState(False, "no-reply"),
                "reply_action": None,
                "sent": False,
                "error": None,
                "draft": "",
                "acting": acting,
            },
            signed=signed,
        )

    async def _entry_bytes(self, request: Request) -> tuple[Signed, EntryRow, bytes]:
        signed = await self._page_session(request)
        entry_id = _path_id(request, "id")
        principal, _acting = await self.acting(request, signed)
        entry = await run_in_threadpool(self.mailbox.entry, principal, entry_id)
        if entry is None:
            raise NotFound
        raw = await run_in_threadpool(self.mailbox.raw, principal, entry)
        if raw is None:
            raise NotFound
        await run_in_threadpool(self._audit_reads, principal, [entry])
        return signed, entry, raw

    async def message_html(self, request: Request) -> Response:
        _signed, _entry, raw = await self._entry_bytes(request)
        html = await run_in_threadpool(lambda: html_of(parse(raw)))
        if html is None:
            raise NotFound
        return HTMLResponse(html, headers={"Content-Security-Policy": SANDBOX_POLICY})

    async def attachment(self, request: Request) -> Response:
        _signed, _entry, raw = await self._entry_bytes(request)
        index = request.path_params["index"]
        if not isinstance(index, int) or index > 10_000:
            raise NotFound
        found = await run_in_threadpool(attachment_bytes, raw, index)
        if found is None:
            raise NotFound
        name, content_type, data = found
        disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
        return Response(
            data,
            media_type=content_type if "/" in content_type else "application/octet-stream",
            headers={
                "Content-Disposition": disposition,
                "Content-Security-Policy": DOWNLOAD_POLICY,
            },
        )

    # -- reply ----------------------------------------------------------------------------

    async def new_message_page(self, request: Request) -> Response:
        signed = await self._page_session(request)
        principal, _acting = await self.acting(request, signed)
        contacts = await self.replies.contacts(principal)
        return self._render(
            request,
            "new_message.html",
            {"contacts": contacts, "error": None, "chosen": "", "subject": "", "draft": ""},
            signed=signed,
        )

    async def sessions(self, request: Request) -> Response:
        signed = await self._page_session(request)

        def read() -> list[Any]:
            with self.gateway.database.reading() as session:
                return list(live_sessions(session, signed.account_id, signed.session_id))

        listed = await run_in_threadpool(read)
        return self._render(
            request,
            "sessions.html",
            {"sessions": listed, "revoked": request.query_params.get("revoked") == "1"},
            signed=signed,
        )

    async def revoke_session(self, request: Request) -> Response:
        signed, _form = await self._post(request)
        public_id = str(request.path_params["public_id"])
        if not (0 < len(public_id) <= 32 and public_id.isalnum()):
            raise NotFound

        def end() -> bool:
            with self.gateway.database.transaction() as session:
                return revoke(session, signed.account_id, public_id)

        if not await run_in_threadpool(end):
            raise NotFound
        if public_id == signed.public_id:
            response = RedirectResponse("/webmail/sign-in?signed-out=1", status_code=303)
            response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True)
            return response
        return RedirectResponse("/webmail/sessions?revoked=1", status_code=303)

    # -- language -------------------------------------------------------------------------

    async def language(self, request: Request) -> Response:
        wanted = request.query_params.get("lang", "")
        target = request.query_params.get("next", "/webmail")
        if not target.startswith("/webmail") or "//" in target or "\\" in target:
            target = "/webmail"
        response = RedirectResponse(target, status_code=303)
        if wanted in i18n.LANGUAGES:
            response.set_cookie(
                i18n.COOKIE,
                wanted,
                max_age=LANGUAGE_YEAR,
                path="/",
                secure=True,
                httponly=True,
                samesite="lax",
            )
        return response

    # -- errors ---------------------------------------------------------------------------

    async def not_found(self, request: Request, exc: Exception) -> Response:
        signed = await self._signed(request)
        return self._render(request, "error.html", {"status": 404}, status=404, signed=signed)

    async def forbidden(self, request: Request, exc: Exception) -> Response:
        return self._render(request, "error.html", {"status": 403}, status=403)

    async def sign_in_needed(self, request: Request, exc: Exception) -> Response:
        if request.method == "POST":
            return self._render(request, "error.html", {"status": 401}, status=401)
        return RedirectResponse("/webmail/sign-in", status_code=303)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return await self.not_found(request, exc)
        status = exc.status_code if exc.status_code in (400, 405, 413) else 400
        return self._render(request, "error.html", {"status": status}, status=status)


def webmail_app(gateway: Gateway) -> tuple[Starlette, Webmail]:
    """The webmail's Starlette application (mount it at ``/webmail``)."""
    web = Webmail(gateway)
    from caducee.gateway.web.caregivers import caregiver_routes  # H8; imports Webmail itself
    from caducee.gateway.web.compose import messaging_routes  # H4b; imports Webmail itself
    from caducee.gateway.web.documents import documents_and_privacy_routes  # H4a, the same

    app = Starlette(
        routes=[
            Route("/", web.home, methods=["GET"]),
            Route("/sign-in", web.sign_in_page, methods=["GET"]),
            Route("/sign-in", web.sign_in, methods=["POST"]),
            Route("/sign-out", web.sign_out, methods=["POST"]),
            Route("/conversations", web.conversations, methods=["GET"]),
            Route("/conversations/{id:int}", web.conversation, methods=["GET"]),
            Route("/new", web.new_message_page, methods=["GET"]),
            Route("/messages/{id:int}", web.message, methods=["GET"]),
            Route("/messages/{id:int}/html", web.message_html, methods=["GET"]),
            Route("/messages/{id:int}/attachments/{index:int}", web.attachment, methods=["GET"]),
            Route("/sessions", web.sessions, methods=["GET"]),
            Route("/sessions/{public_id}/revoke", web.revoke_session, methods=["POST"]),
            Route("/language", web.language, methods=["GET"]),
            *messaging_routes(web),
            *documents_and_privacy_routes(web),
            *caregiver_routes(web),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={
            NotFound: web.not_found,
            Forbidden: web.forbidden,
            SignInNeeded: web.sign_in_needed,
            HTTPException: web.http_error,
        },
    )
    return app, web


def webmail_routes(gateway: Gateway) -> list[BaseRoute]:
    """``/`` (to the webmail) and ``/webmail``: what ``serve`` mounts beside the APIs."""
    app, _web = webmail_app(gateway)

    async def root(request: Request) -> Response:
        return RedirectResponse("/webmail", status_code=303)

    return [
        Route("/", root, methods=["GET"]),
        Mount("/webmail", app=SecurityHeaders(app), name="webmail"),
    ]
