"""Accounts that can log in, their app passwords, and the identity of patients (A2).

An account owns one mailbox address. Patients are identified by their INS
(A1/A2); their state (active, suspended, closed) decides how mail to them is
answered (B2). Professionals hosted here also have accounts; their directory
entry lives in ``directory``.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Integer, String, bindparam, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from caducee.mailboxes.accounts.passwords import (
    generate_app_password,
    hash_password,
    verify_password,
)
from caducee.storage.db import Base, UtcDateTime, table_of, utcnow
from caducee.storage.sealed import SealedText

BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class AccountKind(enum.StrEnum):
    """Who holds the account."""

    PATIENT = "patient"
    PROFESSIONAL = "professional"
    ORGANISATION = "organisation"


class AccountState(enum.StrEnum):
    """Lifecycle state; see spec B2 and I1–I2."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


def may_sign_in(state: str) -> bool:
    """The account-state rule of every door (SMTP AUTH, IMAP LOGIN, HTTP): active accounts only.

    One rule, so that a suspended account cannot keep reading over one protocol while
    another refuses it. The refusal looks like a wrong password on every door: a client
    learns nothing about the account's state.
    """
    return state == AccountState.ACTIVE.value


class Account(Base):
    """A hosted mailbox owner who can log in."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=AccountState.ACTIVE.value)
    display_name: Mapped[str | None] = mapped_column(SealedText("accounts.display_name"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    patient: Mapped[Patient | None] = relationship(back_populates="account", uselist=False)


class Patient(Base):
    """The qualified identity behind a patient mailbox (A2)."""

    __tablename__ = "patients"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    ins: Mapped[str] = mapped_column(String(15), unique=True)
    ins_oid: Mapped[str] = mapped_column(String(64))
    birth_name: Mapped[str] = mapped_column(SealedText("patients.birth_name"))
    given_name: Mapped[str] = mapped_column(SealedText("patients.given_name"))
    birth_date: Mapped[date] = mapped_column(Date())
    sex: Mapped[str] = mapped_column(String(1))
    birthplace: Mapped[str | None] = mapped_column(String(5))
    account: Mapped[Account] = relationship(back_populates="patient")


class AppPassword(Base):
    """One generated password for one mail client; revocable on its own."""

    __tablename__ = "app_passwords"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


def normalise_address(address: str) -> str:
    """Addresses are compared case-insensitively; we store them lower-case."""
    return address.strip().lower()


def find_account(session: Session, address: str) -> Account | None:
    """The account owning ``address``, if any."""
    return session.scalar(select(Account).where(Account.address == normalise_address(address)))


def create_account(
    session: Session, address: str, kind: AccountKind, *, display_name: str | None = None
) -> Account:
    """Add an account; the caller commits."""
    account = Account(
        address=normalise_address(address),
        kind=kind.value,
        state=AccountState.ACTIVE.value,
        display_name=display_name,
    )
    session.add(account)
    session.flush()
    return account


def add_app_password(session: Session, account: Account, label: str) -> str:
    """Create an app password for ``account`` and return it in clear, once."""
    password = generate_app_password()
    session.add(
        AppPassword(account_id=account.id, label=label, password_hash=hash_password(password))
    )
    return password


def check_app_password(session: Session, address: str, password: str) -> Account | None:
    """The account if one of its app passwords matches; slow on purpose (argon2id)."""
    account = find_account(session, address)
    if account is None or not may_sign_in(account.state):
        return None
    hashes = session.execute(
        select(AppPassword.id, AppPassword.password_hash).where(
            AppPassword.account_id == account.id
        )
    ).all()
    for password_id, stored in hashes:
        if verify_password(stored, password):
            row = session.get(AppPassword, password_id)
            if row is not None:
                row.last_used_at = utcnow()
            return account
    return None


@dataclass(frozen=True)
class AccountRef:
    """The few columns the SMTP rules need about a hosted recipient."""

    id: int
    address: str
    state: str


_ACCOUNTS_TABLE = table_of(Account)
_PATIENT_ACCOUNT = select(
    _ACCOUNTS_TABLE.c.id, _ACCOUNTS_TABLE.c.address, _ACCOUNTS_TABLE.c.state
).where(
    _ACCOUNTS_TABLE.c.address == bindparam("address"),
    _ACCOUNTS_TABLE.c.kind == AccountKind.PATIENT.value,
)
_OTHER_ACCOUNT = select(
    _ACCOUNTS_TABLE.c.id, _ACCOUNTS_TABLE.c.address, _ACCOUNTS_TABLE.c.state
).where(
    _ACCOUNTS_TABLE.c.address == bindparam("address"),
    _ACCOUNTS_TABLE.c.kind != AccountKind.PATIENT.value,
)


def recipient_account(session: Session, address: str, *, patient: bool) -> AccountRef | None:
    """The patient (or, with ``patient=False``, professional/organisation) account of ``address``.

    A prepared statement on the connection: this runs for every recipient.
    """
    statement = _PATIENT_ACCOUNT if patient else _OTHER_ACCOUNT
    row = session.connection().execute(statement, {"address": normalise_address(address)}).first()
    return None if row is None else AccountRef(int(row.id), str(row.address), str(row.state))


def count_accounts(session: Session) -> int:
    """How many accounts exist (used by doctor and tests)."""
    return int(session.scalar(select(func.count()).select_from(Account)) or 0)


def sign_in_fingerprint(session: Session, account_id: int) -> str | None:
    """What a remembered sign-in depends on: None when the account may not sign in now.

    A digest of the account's state and of its app-password hashes: suspending or closing
    the account, or adding or revoking any app password, changes it, so a cache of verified
    credentials that compares fingerprints never accepts a revoked password or a suspended
    account. One indexed query, no argon2.
    """
    state = session.scalar(select(Account.state).where(Account.id == account_id))
    if state is None or not may_sign_in(state):
        return None
    hashes = sorted(
        session.scalars(
            select(AppPassword.password_hash).where(AppPassword.account_id == account_id)
        )
    )
    return hashlib.sha256("\x00".join([state, *hashes]).encode()).hexdigest()
