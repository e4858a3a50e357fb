"""Patient spaces from enrolment to deletion (A2, I1, I2, F3): one service for CLI and APIs.

A space is created by the operator from a qualified INS and walks these states
(``patient_spaces.status``)::

    created ──activate (code + birth date → password + TOTP)──▶ active
       │  └──────── delay ran out (job ``space-open``) ────────▶ active (opened_by=automatic)
       └──oppose──▶ opposed (never opens; proof PDF)
    active ──close (patient or operator)──▶ closed ──reopen──▶ active
    closed ──archive delay or deletion request ran out (job ``space-purge``)──▶ (deleted)

The door rule stays :func:`caducee.mailboxes.accounts.store.may_sign_in` on ``accounts.state``:
a space that is not open (created, opposed, closed) has ``accounts.state = 'closed'``, so the
SMTP rules answer ``550 5.2.1`` and IMAP/HTTP refuse sign-in without knowing about
enrolment; suspension (``caducee account suspend``) is orthogonal to the status here.

Secrets: activation codes and the patient's password are stored as argon2id hashes only;
the TOTP secret is an encrypted blob (AES-256-GCM under the keyring, rotated with it). None
of them is ever logged or put in the audit trail. Closure keeps every row and blob in place
(the archive), so reopening restores everything; deletion is done by the gateway's purge job
(it spans mailboxes and records).
"""

from __future__ import annotations

import base64
import enum
import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.hashes import SHA1  # HMAC-SHA1: what RFC 6238 apps use
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from sqlalchemy import ForeignKey, Index, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.config import Settings
from caducee.mailboxes.accounts.passwords import hash_password, verify_password
from caducee.mailboxes.accounts.proof import text_pdf
from caducee.mailboxes.accounts.store import (
    BIG_ID,
    Account,
    AccountKind,
    AccountState,
    Patient,
    create_account,
    find_account,
)
from caducee.mailboxes.delivery import ensure_folders
from caducee.policies.identity import ins_oid_allowed
from caducee.policies.inbound import PatientState
from caducee.storage.audit import record_event
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Base, UtcDateTime, utcnow
from caducee.storage.jobs import JobKind

OPEN_SPACE_JOB = JobKind.OPEN_SPACE.value
PURGE_SPACE_JOB = JobKind.PURGE_SPACE.value
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 12
TOTP_DIGITS = 6
TOTP_STEP = 30
TOTP_SECRET_BYTES = 20
SEXES = ("M", "F")
_BIRTHPLACE = re.compile(r"(?:\d{5}|2[AB]\d{3})")
_INS = re.compile(r"[12378][0-9]{4}(?:[0-9]{2}|2A|2B)[0-9]{8}")


class SpaceStatus(enum.StrEnum):
    """Where a patient space stands (I1, I2)."""

    CREATED = "created"
    ACTIVE = "active"
    OPPOSED = "opposed"
    CLOSED = "closed"


class LifecycleError(Exception):
    """A lifecycle step refused; ``code`` is stable (API ``type``), the message is for humans."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


# ---------------------------------------------------------------------------------------------
# Tables


class PatientSpace(Base):
    """The lifecycle of one patient space (its account holds the door state)."""

    __tablename__ = "patient_spaces"
    __table_args__ = (
        Index("ix_patient_spaces_status_opens", "status", "opens_at"),
        Index("ix_patient_spaces_purge", "status", "purge_after"),
    )

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    opens_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    opened_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    opened_by: Mapped[str | None] = mapped_column(String(16))
    opposed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    opposition_reference: Mapped[str | None] = mapped_column(String(40))
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    closed_by: Mapped[str | None] = mapped_column(String(16))
    deletion_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    purge_after: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ActivationCode(Base):
    """A one-use activation code (argon2id hash only) and the TOTP secret being enrolled."""

    __tablename__ = "activation_codes"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    voided_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pending_totp_blob_id: Mapped[str | None] = mapped_column(String(32))


class AccountCredentials(Base):
    """The account holder's own password (argon2id) and second factor (encrypted blob)."""

    __tablename__ = "account_credentials"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    password_hash: Mapped[str] = mapped_column(String(200))
    totp_blob_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


