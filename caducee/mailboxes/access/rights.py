"""The patient's access rights: known professionals, médecin traitant, emergency access and
legal representatives (F1, F3), and the facts the access rule table is judged on.

The traffic makes the list (delivery records each professional who writes, D2, in
``known_professionals``); this module is what the patient (HTTP API) and the operator (CLI)
do with it: block or authorise a professional, name the médecin traitant (who cannot be
blocked, rule in :mod:`caducee.policies.access`), set the three emergency access switches
(SAMU, break-glass, masked documents), and register a parent's delegation for a minor. Every
change is one audit event (F4), written in the same transaction as the change, so a right
never changes unrecorded.

Nothing here decides an access: :func:`professional_relationship` and
:func:`representation` only gather facts for :func:`caducee.policies.access.access_verdict`.
A representation needs no job to end: the age of majority is judged on each request from the
minor's birth date.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    UniqueConstraint,
    false,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.config import Settings
from caducee.mailboxes.accounts.store import (
    Account,
    AccountKind,
    AccountState,
    Patient,
    normalise_address,
)
from caducee.mailboxes.models import KnownProfessional
from caducee.policies.access import (
    EmergencySwitches,
    ProfessionalStatus,
    emergency_switches,
    status_change_refusal,
)
from caducee.storage.audit import Action, ActorKind, Result, record_event
from caducee.storage.db import Base, UtcDateTime, table_of, utcnow

BIG_ID = BigInteger().with_variant(Integer, "sqlite")


@dataclass(frozen=True)
class AccessSettings:
    """The ``[access]`` settings this module and the HTTP layer use.

    Built from ``settings.access`` when the section exists, with these defaults otherwise.
    """

    emergency_access_default: bool = False
    """Emergency access is opt-in: SAMU and break-glass are off until the patient enables
    them (True: both on for a patient who never chose; masked documents stay off)."""
    min_reason_length: int = 10
    """The shortest break-glass reason accepted, in characters."""
    notify_record_access: bool = True
    """Queue a ``record-access`` notification when a professional reads the record."""
    history_page_max: int = 200
    """The most events one page of ``/api/patient/history`` returns."""

    @classmethod
    def from_settings(cls, settings: Settings | None) -> AccessSettings:
        section = getattr(settings, "access", None)
        if section is None:
            return cls()
        defaults = cls()
        values: dict[str, Any] = {
            name: getattr(section, name, getattr(defaults, name))
            for name in cls.__dataclass_fields__
        }
        return cls(**values)


class PatientAccess(Base):
    """The patient's record-wide access settings (F2): the three emergency access switches.

    ``samu``: emergency treatment (``ETREAT``) by a SAMU professional; ``break_glass``: any
    other professional stating a reason (``BTG``); ``masked``: documents hidden from
    professionals are included in such a read (stored off whenever both others are off).
    Migration ``0024_emergency_switches`` made them from the former single switch.
    """

    __tablename__ = "patient_access"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    samu: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    masked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class LegalRepresentative(Base):
    """A delegation: ``representative_account_id`` acts for the minor ``minor_account_id`` (F3).

    Both are patient accounts (a parent uses their own space). Registered by the operator;
    it stops giving access on the minor's 18th birthday without anyone touching it.
    """

    __tablename__ = "legal_representatives"
    __table_args__ = (
        UniqueConstraint(
            "minor_account_id", "representative_account_id", name="uq_legal_representatives_pair"
        ),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    minor_account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    representative_account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class RightsError(Exception):
    """A right change refused; ``rule`` names why (HTTP 409/404, CLI exit 1)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class Actor:
    """Who changes a right, as the audit trail names them (ids only)."""

    kind: str
    id: str
    channel: str

    @classmethod
    def operator(cls) -> Actor:
        return cls(ActorKind.OPERATOR.value, "operator", "cli")

    @classmethod
    def patient(cls, account_id: int, channel: str = "http") -> Actor:
        return cls(ActorKind.PATIENT.value, f"account:{account_id}", channel)


