"""``caducee mailbox list ADDRESS --home DIR``: what a mailbox holds (date, from, subject, size)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from caducee.config import load_settings
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.runtime import build_gateway
from caducee.mailboxes.listing import UnknownMailbox, list_messages


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("mailbox", help="inspect hosted mailboxes")
    actions = parser.add_subparsers(dest="mailbox_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list a mailbox's messages")
    listing.add_argument("address", help="the mailbox address")
    listing.add_argument("--json", action="store_true", help="one JSON object per message")
    add_home_argument(listing)
    listing.set_defaults(handler=run_list)


def run_list(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.transaction() as session:
            messages = list_messages(session, gateway.blobs, args.address)
    except UnknownMailbox:
        raise CommandError(f"no hosted mailbox {args.address}") from None
    finally:
        gateway.close()
    if args.json:
        for message in messages:
            print(
                json.dumps(
                    {
                        "folder": message.folder,
                        "uid": message.uid,
                        "date": message.received_at.isoformat(),
                        "from": message.header_from or message.sender,
                        "envelope_from": message.sender,
                        "subject": message.subject,
                        "size": message.size,
                        "flags": message.flags,
                    },
                    ensure_ascii=False,
                )
            )
        return 0
    print(f"{len(messages)} message(s) for {args.address}")
    for message in messages:
        print(
            f"{message.folder:<7} {message.uid:>5}  {message.received_at:%Y-%m-%d %H:%M:%S}  "
            f"{(message.header_from or message.sender)[:40]:<40}  "
            f"{message.size:>9}  {message.subject}"
        )
    return 0