# ---------------------------------------------------------------------------------------------
# Settings and identity


@dataclass(frozen=True)
class LifecyclePolicy:
    """The ``[lifecycle]`` settings the service reads, plus the gateway facts it needs."""

    patient_domain: str = "patient.mssante.fr"
    test_mode: bool = False
    open_after: timedelta = timedelta(days=42)
    code_validity: timedelta = timedelta(days=42)
    max_attempts: int = 5
    archive: timedelta = timedelta(days=3652)
    deletion_delay: timedelta = timedelta(days=90)
    operator_name: str = "Caducée"

    @classmethod
    def from_settings(cls, settings: Settings) -> LifecyclePolicy:
        section = settings.lifecycle
        return cls(
            patient_domain=settings.gateway.patient_domain.lower(),
            test_mode=settings.gateway.test_mode,
            open_after=timedelta(days=section.open_after_days),
            code_validity=timedelta(days=section.activation_code_days),
            max_attempts=section.activation_max_attempts,
            archive=timedelta(days=section.archive_years * 365.25),
            deletion_delay=timedelta(days=section.deletion_request_days),
            operator_name=settings.gateway.operator_name,
        )


@dataclass(frozen=True)
class QualifiedIdentity:
    """A qualified INS (A2): matricule, OID and the traits."""

    ins: str
    oid: str
    birth_name: str
    given_name: str
    birth_date: date
    sex: str
    birthplace: str


def ins_key(nir13: str) -> str:
    """The INS key: 97 − (NIR mod 97), with 2A→19 and 2B→18 for the computation only (A1)."""
    digits = nir13.upper()
    if digits[5:7] == "2A":
        digits = digits[:5] + "19" + digits[7:]
    elif digits[5:7] == "2B":
        digits = digits[:5] + "18" + digits[7:]
    return f"{97 - int(digits) % 97:02d}"


def check_identity(identity: QualifiedIdentity, policy: LifecyclePolicy) -> QualifiedIdentity:
    """The identity, normalised; :class:`LifecycleError` (422) naming the first bad trait."""

    def bad(field: str, message: str) -> LifecycleError:
        return LifecycleError(f"invalid-{field}", message, 422)

    ins = identity.ins.strip().upper()
    if not _INS.fullmatch(ins) or ins_key(ins[:13]) != ins[13:]:
        raise bad("ins", "the INS matricule is malformed or its key is wrong")
    if not ins_oid_allowed(identity.oid.strip(), test_mode=policy.test_mode):
        raise bad("oid", "INS OID not accepted (test and demo OIDs need test mode)")
    birth_name = " ".join(identity.birth_name.split()).upper()
    given_name = " ".join(identity.given_name.split()).upper()
    if not birth_name or len(birth_name) > 200:
        raise bad("birth-name", "the birth name is required (at most 200 characters)")
    if not given_name or len(given_name) > 200:
        raise bad("given-name", "the first given name is required (at most 200 characters)")
    if identity.birth_date > utcnow().date():
        raise bad("birth-date", "the birth date is in the future")
    sex = identity.sex.strip().upper()
    if sex not in SEXES:
        raise bad("sex", "sex is M or F")
    birthplace = identity.birthplace.strip().upper()
    if not _BIRTHPLACE.fullmatch(birthplace):
        raise bad("birthplace", "the birthplace is an INSEE code of 5 characters")
    return QualifiedIdentity(
        ins, identity.oid.strip(), birth_name, given_name, identity.birth_date, sex, birthplace
    )


def is_minor(birth_date: date, today: date) -> bool:
    """Under 18 on ``today`` (29 February → 1 March, like the access rules)."""
    try:
        eighteenth = birth_date.replace(year=birth_date.year + 18)
    except ValueError:
        eighteenth = date(birth_date.year + 18, 3, 1)
    return today < eighteenth


