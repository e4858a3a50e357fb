"""Who may read which documents of a record over FHIR, and the audit of every read (F2, F3, F4, E5).

One read path for everyone: the patient reading their own record, a legal representative
reading a minor's (F3), a professional reading a patient's (F2, break-glass included). Each
request turns the authenticated principal into a :class:`Caller` (ids, never names), gathers
the facts of the access table (:func:`access_facts`: is the professional known, blocked, the
médecin traitant, a declared pharmacy, placed in a SAMU by the directory; which emergency
switches the patient turned on and which purpose the caller stated, ``ETREAT`` or ``BTG``; is
there a delegation and is the patient still a minor) and asks :mod:`caducee.policies.access`. An
allowed access has a *basis* that decides which documents are shown (the same table builds
the SQL filter of a search and judges a single read); the others are absent.

Every decision is one audit event written in the transaction that reads the record (no
audit, no access). The record's owner is never told that a hidden document exists: a read of
a document they may not see is audited as ``failed`` / ``not-found``, like an unknown id. An
allowed professional access also queues the patient's ``record-access`` notification (G1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from caducee.directory.models import DirectoryEntry
from caducee.directory.normalise import fold
from caducee.directory.service import find_by_address, find_by_national_id
from caducee.gateway.http.fhir_auth import Principal, TokenPrincipal
from caducee.gateway.http.fhir_resources import document_reference
from caducee.gateway.runtime import Gateway
from caducee.jobs.mail import record_owner
from caducee.mailboxes.access.rights import (
    AccessSettings,
    birth_date_of,
    emergency_settings,
    patient_by_ins,
    professional_relationship,
    record_is_open,
    representation,
)
from caducee.mailboxes.accounts.store import Account, AccountKind, AccountState
from caducee.mailboxes.notifications.patients import Event, queue_notification
from caducee.policies.access import (
    AccessFacts,
    AccessVerdict,
    Actor,
    Basis,
    DocumentFlag,
    Purpose,
    access_verdict,
    author_spared_flags,
    document_verdict,
    hidden_flags,
)
from caducee.records.models import DocumentState, RecordDocument
from caducee.records.readers.cda import french_time
from caducee.records.service import (
    FLAG_COLUMNS,
    MAX_PAGE,
    DocumentQuery,
    query_conditions,
    read_content,
    replaced_versions,
)
from caducee.storage.audit import Action, ActorKind, Result, record_event

NOT_FOUND_RULE = "not-found"
"""What the owner's audit says of a read that found nothing they may see."""
PERSONAL_BAL_TYPE = "PER"
_PROFESSIONAL_KINDS = frozenset({AccountKind.PROFESSIONAL.value, AccountKind.ORGANISATION.value})


# ---------------------------------------------------------------------------------------------
# Who is calling, and the facts of the access table


def _actor_kind(account_kind: str) -> str:
    if account_kind == AccountKind.PATIENT.value:
        return ActorKind.PATIENT.value
    if account_kind == AccountKind.ORGANISATION.value:
        return ActorKind.ORGANISATION.value
    return ActorKind.PROFESSIONAL.value


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
    samu: bool = False
    """The directory places the caller in a SAMU (:func:`in_samu`): ``ETREAT`` is theirs."""


_SAMU_WORDS = ("samu", "centre 15")
"""How the directory names a SAMU: the service or structure "SAMU", "SAMU-Centre 15",
"Centre 15" (folded: no case, no accent, punctuation as spaces)."""


def in_samu(entry: DirectoryEntry) -> bool:
    """The directory entry is a person's mailbox in a SAMU: its service (``Service de
    rattachement`` of the MSSanté extraction), structure or trade name names one.

    The national extractions have no role column saying "médecin régulateur"; a SAMU is a
    service of a hospital, and its name is what the directory carries. A word match on the
    folded name ("samu" as a word, or "centre 15") avoids matching "Samuel". Only PER
    mailboxes count: an emergency access is answered for by a person (F2).
    """
    if entry.bal_type != PERSONAL_BAL_TYPE:
        return False
    for text in (entry.service, entry.organisation_name, entry.trade_name):
        folded = f" {fold(text)} "
        if any(f" {word} " in folded for word in _SAMU_WORDS):
            return True
    return False


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
            samu=any(in_samu(entry) for entry in entries),
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
        samu=entry is not None and in_samu(entry),
    )


def access_facts(
    session: Session,
    caller: Caller,
    record_id: int,
    *,
    reason: str | None,
    settings: AccessSettings,
    today: date,
    purpose: Purpose | None = None,
) -> AccessFacts:
    """Everything the access table needs about this caller and this record.

    ``purpose``: what the caller stated (``ETREAT``, ``BTG``); a reason without a purpose is
    break-glass, as before the SAMU had its own switch.
    """
    if purpose is None and reason:
        purpose = Purpose.BTG
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
            emergency=emergency_settings(session, record_id, settings),
            purpose=purpose,
            samu=caller.samu,
            personal_mailbox=caller.personal,
            declared_pharmacy=relation.declared_pharmacy,
        )
    return AccessFacts(actor=Actor.OTHER, record_open=record_open)


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
        shown: ColumnElement[bool] = FLAG_COLUMNS[flag].is_(False)
        if flag in spared:
            shown = or_(shown, RecordDocument.author_national_id.in_(sorted(authors)))
        conditions.append(shown)
    return and_(*conditions)


