"""The FHIR API for professionals and legal representatives, and the audit of every record read
(F2, F3, F4, G1).

:mod:`caducee.gateway.http.fhir_api` serves a patient their own record. This module puts a
gate in front of it, mounted at the same ``/fhir`` (:func:`record_routes` replaces
``fhir_routes``), which authenticates the caller once and then:

- a patient reading their own record goes on to the patient API unchanged; the gate records
  the read in the audit trail with the status it got;
- a professional (HTTP Basic with a hosted professional's app password, or an OpenID Connect
  bearer token of Pro Santé Connect, verified by
  :class:`~caducee.mailboxes.accounts.identity.oidc.TokenVerifier`)
  and a patient acting for a minor (naming the minor's record with ``patient.identifier``) are
  served here: ``GET /fhir/DocumentReference?patient.identifier=<INS>&…``,
  ``GET /fhir/DocumentReference/{id}`` and ``GET /fhir/Binary/{id}``.

Each of those requests gathers facts (is the professional known to the patient, blocked, the
médecin traitant; did the patient enable emergency access and did the caller state a reason;
is there a delegation and is the patient still a minor) and asks the rule table of
:mod:`caducee.policies.access`. A refusal is HTTP 403 with an ``OperationOutcome`` naming the
rule. An access is allowed on a *basis* that decides which documents the caller sees (hidden
documents only for the médecin traitant and the document's own author;
``INVISIBLE_REPRESENTANTS_LEGAUX`` never for a representative); the others are simply absent
(a read answers 404, as for an unknown id). A declared pharmacy is not a known professional,
and break-glass is for personal (PER) mailboxes only.

Break-glass: a professional the patient does not know states a reason in the
``X-Break-Glass-Reason`` header (ASCII) or the ``_reason`` query parameter (any text); it is
kept in the audit event for the patient to read, never logged.

Every decision, allowed or denied, is one audit event, written in the transaction that reads
the record (no audit, no access); an allowed professional access also queues the patient's
``record-access`` notification. Logins over HTTP (a fresh credential check, success or
failure) are audited by :class:`AuditedBasicAuthenticator` and :class:`OidcAuthenticator`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL, QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caducee.directory.identifiers import IdentifierError, parse_ins
from caducee.directory.service import find_by_address, find_by_national_id
from caducee.gateway.http.fhir_api import (
    CHALLENGE,
    FHIR_JSON,
    RENDITION_SUFFIX,
    FhirError,
    document_reference,
    fhir_json,
    fhir_routes,
    parse_search,
)
from caducee.gateway.http.fhir_auth import (
    REALM,
    AuthenticationFailed,
    AuthenticationThrottled,
    Authenticator,
    BasicAuthenticator,
    Principal,
    too_many_failures,
)
from caducee.gateway.runtime import Gateway
from caducee.mailboxes.access.rights import (
    AccessSettings,
    birth_date_of,
    emergency_access,
    patient_by_ins,
    professional_relationship,
    record_is_open,
    representation,
)
from caducee.mailboxes.accounts.identity.oidc import TokenError, TokenVerifier
from caducee.mailboxes.accounts.store import Account, AccountKind, AccountState
from caducee.mailboxes.notifications.patients import Event, queue_notification
from caducee.policies.access import (
    AccessFacts,
    AccessVerdict,
    Actor,
    Basis,
    DocumentFlag,
    access_verdict,
    author_spared_flags,
    document_verdict,
    hidden_flags,
)
from caducee.policies.identity import PRODUCTION_INS_OIDS, TEST_INS_OIDS
from caducee.records.models import DocumentState, RecordDocument
from caducee.records.readers.cda import french_time
from caducee.records.service import (
    MAX_PAGE,
    DocumentQuery,
    _author_condition,
    _date_condition,
    _type_condition,
    read_content,
    record_owner,
    replaced_versions,
)
from caducee.storage.audit import Action, ActorKind, Result, record_event
from caducee.storage.db import Database

log = logging.getLogger("caducee.http.fhir.access")

PRINCIPAL_SCOPE_KEY = "caducee.principal"
PATIENT_PARAMETER = "patient.identifier"
REASON_PARAMETER = "_reason"
BREAK_GLASS_HEADER = "x-break-glass-reason"
ACCESS_RULE_SYSTEM = "urn:caducee:access-rule"
MAX_REASON = 200
BOTH_CHALLENGES = f'{CHALLENGE}, Bearer realm="{REALM}"'
_PUBLIC_PATHS = frozenset({"/metadata", "/openapi.json"})
_NO_STORE = {"Cache-Control": "no-store"}
_PROFESSIONAL_KINDS = frozenset({AccountKind.PROFESSIONAL.value, AccountKind.ORGANISATION.value})
_INS_SYSTEMS = frozenset(f"urn:oid:{oid}" for oid in PRODUCTION_INS_OIDS | TEST_INS_OIDS)


def _id_ok(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-." for c in value)


# ---------------------------------------------------------------------------------------------
# Authentication, audited


def _actor_kind(account_kind: str) -> str:
    if account_kind == AccountKind.PATIENT.value:
        return ActorKind.PATIENT.value
    if account_kind == AccountKind.ORGANISATION.value:
        return ActorKind.ORGANISATION.value
    return ActorKind.PROFESSIONAL.value


class AuditedBasicAuthenticator(BasicAuthenticator):
    """HTTP Basic whose fresh credential checks (not cache hits) are login events (F4).

    The identity service audits them (every failure, fresh successes: channel ``http``);
    the name stays for the callers that build one.
    """


@dataclass(frozen=True)
class TokenPrincipal(Principal):
    """A professional proved by an OIDC token: their national id, and a hosted account if any.

    ``account_id`` is 0 when the professional has no mailbox here (a remote professional of
    another operator reading the record of a patient they wrote to).
    """

    national_id: str = field(default="", repr=False)


class OidcAuthenticator:
    """``Authorization: Bearer <access token>`` of the configured issuer (Pro Santé Connect).

    A verified token is remembered, under its SHA-256, until it expires (at most
    ``max_entries``): the first sight of a token is the login event.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        database: Database,
        *,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = verifier
        self.database = database
        self.max_entries = max_entries
        self.clock = clock
        self._cache: OrderedDict[bytes, tuple[float, TokenPrincipal]] = OrderedDict()

    def _login(
        self, session: Session, result: Result, national_id: str | None, account: int
    ) -> None:
        record_event(
            session,
            actor_kind=ActorKind.PROFESSIONAL.value if national_id else ActorKind.UNKNOWN.value,
            actor_id=f"idnat:{national_id}" if national_id else "unknown",
            action=Action.LOGIN.value,
            object_type="account" if account else "token",
            object_id=str(account) if account else "-",
            result=result.value,
            rule="C1-oidc",
            subject_account_id=account or None,
            channel="http",
        )

    def _verify(self, token: str) -> tuple[float, TokenPrincipal]:
        try:
            claims = self.verifier.claims(token)
            national_id = self.verifier.national_id(claims)
            if national_id is None:
                raise TokenError("the token names no national id")
        except TokenError as error:
            with self.database.transaction() as session:
                self._login(session, Result.FAILED, None, 0)
            raise AuthenticationFailed(str(error)) from None
        national_id = national_id.strip().upper()
        with self.database.transaction() as session:
            hosted = session.scalar(
                select(Account.id)
                .where(
                    Account.address.in_(
                        [entry.address for entry in find_by_national_id(session, national_id)]
                    ),
                    Account.kind != AccountKind.PATIENT.value,
                    Account.state == AccountState.ACTIVE.value,
                )
                .order_by(Account.id)
                .limit(1)
            )
            account_id = int(hosted) if hosted is not None else 0
            self._login(session, Result.OK, national_id, account_id)
        principal = TokenPrincipal(
            account_id=account_id,
            address="",
            kind=AccountKind.PROFESSIONAL.value,
            method="oidc",
            national_id=national_id,
        )
        expires = float(claims.get("exp", 0))
        return expires, principal

    async def authenticate(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = value.strip()
        if not token or len(token) > 16384:
            raise AuthenticationFailed("malformed bearer token")
        key = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        cached = self._cache.get(key)
        if cached is not None:
            expires, principal = cached
            if expires > self.clock():
                return principal
            del self._cache[key]
        expires, principal = await run_in_threadpool(self._verify, token)
        self._cache[key] = (expires, principal)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return principal


# ---------------------------------------------------------------------------------------------
# Who is calling, and the facts of the access table


@dataclass(frozen=True)
class Caller:
    """The caller as the access rules and the audit trail see them (ids, never names)."""

    actor: Actor
    actor_kind: str
    actor_id: str
    account_id: int
    addresses: frozenset[str] = frozenset()
    pharmacies: frozenset[str] = frozenset()
    """Those of ``addresses`` that are pharmacy mailboxes of the directory (C4)."""
    personal: bool = False
    """Authenticated as a person: a PER mailbox, or a PSC token of a person listed with one."""
    author_ids: frozenset[str] = frozenset()
    """The national ids under which the caller may be a document's author (E5, F2)."""


PERSONAL_BAL_TYPE = "PER"


def author_ids(national_id: str | None) -> frozenset[str]:
    """The author ids a national id matches: itself and, for an IdNatPs ``8``+RPPS, the RPPS."""
    if not national_id:
        return frozenset()
    ids = {national_id}
    if len(national_id) == 12 and national_id.startswith("8") and national_id.isdigit():
        ids.add(national_id[1:])
    return frozenset(ids)


def resolve_caller(session: Session, principal: Principal) -> Caller:
    """A principal with what the rules need: a professional's mailbox addresses (all of the
    person's, joined on the national id), which of them are pharmacies, whether a person
    answers for the caller (break-glass), or the patient account."""
    if isinstance(principal, TokenPrincipal):
        entries = find_by_national_id(session, principal.national_id)
        return Caller(
            actor=Actor.PROFESSIONAL,
            actor_kind=ActorKind.PROFESSIONAL.value,
            actor_id=f"idnat:{principal.national_id}",
            account_id=principal.account_id,
            addresses=frozenset(entry.address for entry in entries),
            pharmacies=frozenset(entry.address for entry in entries if entry.pharmacy),
            personal=any(entry.bal_type == PERSONAL_BAL_TYPE for entry in entries),
            author_ids=author_ids(principal.national_id),
        )
    account = session.get(Account, principal.account_id)
    if account is None or account.state == AccountState.CLOSED.value:
        return Caller(Actor.OTHER, ActorKind.UNKNOWN.value, "unknown", principal.account_id)
    if account.kind == AccountKind.PATIENT.value:
        return Caller(Actor.PATIENT, ActorKind.PATIENT.value, f"account:{account.id}", account.id)
    if account.kind not in _PROFESSIONAL_KINDS:
        return Caller(Actor.OTHER, ActorKind.UNKNOWN.value, f"account:{account.id}", account.id)
    addresses = {account.address}
    entry = find_by_address(session, account.address)
    entries = [entry] if entry is not None else []
    national_id = entry.national_id if entry is not None else None
    if national_id:
        entries += find_by_national_id(session, national_id)
        addresses |= {other.address for other in entries}
    return Caller(
        actor=Actor.PROFESSIONAL,
        actor_kind=_actor_kind(account.kind),
        actor_id=f"idnat:{national_id}" if national_id else f"account:{account.id}",
        account_id=account.id,
        addresses=frozenset(addresses),
        pharmacies=frozenset(other.address for other in entries if other.pharmacy),
        # the mailbox that logged in decides: an organisation's box has no person behind it
        personal=entry is not None and entry.bal_type == PERSONAL_BAL_TYPE,
        author_ids=author_ids(national_id),
    )


def access_facts(
    session: Session,
    caller: Caller,
    record_id: int,
    *,
    reason: str | None,
    settings: AccessSettings,
    today: date,
) -> AccessFacts:
    """Everything the access table needs about this caller and this record."""
    record_open = record_is_open(session, record_id)
    if caller.actor is Actor.PATIENT and caller.account_id == record_id:
        return AccessFacts(actor=Actor.PATIENT, record_open=record_open)
    if caller.actor is Actor.PATIENT:
        return AccessFacts(
            actor=Actor.REPRESENTATIVE,
            record_open=record_open,
            delegated=representation(session, record_id, caller.account_id) is not None,
            subject_birth_date=birth_date_of(session, record_id),
            today=today,
        )
    if caller.actor is Actor.PROFESSIONAL:
        relation = professional_relationship(
            session, record_id, caller.addresses, caller.pharmacies
        )
        return AccessFacts(
            actor=Actor.PROFESSIONAL,
            record_open=record_open,
            known=relation.known,
            blocked=relation.blocked,
            medecin_traitant=relation.medecin_traitant,
            emergency_enabled=emergency_access(session, record_id, settings),
            emergency_reason=bool(reason),
            personal_mailbox=caller.personal,
            declared_pharmacy=relation.declared_pharmacy,
        )
    return AccessFacts(actor=Actor.OTHER, record_open=record_open)


_FLAG_COLUMNS = {
    DocumentFlag.HIDDEN_FROM_PATIENT: RecordDocument.hidden_from_patient,
    DocumentFlag.HIDDEN_FROM_REPRESENTATIVES: RecordDocument.hidden_from_representatives,
    DocumentFlag.HIDDEN_FROM_PROFESSIONALS: RecordDocument.hidden_from_professionals,
}


def visible_documents(
    record_id: int, basis: Basis, authors: frozenset[str] = frozenset()
) -> ColumnElement[bool]:
    """The filed documents of a record a caller on ``basis`` sees (from the E5 table).

    ``authors``: the caller's author ids; a flag the table lets the author through does not
    hide the caller's own documents.
    """
    spared = author_spared_flags(basis) if authors else frozenset()
    conditions: list[ColumnElement[bool]] = [
        RecordDocument.account_id == record_id,
        RecordDocument.state == DocumentState.FILED.value,
    ]
    for flag in sorted(hidden_flags(basis)):
        shown: ColumnElement[bool] = _FLAG_COLUMNS[flag].is_(False)
        if flag in spared:
            shown = or_(shown, RecordDocument.author_national_id.in_(sorted(authors)))
        conditions.append(shown)
    return and_(*conditions)


def is_author(document: RecordDocument, caller: Caller) -> bool:
    """The caller is the document's own author (E5, F2)."""
    return bool(document.author_national_id) and document.author_national_id in caller.author_ids


def document_flags(document: RecordDocument) -> frozenset[DocumentFlag]:
    """The E5 flags of a stored document, as the policy names them."""
    flags = set()
    if document.hidden_from_patient:
        flags.add(DocumentFlag.HIDDEN_FROM_PATIENT)
    if document.hidden_from_representatives:
        flags.add(DocumentFlag.HIDDEN_FROM_REPRESENTATIVES)
    if document.hidden_from_professionals:
        flags.add(DocumentFlag.HIDDEN_FROM_PROFESSIONALS)
    return frozenset(flags)


# ---------------------------------------------------------------------------------------------
# Request parsing


def _reason(request: Request, settings: AccessSettings) -> str | None:
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


def _named_ins(request: Request) -> str | None:
    values = request.query_params.getlist(PATIENT_PARAMETER)
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


def _search_params(params: QueryParams) -> QueryParams:
    kept = [
        (k, v) for k, v in params.multi_items() if k not in (PATIENT_PARAMETER, REASON_PARAMETER)
    ]
    return QueryParams(kept)


def _denied(verdict: AccessVerdict) -> FhirError:
    return FhirError(403, "forbidden", f"access denied by rule {verdict.rule}: {verdict.summary}")


# ---------------------------------------------------------------------------------------------
# The API for professionals and representatives


@dataclass
class _Outcome:
    """What one access did, for the response (filled in the worker thread)."""

    verdict: AccessVerdict | None = None
    resources: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    found: bool = False
    content: bytes = b""
    content_type: str = "application/octet-stream"


class DelegatedRecordApi:
    """DocumentReference search/read and Binary for callers reading someone else's record."""

    def __init__(
        self,
        gateway: Gateway,
        settings: AccessSettings,
        *,
        today: Callable[[], date] | None = None,
    ) -> None:
        self.gateway = gateway
        self.settings = settings
        self.today = today or (lambda: datetime.now(french_time()).date())

    @staticmethod
    def _base(request: Request) -> str:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return str(URL(str(request.url)).replace(path=root + "/", query=""))

    @staticmethod
    def _principal(request: Request) -> Principal:
        principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
        if not isinstance(principal, Principal):
            raise FhirError(
                401, "login", "authentication required", {"WWW-Authenticate": BOTH_CHALLENGES}
            )
        return principal

    # -- the decision, audited -----------------------------------------------------------------

    def _decide(
        self,
        session: Session,
        caller: Caller,
        record_id: int,
        reason: str | None,
        action: Action,
        object_type: str,
        object_id: str,
    ) -> AccessVerdict:
        facts = access_facts(
            session, caller, record_id, reason=reason, settings=self.settings, today=self.today()
        )
        verdict = access_verdict(facts)
        if not verdict.allowed:
            self._audit(session, caller, record_id, action, object_type, object_id, verdict, reason)
        return verdict

    def _audit(
        self,
        session: Session,
        caller: Caller,
        record_id: int,
        action: Action,
        object_type: str,
        object_id: str,
        verdict: AccessVerdict,
        reason: str | None,
        *,
        rule: str | None = None,
        allowed: bool | None = None,
    ) -> None:
        ok = verdict.allowed if allowed is None else allowed
        actor_kind = caller.actor_kind
        if caller.actor is Actor.PATIENT and caller.account_id != record_id:
            actor_kind = ActorKind.REPRESENTATIVE.value
        record_event(
            session,
            actor_kind=actor_kind,
            actor_id=caller.actor_id,
            action=action.value,
            object_type=object_type,
            object_id=object_id,
            result=(Result.ALLOWED if ok else Result.DENIED).value,
            rule=rule or verdict.rule,
            subject_account_id=record_id,
            channel="http",
            reason=reason,
        )
        if ok and caller.actor is Actor.PROFESSIONAL and self.settings.notify_record_access:
            queue_notification(session, self.gateway.queue, record_id, Event.RECORD_ACCESS)

    # -- search ----------------------------------------------------------------------------------

    def _search(
        self,
        principal: Principal,
        ins: str,
        query: DocumentQuery,
        reason: str | None,
        base: str,
    ) -> _Outcome:
        outcome = _Outcome()
        with self.gateway.database.transaction() as session:
            account = patient_by_ins(session, ins)
            if account is None:
                return outcome
            outcome.found = True
            caller = resolve_caller(session, principal)
            record_id = account.id
            verdict = self._decide(
                session, caller, record_id, reason, Action.RECORD_SEARCH, "record", str(record_id)
            )
            outcome.verdict = verdict
            if not verdict.allowed or verdict.basis is None:
                return outcome
            conditions: list[ColumnElement[bool]] = [
                visible_documents(record_id, verdict.basis, caller.author_ids),
                RecordDocument.status.in_(query.statuses),
            ]
            conditions += [_type_condition(alternatives) for alternatives in query.types]
            conditions += [_date_condition(wanted) for wanted in query.dates]
            conditions += [_author_condition(alternatives) for alternatives in query.authors]
            where = and_(*conditions)
            outcome.total = int(
                session.scalar(select(func.count()).select_from(RecordDocument).where(where)) or 0
            )
            documents = list(
                session.scalars(
                    select(RecordDocument)
                    .where(where)
                    .order_by(RecordDocument.document_date.desc(), RecordDocument.id.desc())
                    .limit(min(max(query.count, 0), MAX_PAGE))
                    .offset(max(query.offset, 0))
                )
            )
            replaced = replaced_versions(session, documents)
            owner = record_owner(session, record_id)
            outcome.resources = [
                document_reference(doc, owner, base, replaced.get(doc.id, ())) for doc in documents
            ]
            self._audit(
                session,
                caller,
                record_id,
                Action.RECORD_SEARCH,
                "record",
                str(record_id),
                verdict,
                reason,
            )
        return outcome

    async def search(self, request: Request) -> Response:
        principal = self._principal(request)
        ins = _named_ins(request)
        if ins is None:
            raise FhirError(
                400, "required", f"name the patient's record with '{PATIENT_PARAMETER}=<INS>'"
            )
        reason = _reason(request, self.settings)
        query = parse_search(_search_params(request.query_params))
        base = self._base(request)
        outcome = await run_in_threadpool(self._search, principal, ins, query, reason, base)
        if not outcome.found:
            raise FhirError(404, "not-found", "no such patient")
        if outcome.verdict is None or not outcome.verdict.allowed:
            assert outcome.verdict is not None
            raise _denied(outcome.verdict)
        links = [{"relation": "self", "url": str(request.url)}]
        if query.offset + len(outcome.resources) < outcome.total and query.count > 0:
            links.append(
                {
                    "relation": "next",
                    "url": str(
                        request.url.include_query_params(_offset=str(query.offset + query.count))
                    ),
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
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": outcome.total,
            "link": links,
        }
        if outcome.resources:
            bundle["entry"] = [
                {
                    "fullUrl": f"{base}DocumentReference/{resource['id']}",
                    "resource": resource,
                    "search": {"mode": "match"},
                }
                for resource in outcome.resources
            ]
        return fhir_json(bundle)

    # -- read and Binary -------------------------------------------------------------------------

    def _document(
        self,
        principal: Principal,
        public_id: str,
        ins: str | None,
        reason: str | None,
        action: Action,
        base: str,
        rendition: bool,
    ) -> _Outcome:
        outcome = _Outcome()
        with self.gateway.database.transaction() as session:
            document = session.scalar(
                select(RecordDocument).where(
                    RecordDocument.public_id == public_id,
                    RecordDocument.state == DocumentState.FILED.value,
                )
            )
            if document is None:
                return outcome
            record_id = document.account_id
            if ins is not None:
                named = patient_by_ins(session, ins)
                if named is None or named.id != record_id:
                    return outcome
            caller = resolve_caller(session, principal)
            verdict = self._decide(
                session, caller, record_id, reason, action, "document", public_id
            )
            outcome.verdict = verdict
            if not verdict.allowed or verdict.basis is None:
                outcome.found = True
                return outcome
            shown = document_verdict(
                verdict.basis, document_flags(document), author=is_author(document, caller)
            )
            if not shown.visible:
                self._audit(
                    session,
                    caller,
                    record_id,
                    action,
                    "document",
                    public_id,
                    verdict,
                    reason,
                    rule=shown.rule,
                    allowed=False,
                )
                return outcome
            if action is Action.DOCUMENT_CONTENT:
                data = read_content(session, self.gateway.blobs, document, rendition=rendition)
                if data is None:
                    return outcome
                outcome.content = data
                outcome.content_type = (
                    document.rendition_mime_type if rendition else document.mime_type
                ) or "application/octet-stream"
            else:
                owner = record_owner(session, record_id)
                replaced = replaced_versions(session, [document]).get(document.id, ())
                outcome.resources = [document_reference(document, owner, base, replaced)]
            outcome.found = True
            self._audit(session, caller, record_id, action, "document", public_id, verdict, reason)
        return outcome

    async def _one(
        self, request: Request, action: Action, rendition: bool, public_id: str
    ) -> _Outcome:
        principal = self._principal(request)
        ins = _named_ins(request)
        if ins is None and principal.kind == AccountKind.PATIENT.value:
            raise FhirError(400, "required", f"name the minor's record with '{PATIENT_PARAMETER}'")
        reason = _reason(request, self.settings)
        outcome = _Outcome()
        if _id_ok(public_id):
            outcome = await run_in_threadpool(
                self._document,
                principal,
                public_id,
                ins,
                reason,
                action,
                self._base(request),
                rendition,
            )
        if outcome.verdict is not None and not outcome.verdict.allowed:
            raise _denied(outcome.verdict)
        if not outcome.found:
            what = "Binary" if action is Action.DOCUMENT_CONTENT else "DocumentReference"
            raise FhirError(404, "not-found", f"no such {what}")
        return outcome

    async def read(self, request: Request) -> Response:
        outcome = await self._one(
            request, Action.DOCUMENT_READ, False, str(request.path_params["id"])
        )
        return fhir_json(outcome.resources[0])

    async def binary(self, request: Request) -> Response:
        binary_id = str(request.path_params["id"])
        rendition = binary_id.endswith(RENDITION_SUFFIX)
        public_id = binary_id.removesuffix(RENDITION_SUFFIX) if rendition else binary_id
        outcome = await self._one(request, Action.DOCUMENT_CONTENT, rendition, public_id)
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


def _outcome_response(error: FhirError) -> JSONResponse:
    issue: dict[str, Any] = {
        "severity": "error",
        "code": error.code,
        "diagnostics": error.diagnostics,
    }
    if error.status == 403 and error.diagnostics.startswith("access denied by rule "):
        rule = error.diagnostics.removeprefix("access denied by rule ").partition(":")[0]
        issue["details"] = {"coding": [{"system": ACCESS_RULE_SYSTEM, "code": rule}], "text": rule}
    return fhir_json(
        {"resourceType": "OperationOutcome", "issue": [issue]},
        error.status,
        **dict(error.headers or {}),
    )


async def _on_fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return _outcome_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not-found", 405: "not-supported", 400: "invalid"}
    error = FhirError(exc.status_code, codes.get(exc.status_code, "processing"), str(exc.detail))
    return _outcome_response(error)


async def _on_server_error(request: Request, exc: Exception) -> Response:
    log.error("FHIR access request failed", extra={"reason": type(exc).__name__})
    return _outcome_response(FhirError(500, "exception", "internal error"))


# ---------------------------------------------------------------------------------------------
# The gate in front of /fhir


_PATIENT_ACTIONS = (
    ("/DocumentReference/", Action.DOCUMENT_READ),
    ("/Binary/", Action.DOCUMENT_CONTENT),
)


def _route_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


class RecordGate:
    """Authenticates once, then sends the request to the patient API or the delegated one."""

    def __init__(
        self,
        database: Database,
        patient_app: ASGIApp,
        delegated_app: ASGIApp,
        authenticators: Sequence[Authenticator],
    ) -> None:
        self.database = database
        self.patient_app = patient_app
        self.delegated_app = delegated_app
        self.authenticators = list(authenticators)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope) in _PUBLIC_PATHS:
            await self.patient_app(scope, receive, send)
            return
        request = Request(scope)
        principal: Principal | None = None
        try:
            for authenticator in self.authenticators:
                principal = await authenticator.authenticate(request)
                if principal is not None:
                    break
        except AuthenticationThrottled as throttled:
            await too_many_failures(throttled)(scope, receive, send)
            return
        except AuthenticationFailed:
            error = FhirError(
                401, "login", "authentication failed", {"WWW-Authenticate": BOTH_CHALLENGES}
            )
            await _outcome_response(error)(scope, receive, send)
            return
        if principal is None:
            await self.patient_app(scope, receive, send)
            return
        own = principal.kind == AccountKind.PATIENT.value and (
            PATIENT_PARAMETER not in request.query_params
        )
        if not own:
            await self.delegated_app({**scope, PRINCIPAL_SCOPE_KEY: principal}, receive, send)
            return
        await self._audited(principal, scope, receive, send)

    async def _audited(
        self, principal: Principal, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """The patient's own read, passed on; then one audit event with the status it got."""
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.patient_app(scope, receive, watch)
        if scope.get("method") not in ("GET", "HEAD"):
            return
        path = _route_path(scope)
        action, object_type, object_id = Action.RECORD_SEARCH, "record", str(principal.account_id)
        for prefix, candidate in _PATIENT_ACTIONS:
            if path.startswith(prefix):
                action, object_type = candidate, "document"
                object_id = path[len(prefix) :].removesuffix(RENDITION_SUFFIX)[:80]
        if action is Action.RECORD_SEARCH and path.rstrip("/") != "/DocumentReference":
            return
        if status == 200:
            result, rule = Result.ALLOWED, "F2-own-record"
        elif status == 404:
            result, rule = Result.FAILED, "not-found"
        elif status in (401, 403):
            result, rule = Result.DENIED, f"http-{status}"
        else:
            result, rule = Result.FAILED, f"http-{status}"
        await run_in_threadpool(
            self._record, principal.account_id, action, object_type, object_id, result, rule
        )

    def _record(
        self,
        account_id: int,
        action: Action,
        object_type: str,
        object_id: str,
        result: Result,
        rule: str,
    ) -> None:
        with self.database.transaction() as session:
            record_event(
                session,
                actor_kind=ActorKind.PATIENT.value,
                actor_id=f"account:{account_id}",
                action=action.value,
                object_type=object_type,
                object_id=object_id,
                result=result.value,
                rule=rule,
                subject_account_id=account_id,
                channel="http",
            )


def record_routes(
    gateway: Gateway,
    *,
    basic: BasicAuthenticator | None = None,
    verifier: TokenVerifier | None = None,
    settings: AccessSettings | None = None,
    today: Callable[[], date] | None = None,
) -> list[BaseRoute]:
    """The ``/fhir`` routes for everyone; use instead of ``fhir_routes(gateway)``.

    ``basic`` is shared with the patient API (one credential cache, one login event per
    fresh check); :func:`shared_basic_authenticator` makes it.
    """
    access = settings or AccessSettings.from_settings(gateway.settings)
    basic = basic or shared_basic_authenticator(gateway)
    oidc = OidcAuthenticator(verifier or TokenVerifier(gateway.settings), gateway.database)
    [patient_mount] = fhir_routes(gateway, authenticators=[basic])
    assert isinstance(patient_mount, Mount)
    api = DelegatedRecordApi(gateway, access, today=today)
    delegated = Starlette(
        routes=[
            Route("/DocumentReference", api.search, methods=["GET"]),
            Route("/DocumentReference/{id}", api.read, methods=["GET"]),
            Route("/Binary/{id}", api.binary, methods=["GET"]),
        ],
        exception_handlers={
            FhirError: _on_fhir_error,
            HTTPException: _on_http_error,
            Exception: _on_server_error,
        },
    )
    gate = RecordGate(gateway.database, patient_mount.app, delegated, [basic, oidc])
    return [Mount("/fhir", app=gate, name="fhir")]


def shared_basic_authenticator(gateway: Gateway) -> AuditedBasicAuthenticator:
    """The HTTP Basic authenticator the FHIR gate and the patient API share.

    On the identity service every door of the process shares (one limiter, one cache).
    """
    return AuditedBasicAuthenticator(gateway.database, identity=gateway.identity)
