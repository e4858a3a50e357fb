"""Hosted professional and organisation accounts, and app passwords, for CLI and admin API.

An account is created from its directory entry (A3/A4): the entry must exist and be hosted
here; a ``PER`` mailbox becomes a professional account, any other BAL type an organisation
account. App passwords (C1) are generated, listed (label, dates, never the hash) and
revoked one by one. Every change is audited with the operator as actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from caducee.directory.service import find_by_address
from caducee.mailboxes.accounts.lifecycle import Actor, LifecycleError, audit
from caducee.mailboxes.accounts.store import (
    Account,
    AccountKind,
    AccountState,
    AppPassword,
    add_app_password,
    create_account,
    find_account,
)
from caducee.mailboxes.delivery import ensure_folders


@dataclass(frozen=True)
class AppPasswordView:
    """One app password as the operator sees it."""

    id: int
    label: str
    created_at: datetime
    last_used_at: datetime | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


def account_view(account: Account) -> dict[str, Any]:
    """An account as JSON."""
    return {
        "id": account.id,
        "address": account.address,
        "kind": account.kind,
        "state": account.state,
        "display_name": account.display_name,
        "created_at": account.created_at.isoformat(),
    }


def _account(session: Session, address: str) -> Account:
    account = find_account(session, address)
    if account is None:
        raise LifecycleError("not-found", f"no hosted account {address}", 404)
    return account


def create_hosted_account(session: Session, address: str, actor: Actor) -> Account:
    """A professional or organisation account from its hosted directory entry."""
    entry = find_by_address(session, address)
    if entry is None:
        raise LifecycleError("not-in-directory", f"{address} is not in the directory", 422)
    if not entry.hosted:
        raise LifecycleError("not-hosted", f"{address} is hosted by another operator", 422)
    if find_account(session, entry.address) is not None:
        raise LifecycleError("account-exists", f"{entry.address} already has an account")
    kind = AccountKind.PROFESSIONAL if entry.bal_type == "PER" else AccountKind.ORGANISATION
    names = [getattr(entry, "given_name", None), getattr(entry, "family_name", None)]
    display = " ".join(str(part) for part in names if part) or getattr(
        entry, "organisation_name", None
    )
    account = create_account(session, entry.address, kind, display_name=display)
    ensure_folders(session, account.id)
    audit(session, actor, "account.create", account.id, object_type="account")
    return account


def set_account_state(session: Session, address: str, target: AccountState, actor: Actor) -> bool:
    """Suspend or resume; True when the state changed. Closed accounts are refused."""
    account = _account(session, address)
    if account.state == AccountState.CLOSED.value:
        raise LifecycleError("closed", f"{account.address} is closed: reopen it instead")
    changed = account.state != target.value
    account.state = target.value
    verb = "suspend" if target is AccountState.SUSPENDED else "resume"
    audit(
        session,
        actor,
        f"account-{verb}",
        account.id,
        object_type="account",
        result="done" if changed else "unchanged",
    )
    return changed


def new_app_password(session: Session, address: str, label: str, actor: Actor) -> tuple[int, str]:
    """A new app password (id, clear text once)."""
    account = _account(session, address)
    label = label.strip()[:100]
    if not label:
        raise LifecycleError("invalid-label", "an app password needs a label", 422)
    password = add_app_password(session, account, label)
    session.flush()
    row_id = session.scalar(
        select(AppPassword.id)
        .where(AppPassword.account_id == account.id)
        .order_by(AppPassword.id.desc())
        .limit(1)
    )
    assert row_id is not None
    audit(session, actor, "app-password.add", account.id, object_type="app-password",
          object_id=f"app-password:{row_id}")  # fmt: skip
    return int(row_id), password


def app_passwords(session: Session, address: str) -> list[AppPasswordView]:
    """The app passwords of an account (never their hashes)."""
    account = _account(session, address)
    return [
        AppPasswordView(row.id, row.label, row.created_at, row.last_used_at)
        for row in session.scalars(
            select(AppPassword).where(AppPassword.account_id == account.id).order_by(AppPassword.id)
        )
    ]


def revoke_app_password(session: Session, address: str, password_id: int, actor: Actor) -> None:
    """Revoke one app password of the account."""
    account = _account(session, address)
    row = session.get(AppPassword, password_id)
    if row is None or row.account_id != account.id:
        raise LifecycleError("not-found", f"no app password {password_id} for {address}", 404)
    session.delete(row)
    audit(session, actor, "app-password.revoke", account.id, object_type="app-password",
          object_id=f"app-password:{password_id}")  # fmt: skip