# ---------------------------------------------------------------------------------------------
# Helpers


@dataclass(frozen=True)
class Actor:
    """Who does a lifecycle step, as the audit trail names them (ids only)."""

    kind: str
    id: str
    channel: str

    @classmethod
    def operator(cls, channel: str = "cli", actor_id: str = "operator") -> Actor:
        return cls("operator", actor_id, channel)

    @classmethod
    def patient(cls, account_id: int, channel: str = "http") -> Actor:
        return cls("patient", f"account:{account_id}", channel)

    @classmethod
    def system(cls) -> Actor:
        return cls("system", "lifecycle", "job")


def audit(
    session: Session,
    actor: Actor,
    action: str,
    account_id: int | None,
    *,
    result: str = "ok",
    object_type: str = "space",
    object_id: str | None = None,
    rule: str | None = None,
) -> None:
    """One audit event of a lifecycle step (never a secret, never content)."""
    record_event(
        session,
        actor_kind=actor.kind,
        actor_id=actor.id,
        action=action,
        object_type=object_type,
        object_id=object_id or (f"account:{account_id}" if account_id is not None else "-"),
        result=result,
        rule=rule,
        subject_account_id=account_id,
        channel=actor.channel,
    )


def generate_code() -> str:
    """A 12-character code (about 60 bits) shown as ``XXXX-XXXX-XXXX``."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def _normal_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def totp_now(secret: bytes, at: datetime | None = None) -> str:
    """The TOTP value of ``secret`` at ``at`` (RFC 6238, SHA-1, 6 digits, 30 s)."""
    moment = at or utcnow()
    return (
        TOTP(secret, TOTP_DIGITS, SHA1(), TOTP_STEP, enforce_key_length=False)  # noqa: S303
        .generate(int(moment.timestamp()))
        .decode()
    )


def totp_valid(secret: bytes, value: str, at: datetime | None = None) -> bool:
    """``value`` matches the current step or one step either side (clock drift)."""
    moment = int((at or utcnow()).timestamp())
    totp = TOTP(secret, TOTP_DIGITS, SHA1(), TOTP_STEP, enforce_key_length=False)  # noqa: S303
    for drift in (0, -TOTP_STEP, TOTP_STEP):
        try:
            totp.verify(value.strip().encode(), moment + drift)
        except InvalidToken:
            continue
        return True
    return False


def password_problem(password: str) -> str | None:
    """Why ``password`` is refused (9+ characters, lower, upper, digit, special), or None."""
    if len(password) < 9 or len(password) > 256:
        return "9 characters minimum (256 at most)"
    if not re.search(r"[a-z]", password) or not re.search(r"[A-Z]", password):
        return "at least one lowercase and one uppercase letter"
    if not re.search(r"[0-9]", password):
        return "at least one digit"
    if not re.search(r"[^A-Za-z0-9]", password):
        return "at least one special character"
    return None


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class SpaceView:
    """What the operator sees of a space (no secret)."""

    account_id: int
    address: str
    status: str
    account_state: str
    ins: str
    ins_oid: str
    birth_name: str
    given_name: str
    birth_date: date
    sex: str
    birthplace: str | None
    created_at: datetime
    opens_at: datetime | None
    opened_at: datetime | None
    opened_by: str | None
    opposed_at: datetime | None
    opposition_reference: str | None
    closed_at: datetime | None
    closed_by: str | None
    deletion_requested_at: datetime | None
    purge_after: datetime | None
    activation_code_expires_at: datetime | None

    def public(self) -> dict[str, Any]:
        """JSON-ready (ISO dates)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, (date, datetime)) else value
        return out


