"""``caducee account suspend|resume ADDRESS``: stop or restore a hosted account's sign-ins;
``caducee account create ADDRESS`` and ``app-password add|list|revoke`` (hosted accounts);
``caducee account delegate ADDRESS --to OTHER [--revoke]``: OTHER may send as ADDRESS (C2);
``caducee account certificate add|list|revoke``: client certificates of APP mailboxes, for
SASL EXTERNAL on the submission ports (C1).

A suspended account is refused on every door alike (SMTP AUTH, IMAP LOGIN, HTTP):
the rule is :func:`caducee.mailboxes.accounts.store.may_sign_in`. Its mail keeps the
treatment B2 gives a suspended patient space. Both actions are audited (F4) with the
operator as actor; a closed account is neither suspended nor resumed here (closure
and reopening are lifecycle steps of their own).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from caducee.config import load_settings
from caducee.directory.lookup import bal_type_of
from caducee.gateway.accounts_admin import (
    app_passwords,
    create_hosted_account,
    new_app_password,
    revoke_app_password,
)
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.home import open_home
from caducee.gateway.lifecycle import run_idle_sweep
from caducee.gateway.runtime import build_gateway
from caducee.mailboxes.accounts.certificates import (
    CertificateError,
    account_certificates,
    bind_certificate,
    revoke_certificate,
)
from caducee.mailboxes.accounts.delegation import DelegationError, delegate, revoke_delegation
from caducee.mailboxes.accounts.lifecycle import Actor, LifecycleError
from caducee.mailboxes.accounts.store import Account, AccountState, find_account
from caducee.storage.audit import record_event


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("account", help="manage hosted accounts")
    actions = parser.add_subparsers(dest="account_action", metavar="ACTION", required=True)
    for name, target, text in (
        ("suspend", AccountState.SUSPENDED, "refuse the account's sign-ins on every door"),
        ("resume", AccountState.ACTIVE, "allow a suspended account to sign in again"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("address", help="the account's address")
        add_home_argument(action)
        action.set_defaults(handler=_set_state, target=target, verb=name)
    delegation = actions.add_parser(
        "delegate", help="let another hosted account send as this mailbox (C2)"
    )
    delegation.add_argument("address", help="the delegated mailbox")
    delegation.add_argument("--to", required=True, metavar="OTHER", help="the delegate account")
    delegation.add_argument("--revoke", action="store_true", help="withdraw the delegation")
    add_home_argument(delegation)
    delegation.set_defaults(handler=_delegate)
    register_more(actions)
    register_certificates(actions)


def _delegate(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        try:
            if args.revoke:
                changed = revoke_delegation(session, args.address, args.to)
                owner, other = find_account(session, args.address), find_account(session, args.to)
            else:
                owner, other, changed = delegate(session, args.address, args.to)
        except DelegationError as error:
            raise CommandError(str(error)) from None
        assert owner is not None and other is not None
        record_event(
            session,
            actor_kind="operator",
            actor_id="cli",
            action="delegation-revoke" if args.revoke else "delegation-grant",
            object_type="account",
            object_id=f"account:{other.id}",
            result="done" if changed else "unchanged",
            subject_account_id=owner.id,
            channel="cli",
        )
        mailbox, delegate_address = owner.address, other.address
    verb = "may no longer send as" if args.revoke else "may send as"
    print(f"{delegate_address} {verb} {mailbox}{'' if changed else ' (already)'}.")
    return 0


def _set_state(args: argparse.Namespace) -> int:
    target: AccountState = args.target
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        account = find_account(session, args.address)
        if account is None:
            raise CommandError(f"no hosted account {args.address}")
        if account.state == AccountState.CLOSED.value:
            raise CommandError(f"{account.address} is closed: reopen it instead")
        changed = account.state != target.value
        account.state = target.value
        record_event(
            session,
            actor_kind="operator",
            actor_id="cli",
            action=f"account-{args.verb}",
            object_type="account",
            object_id=f"account:{account.id}",
            result="done" if changed else "unchanged",
            subject_account_id=account.id,
            channel="cli",
        )
        address = account.address
    print(f"{address}: {target.value}{'' if changed else ' (already)'}.")
    return 0


# ---------------------------------------------------------------------------------------------
# create | app-password add|list|revoke (caducee.gateway.accounts_admin does the work)


def register_more(actions: Any) -> None:
    create = actions.add_parser(
        "create", help="create a hosted professional/organisation account from the directory"
    )
    create.add_argument("address", help="the mailbox address of a hosted directory entry")
    create.add_argument(
        "--app-password", metavar="LABEL", help="also create an app password with this label"
    )
    add_home_argument(create)
    create.set_defaults(handler=run_create)

    app = actions.add_parser("app-password", help="an account's app passwords (C1)")
    app_actions = app.add_subparsers(dest="app_password_action", metavar="ACTION", required=True)
    add = app_actions.add_parser("add", help="create an app password (shown once)")
    add.add_argument("address")
    add.add_argument("--label", required=True, help="the mail client it is for")
    add_home_argument(add)
    add.set_defaults(handler=run_app_add)
    listing = app_actions.add_parser("list", help="list app passwords (never the passwords)")
    listing.add_argument("address")
    listing.add_argument("--json", action="store_true")
    add_home_argument(listing)
    listing.set_defaults(handler=run_app_list)
    revoke = app_actions.add_parser("revoke", help="revoke one app password by id")
    revoke.add_argument("address")
    revoke.add_argument("id", type=int)
    add_home_argument(revoke)
    revoke.set_defaults(handler=run_app_revoke)

    idle = actions.add_parser(
        "idle-sweep", help="flag, tell and disable dormant professional mailboxes now (I4)"
    )
    add_home_argument(idle)
    idle.set_defaults(handler=run_idle_sweep_command)


def run_create(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        try:
            account = create_hosted_account(session, args.address, Actor.operator())
            password = None
            if args.app_password:
                _id, password = new_app_password(
                    session, account.address, args.app_password, Actor.operator()
                )
        except LifecycleError as error:
            raise CommandError(str(error)) from None
        address, kind = account.address, account.kind
    print(f"{address}: {kind} account created.")
    if password is not None:
        print(f"app password ({args.app_password}): {password}")
    return 0


def run_app_add(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        try:
            password_id, password = new_app_password(
                session, args.address, args.label, Actor.operator()
            )
        except LifecycleError as error:
            raise CommandError(str(error)) from None
    print(f"app password {password_id} ({args.label}) for {args.address}:")
    print(password)
    return 0


def run_app_list(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.reading() as session:
        try:
            rows = app_passwords(session, args.address)
        except LifecycleError as error:
            raise CommandError(str(error)) from None
    for row in rows:
        if args.json:
            print(json.dumps(row.public(), ensure_ascii=False))
        else:
            used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
            print(f"{row.id:>5}  {row.label:<30} created {row.created_at:%Y-%m-%d}  used {used}")
    return 0


def run_app_revoke(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        try:
            revoke_app_password(session, args.address, args.id, Actor.operator())
        except LifecycleError as error:
            raise CommandError(str(error)) from None
    print(f"app password {args.id} of {args.address} revoked.")
    return 0


def run_idle_sweep_command(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        report = run_idle_sweep(gateway)
    finally:
        gateway.close()
    print(
        f"{len(report.flagged)} mailbox(es) flagged and told, {len(report.disabled)} disabled, "
        f"{len(report.cleared)} back in use."
    )
    return 0


# ---------------------------------------------------------------------------------------------
# certificate add|list|revoke: client certificates of APP mailboxes (C1, SASL EXTERNAL)


def register_certificates(actions: Any) -> None:
    certificate = actions.add_parser(
        "certificate", help="client certificates of APP mailboxes (SASL EXTERNAL, C1)"
    )
    cert_actions = certificate.add_subparsers(
        dest="certificate_action", metavar="ACTION", required=True
    )
    add = cert_actions.add_parser("add", help="bind a client certificate (PEM) to an APP account")
    add.add_argument("address", help="the APP mailbox's hosted account")
    add.add_argument("certificate", help="the client certificate, PEM")
    add_home_argument(add)
    add.set_defaults(handler=run_certificate_add)
    listing = cert_actions.add_parser("list", help="list an account's bound certificates")
    listing.add_argument("address")
    listing.add_argument("--json", action="store_true")
    add_home_argument(listing)
    listing.set_defaults(handler=run_certificate_list)
    revoke = cert_actions.add_parser("revoke", help="unbind one certificate by id")
    revoke.add_argument("address")
    revoke.add_argument("id", type=int)
    add_home_argument(revoke)
    revoke.set_defaults(handler=run_certificate_revoke)


def _hosted(session: Any, address: str) -> Account:
    account = find_account(session, address)
    if account is None:
        raise CommandError(f"no hosted account {address}")
    return account


def _certificate_event(session: Any, account: Account, action: str, certificate_id: int) -> None:
    record_event(
        session,
        actor_kind="operator",
        actor_id="cli",
        action=action,
        object_type="certificate",
        object_id=f"certificate:{certificate_id}",
        result="done",
        subject_account_id=account.id,
        channel="cli",
    )


def run_certificate_add(args: argparse.Namespace) -> int:
    try:
        pem = Path(args.certificate).read_text(encoding="ascii", errors="replace")
    except OSError as error:
        raise CommandError(f"cannot read {args.certificate}: {error.strerror}") from None
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        account = _hosted(session, args.address)
        bal_type = bal_type_of(session, account.address)
        if bal_type != "APP":
            raise CommandError(
                f"{account.address} is not an APP mailbox (directory type: {bal_type or 'none'});"
                " only applicative mailboxes sign in with a client certificate"
            )
        try:
            info, created = bind_certificate(session, account, pem)
        except CertificateError as error:
            raise CommandError(str(error)) from None
        if created:
            _certificate_event(session, account, "certificate-bind", info.id)
        address = account.address
    already = "" if created else " (already)"
    print(f"certificate {info.id} bound to {address}{already}: sha256 {info.fingerprint}")
    return 0


def run_certificate_list(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.reading() as session:
        rows = account_certificates(session, _hosted(session, args.address).id)
    for row in rows:
        if args.json:
            print(json.dumps(row.public(), ensure_ascii=False))
        else:
            until = f"{row.not_after:%Y-%m-%d}" if row.not_after else "?"
            print(f"{row.id:>5}  sha256 {row.fingerprint}  until {until}  {row.subject}")
    return 0


def run_certificate_revoke(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        account = _hosted(session, args.address)
        if not revoke_certificate(session, account.id, args.id):
            raise CommandError(f"{account.address} has no certificate {args.id}")
        _certificate_event(session, account, "certificate-revoke", args.id)
    print(f"certificate {args.id} of {args.address} revoked.")
    return 0
