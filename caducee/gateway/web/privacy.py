"""The webmail's privacy pages: who may see my record, and who did (issue 17, F1, F2, F4).

=====  ==============================================  ======================================
GET    ``/webmail/privacy``                            known professionals (authorised or
                                                       blocked, the médecin traitant), and
                                                       the emergency access switches
POST   ``/webmail/privacy/professionals/{id}/block``   block one (refused for the médecin
                                                       traitant: the rule says why, F1)
POST   ``/webmail/privacy/professionals/{id}/authorise``  authorise one again
POST   ``/webmail/privacy/professionals/{id}/medecin-traitant``  name the médecin traitant
POST   ``/webmail/privacy/emergency``                  ``samu``, ``break-glass``, ``masked``
                                                       (``1`` when on): the three switches
                                                       (F2; masked forced off when both
                                                       others are off)
GET    ``/webmail/privacy/history?from=&to=&kind=&page=``  who accessed what, and every
                                                       change, newest first, 50 a page (F4)
GET    ``/webmail/notifications?page=``                the notification centre (G1)
POST   ``/webmail/notifications/{id}/read|unread|delete``  one notification
POST   ``/webmail/notifications/read-all``             mark them all read
GET    ``/webmail/profiles``, POST ``/profiles/switch``   my profile, a minor's I represent, or
                                                       an adult's I help as caregiver (F3):
                                                       the documents pages then show theirs
                                                       (and, for a caregiver, the messaging
                                                       pages their mailbox)
GET    ``/webmail/notifications/preferences``, POST    contact, language, channels, and the
                                                       types I am told about out of band (G1)
=====  ==============================================  ======================================

The changes are those of the patient API (:mod:`caducee.mailboxes.access.rights`, rules in
:mod:`caducee.policies.access`), each with its audit event, channel ``webmail``. A refused
change (blocking the médecin traitant) is audited too, then shown with its reason (409). A
professional who is not on the signed-in patient's list is the 404 page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from caducee.directory.models import DirectoryEntry
from caducee.directory.service import find_by_address, find_by_national_id
from caducee.gateway.web.sessions import Signed
from caducee.mailboxes.access.caregivers import (
    caregiver_profiles,
    caregiver_verdict,
    caregivers_of,
)
from caducee.mailboxes.access.journal import ACCESS_ACTIONS, journal
from caducee.mailboxes.access.profiles import representative_verdict, represented_profiles
from caducee.mailboxes.access.rights import (
    AccessSettings,
    Actor,
    RightsError,
    emergency_settings,
    known_professionals,
    set_emergency_switches,
    set_medecin_traitant,
    set_professional_status,
)
from caducee.mailboxes.accounts.store import Account
from caducee.mailboxes.notifications.centre import centre_page, mark, mark_all_read, remove
from caducee.mailboxes.notifications.patients import (
    NotificationSettings,
    PreferenceError,
    preferences,
    update_preferences,
)
from caducee.policies.access import ProfessionalStatus
from caducee.records.models import RecordDocument
from caducee.records.readers.cda import french_time
from caducee.storage.audit import ActorKind, AuditEvent

if TYPE_CHECKING:
    from caducee.gateway.web.app import Webmail

CHANNEL = "webmail"
PROFILE_COOKIE = "__Host-caducee-profile"
"""Which profile the pages show: a minor's or a helped person's account id, judged on every
request."""


@dataclass(frozen=True)
class ActingFor:
    """Whose record the documents pages show: the patient's own, a represented minor's, or
    (``caregiver``) the record and the mailbox of an adult who made the patient their
    caregiver."""

    record_id: int
    representative: bool = False
    name: str | None = None
    """The minor's or helped person's name (first given name and birth name)."""
    caregiver: bool = False
    address: str | None = None
    """The helped person's address: whose mailbox the messaging pages use (caregiver only)."""
    caregiver_name: str | None = None
    """The caregiver's own name, as the helped person's list shows it (the signature line)."""

    @property
    def for_someone(self) -> bool:
        """Acting for another person (a minor or a helped adult), not as oneself."""
        return self.representative or self.caregiver

    @property
    def helped_name(self) -> str | None:
        """The helped person's name when acting as their caregiver (whose mailbox is used),
        else None: a representative's messaging stays their own."""
        return self.name if self.caregiver else None


def today_in_france() -> date:
    """The date in France, which the age and delegation rules are judged on."""
    return datetime.now(french_time()).date()