def _space_rows(session: Session, address: str) -> tuple[Account, Patient, PatientSpace]:
    account = find_account(session, address)
    if account is None or account.kind != AccountKind.PATIENT.value:
        raise LifecycleError("not-found", f"no patient space {address}", 404)
    patient = session.get(Patient, account.id)
    space = session.get(PatientSpace, account.id)
    if patient is None:
        raise LifecycleError("not-found", f"no qualified identity for {address}", 404)
    if space is None:  # a space made outside this service (tests, older tools): open
        space = PatientSpace(
            account_id=account.id,
            status=SpaceStatus.CLOSED.value
            if account.state == AccountState.CLOSED.value
            else SpaceStatus.ACTIVE.value,
            created_at=account.created_at,
            opened_at=account.created_at,
            opened_by="legacy",
        )
        session.add(space)
        session.flush()
    return account, patient, space


def _live_code(session: Session, account_id: int) -> ActivationCode | None:
    return session.scalar(
        select(ActivationCode)
        .where(
            ActivationCode.account_id == account_id,
            ActivationCode.used_at.is_(None),
            ActivationCode.voided_at.is_(None),
        )
        .order_by(ActivationCode.id.desc())
        .limit(1)
    )


def show_space(session: Session, address: str) -> SpaceView:
    """The space of ``address``; :class:`LifecycleError` 404 when none."""
    account, patient, space = _space_rows(session, address)
    code = _live_code(session, account.id)
    return SpaceView(
        account_id=account.id,
        address=account.address,
        status=space.status,
        account_state=account.state,
        ins=patient.ins,
        ins_oid=patient.ins_oid,
        birth_name=patient.birth_name,
        given_name=patient.given_name,
        birth_date=patient.birth_date,
        sex=patient.sex,
        birthplace=patient.birthplace,
        created_at=space.created_at,
        opens_at=space.opens_at,
        opened_at=space.opened_at,
        opened_by=space.opened_by,
        opposed_at=space.opposed_at,
        opposition_reference=space.opposition_reference,
        closed_at=space.closed_at,
        closed_by=space.closed_by,
        deletion_requested_at=space.deletion_requested_at,
        purge_after=space.purge_after,
        activation_code_expires_at=code.expires_at if code is not None else None,
    )


# ---------------------------------------------------------------------------------------------
# Enrolment (A2, I1, F3)


@dataclass(frozen=True)
class Created:
    """A new space and its first activation code (clear text, once)."""

    account_id: int
    address: str
    code: str
    code_expires_at: datetime
    opens_at: datetime


def create_space(
    session: Session,
    identity: QualifiedIdentity,
    policy: LifecyclePolicy,
    actor: Actor,
    *,
    representatives: tuple[int, ...] = (),
) -> Created:
    """Create a patient space in state ``created`` with an activation code; the caller commits.

    A minor's space must name at least one legal representative (F3): the account ids of
    their own patient spaces. A second space for the same INS is refused.
    """
    identity = check_identity(identity, policy)
    if session.scalar(select(Patient.account_id).where(Patient.ins == identity.ins)) is not None:
        raise LifecycleError("ins-exists", "a patient space already exists for this INS")
    address = f"{identity.ins}@{policy.patient_domain}"
    if find_account(session, address) is not None:
        raise LifecycleError("address-exists", f"{address} already exists")
    now = utcnow()
    minor = is_minor(identity.birth_date, now.date())
    if minor and not representatives:
        raise LifecycleError(
            "F3.representative-required",
            "a minor's space is created with at least one legal representative",
            422,
        )
    for representative_id in representatives:
        holder = session.get(Account, representative_id)
        if holder is None or holder.kind != AccountKind.PATIENT.value:
            raise LifecycleError(
                "F3.not-a-patient", "a representative must have a patient space", 422
            )
    account = create_account(
        session,
        address,
        AccountKind.PATIENT,
        display_name=f"{identity.given_name.title()} {identity.birth_name}",
    )
    account.state = AccountState.CLOSED.value  # not open until activated or the delay ran out
    session.add(
        Patient(
            account_id=account.id,
            ins=identity.ins,
            ins_oid=identity.oid,
            birth_name=identity.birth_name,
            given_name=identity.given_name,
            birth_date=identity.birth_date,
            sex=identity.sex,
            birthplace=identity.birthplace,
        )
    )
    opens_at = now + policy.open_after
    session.add(
        PatientSpace(
            account_id=account.id,
            status=SpaceStatus.CREATED.value,
            created_at=now,
            opens_at=opens_at,
        )
    )
    ensure_folders(session, account.id)
    session.flush()
    audit(session, actor, "space.create", account.id)
    code, expires = _new_code(session, account.id, policy, now)
    audit(session, actor, "space.activation-code", account.id, object_type="activation-code")
    return Created(account.id, address, code, expires, opens_at)