def audit_right_change(
    session: Session,
    actor: Actor,
    action: Action,
    object_type: str,
    object_id: str,
    patient_id: int,
    result: Result = Result.OK,
    rule: str | None = None,
    at: datetime | None = None,
) -> None:
    """F4: one event for a change of who may see or act for the patient (``patient_id`` is
    the subject), in the caller's transaction."""
    record_event(
        session,
        actor_kind=actor.kind,
        actor_id=actor.id,
        action=action.value,
        object_type=object_type,
        object_id=object_id,
        result=result.value,
        rule=rule,
        subject_account_id=patient_id,
        channel=actor.channel,
        at=at,
    )


# ---------------------------------------------------------------------------------------------
# Patients


def patient_account(session: Session, address: str) -> Account | None:
    """The patient account of ``address`` (any state), or None."""
    account = session.scalar(
        select(Account).where(
            Account.address == normalise_address(address),
            Account.kind == AccountKind.PATIENT.value,
        )
    )
    return account


def patient_by_ins(session: Session, ins: str) -> Account | None:
    """The patient account whose qualified identity has this INS matricule."""
    return session.scalar(
        select(Account)
        .join(Patient, Patient.account_id == Account.id)
        .where(Patient.ins == ins.strip(), Account.kind == AccountKind.PATIENT.value)
    )


def birth_date_of(session: Session, account_id: int) -> date | None:
    """The patient's birth date (A2), when the account has a qualified identity."""
    value = session.scalar(select(Patient.birth_date).where(Patient.account_id == account_id))
    return value


def record_is_open(session: Session, account_id: int) -> bool:
    """A record is readable by others while the patient's space is not closed (I2)."""
    state = session.scalar(select(Account.state).where(Account.id == account_id))
    return state is not None and state != AccountState.CLOSED.value


# ---------------------------------------------------------------------------------------------
# Known professionals (F1)


@dataclass(frozen=True)
class KnownProfessionalView:
    """One line of the patient's list of professionals, as the API and CLI show it."""

    id: int
    address: str
    reply_address: str
    status: str
    medecin_traitant: bool
    can_reply: bool
    first_contact_at: datetime
    last_message_at: datetime


def _view(row: KnownProfessional) -> KnownProfessionalView:
    return KnownProfessionalView(
        id=int(row.id),
        address=row.professional_address,
        reply_address=row.reply_address,
        status=row.status,
        medecin_traitant=bool(row.medecin_traitant),
        can_reply=bool(row.can_reply),
        first_contact_at=row.first_contact_at,
        last_message_at=row.last_message_at,
    )


def known_professionals(session: Session, patient_id: int) -> list[KnownProfessionalView]:
    """The patient's professionals, médecin traitant first, then by latest message."""
    rows = session.scalars(
        select(KnownProfessional)
        .where(KnownProfessional.patient_account_id == patient_id)
        .order_by(
            KnownProfessional.medecin_traitant.desc(),
            KnownProfessional.last_message_at.desc(),
            KnownProfessional.id,
        )
    )
    return [_view(row) for row in rows]


def _known_row(session: Session, patient_id: int, professional: int | str) -> KnownProfessional:
    """A row of the patient's list, by id or address (sender or reply address)."""
    query = select(KnownProfessional).where(KnownProfessional.patient_account_id == patient_id)
    if isinstance(professional, int):
        query = query.where(KnownProfessional.id == professional)
    else:
        address = normalise_address(professional)
        query = query.where(
            or_(
                KnownProfessional.professional_address == address,
                KnownProfessional.reply_address == address,
            )
        ).order_by(KnownProfessional.id)
    row = session.scalars(query.limit(1)).first()
    if row is None:
        raise RightsError("F1.not-known", "this professional is not in the patient's list")
    return row


