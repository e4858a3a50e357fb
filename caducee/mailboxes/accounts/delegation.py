"""Delegation (C2): an account may send as a mailbox delegated to it.

A secretariat's account sending for a practitioner's mailbox, a practitioner's assistant
answering for them: the mailbox's owner (through the operator, ``caducee account delegate
ADDRESS --to OTHER``) lets another hosted account act for it. On SMTP submission the
delegate authenticates with its own credentials and names the mailbox as the SASL
authorization identity (``AUTH PLAIN`` authzid, RFC 4616); without a delegation that is
refused. Patient mailboxes are never delegated here (a patient's representatives are F1's
business, with their own rules).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, UniqueConstraint, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.mailboxes.accounts.identity.principal import Principal
from caducee.mailboxes.accounts.store import (
    Account,
    AccountKind,
    find_account,
    may_sign_in,
)
from caducee.storage.db import Base, UtcDateTime, utcnow

BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class DelegationError(Exception):
    """The delegation cannot be made (the message says why, for the operator)."""


class MailboxDelegation(Base):
    """``delegate_account_id`` may act as (send for) ``mailbox_account_id``."""

    __tablename__ = "mailbox_delegations"
    __table_args__ = (
        UniqueConstraint("mailbox_account_id", "delegate_account_id", name="uq_delegation_pair"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    mailbox_account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    delegate_account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


def _hosted(session: Session, address: str) -> Account:
    account = find_account(session, address)
    if account is None:
        raise DelegationError(f"no hosted account {address}")
    return account


def delegate(session: Session, mailbox: str, to: str) -> tuple[Account, Account, bool]:
    """Let ``to`` act as ``mailbox``; returns both accounts and whether it is new."""
    owner, delegate_account = _hosted(session, mailbox), _hosted(session, to)
    if owner.id == delegate_account.id:
        raise DelegationError("an account cannot be delegated to itself")
    if owner.kind == AccountKind.PATIENT.value:
        raise DelegationError("patient mailboxes are not delegated (see access representatives)")
    existing = session.scalar(
        select(MailboxDelegation.id).where(
            MailboxDelegation.mailbox_account_id == owner.id,
            MailboxDelegation.delegate_account_id == delegate_account.id,
        )
    )
    if existing is None:
        session.add(
            MailboxDelegation(mailbox_account_id=owner.id, delegate_account_id=delegate_account.id)
        )
        session.flush()
    return owner, delegate_account, existing is None


def revoke_delegation(session: Session, mailbox: str, to: str) -> bool:
    """Withdraw a delegation; True when one existed."""
    owner, delegate_account = _hosted(session, mailbox), _hosted(session, to)
    result = session.execute(
        delete(MailboxDelegation).where(
            MailboxDelegation.mailbox_account_id == owner.id,
            MailboxDelegation.delegate_account_id == delegate_account.id,
        )
    )
    return bool(getattr(result, "rowcount", 0))


def delegated_principal(session: Session, principal: Principal, mailbox: str) -> Principal | None:
    """``principal`` acting as ``mailbox``, if delegated and the mailbox is active; else None."""
    row = session.execute(
        select(Account.id, Account.address, Account.kind, Account.state)
        .join(MailboxDelegation, MailboxDelegation.mailbox_account_id == Account.id)
        .where(
            Account.address == mailbox.strip().lower(),
            MailboxDelegation.delegate_account_id == principal.authenticated_account_id,
        )
    ).first()
    if row is None or not may_sign_in(str(row.state)) or row.kind == AccountKind.PATIENT.value:
        return None
    return Principal(
        int(row.id),
        str(row.address),
        str(row.kind),
        principal.method,
        acting_account_id=principal.authenticated_account_id,
    )
