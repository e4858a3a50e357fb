"""Dormant professional and organisation mailboxes (I4): flagged, told, then disabled.

The last sign-in of an account is the latest of: a successful ``login`` event of the audit
trail (every door writes one: SMTP AUTH, IMAP LOGIN, HTTP), the last use of one of its app
passwords, its own password's last sign-in, its creation, and the operator's last
``account-resume``. An account idle for ``[lifecycle] idle_flag_days`` is flagged and told
(a notice in its INBOX, where its mail client will show it, and an audit event); still idle
``idle_disable_days`` after the flag, it is disabled (``suspended``: refused on every door,
``caducee account resume`` brings it back). Any sign-in in between lifts the flag.
Patients are never concerned (their spaces follow I2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import ForeignKey, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from caducee.mailboxes.accounts.lifecycle import AccountCredentials, Actor, audit
from caducee.mailboxes.accounts.store import Account, AccountKind, AccountState, AppPassword
from caducee.mailboxes.delivery import Envelope, MailDelivery, Recipient, RecipientRole
from caducee.storage.audit import AuditEvent
from caducee.storage.db import Base, UtcDateTime, utcnow

LOGIN_ACTION = "login"


class AccountIdle(Base):
    """An account flagged as dormant, and what was done about it."""

    __tablename__ = "account_idle"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    last_activity_at: Mapped[datetime] = mapped_column(UtcDateTime())
    flagged_at: Mapped[datetime] = mapped_column(UtcDateTime())
    notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


@dataclass(frozen=True)
class IdlePolicy:
    """``[lifecycle] idle_flag_days`` and ``idle_disable_days``."""

    flag_after: timedelta = timedelta(days=365)
    disable_after: timedelta = timedelta(days=30)
    sender: str = "no-reply@localhost"
    operator_name: str = "Caducée"


@dataclass
class IdleReport:
    """What one sweep did (ids only)."""

    flagged: list[int]
    disabled: list[int]
    cleared: list[int]


def last_activity(session: Session, account: Account) -> datetime:
    """The latest sign-in (or creation, or operator resume) of ``account``."""
    candidates = [account.created_at]
    login = session.scalar(
        select(func.max(AuditEvent.occurred_at)).where(
            AuditEvent.subject_account_id == account.id,
            AuditEvent.action.in_((LOGIN_ACTION, "account-resume")),
            AuditEvent.result.in_(("ok", "done")),
        )
    )
    used = session.scalar(
        select(func.max(AppPassword.last_used_at)).where(AppPassword.account_id == account.id)
    )
    own = session.scalar(
        select(AccountCredentials.last_login_at).where(AccountCredentials.account_id == account.id)
    )
    candidates += [value for value in (login, used, own) if value is not None]
    return max(candidates)


def _notice(
    account: Account, policy: IdlePolicy, idle_since: datetime, deadline: datetime
) -> bytes:
    message = EmailMessage()
    domain = policy.sender.rpartition("@")[2]
    message["From"] = f"{policy.operator_name} <{policy.sender}>"
    message["To"] = account.address
    message["Subject"] = "Boîte aux lettres inutilisée / Unused mailbox"
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(domain=domain or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"Aucune connexion à cette boîte aux lettres depuis le {idle_since:%d/%m/%Y}.\n"
        f"Sans connexion d'ici le {deadline:%d/%m/%Y}, elle sera désactivée ; "
        "l'opérateur pourra la réactiver sur demande.\n\n"
        f"No sign-in to this mailbox since {idle_since:%Y-%m-%d}. Without one by "
        f"{deadline:%Y-%m-%d}, it will be disabled; the operator can enable it again.\n",
        charset="utf-8",
    )
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def sweep_idle(
    session: Session, delivery: MailDelivery, policy: IdlePolicy, now: datetime | None = None
) -> IdleReport:
    """Flag and tell the accounts idle past ``flag_after``, disable those told long enough."""
    moment = now or utcnow()
    report = IdleReport([], [], [])
    accounts = list(
        session.scalars(
            select(Account).where(
                Account.kind.in_((AccountKind.PROFESSIONAL.value, AccountKind.ORGANISATION.value)),
                Account.state == AccountState.ACTIVE.value,
            )
        )
    )
    for account in accounts:
        activity = last_activity(session, account)
        row = session.get(AccountIdle, account.id)
        if row is not None and (activity > row.flagged_at or row.disabled_at is not None):
            session.delete(row)  # signed in since the flag, or resumed by the operator
            session.flush()
            report.cleared.append(account.id)
            row = None
            continue
        if row is None:
            if moment - activity < policy.flag_after:
                continue
            deadline = moment + policy.disable_after
            session.add(
                AccountIdle(
                    account_id=account.id,
                    last_activity_at=activity,
                    flagged_at=moment,
                    notified_at=moment,
                )
            )
            raw = _notice(account, policy, activity, deadline)
            delivery.deliver(
                session,
                Envelope(
                    content=raw,
                    direction="inbound",
                    envelope_from="",
                    header_from=policy.sender,
                    message_id=None,
                    thread_ids=(),
                    reply_to=None,
                    ends_exchange=False,
                    sender_is_professional=False,
                    has_attachments=False,
                    recipients=(
                        Recipient(account.address, account.id, RecipientRole.PROFESSIONAL),
                    ),
                ),
            )
            audit(session, Actor.system(), "account.idle-flag", account.id, object_type="account")
            report.flagged.append(account.id)
        elif moment - row.flagged_at >= policy.disable_after:
            account.state = AccountState.SUSPENDED.value
            row.disabled_at = moment
            audit(
                session, Actor.system(), "account.idle-disable", account.id, object_type="account"
            )
            report.disabled.append(account.id)
    return report