def _new_code(
    session: Session, account_id: int, policy: LifecyclePolicy, now: datetime
) -> tuple[str, datetime]:
    for old in session.scalars(
        select(ActivationCode).where(
            ActivationCode.account_id == account_id,
            ActivationCode.used_at.is_(None),
            ActivationCode.voided_at.is_(None),
        )
    ):
        old.voided_at = now
    code = generate_code()
    expires = now + policy.code_validity
    session.add(
        ActivationCode(
            account_id=account_id,
            code_hash=hash_password(_normal_code(code)),
            created_at=now,
            expires_at=expires,
            failed_attempts=0,
        )
    )
    session.flush()
    return code, expires


def new_activation_code(
    session: Session, address: str, policy: LifecyclePolicy, actor: Actor
) -> tuple[int, str, datetime]:
    """A fresh code for a space not yet activated (the previous one is void)."""
    account, _patient, space = _space_rows(session, address)
    if space.status != SpaceStatus.CREATED.value:
        raise LifecycleError(
            "not-awaiting-activation", f"the space is {space.status}, not awaiting activation"
        )
    code, expires = _new_code(session, account.id, policy, utcnow())
    audit(session, actor, "space.activation-code", account.id, object_type="activation-code")
    return account.id, code, expires


class CheckOutcome(enum.StrEnum):
    """How a code check ended (the caller commits the attempt count whatever happens)."""

    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    NOT_AWAITING = "not-awaiting"


def _check_code(
    session: Session, address: str, code: str, birth_date: date, policy: LifecyclePolicy
) -> tuple[CheckOutcome, Account | None, PatientSpace | None, ActivationCode | None]:
    try:
        account, patient, space = _space_rows(session, address)
    except LifecycleError:
        return CheckOutcome.WRONG, None, None, None
    if space.status != SpaceStatus.CREATED.value:
        return CheckOutcome.NOT_AWAITING, account, space, None
    row = _live_code(session, account.id)
    now = utcnow()
    if row is None or row.failed_attempts >= policy.max_attempts:
        return CheckOutcome.WRONG, account, space, None
    if row.expires_at <= now:
        return CheckOutcome.EXPIRED, account, space, row
    if not (
        verify_password(row.code_hash, _normal_code(code)) and patient.birth_date == birth_date
    ):
        row.failed_attempts += 1
        if row.failed_attempts >= policy.max_attempts:
            row.voided_at = now
        return CheckOutcome.WRONG, account, space, row
    return CheckOutcome.OK, account, space, row


def _refuse(outcome: CheckOutcome) -> LifecycleError:
    if outcome is CheckOutcome.EXPIRED:
        return LifecycleError("code-expired", "this activation code has expired", 410)
    if outcome is CheckOutcome.NOT_AWAITING:
        return LifecycleError("not-awaiting-activation", "this space is not awaiting activation")
    return LifecycleError("code-refused", "the code or the birth date is wrong", 403)


@dataclass(frozen=True)
class TotpEnrolment:
    """The secret the patient's authenticator app registers (shown once)."""

    secret_base32: str
    uri: str


