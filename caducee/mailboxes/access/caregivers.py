"""Caregivers (aidants): an adult patient lets another adult patient of this gateway act for
them, as the national app's "aidant / aidé" delegation does (F3, issue 17).

The aidé invites; the caregiver accepts or refuses; either side revokes. The national app's
limits hold: at most :data:`MAX_CAREGIVERS` caregivers per person (pending invitations count,
so nobody collects more than three answers) and at most :data:`MAX_HELPED` people helped per
caregiver (accepted delegations only: an invitation nobody answered takes nothing from the
caregiver); concurrent changes are serialised on the audit trail's head row, so two
acceptances cannot both pass a limit. An invitation lapses :data:`INVITATION_DAYS` days
after it is sent ("Demande valable jusqu'au …"): a fixed rule of the product, not a setting,
like the limits.

Whether a caregiver may act for the aidé today is never decided here: :func:`caregiver_verdict`
gathers the facts (an accepted delegation, the aidé's birth date, their space open) and the
access table decides (:func:`caducee.policies.access.access_verdict`, rules
``F3.caregiver-*``). Caregiving is between adults: a minor's profile goes through legal
representation (:mod:`caducee.mailboxes.access.profiles`).

The caregiver is found as the app finds them: by INS, or by birth name + first given name +
birth date, exact matches of patient accounts only (names are sealed at rest, so the birth
date narrows in SQL and the names are compared once opened). The page says only "invitation
sent" or "no matching profile" — as the app does — and a person who is not found, is a minor,
is the aidé themselves or has a closed space gets the same answer. Like the app, a sent
invitation shows the invited person's first given name and birth name; so every search, found
or not, is audited and counted: at most :data:`SEARCH_LIMIT` in 24 hours per aidé, and the form
is no oracle to sweep INS numbers, names or birth dates.

Every change is one audit event about the aidé's record (F4; refused invitations too, result
``denied``), written in the change's transaction, and the other side finds a line in their
notification centre (G1: a kind, never a name). A refused, revoked or lapsed invitation leaves
no row: the audit trail is the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.mailboxes.access.profiles import Profile
from caducee.mailboxes.access.rights import (
    Actor,
    RightsError,
    audit_right_change,
    birth_date_of,
    record_is_open,
)
from caducee.mailboxes.accounts.store import Account, AccountKind, AccountState, Patient
from caducee.mailboxes.notifications.centre import add_to_centre
from caducee.policies.access import AccessFacts, AccessVerdict, access_verdict, is_minor
from caducee.policies.access import Actor as AccessActor
from caducee.storage.audit import (
    HEAD_ROW_ID,
    Action,
    AuditEvent,
    AuditHead,
    Result,
)
from caducee.storage.db import Base, UtcDateTime, utcnow

BIG_ID = BigInteger().with_variant(Integer, "sqlite")

MAX_CAREGIVERS = 3
"""Caregivers per person, pending invitations included (the app: 3)."""
MAX_HELPED = 5
"""People helped per caregiver, accepted delegations only (the app: 5)."""
INVITATION_DAYS = 30
"""An invitation not answered within this many days lapses."""
SEARCH_LIMIT = 10
"""Invitations (searches, found or not) an aidé may make in :data:`SEARCH_WINDOW`."""
SEARCH_WINDOW = timedelta(hours=24)
MAX_NAME = 100
"""The longest name accepted in a search (longer: not found, nothing compared)."""
MAX_SAME_BIRTH_DATE = 5000
"""Most patients compared by name for one birth date (bounded work per search)."""

PENDING = "pending"
ACTIVE = "active"

# Refusals: the ``rule`` of the RightsError and of the audit event.
NOT_FOUND = "F3.caregiver-not-found"
"""No (other, adult, open) patient matches; also: no such delegation of the caller's (404)."""
HELPED_NOT_ADULT = "F3.caregiver-helped-minor"
"""The person inviting is a minor, or their birth date is unknown."""
ALREADY = "F3.caregiver-already"
"""This person is already a caregiver of the aidé, or invited (SAME_INVITATION_ALREADY_EXISTS)."""
CAREGIVERS_LIMIT = "F3.caregivers-limit"
"""The aidé has 3 caregivers or invitations (OUTGOING_CAREGIVING_DELEGATIONS_LIMIT_REACHED)."""
HELPED_LIMIT = "F3.helped-limit"
"""The caregiver helps 5 people (INCOMING_CAREGIVING_DELEGATIONS_LIMIT_REACHED)."""
SEARCH_LIMIT_REACHED = "F3.caregiver-search-limit"
"""Too many searches in the last 24 hours."""