def set_professional_status(
    session: Session,
    patient_id: int,
    professional: int | str,
    status: ProfessionalStatus,
    actor: Actor,
) -> KnownProfessionalView:
    """F1: block or authorise one known professional; the médecin traitant cannot be blocked.

    A refused change is audited too (result ``denied`` with its rule) and then raised.
    """
    row = _known_row(session, patient_id, professional)
    action = (
        Action.PROFESSIONAL_BLOCK
        if status is ProfessionalStatus.BLOCKED
        else Action.PROFESSIONAL_AUTHORISE
    )
    refusal = status_change_refusal(medecin_traitant=row.medecin_traitant, new_status=status)
    if refusal is not None:
        audit_right_change(
            session, actor, action, "professional", str(row.id), patient_id, Result.DENIED, refusal
        )
        raise RightsError(refusal, "the médecin traitant cannot be blocked")
    row.status = status.value
    audit_right_change(session, actor, action, "professional", str(row.id), patient_id)
    session.flush()
    return _view(row)


def set_medecin_traitant(
    session: Session,
    patient_id: int,
    professional: int | str,
    actor: Actor,
    *,
    create: bool = False,
) -> KnownProfessionalView:
    """Name the patient's médecin traitant (one at a time; also authorises them).

    ``create`` (operator only) adds the professional to the list when they never wrote, with
    no right for the patient to write to them (C4 still needs them to write first).
    """
    try:
        row = _known_row(session, patient_id, professional)
    except RightsError:
        if not create or not isinstance(professional, str):
            raise
        now = utcnow()
        address = normalise_address(professional)
        row = KnownProfessional(
            patient_account_id=patient_id,
            professional_address=address,
            reply_address=address,
            first_contact_at=now,
            last_message_at=now,
            can_reply=False,
            status=ProfessionalStatus.AUTHORISED.value,
            medecin_traitant=False,
        )
        session.add(row)
        session.flush()
    for other in session.scalars(
        select(KnownProfessional).where(
            KnownProfessional.patient_account_id == patient_id,
            KnownProfessional.medecin_traitant.is_(True),
            KnownProfessional.id != row.id,
        )
    ):
        other.medecin_traitant = False
    row.medecin_traitant = True
    row.status = ProfessionalStatus.AUTHORISED.value
    audit_right_change(
        session, actor, Action.MEDECIN_TRAITANT_SET, "professional", str(row.id), patient_id
    )
    session.flush()
    return _view(row)


def clear_medecin_traitant(session: Session, patient_id: int, actor: Actor) -> bool:
    """The patient has no médecin traitant any more; False when they had none."""
    rows = list(
        session.scalars(
            select(KnownProfessional).where(
                KnownProfessional.patient_account_id == patient_id,
                KnownProfessional.medecin_traitant.is_(True),
            )
        )
    )
    for row in rows:
        row.medecin_traitant = False
        audit_right_change(
            session, actor, Action.MEDECIN_TRAITANT_CLEAR, "professional", str(row.id), patient_id
        )
    session.flush()
    return bool(rows)


@dataclass(frozen=True)
class Relationship:
    """What the patient's list says of one professional (any of their addresses)."""

    known: bool = False
    blocked: bool = False
    medecin_traitant: bool = False
    declared_pharmacy: bool = False
    """Listed only through pharmacy mailboxes: a correspondent (C4), not known for F2."""


def professional_relationship(
    session: Session,
    patient_id: int,
    addresses: Collection[str],
    pharmacies: Collection[str] = (),
) -> Relationship:
    """Facts for the access table about a professional known by these mailbox addresses.

    A person may have several mailboxes (the directory joins them on the national id): one
    blocked address blocks the person, one médecin traitant address makes them the
    médecin traitant. ``pharmacies`` are those of ``addresses`` that are pharmacy mailboxes
    (the caller reads the directory): a line of the list reached only through them makes
    the caller a declared pharmacy, not a known professional (C4, F2).
    """
    wanted = sorted({normalise_address(address) for address in addresses if address})
    if not wanted:
        return Relationship()
    pharmacy = {normalise_address(address) for address in pharmacies if address}
    rows = session.execute(
        select(
            KnownProfessional.status,
            KnownProfessional.medecin_traitant,
            KnownProfessional.professional_address,
            KnownProfessional.reply_address,
        ).where(
            KnownProfessional.patient_account_id == patient_id,
            or_(
                KnownProfessional.professional_address.in_(wanted),
                KnownProfessional.reply_address.in_(wanted),
            ),
        )
    ).all()
    # A line is the pharmacy's when it names a pharmacy mailbox of the caller, and no other.
    through_pharmacy = [
        row
        for row in rows
        if {row.professional_address, row.reply_address} & set(wanted) <= pharmacy
    ]
    known = len(through_pharmacy) < len(rows)
    return Relationship(
        known=known,
        blocked=any(row.status == ProfessionalStatus.BLOCKED.value for row in rows),
        medecin_traitant=any(bool(row.medecin_traitant) for row in rows),
        declared_pharmacy=bool(through_pharmacy) and not known,
    )