def start_activation(
    session: Session,
    blobs: BlobStore,
    address: str,
    code: str,
    birth_date: date,
    policy: LifecyclePolicy,
) -> TotpEnrolment | LifecycleError:
    """Check code + birth date and draw the TOTP secret to enrol (kept encrypted).

    Returns the refusal instead of raising, so that the caller commits the failed attempt.
    """
    outcome, account, _space, row = _check_code(session, address, code, birth_date, policy)
    if outcome is not CheckOutcome.OK or row is None or account is None:
        if account is not None:
            audit(
                session,
                Actor("unknown", "-", "http"),
                "space.activate",
                account.id,
                result="denied",
                rule=outcome.value,
            )
        return _refuse(outcome)
    secret = secrets.token_bytes(TOTP_SECRET_BYTES)
    if row.pending_totp_blob_id:
        blobs.delete(session, row.pending_totp_blob_id)
    row.pending_totp_blob_id = blobs.write(session, secret)
    encoded = base64.b32encode(secret).decode().rstrip("=")
    label = quote(f"{policy.operator_name}:{account.address}")
    uri = (
        f"otpauth://totp/{label}?secret={encoded}&issuer={quote(policy.operator_name)}"
        f"&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP}"
    )
    return TotpEnrolment(encoded, uri)


def complete_activation(
    session: Session,
    blobs: BlobStore,
    address: str,
    code: str,
    birth_date: date,
    password: str,
    totp_value: str,
    policy: LifecyclePolicy,
) -> int | LifecycleError:
    """Code + birth date + a new password + the first TOTP value: the space opens.

    Returns the account id, or the refusal (the caller commits the attempt either way).
    """
    problem = password_problem(password)
    if problem is not None:
        return LifecycleError("weak-password", f"password refused: {problem}", 422)
    outcome, account, space, row = _check_code(session, address, code, birth_date, policy)
    if outcome is not CheckOutcome.OK or row is None or account is None or space is None:
        if account is not None:
            audit(
                session,
                Actor("unknown", "-", "http"),
                "space.activate",
                account.id,
                result="denied",
                rule=outcome.value,
            )
        return _refuse(outcome)
    if row.pending_totp_blob_id is None:
        return LifecycleError("totp-not-started", "start the activation first (TOTP secret)")
    secret = blobs.read(session, row.pending_totp_blob_id)
    if not totp_valid(secret, totp_value):
        row.failed_attempts += 1
        audit(
            session,
            Actor.patient(account.id),
            "space.activate",
            account.id,
            result="denied",
            rule="totp",
        )
        return LifecycleError("totp-refused", "the authenticator code is wrong", 403)
    now = utcnow()
    credentials = session.get(AccountCredentials, account.id)
    if credentials is None:
        credentials = AccountCredentials(account_id=account.id, created_at=now)
        session.add(credentials)
    elif credentials.totp_blob_id:
        blobs.delete(session, credentials.totp_blob_id)
    credentials.password_hash = hash_password(password)
    credentials.totp_blob_id = row.pending_totp_blob_id
    credentials.updated_at = now
    row.pending_totp_blob_id = None
    row.used_at = now
    space.status = SpaceStatus.ACTIVE.value
    space.activated_at = now
    space.opened_at = now
    space.opened_by = "patient"
    space.opens_at = None
    account.state = AccountState.ACTIVE.value
    audit(session, Actor.patient(account.id), "space.activate", account.id)
    return account.id


def check_credentials(
    session: Session, blobs: BlobStore, address: str, password: str, totp_value: str | None
) -> Account | None:
    """The account when its own password (and TOTP, if given or enrolled) match; slow."""
    account = find_account(session, address)
    if account is None or account.state != AccountState.ACTIVE.value:
        return None
    credentials = session.get(AccountCredentials, account.id)
    if credentials is None or not verify_password(credentials.password_hash, password):
        return None
    if credentials.totp_blob_id is not None:
        secret = blobs.read(session, credentials.totp_blob_id)
        if totp_value is None or not totp_valid(secret, totp_value):
            return None
    credentials.last_login_at = utcnow()
    return account