_OBJECT = "caregiver"


class CaregivingDelegation(Base):
    """One invitation (``pending``, until ``expires_at``) or delegation (``active``).

    ``helped_account_id`` (the aidé) lets ``caregiver_account_id`` (the aidant) act for them.
    One row per pair: a refusal, a revocation or a lapse removes it (the audit trail keeps
    what happened), so the pair may be invited again.
    """

    __tablename__ = "caregiving_delegations"
    __table_args__ = (
        UniqueConstraint(
            "helped_account_id", "caregiver_account_id", name="uq_caregiving_delegations_pair"
        ),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    helped_account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    caregiver_account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    """When a pending invitation lapses (kept, meaningless, once accepted)."""
    accepted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


@dataclass(frozen=True)
class Lookup:
    """Who the aidé designates: an INS, or birth name + first given name + birth date."""

    ins: str = ""
    family_name: str = ""
    first_given_name: str = ""
    birth_date: date | None = None


@dataclass(frozen=True)
class Delegation:
    """One line of "Mes aidants" or "Les personnes que j'aide", seen from ``account_id``."""

    id: int
    other_account_id: int
    other_name: str
    """The other side's first given name and birth name (from their qualified identity)."""
    state: str
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None

    @property
    def active(self) -> bool:
        return self.state == ACTIVE


def _now(now: datetime | None) -> datetime:
    return now if now is not None else utcnow()


def _live(now: datetime) -> ColumnElement[bool]:
    """Active delegations, and pending invitations that have not lapsed."""
    return or_(
        CaregivingDelegation.state == ACTIVE,
        CaregivingDelegation.expires_at > now,
    )


def _audit(
    session: Session,
    actor: Actor,
    action: Action,
    helped_id: int,
    object_id: str,
    result: Result = Result.OK,
    rule: str | None = None,
    at: datetime | None = None,
) -> None:
    """F4: a delegation's change, the helped person as subject."""
    audit_right_change(
        session, actor, action, _OBJECT, object_id, helped_id, result, rule=rule, at=at
    )


def _refuse(
    session: Session,
    actor: Actor,
    action: Action,
    helped_id: int,
    rule: str,
    text: str,
    at: datetime | None = None,
) -> RightsError:
    """Audit a refused change (its rule, no name, no searched identity) and return the error."""
    _audit(session, actor, action, helped_id, "-", Result.DENIED, rule, at)
    return RightsError(rule, text)


def _serialise(session: Session) -> None:
    """Queue on the audit trail's head row before reading the counts the limits judge.

    Every caregiving change writes an audit event, which locks that row until the
    transaction ends anyway (:mod:`caducee.storage.audit`): taking it first makes the
    read-count-insert of two invitations or acceptances one after the other, so two cannot
    both pass a limit, with no second lock and so no second lock order (row locks on the
    accounts would meet the key-share locks other writers' foreign keys take). SQLite
    serialises writers already; the statement is a plain read there.
    """
    session.execute(select(AuditHead.id).where(AuditHead.id == HEAD_ROW_ID).with_for_update()).all()


def _adult(session: Session, account_id: int, today: date) -> bool:
    born = birth_date_of(session, account_id)
    return born is not None and not is_minor(born, today)


def _same(a: str, b: str) -> bool:
    """Names compare exactly, ignoring case and runs of spaces."""
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _first_given(given_name: str) -> str:
    parts = given_name.replace(",", " ").split()
    return parts[0] if parts else ""


def find_caregiver(session: Session, lookup: Lookup) -> int | None:
    """The one patient account matching ``lookup`` exactly, or None (none, or several)."""
    if lookup.ins:
        ins = lookup.ins.strip()
        if not ins.isdigit() or len(ins) > 15:
            return None
        found = session.scalar(
            select(Account.id)
            .join(Patient, Patient.account_id == Account.id)
            .where(Patient.ins == ins, Account.kind == AccountKind.PATIENT.value)
        )
        return int(found) if found is not None else None
    family, given = lookup.family_name.strip(), lookup.first_given_name.strip()
    if lookup.birth_date is None or not family or not given:
        return None
    if len(family) > MAX_NAME or len(given) > MAX_NAME:
        return None
    rows = session.execute(
        select(Patient.account_id, Patient.birth_name, Patient.given_name)
        .join(Account, Account.id == Patient.account_id)
        .where(Patient.birth_date == lookup.birth_date, Account.kind == AccountKind.PATIENT.value)
        .order_by(Patient.account_id)
        .limit(MAX_SAME_BIRTH_DATE)
    ).all()
    matches = [
        int(row.account_id)
        for row in rows
        if _same(row.birth_name or "", family) and _same(_first_given(row.given_name or ""), given)
    ]
    return matches[0] if len(matches) == 1 else None


def _recent_searches(session: Session, actor: Actor, helped_id: int, now: datetime) -> int:
    """The aidé's invitations in the window, found or not (the refusals by the limit itself
    aside, so trying again tomorrow works)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.subject_account_id == helped_id,
                AuditEvent.actor_id == actor.id,
                AuditEvent.action == Action.CAREGIVER_INVITE.value,
                or_(AuditEvent.rule.is_(None), AuditEvent.rule != SEARCH_LIMIT_REACHED),
                AuditEvent.occurred_at > now - SEARCH_WINDOW,
            )
        )
        or 0
    )


def _count(session: Session, now: datetime, **where: int) -> int:
    query = select(func.count()).select_from(CaregivingDelegation)
    if "helped" in where:
        query = query.where(CaregivingDelegation.helped_account_id == where["helped"], _live(now))
    if "caregiver" in where:
        query = query.where(
            CaregivingDelegation.caregiver_account_id == where["caregiver"],
            CaregivingDelegation.state == ACTIVE,
        )
    return int(session.scalar(query) or 0)


def invite(
    session: Session,
    helped_id: int,
    lookup: Lookup,
    actor: Actor,
    today: date,
    *,
    now: datetime | None = None,
) -> Delegation:
    """The aidé ``helped_id`` invites the person ``lookup`` designates to be their caregiver.

    ``today`` is the date in France (the age rule); raises :class:`RightsError` with one of
    the rules above (audited, result ``denied``).
    """
    at = _now(now)
    action = Action.CAREGIVER_INVITE
    if _recent_searches(session, actor, helped_id, at) >= SEARCH_LIMIT:
        raise _refuse(
            session, actor, action, helped_id, SEARCH_LIMIT_REACHED, "too many searches today", at
        )
    if not _adult(session, helped_id, today):
        raise _refuse(
            session, actor, action, helped_id, HELPED_NOT_ADULT, "caregiving is for adults", at
        )
    caregiver_id = find_caregiver(session, lookup)
    if (
        caregiver_id is None
        or caregiver_id == helped_id
        or not _adult(session, caregiver_id, today)
        or session.scalar(select(Account.state).where(Account.id == caregiver_id))
        != AccountState.ACTIVE.value
    ):
        raise _refuse(session, actor, action, helped_id, NOT_FOUND, "no matching profile", at)
    _serialise(session)
    existing = session.scalar(
        select(CaregivingDelegation).where(
            CaregivingDelegation.helped_account_id == helped_id,
            CaregivingDelegation.caregiver_account_id == caregiver_id,
        )
    )
    if existing is not None and existing.state == PENDING and existing.expires_at <= at:
        session.delete(existing)  # a lapsed invitation: the pair may be invited again
        session.flush()
        existing = None
    if existing is not None:
        raise _refuse(session, actor, action, helped_id, ALREADY, "already invited", at)
    if _count(session, at, helped=helped_id) >= MAX_CAREGIVERS:
        raise _refuse(session, actor, action, helped_id, CAREGIVERS_LIMIT, "three caregivers", at)
    if _count(session, at, caregiver=caregiver_id) >= MAX_HELPED:
        raise _refuse(session, actor, action, helped_id, HELPED_LIMIT, "five people helped", at)
    row = CaregivingDelegation(
        helped_account_id=helped_id,
        caregiver_account_id=caregiver_id,
        state=PENDING,
        created_at=at,
        expires_at=at + timedelta(days=INVITATION_DAYS),
    )
    session.add(row)
    session.flush()
    _audit(session, actor, action, helped_id, f"delegation:{row.id}", at=at)
    add_to_centre(session, caregiver_id, "caregiver-invitation")
    session.flush()
    return _view(session, row, helped_id)


def _mine(session: Session, delegation_id: int, **side: int) -> CaregivingDelegation:
    query = select(CaregivingDelegation).where(CaregivingDelegation.id == delegation_id)
    if "caregiver" in side and "helped" in side:
        query = query.where(
            or_(
                CaregivingDelegation.caregiver_account_id == side["caregiver"],
                CaregivingDelegation.helped_account_id == side["helped"],
            )
        )
    elif "caregiver" in side:
        query = query.where(CaregivingDelegation.caregiver_account_id == side["caregiver"])
    row = session.scalar(query)
    if row is None:
        raise RightsError(NOT_FOUND, "no such delegation")
    return row


def answer(
    session: Session,
    caregiver_id: int,
    delegation_id: int,
    accept: bool,
    actor: Actor,
    today: date,
    *,
    now: datetime | None = None,
) -> Delegation:
    """The caregiver accepts or refuses an invitation addressed to them.

    Another person's invitation, one already answered or one that lapsed is
    :data:`NOT_FOUND` (the page's 404). Accepting a sixth person is :data:`HELPED_LIMIT`.
    """
    at = _now(now)
    _serialise(session)  # then read the row: a concurrent answer or revocation came first
    row = _mine(session, delegation_id, caregiver=caregiver_id)
    if row.state != PENDING or row.expires_at <= at:
        raise RightsError(NOT_FOUND, "no such invitation")
    helped_id = int(row.helped_account_id)
    view = _view(session, row, caregiver_id)
    if not accept:
        session.delete(row)
        _audit(session, actor, Action.CAREGIVER_REFUSE, helped_id, f"delegation:{row.id}")
        add_to_centre(session, helped_id, "caregiver-refused")
        session.flush()
        return view
    action = Action.CAREGIVER_ACCEPT
    if _count(session, at, caregiver=caregiver_id) >= MAX_HELPED:
        raise _refuse(session, actor, action, helped_id, HELPED_LIMIT, "five people helped")
    if not _adult(session, helped_id, today) or not record_is_open(session, helped_id):
        raise RightsError(NOT_FOUND, "no such invitation")
    row.state = ACTIVE
    row.accepted_at = at
    _audit(session, actor, action, helped_id, f"delegation:{row.id}")
    add_to_centre(session, helped_id, "caregiver-accepted")
    session.flush()
    return _view(session, row, caregiver_id)


def revoke(session: Session, account_id: int, delegation_id: int, actor: Actor) -> Delegation:
    """Either side ends a delegation, or withdraws or declines an invitation before its
    answer; the other side is told. Not one of ``account_id``'s: :data:`NOT_FOUND`."""
    row = _mine(session, delegation_id, caregiver=account_id, helped=account_id)
    helped_id, caregiver_id = int(row.helped_account_id), int(row.caregiver_account_id)
    view = _view(session, row, account_id)
    session.delete(row)
    _audit(session, actor, Action.CAREGIVER_REVOKE, helped_id, f"delegation:{row.id}")
    add_to_centre(
        session, caregiver_id if account_id == helped_id else helped_id, "caregiver-revoked"
    )
    session.flush()
    return view


def _name(session: Session, account_id: int) -> str:
    names = session.execute(
        select(Patient.given_name, Patient.birth_name).where(Patient.account_id == account_id)
    ).first()
    if names is None:
        return ""
    return " ".join(part for part in (_first_given(names[0] or ""), names[1] or "") if part)


def _view(session: Session, row: CaregivingDelegation, seen_from: int) -> Delegation:
    other = (
        int(row.caregiver_account_id)
        if int(row.helped_account_id) == seen_from
        else int(row.helped_account_id)
    )
    return Delegation(
        id=int(row.id),
        other_account_id=other,
        other_name=_name(session, other),
        state=row.state,
        created_at=row.created_at,
        expires_at=row.expires_at,
        accepted_at=row.accepted_at,
    )


def _list(session: Session, seen_from: int, now: datetime | None, column: str) -> list[Delegation]:
    mine = getattr(CaregivingDelegation, column) == seen_from
    rows = session.scalars(
        select(CaregivingDelegation).where(mine, _live(_now(now))).order_by(CaregivingDelegation.id)
    )
    return [_view(session, row, seen_from) for row in rows]


def caregivers_of(
    session: Session, helped_id: int, *, now: datetime | None = None
) -> list[Delegation]:
    """ "Mes aidants": the aidé's caregivers and invitations not lapsed, oldest first."""
    return _list(session, helped_id, now, "helped_account_id")


def helped_by(
    session: Session, caregiver_id: int, *, now: datetime | None = None
) -> list[Delegation]:
    """ "Les personnes que j'aide": delegations and invitations received, oldest first."""
    return _list(session, caregiver_id, now, "caregiver_account_id")


def caregiver_verdict(
    session: Session, helped_id: int, caregiver_id: int, today: date
) -> AccessVerdict:
    """May ``caregiver_id`` act for ``helped_id`` on ``today`` (the date in France)? The access
    table decides (``F3.caregiver-*``, and ``I2.record-closed`` for a closed space)."""
    active = session.scalar(
        select(CaregivingDelegation.id).where(
            CaregivingDelegation.helped_account_id == helped_id,
            CaregivingDelegation.caregiver_account_id == caregiver_id,
            CaregivingDelegation.state == ACTIVE,
        )
    )
    return access_verdict(
        AccessFacts(
            actor=AccessActor.CAREGIVER,
            record_open=record_is_open(session, helped_id),
            delegated=active is not None,
            subject_birth_date=birth_date_of(session, helped_id),
            today=today,
        )
    )


def caregiver_profiles(session: Session, caregiver_id: int, today: date) -> list[Profile]:
    """The people this account helps (accepted delegations), each with the access table's
    verdict for today: what a profile switch for caregivers would list (cf.
    :func:`caducee.mailboxes.access.profiles.represented_profiles`)."""
    found: list[Profile] = []
    for item in helped_by(session, caregiver_id):
        if not item.active:
            continue
        verdict = caregiver_verdict(session, item.other_account_id, caregiver_id, today)
        found.append(Profile(item.other_account_id, item.other_name, verdict.allowed, verdict.rule))
    return found


def purge_lapsed(session: Session, *, now: datetime | None = None) -> int:
    """Delete invitations that lapsed (they are already ignored everywhere); how many."""
    result = session.execute(
        delete(CaregivingDelegation).where(
            CaregivingDelegation.state == PENDING,
            CaregivingDelegation.expires_at <= _now(now),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