def is_author(document: RecordDocument, caller: Caller) -> bool:
    """The caller is the document's own author (E5, F2)."""
    return bool(document.author_national_id) and document.author_national_id in caller.author_ids


def document_flags(document: RecordDocument) -> frozenset[DocumentFlag]:
    """The E5 flags of a stored document, as the policy names them."""
    return frozenset(flag for flag, column in FLAG_COLUMNS.items() if getattr(document, column.key))


# ---------------------------------------------------------------------------------------------
# The read path


@dataclass
class Outcome:
    """What one access did, for the response (filled in the worker thread).

    ``verdict`` is set when the access table was asked; ``found`` says whether there is
    something to answer with (a refusal is a 403 when ``verdict`` denies, else a 404).
    """

    verdict: AccessVerdict | None = None
    resources: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    found: bool = False
    content: bytes = b""
    content_type: str = "application/octet-stream"


class RecordReader:
    """Searches and reads a record for any caller, decided by the access table and audited."""

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
        purpose: Purpose | None = None,
    ) -> AccessVerdict:
        facts = access_facts(
            session,
            caller,
            record_id,
            reason=reason,
            settings=self.settings,
            today=self.today(),
            purpose=purpose,
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

    @staticmethod
    def _owner_not_found(session: Session, caller: Caller, action: Action, object_id: str) -> None:
        """The owner's read that found nothing: ``failed`` / ``not-found``, never which rule hid
        a document (the patient must not learn that a hidden document exists)."""
        record_event(
            session,
            actor_kind=ActorKind.PATIENT.value,
            actor_id=caller.actor_id,
            action=action.value,
            object_type="document",
            object_id=object_id,
            result=Result.FAILED.value,
            rule=NOT_FOUND_RULE,
            subject_account_id=caller.account_id,
            channel="http",
        )

    # -- search ----------------------------------------------------------------------------------

    def search(
        self,
        principal: Principal,
        ins: str | None,
        query: DocumentQuery,
        reason: str | None,
        base: str,
        purpose: Purpose | None = None,
    ) -> Outcome:
        """A search of the record named by ``ins``; ``None``: the caller's own (patients)."""
        outcome = Outcome()
        with self.gateway.database.transaction() as session:
            if ins is None:
                record_id = principal.account_id
            else:
                account = patient_by_ins(session, ins)
                if account is None:
                    return outcome
                record_id = account.id
            outcome.found = True
            caller = resolve_caller(session, principal)
            verdict = self._decide(
                session,
                caller,
                record_id,
                reason,
                Action.RECORD_SEARCH,
                "record",
                str(record_id),
                purpose,
            )
            outcome.verdict = verdict
            if not verdict.allowed or verdict.basis is None:
                return outcome
            where = and_(
                visible_documents(record_id, verdict.basis, caller.author_ids),
                *query_conditions(query),
            )
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

    # -- one document ------------------------------------------------------------------------------

    def document(
        self,
        principal: Principal,
        public_id: str,
        ins: str | None,
        reason: str | None,
        action: Action,
        base: str,
        rendition: bool,
        purpose: Purpose | None = None,
    ) -> Outcome:
        """One document (``action`` read: its DocumentReference; content: its bytes).

        ``ins`` names the record it must belong to; ``None``: a patient's own record, or for a
        professional whichever record holds it (the access table still decides).
        """
        with self.gateway.database.transaction() as session:
            caller = resolve_caller(session, principal)
            outcome = self._document(
                session, caller, public_id, ins, reason, action, base, rendition, purpose
            )
            if caller.actor is Actor.PATIENT and ins is None and outcome.verdict is None:
                self._owner_not_found(session, caller, action, public_id[:80])
        return outcome

    def _document(
        self,
        session: Session,
        caller: Caller,
        public_id: str,
        ins: str | None,
        reason: str | None,
        action: Action,
        base: str,
        rendition: bool,
        purpose: Purpose | None = None,
    ) -> Outcome:
        outcome = Outcome()
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
        elif caller.actor is not Actor.PROFESSIONAL and caller.account_id != record_id:
            return outcome  # a patient without patient.identifier reads their own record only
        verdict = self._decide(
            session, caller, record_id, reason, action, "document", public_id, purpose
        )
        if not verdict.allowed or verdict.basis is None:
            outcome.verdict = verdict
            outcome.found = True
            return outcome
        shown = document_verdict(
            verdict.basis, document_flags(document), author=is_author(document, caller)
        )
        if not shown.visible:
            outcome.verdict = verdict
            if caller.actor is Actor.PATIENT and caller.account_id == record_id:
                self._owner_not_found(session, caller, action, public_id)
            else:
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
        outcome.verdict = verdict
        outcome.found = True
        self._audit(session, caller, record_id, action, "document", public_id, verdict, reason)
        return outcome