def oppose(
    session: Session,
    address: str,
    actor: Actor,
    policy: LifecyclePolicy,
    *,
    code: str | None = None,
    birth_date: date | None = None,
) -> str | LifecycleError:
    """The patient (code + birth date) or the operator opposes: the space never opens.

    Returns the opposition reference printed on the proof.
    """
    if actor.kind != "operator":
        if code is None or birth_date is None:
            return LifecycleError("code-refused", "the code and the birth date are needed", 403)
        outcome, account, space, _row = _check_code(session, address, code, birth_date, policy)
        if outcome is not CheckOutcome.OK or account is None or space is None:
            return _refuse(outcome)
        actor = Actor.patient(account.id, actor.channel)
    else:
        account, _patient, space = _space_rows(session, address)
        if space.status != SpaceStatus.CREATED.value:
            raise LifecycleError(
                "not-awaiting-activation", f"the space is {space.status}: it cannot be opposed"
            )
    now = utcnow()
    for live in session.scalars(
        select(ActivationCode).where(
            ActivationCode.account_id == account.id, ActivationCode.used_at.is_(None)
        )
    ):
        live.voided_at = live.voided_at or now
    reference = f"OPP-{now:%Y%m%d}-{secrets.token_hex(4).upper()}"
    space.status = SpaceStatus.OPPOSED.value
    space.opposed_at = now
    space.opposition_reference = reference
    space.opens_at = None
    account.state = AccountState.CLOSED.value
    audit(session, actor, "space.oppose", account.id)
    return reference


def open_if_due(session: Session, account_id: int, now: datetime | None = None) -> bool:
    """Open a space still ``created`` whose delay ran out (I1); True when it opened."""
    space = session.get(PatientSpace, account_id)
    account = session.get(Account, account_id)
    moment = now or utcnow()
    if (
        space is None
        or account is None
        or space.status != SpaceStatus.CREATED.value
        or space.opens_at is None
        or space.opens_at > moment
    ):
        return False
    space.status = SpaceStatus.ACTIVE.value
    space.opened_at = moment
    space.opened_by = "automatic"
    space.opens_at = None
    account.state = AccountState.ACTIVE.value
    audit(session, Actor.system(), "space.open", account_id)
    return True


def due_to_open(session: Session, now: datetime | None = None) -> list[int]:
    """Spaces whose opening delay ran out."""
    return list(
        session.scalars(
            select(PatientSpace.account_id).where(
                PatientSpace.status == SpaceStatus.CREATED.value,
                PatientSpace.opens_at <= (now or utcnow()),
            )
        )
    )


def due_to_purge(session: Session, now: datetime | None = None) -> list[int]:
    """Closed spaces whose archive period or deletion request ran out."""
    return list(
        session.scalars(
            select(PatientSpace.account_id).where(
                PatientSpace.status.in_((SpaceStatus.CLOSED.value, SpaceStatus.OPPOSED.value)),
                PatientSpace.purge_after <= (now or utcnow()),
            )
        )
    )


# ---------------------------------------------------------------------------------------------
# Closure and reopening (I2)


def close_space(
    session: Session,
    address: str,
    actor: Actor,
    policy: LifecyclePolicy,
    *,
    deletion_requested: bool = False,
    password: str | None = None,
) -> PatientSpace:
    """Close an open space: mail refused, sign-in refused, data archived until ``purge_after``.

    A patient closes with their password. With a deletion request, the data is deleted
    after ``deletion_delay`` instead of the archive period.
    """
    account, _patient, space = _space_rows(session, address)
    if actor.kind == "patient":
        credentials = session.get(AccountCredentials, account.id)
        if (
            password is None
            or credentials is None
            or not verify_password(credentials.password_hash, password)
        ):
            raise LifecycleError("password-refused", "the password is wrong", 403)
    if space.status == SpaceStatus.CLOSED.value and not deletion_requested:
        raise LifecycleError("already-closed", "the space is already closed")
    if space.status == SpaceStatus.OPPOSED.value and not deletion_requested:
        raise LifecycleError("opposed", "an opposed space is not open: nothing to close")
    now = utcnow()
    if space.status not in (SpaceStatus.CLOSED.value, SpaceStatus.OPPOSED.value):
        space.status = SpaceStatus.CLOSED.value
        space.closed_at = now
        space.closed_by = actor.kind
        space.opens_at = None
        space.purge_after = now + policy.archive
    if deletion_requested:
        space.deletion_requested_at = space.deletion_requested_at or now
        deadline = space.deletion_requested_at + policy.deletion_delay
        space.purge_after = min(space.purge_after or deadline, deadline)
    for live in session.scalars(
        select(ActivationCode).where(
            ActivationCode.account_id == account.id,
            ActivationCode.used_at.is_(None),
            ActivationCode.voided_at.is_(None),
        )
    ):
        live.voided_at = now
    account.state = AccountState.CLOSED.value
    audit(
        session,
        actor,
        "space.delete-request" if deletion_requested else "space.close",
        account.id,
    )
    return space


