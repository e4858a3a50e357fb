"""The webmail's caregivers pages: "Mes aidants" and "Les personnes que j'aide" (F3, issue 17).

=====  =============================================  =========================================
GET    ``/webmail/caregivers``                        my caregivers and invitations sent (with
                                                      "Demande valable jusqu'au …"), the people
                                                      I help and invitations received
POST   ``/webmail/caregivers/invite``                 invite a caregiver: ``ins``, or
                                                      ``family_name`` + ``given_name`` +
                                                      ``birth_date``
POST   ``/webmail/caregivers/{id}/accept|refuse``     answer an invitation addressed to me
POST   ``/webmail/caregivers/{id}/revoke``            end a delegation, or withdraw an
                                                      invitation, from either side
=====  =============================================  =========================================

Everything is decided by :mod:`caducee.mailboxes.access.caregivers` (limits, expiry, adults
only, each change audited and told to the other side); this module reads the forms, bounds
them, and says the outcome. A refused invitation is shown with its reason (409) — "no
matching profile" says no more than the national app does. A delegation that is not one of
the signed-in patient's, or an invitation already answered, is the 404 page.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from caducee.gateway.web.privacy import form_day
from caducee.gateway.web.sessions import Signed
from caducee.mailboxes.access.caregivers import (
    INVITATION_DAYS,
    MAX_CAREGIVERS,
    MAX_HELPED,
    MAX_NAME,
    NOT_FOUND,
    Lookup,
    caregivers_of,
    helped_by,
)
from caducee.mailboxes.access.caregivers import answer as answer_invitation
from caducee.mailboxes.access.caregivers import invite as send_invitation
from caducee.mailboxes.access.caregivers import revoke as end_delegation
from caducee.mailboxes.access.rights import Actor, RightsError
from caducee.records.readers.cda import french_time

if TYPE_CHECKING:
    from caducee.gateway.web.app import Webmail

CHANNEL = "webmail"
DONE = ("invited", "accepted", "refused", "revoked")
"""What a redirect after a change may say (``?done=``); anything else says nothing."""


def _today() -> date:
    """The date in France: the age of majority is judged on it."""
    return datetime.now(french_time()).date()


def _delegation_id(request: Request) -> int:
    value = request.path_params["id"]
    if not isinstance(value, int) or not 0 < value < 2**62:
        raise HTTPException(404)
    return value


def _field(form: FormData, name: str, limit: int) -> str:
    """A text field, stripped; empty when missing, not text, or longer than ``limit``."""
    value = form.get(name)
    if not isinstance(value, str) or len(value) > limit:
        return ""
    return value.strip()


def _lookup(form: FormData) -> Lookup:
    """The designated person: an INS when one is given, else the three traits."""
    ins = "".join(_field(form, "ins", 40).split())
    if ins:
        return Lookup(ins=ins)
    return Lookup(
        family_name=_field(form, "family_name", MAX_NAME),
        first_given_name=_field(form, "given_name", MAX_NAME),
        birth_date=form_day(_field(form, "birth_date", 10)),
    )


class CaregiverPages:
    """The handlers of the caregivers pages, bound to the webmail."""

    def __init__(self, web: Webmail) -> None:
        self.web = web
        self.gateway = web.gateway

    def _lists(self, account_id: int) -> dict[str, Any]:
        with self.gateway.database.reading() as session:
            mine = caregivers_of(session, account_id)
            theirs = helped_by(session, account_id)
        return {
            "caregivers": mine,
            "helped_active": [item for item in theirs if item.active],
            "invitations": [item for item in theirs if not item.active],
            "can_invite": len(mine) < MAX_CAREGIVERS,
            "max_caregivers": MAX_CAREGIVERS,
            "max_helped": MAX_HELPED,
            "invitation_days": INVITATION_DAYS,
        }

    async def _page(
        self,
        request: Request,
        signed: Signed,
        *,
        refusal: str | None = None,
        status: int = 200,
        form: dict[str, str] | None = None,
    ) -> Response:
        context = await run_in_threadpool(self._lists, signed.account_id)
        done = request.query_params.get("done", "")
        return self.web._render(
            request,
            "caregivers.html",
            {
                **context,
                "section": "caregivers",
                "done": done if done in DONE and refusal is None else "",
                "refusal": refusal,
                "form": form or {},
            },
            status=status,
            signed=signed,
        )

    async def overview(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        return await self._page(request, signed)

    def _change(self, work: Callable[[Session], object]) -> RightsError | None:
        """Run a change; a refused one is committed too (its audit event stays) and returned."""
        with self.gateway.database.transaction() as session:
            try:
                work(session)
            except RightsError as error:
                return error
        return None

    async def invite(self, request: Request) -> Response:
        signed, form = await self.web._post(request)
        lookup = _lookup(form)
        helped_id = signed.account_id
        actor = Actor.patient(helped_id, CHANNEL)
        today = _today()

        def work(session: Session) -> None:
            send_invitation(session, helped_id, lookup, actor, today)

        refusal = await run_in_threadpool(self._change, work)
        if refusal is not None:
            kept = {
                "ins": lookup.ins,
                "family_name": lookup.family_name,
                "given_name": lookup.first_given_name,
                "birth_date": lookup.birth_date.isoformat() if lookup.birth_date else "",
            }
            return await self._page(request, signed, refusal=refusal.rule, status=409, form=kept)
        return RedirectResponse("/webmail/caregivers?done=invited#caregivers", status_code=303)

    async def _answer(self, request: Request, accept: bool) -> Response:
        signed, _form = await self.web._post(request)
        delegation_id = _delegation_id(request)
        caregiver_id = signed.account_id
        actor = Actor.patient(caregiver_id, CHANNEL)
        today = _today()

        def work(session: Session) -> None:
            answer_invitation(session, caregiver_id, delegation_id, accept, actor, today)

        refusal = await run_in_threadpool(self._change, work)
        if refusal is not None and refusal.rule == NOT_FOUND:
            raise HTTPException(404)
        if refusal is not None:
            return await self._page(request, signed, refusal=refusal.rule, status=409)
        done = "accepted" if accept else "refused"
        return RedirectResponse(f"/webmail/caregivers?done={done}#helped", status_code=303)

    async def accept(self, request: Request) -> Response:
        return await self._answer(request, True)

    async def refuse(self, request: Request) -> Response:
        return await self._answer(request, False)

    async def revoke(self, request: Request) -> Response:
        signed, _form = await self.web._post(request)
        delegation_id = _delegation_id(request)
        account_id = signed.account_id
        actor = Actor.patient(account_id, CHANNEL)

        def work(session: Session) -> None:
            end_delegation(session, account_id, delegation_id, actor)

        refusal = await run_in_threadpool(self._change, work)
        if refusal is not None:
            raise HTTPException(404)
        return RedirectResponse("/webmail/caregivers?done=revoked", status_code=303)


def caregiver_routes(web: Webmail) -> list[BaseRoute]:
    """The caregivers pages' routes, for ``webmail_app`` to include."""
    pages = CaregiverPages(web)
    return [
        Route("/caregivers", pages.overview, methods=["GET"]),
        Route("/caregivers/invite", pages.invite, methods=["POST"]),
        Route("/caregivers/{id:int}/accept", pages.accept, methods=["POST"]),
        Route("/caregivers/{id:int}/refuse", pages.refuse, methods=["POST"]),
        Route("/caregivers/{id:int}/revoke", pages.revoke, methods=["POST"]),
    ]