# ---------------------------------------------------------------------------------------------
# Emergency access (F2)


_SWITCH_NAMES = (("samu", "samu"), ("break_glass", "break-glass"), ("masked", "masked"))
"""Each switch's attribute and the id its audit event names (object type ``emergency``)."""


def emergency_settings(
    session: Session, patient_id: int, settings: AccessSettings
) -> EmergencySwitches:
    """The patient's emergency access switches (the operator's default until they choose)."""
    row = session.get(PatientAccess, patient_id)
    if row is None:
        default = settings.emergency_access_default
        return EmergencySwitches(samu=default, break_glass=default, masked=False)
    return emergency_switches(
        samu=bool(row.samu), break_glass=bool(row.break_glass), masked=bool(row.masked)
    )


def emergency_access(session: Session, patient_id: int, settings: AccessSettings) -> bool:
    """Whether any emergency access (SAMU or break-glass) is on: the single switch the patient
    API and the CLI still show."""
    return emergency_settings(session, patient_id, settings).any


def set_emergency_switches(
    session: Session,
    patient_id: int,
    actor: Actor,
    *,
    samu: bool,
    break_glass: bool,
    masked: bool,
    settings: AccessSettings | None = None,
) -> EmergencySwitches:
    """Set the three switches; masked documents are forced off when SAMU and break-glass are
    both off (:func:`caducee.policies.access.emergency_switches`). Each switch that changes is
    one audit event (``emergency-access.enable|disable``, object ``emergency:<switch>``)."""
    before = emergency_settings(session, patient_id, settings or AccessSettings())
    after = emergency_switches(samu=samu, break_glass=break_glass, masked=masked)
    row = session.get(PatientAccess, patient_id)
    if row is None:
        row = PatientAccess(account_id=patient_id)
        session.add(row)
    row.samu, row.break_glass, row.masked = after.samu, after.break_glass, after.masked
    row.updated_at = utcnow()
    for attribute, name in _SWITCH_NAMES:
        value = bool(getattr(after, attribute))
        if value == bool(getattr(before, attribute)):
            continue
        action = Action.EMERGENCY_ENABLE if value else Action.EMERGENCY_DISABLE
        audit_right_change(session, actor, action, "emergency", name, patient_id)
    session.flush()
    return after


def set_emergency_access(session: Session, patient_id: int, enabled: bool, actor: Actor) -> None:
    """Switch emergency access as one switch (patient API, CLI): on opens SAMU and
    break-glass, off closes both (and so masked documents). Audited as one event on the
    record, as before the three switches."""
    row = session.get(PatientAccess, patient_id)
    masked = bool(row.masked) if row is not None else False
    after = emergency_switches(samu=enabled, break_glass=enabled, masked=masked)
    if row is None:
        row = PatientAccess(account_id=patient_id)
        session.add(row)
    row.samu, row.break_glass, row.masked = after.samu, after.break_glass, after.masked
    row.updated_at = utcnow()
    action = Action.EMERGENCY_ENABLE if enabled else Action.EMERGENCY_DISABLE
    audit_right_change(session, actor, action, "record", str(patient_id), patient_id)
    session.flush()