async def acting_for(web: Webmail, request: Request, signed: Signed) -> ActingFor:
    """The profile chosen with the switch, if the access table allows it today (F3), else
    the patient's own: a child who turned 18, or a delegation revoked, drops out on the next
    request."""
    chosen = request.cookies.get(PROFILE_COOKIE, "")
    if not chosen.isdigit() or len(chosen) > 18 or int(chosen) == signed.account_id:
        return ActingFor(signed.account_id)
    other_id = int(chosen)

    def judge() -> ActingFor | None:
        today = today_in_france()
        with web.gateway.database.reading() as session:
            if representative_verdict(session, other_id, signed.account_id, today).allowed:
                for profile in represented_profiles(session, signed.account_id, today):
                    if profile.account_id == other_id:
                        return ActingFor(other_id, True, profile.name)
                return None
            if not caregiver_verdict(session, other_id, signed.account_id, today).allowed:
                return None
            helped = next(
                (
                    profile
                    for profile in caregiver_profiles(session, signed.account_id, today)
                    if profile.account_id == other_id
                ),
                None,
            )
            address = session.scalar(select(Account.address).where(Account.id == other_id))
            if helped is None or address is None:
                return None
            mine = next(
                (
                    item.other_name
                    for item in caregivers_of(session, other_id)
                    if item.other_account_id == signed.account_id
                ),
                "",
            )
            return ActingFor(
                other_id,
                name=helped.name,
                caregiver=True,
                address=str(address),
                caregiver_name=mine or signed.display_name or signed.address,
            )

    found = await run_in_threadpool(judge)
    return found if found is not None else ActingFor(signed.account_id)


def refuse_caregiver(
    web: Webmail, request: Request, signed: Signed, acting: ActingFor, back: str
) -> Response:
    """The 403 page of an action the helped person alone may take (deleting a conversation,
    changing a document's visibility): "Cette action est uniquement disponible pour <nom>.",
    as the national app says it to a caregiver."""
    return web._render(
        request,
        "caregiver_refused.html",
        {"name": acting.name or "", "back": back},
        status=403,
        signed=signed,
    )


def _not_found() -> HTTPException:
    return HTTPException(404)


def _known_id(request: Request) -> int:
    value = request.path_params["id"]
    if not isinstance(value, int) or not 0 < value < 2**62:
        raise _not_found()
    return value


def form_day(value: str | None) -> date | None:
    """A ``YYYY-MM-DD`` date field of a filter form, or None when empty or malformed."""
    if not value or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _instant(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=french_time()).astimezone(UTC)


def _emergency_kind(rule: str | None) -> str | None:
    """Which emergency access an audited read used (``samu`` or ``break-glass``), from the
    rule that decided it, for the history to say so (F4)."""
    if not rule:
        return None
    if rule.startswith("F2.samu-"):
        return "samu"
    if rule.startswith("F2.emergency-"):
        return "break-glass"
    return None


def _describe(entry: DirectoryEntry | None) -> dict[str, str | None]:
    if entry is None:
        return {"name": None, "profession": None, "organisation": None}
    person = " ".join(part for part in (entry.given_name, entry.family_name) if part)
    return {
        "name": person or entry.organisation_name or None,
        "profession": entry.profession_label,
        "organisation": entry.organisation_name,
    }


class _Names:
    """Directory names of the people in the history and the list, looked up once a page."""

    def __init__(self, session: Session, patient_id: int) -> None:
        self.session = session
        self.patient_id = patient_id
        self.cache: dict[str, dict[str, str | None]] = {}

    def by_address(self, address: str) -> dict[str, str | None]:
        key = f"a:{address}"
        if key not in self.cache:
            self.cache[key] = _describe(find_by_address(self.session, address))
        return self.cache[key]

    def actor(self, event: AuditEvent) -> dict[str, Any]:
        """``who``: a name, ``me``, or a kind (operator, system) the page translates."""
        if event.actor_id == f"account:{self.patient_id}":
            return {"me": True}
        key = event.actor_id
        if key in self.cache:
            return {"kind": event.actor_kind, **self.cache[key]}
        described: dict[str, str | None] = {"name": None}
        if key.startswith("idnat:"):
            entries = find_by_national_id(self.session, key.removeprefix("idnat:"))
            described = _describe(entries[0] if entries else None)
        elif key.startswith("account:") and key.removeprefix("account:").isdigit():
            account = self.session.get(Account, int(key.removeprefix("account:")))
            if account is not None:
                described = _describe(find_by_address(self.session, account.address))
                if event.actor_kind in (
                    ActorKind.REPRESENTATIVE.value,
                    ActorKind.CAREGIVER.value,
                ):
                    described = {"name": account.address}
        self.cache[key] = described
        return {"kind": event.actor_kind, **described}


