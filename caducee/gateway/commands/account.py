"""``caducee account suspend|resume ADDRESS``: stop or restore a hosted account's sign-ins.

A suspended account is refused on every door alike (SMTP AUTH, IMAP LOGIN, HTTP):
the rule is :func:`caducee.mailboxes.accounts.may_sign_in`. Its mail keeps the
treatment B2 gives a suspended patient space. Both actions are audited (F4) with the
operator as actor; a closed account is neither suspended nor resumed here (closure
and reopening are lifecycle steps of their own).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.home import open_home
from caducee.mailboxes.accounts import AccountState, find_account
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