# ---------------------------------------------------------------------------------------------
# Legal representatives (F3)


@dataclass(frozen=True)
class Representation:
    """A delegation between two patient accounts, with what the age rule needs."""

    minor_account_id: int
    minor_address: str
    representative_account_id: int
    representative_address: str
    minor_birth_date: date | None
    created_at: datetime


def _representations(session: Session, **where: int) -> list[Representation]:
    minor = table_of(Account).alias("minor")
    parent = table_of(Account).alias("parent")
    query = (
        select(
            LegalRepresentative.minor_account_id,
            minor.c.address.label("minor_address"),
            LegalRepresentative.representative_account_id,
            parent.c.address.label("parent_address"),
            Patient.birth_date,
            LegalRepresentative.created_at,
        )
        .join(minor, minor.c.id == LegalRepresentative.minor_account_id)
        .join(parent, parent.c.id == LegalRepresentative.representative_account_id)
        .outerjoin(Patient, Patient.account_id == LegalRepresentative.minor_account_id)
        .order_by(LegalRepresentative.id)
    )
    if "minor" in where:
        query = query.where(LegalRepresentative.minor_account_id == where["minor"])
    if "representative" in where:
        query = query.where(
            LegalRepresentative.representative_account_id == where["representative"]
        )
    return [
        Representation(
            minor_account_id=int(row.minor_account_id),
            minor_address=str(row.minor_address),
            representative_account_id=int(row.representative_account_id),
            representative_address=str(row.parent_address),
            minor_birth_date=row.birth_date,
            created_at=row.created_at,
        )
        for row in session.execute(query)
    ]


def representatives_of(session: Session, minor_id: int) -> list[Representation]:
    """Who may act for this patient (whatever their age: the rule table judges)."""
    return _representations(session, minor=minor_id)


def represented_by(session: Session, representative_id: int) -> list[Representation]:
    """Whom this patient account may act for."""
    return _representations(session, representative=representative_id)


def representation(
    session: Session, minor_id: int, representative_id: int
) -> Representation | None:
    """The delegation between these two accounts, if the operator registered one."""
    found = [
        item
        for item in _representations(session, minor=minor_id)
        if item.representative_account_id == representative_id
    ]
    return found[0] if found else None


def _patient_accounts(session: Session, *account_ids: int) -> None:
    kinds = dict(
        session.execute(select(Account.id, Account.kind).where(Account.id.in_(account_ids))).all()
    )
    for account_id in account_ids:
        if kinds.get(account_id) != AccountKind.PATIENT.value:
            raise RightsError("F3.not-a-patient", "both accounts must be patient spaces")


def add_representative(
    session: Session, minor_id: int, representative_id: int, actor: Actor
) -> Representation:
    """Register a legal representative for a minor (operator). Idempotent."""
    if minor_id == representative_id:
        raise RightsError("F3.self", "a patient cannot represent themselves")
    _patient_accounts(session, minor_id, representative_id)
    existing = representation(session, minor_id, representative_id)
    if existing is not None:
        return existing
    session.add(
        LegalRepresentative(minor_account_id=minor_id, representative_account_id=representative_id)
    )
    session.flush()
    audit_right_change(
        session,
        actor,
        Action.REPRESENTATIVE_ADD,
        "representative",
        f"account:{representative_id}",
        minor_id,
    )
    found = representation(session, minor_id, representative_id)
    assert found is not None
    return found


def remove_representative(
    session: Session, minor_id: int, representative_id: int, actor: Actor
) -> bool:
    """End a delegation before the age of majority; False when there was none."""
    row = session.scalar(
        select(LegalRepresentative).where(
            LegalRepresentative.minor_account_id == minor_id,
            LegalRepresentative.representative_account_id == representative_id,
        )
    )
    if row is None:
        return False
    session.delete(row)
    audit_right_change(
        session,
        actor,
        Action.REPRESENTATIVE_REMOVE,
        "representative",
        f"account:{representative_id}",
        minor_id,
    )
    session.flush()
    return True
