"""``caducee admin token create|list|revoke``: the operator's bearer tokens for ``/admin``.

A token is shown once at creation; only its SHA-256 is stored. Scopes:
``patients:read``, ``patients:write``, ``accounts:read``, ``accounts:write``, ``queue:read``,
``audit:read``.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.home import open_home
from caducee.storage.admin_tokens import SCOPES, TokenError, create_token, list_tokens, revoke_token
from caducee.storage.audit import record_event


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("admin", help="the admin API's operator tokens")
    groups = parser.add_subparsers(dest="admin_group", metavar="GROUP", required=True)
    token = groups.add_parser("token", help="bearer tokens with scopes")
    actions = token.add_subparsers(dest="token_action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a token (shown once)")
    create.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, help="repeatable"
    )
    create.add_argument("--label", default="operator", help="who or what uses it")
    create.add_argument("--days", type=float, help="validity (default: [admin] token_days)")
    add_home_argument(create)
    create.set_defaults(handler=run_create)
    listing = actions.add_parser("list", help="list tokens (never the secrets)")
    add_home_argument(listing)
    listing.set_defaults(handler=run_list)
    revoke = actions.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    add_home_argument(revoke)
    revoke.set_defaults(handler=run_revoke)


def _audit(session: object, action: str, token_id: int) -> None:
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    record_event(
        session,
        actor_kind="operator",
        actor_id="cli",
        action=action,
        object_type="admin-token",
        object_id=f"token:{token_id}",
        result="ok",
        channel="cli",
    )


def run_create(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        days = args.days if args.days is not None else home.settings.admin.token_days
        if days <= 0:
            raise CommandError("--days must be positive")
        try:
            row, token = create_token(session, args.label, args.scope, timedelta(days=days))
        except TokenError as error:
            raise CommandError(str(error)) from None
        _audit(session, "admin-token.create", row.id)
        token_id, scopes, expires = row.id, row.scopes, row.expires_at
    print(f"token {token_id} ({scopes}), valid until {expires:%Y-%m-%d}:")
    print(token)
    return 0


def run_list(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.reading() as session:
        rows = [
            (row.id, row.label, row.scopes, row.expires_at, row.revoked_at, row.last_used_at)
            for row in list_tokens(session)
        ]
    for token_id, label, scopes, expires, revoked, used in rows:
        state = "revoked" if revoked else f"until {expires:%Y-%m-%d}"
        last = f"{used:%Y-%m-%d %H:%M}" if used else "never"
        print(f"{token_id:>4}  {label:<20} {state:<17} used {last:<16} {scopes}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        if not revoke_token(session, args.id):
            raise CommandError(f"no live token {args.id}")
        _audit(session, "admin-token.revoke", args.id)
    print(f"token {args.id} revoked.")
    return 0