def reopen_space(session: Session, address: str, actor: Actor) -> PatientSpace:
    """Reopen a closed space: everything archived is back; a deletion request is cancelled."""
    account, _patient, space = _space_rows(session, address)
    if space.status != SpaceStatus.CLOSED.value:
        raise LifecycleError("not-closed", f"the space is {space.status}, not closed")
    space.status = SpaceStatus.ACTIVE.value
    space.closed_at = None
    space.closed_by = None
    space.deletion_requested_at = None
    space.purge_after = None
    account.state = AccountState.ACTIVE.value
    audit(session, actor, "space.reopen", account.id)
    return space


def purge_deadline(session: Session, account_id: int) -> datetime | None:
    """When the purge job may delete this space (None: not scheduled)."""
    space = session.get(PatientSpace, account_id)
    return None if space is None else space.purge_after


def space_status(session: Session, account_id: int) -> str | None:
    """The lifecycle status of ``account_id`` (None: no space)."""
    return session.scalar(select(PatientSpace.status).where(PatientSpace.account_id == account_id))


def door_state(
    session: Session, account_id: int, account_state: str, *, test_mode: bool
) -> PatientState:
    """What the SMTP rules say about a patient recipient (A2, I1, I2), one query.

    ``accounts.state`` alone says ``closed`` for every space that is not open, so a space
    still awaiting activation, an opposed one and a closed one would get the same words;
    the lifecycle status tells them apart. A space under a test or demo INS OID is
    refused whatever its state once the gateway is out of test mode (A2).
    """
    oid, status = session.execute(
        select(Patient.ins_oid, PatientSpace.status)
        .select_from(Patient)
        .outerjoin(PatientSpace, PatientSpace.account_id == Patient.account_id)
        .where(Patient.account_id == account_id)
    ).one_or_none() or (None, None)
    if oid is not None and not ins_oid_allowed(oid, test_mode=test_mode):
        return PatientState.TEST_IDENTITY
    if account_state == AccountState.CLOSED.value and status in _NOT_OPEN:
        return _NOT_OPEN[status]
    return PatientState(account_state)


_NOT_OPEN = {
    SpaceStatus.CREATED.value: PatientState.NOT_OPEN_YET,
    SpaceStatus.OPPOSED.value: PatientState.OPPOSED,
}


def opposition_proof(session: Session, address: str) -> bytes:
    """The proof PDF of an opposition (:class:`LifecycleError` 409 when not opposed)."""
    view = show_space(session, address)
    if view.status != SpaceStatus.OPPOSED.value or view.opposed_at is None:
        raise LifecycleError("not-opposed", "this space was not opposed")
    return text_pdf(
        "Attestation d'opposition à la création de l'espace santé",
        [
            f"Référence : {view.opposition_reference}",
            f"Opposition enregistrée le {view.opposed_at:%d/%m/%Y à %H:%M} (UTC).",
            f"Titulaire : {view.given_name} {view.birth_name}, né(e) le {view.birth_date:%d/%m/%Y}",
            f"INS : {view.ins} (OID {view.ins_oid})",
            f"Adresse de messagerie : {view.address}",
            "L'espace ne sera pas ouvert et ne reçoit aucun message.",
        ],
    )