class PrivacyPages:
    """The handlers of the privacy pages, bound to the webmail."""

    def __init__(self, web: Webmail) -> None:
        self.web = web
        self.gateway = web.gateway
        self.access = AccessSettings.from_settings(web.settings)
        self.notifications = NotificationSettings.from_settings(web.settings)

    def _render(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        signed: Signed,
        status: int = 200,
    ) -> Response:
        return self.web._render(
            request, template, {"section": "privacy", **context}, status=status, signed=signed
        )

    # -- professionals and emergency access ----------------------------------------------------

    def _overview(self, patient_id: int) -> dict[str, Any]:
        with self.gateway.database.reading() as session:
            names = _Names(session, patient_id)
            people = []
            for item in known_professionals(session, patient_id):
                described = names.by_address(item.address)
                people.append(
                    {
                        "id": item.id,
                        "name": described["name"] or item.address,
                        "profession": described["profession"],
                        "organisation": described["organisation"],
                        "blocked": item.status == ProfessionalStatus.BLOCKED.value,
                        "medecin_traitant": item.medecin_traitant,
                        "since": item.first_contact_at,
                    }
                )
            return {
                "people": people,
                "authorised": [person for person in people if not person["blocked"]],
                "blocked": [person for person in people if person["blocked"]],
                "emergency": emergency_settings(session, patient_id, self.access),
                "notified_email": self._emergency_email(session, patient_id),
            }

    def _emergency_email(self, session: Session, patient_id: int) -> str | None:
        """Where an emergency access is told (G1), when the patient wants record accesses
        told by e-mail: the page says so, as the app does."""
        current = preferences(session, patient_id, self.notifications)
        wanted = current.record_access and current.email_enabled
        return current.email if wanted and current.email else None

    async def overview(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        context = await run_in_threadpool(self._overview, signed.account_id)
        return self._render(
            request,
            "privacy.html",
            {**context, "changed": request.query_params.get("changed", ""), "refusal": None},
            signed,
        )

    def _change(self, work: Callable[[Session], object]) -> RightsError | None:
        """Run a change; a refused one is committed too (its audit event stays) and returned."""
        with self.gateway.database.transaction() as session:
            try:
                work(session)
            except RightsError as error:
                return error
        return None

    async def _professional(self, request: Request, what: str) -> Response:
        signed, _form = await self.web._post(request)
        known_id = _known_id(request)
        actor = Actor.patient(signed.account_id, CHANNEL)
        patient_id = signed.account_id

        def work(session: Session) -> None:
            if what == "medecin-traitant":
                set_medecin_traitant(session, patient_id, known_id, actor)
                return
            status = (
                ProfessionalStatus.BLOCKED if what == "block" else ProfessionalStatus.AUTHORISED
            )
            set_professional_status(session, patient_id, known_id, status, actor)

        refusal = await run_in_threadpool(self._change, work)
        if refusal is not None and refusal.rule == "F1.not-known":
            raise _not_found()
        if refusal is not None:
            context = await run_in_threadpool(self._overview, patient_id)
            return self._render(
                request,
                "privacy.html",
                {**context, "changed": "", "refusal": refusal.rule},
                signed,
                status=409,
            )
        return RedirectResponse(f"/webmail/privacy?changed={what}#professionals", status_code=303)

    async def block(self, request: Request) -> Response:
        return await self._professional(request, "block")

    async def authorise(self, request: Request) -> Response:
        return await self._professional(request, "authorise")

    async def medecin_traitant(self, request: Request) -> Response:
        return await self._professional(request, "medecin-traitant")

    async def emergency(self, request: Request) -> Response:
        """The three switches in one form; an unchecked box is off. Masked documents are
        forced off when SAMU and break-glass are both off (the policy's rule, applied by
        :func:`set_emergency_switches`), whatever the form said."""
        signed, form = await self.web._post(request)
        actor = Actor.patient(signed.account_id, CHANNEL)

        def work(session: Session) -> None:
            set_emergency_switches(
                session,
                signed.account_id,
                actor,
                samu=form.get("samu") == "1",
                break_glass=form.get("break-glass") == "1",
                masked=form.get("masked") == "1",
                settings=self.access,
            )

        await run_in_threadpool(self._change, work)
        return RedirectResponse("/webmail/privacy?changed=emergency#emergency", status_code=303)

    # -- history (F4) -------------------------------------------------------------------------

    async def history(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        params = request.query_params
        since, until = form_day(params.get("from")), form_day(params.get("to"))
        kind = params.get("kind", "")
        kind = kind if kind in ("access", "") else ""
        raw_page = params.get("page", "1")
        number = int(raw_page) if raw_page.isdigit() and len(raw_page) < 7 else 1
        patient_id = signed.account_id

        def read() -> dict[str, Any]:
            with self.gateway.database.reading() as session:
                found = journal(
                    session,
                    patient_id,
                    since=_instant(since) if since else None,
                    until=_instant(until + timedelta(days=1)) if until else None,
                    actions=ACCESS_ACTIONS if kind == "access" else (),
                    page=number,
                )
                names = _Names(session, patient_id)
                titles = self._titles(session, patient_id, found.events)
                rows = [
                    {
                        "at": event.occurred_at,
                        "who": names.actor(event),
                        "action": event.action,
                        "object_type": event.object_type,
                        "object": titles.get(event.object_id)
                        if event.object_type == "document"
                        else None,
                        "result": event.result,
                        "channel": event.channel,
                        "switch": event.object_id if event.object_type == "emergency" else None,
                        "emergency": _emergency_kind(event.rule),
                    }
                    for event in found.events
                ]
                return {
                    "rows": rows,
                    "total": found.total,
                    "page": found.page,
                    "pages": found.pages,
                }

        page = await run_in_threadpool(read)
        kept = {
            key: value
            for key, value in {
                "from": since.isoformat() if since else "",
                "to": until.isoformat() if until else "",
                "kind": kind,
            }.items()
            if value
        }

        def page_href(target: int) -> str:
            return "/webmail/privacy/history?" + urlencode({**kept, "page": target})

        return self._render(
            request,
            "privacy_history.html",
            {
                **page,
                "filters": {"from": kept.get("from", ""), "to": kept.get("to", ""), "kind": kind},
                "filtered": bool(kept),
                "page_href": page_href,
            },
            signed,
        )

    @staticmethod
    def _titles(
        session: Session, patient_id: int, events: tuple[AuditEvent, ...]
    ) -> dict[str, str]:
        """Titles of the patient's own documents the events name (never another's)."""
        ids = sorted({event.object_id for event in events if event.object_type == "document"})
        if not ids:
            return {}
        rows = session.execute(
            select(RecordDocument.public_id, RecordDocument.title).where(
                RecordDocument.account_id == patient_id,
                RecordDocument.public_id.in_(ids),
                RecordDocument.hidden_from_patient.is_(False),
            )
        )
        return {str(public_id): str(title or "") for public_id, title in rows}

    # -- notifications (G1) -------------------------------------------------------------------

    async def centre(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        raw_page = request.query_params.get("page", "1")
        number = int(raw_page) if raw_page.isdigit() and len(raw_page) < 7 else 1

        def read() -> Any:
            with self.gateway.database.reading() as session:
                found = centre_page(session, signed.account_id, number)
                for item in found.items:
                    session.expunge(item)
                return found

        found = await run_in_threadpool(read)
        return self._render(
            request,
            "notifications.html",
            {"centre": found, "section": "notifications"},
            signed,
        )

    async def notification(self, request: Request) -> Response:
        signed, _form = await self.web._post(request)
        notification_id = _known_id(request)
        action = str(request.path_params["action"])
        if action not in ("read", "unread", "delete"):
            raise _not_found()

        def change() -> bool:
            with self.gateway.database.transaction() as session:
                if action == "delete":
                    return remove(session, signed.account_id, notification_id)
                return mark(session, signed.account_id, notification_id, read=action == "read")

        if not await run_in_threadpool(change):
            raise _not_found()
        return RedirectResponse("/webmail/notifications", status_code=303)

    async def read_all(self, request: Request) -> Response:
        signed, _form = await self.web._post(request)

        def change() -> None:
            with self.gateway.database.transaction() as session:
                mark_all_read(session, signed.account_id)

        await run_in_threadpool(change)
        return RedirectResponse("/webmail/notifications", status_code=303)

    def _preferences(self, patient_id: int) -> dict[str, Any]:
        with self.gateway.database.reading() as session:
            return preferences(session, patient_id, self.notifications).public()

    async def preferences_page(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        current = await run_in_threadpool(self._preferences, signed.account_id)
        return self._render(
            request,
            "notification_preferences.html",
            {
                "prefs": current,
                "error": None,
                "saved": request.query_params.get("saved") == "1",
                "section": "notifications",
            },
            signed,
        )

    async def save_preferences(self, request: Request) -> Response:
        signed, form = await self.web._post(request)

        def text(name: str, limit: int) -> str | None:
            value = form.get(name)
            cleaned = value.strip()[:limit] if isinstance(value, str) else ""
            return cleaned or None

        language = text("language", 8)
        changes: dict[str, Any] = {
            "email": text("email", 320),
            "phone": (text("phone", 32) or "").replace(" ", "") or None,
            "channels": {
                "email": form.get("channel-email") == "1",
                "sms": form.get("channel-sms") == "1",
            },
            "types": {
                kind: form.get(f"type-{kind}") == "1"
                for kind in ("new-message", "new-document", "record-access")
            },
        }
        if language is not None:
            changes["language"] = language
        patient_id = signed.account_id

        def change() -> None:
            with self.gateway.database.transaction() as session:
                update_preferences(
                    session,
                    patient_id,
                    changes,
                    self.notifications,
                    actor_kind=ActorKind.PATIENT.value,
                    actor_id=f"account:{patient_id}",
                    channel=CHANNEL,
                )

        try:
            await run_in_threadpool(change)
        except PreferenceError as error:
            field = (
                "email" if "'email'" in str(error) else "phone" if "'phone'" in str(error) else ""
            )
            shown = {
                "email": changes["email"] or "",
                "phone": changes["phone"] or "",
                "language": changes.get("language", "fr"),
                "channels": changes["channels"],
                "types": changes["types"],
            }
            return self._render(
                request,
                "notification_preferences.html",
                {
                    "prefs": shown,
                    "error": field or "other",
                    "saved": False,
                    "section": "notifications",
                },
                signed,
                status=422,
            )
        return RedirectResponse("/webmail/notifications/preferences?saved=1", status_code=303)

    # -- profiles (F3) ------------------------------------------------------------------------

    async def profiles(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        current = await acting_for(self.web, request, signed)

        def read() -> tuple[list[Any], list[Any]]:
            with self.gateway.database.reading() as session:
                return (
                    represented_profiles(session, signed.account_id, today_in_france()),
                    caregiver_profiles(session, signed.account_id, today_in_france()),
                )

        listed, helped = await run_in_threadpool(read)
        return self._render(
            request,
            "profiles.html",
            {"profiles": listed, "helped": helped, "current": current, "section": "documents"},
            signed,
        )

    async def switch_profile(self, request: Request) -> Response:
        signed, form = await self.web._post(request)
        chosen = form.get("profile")
        response = RedirectResponse("/webmail/documents", status_code=303)
        if chosen == "me":
            response.delete_cookie(PROFILE_COOKIE, path="/", secure=True, httponly=True)
            return response
        if not isinstance(chosen, str) or not chosen.isdigit() or len(chosen) > 18:
            raise _not_found()
        other_id = int(chosen)

        def judge() -> bool:
            """A minor the patient represents, or an adult they help (the access table)."""
            today = today_in_france()
            with self.gateway.database.reading() as session:
                return (
                    representative_verdict(session, other_id, signed.account_id, today).allowed
                    or caregiver_verdict(session, other_id, signed.account_id, today).allowed
                )

        if not await run_in_threadpool(judge):
            raise _not_found()
        response.set_cookie(
            PROFILE_COOKIE, str(other_id), path="/", secure=True, httponly=True, samesite="strict"
        )
        return response


def privacy_routes(web: Webmail) -> list[BaseRoute]:
    """The privacy pages' routes."""
    pages = PrivacyPages(web)
    return [
        Route("/privacy", pages.overview, methods=["GET"]),
        Route("/privacy/professionals/{id:int}/block", pages.block, methods=["POST"]),
        Route("/privacy/professionals/{id:int}/authorise", pages.authorise, methods=["POST"]),
        Route(
            "/privacy/professionals/{id:int}/medecin-traitant",
            pages.medecin_traitant,
            methods=["POST"],
        ),
        Route("/privacy/emergency", pages.emergency, methods=["POST"]),
        Route("/privacy/history", pages.history, methods=["GET"]),
        Route("/notifications", pages.centre, methods=["GET"]),
        Route("/notifications/read-all", pages.read_all, methods=["POST"]),
        Route("/notifications/preferences", pages.preferences_page, methods=["GET"]),
        Route("/notifications/preferences", pages.save_preferences, methods=["POST"]),
        Route("/notifications/{id:int}/{action}", pages.notification, methods=["POST"]),
        Route("/profiles", pages.profiles, methods=["GET"]),
        Route("/profiles/switch", pages.switch_profile, methods=["POST"]),
    ]
