"""``caducee quarantine list|show``: what the rules kept from patients, for the operator.

``list`` prints one line (or JSON object) per item — held or withheld messages, parts withheld
from a patient's copy (E5 ``INVISIBLE_PATIENT``, E3 another patient), documents quarantined by
the identity check (E3) and documents in conflict under a known uniqueId (E4) — with ids,
types, sizes and rule ids only. ``show ID`` prints one item; ``--output FILE`` writes its bytes
(audited: the operator read health content).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from caducee.config import load_settings
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.runtime import build_gateway
from caducee.jobs.quarantine import QuarantineItem, find_item, item_content, quarantine_items
from caducee.storage.audit import Action, ActorKind, Result, record_event


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "quarantine", help="what the rules kept from patients (withheld parts, conflicts)"
    )
    actions = parser.add_subparsers(dest="quarantine_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every item: ids, types, sizes, rules")
    listing.add_argument("--json", action="store_true", help="one JSON object per item")
    add_home_argument(listing)
    listing.set_defaults(handler=run_list)
    show = actions.add_parser("show", help="one item; --output writes its bytes")
    show.add_argument("id", help="message:N, part:N or document:ID (from the list)")
    show.add_argument("--output", type=Path, help="write the item's bytes to this file")
    show.add_argument("--json", action="store_true", help="as a JSON object")
    add_home_argument(show)
    show.set_defaults(handler=run_show)


def _as_json(item: QuarantineItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "account": item.account,
        "message": item.message,
        "content_type": item.content_type,
        "size": item.size,
        "rule": item.rule,
        "error_code": item.error_code,
        "related": item.related,
        "since": item.since.isoformat() if item.since else None,
    }


def _line(item: QuarantineItem) -> str:
    since = f"{item.since:%Y-%m-%d %H:%M:%S}" if item.since else "-"
    return (
        f"{item.id:<42} {item.kind:<16} {since}  {item.account:<40} "
        f"{item.content_type or '-':<28} {item.size if item.size is not None else '-':>9}  "
        f"{item.rule or '-'}" + (f"  ({item.related})" if item.related else "")
    )


def run_list(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.reading() as session:
            items = quarantine_items(session)
    finally:
        gateway.close()
    if args.json:
        for item in items:
            print(json.dumps(_as_json(item)))
        return 0
    print(f"{len(items)} item(s) in quarantine")
    for item in items:
        print(_line(item))
    return 0


def run_show(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.transaction() as session:
            item = find_item(session, args.id)
            if item is None:
                raise CommandError(f"nothing in quarantine is {args.id}")
            if args.output is not None:
                content = item_content(session, gateway.blobs, item.id)
                if content is None:
                    raise CommandError(f"the bytes of {args.id} are not kept")
                args.output.write_bytes(content)
                document = item.id.startswith("document:")
                record_event(
                    session,
                    actor_kind=ActorKind.OPERATOR.value,
                    actor_id="cli",
                    action=(Action.DOCUMENT_CONTENT if document else Action.MESSAGE_READ).value,
                    object_type="document" if document else item.id.partition(":")[0],
                    object_id=item.id.partition(":")[2],
                    result=Result.OK.value,
                    rule="quarantine.show",
                    channel="cli",
                )
    finally:
        gateway.close()
    if args.json:
        print(json.dumps(_as_json(item)))
    else:
        for name, value in _as_json(item).items():
            print(f"{name + ':':<14}{'-' if value is None else value}")
        if args.output is not None:
            print(f"{'written:':<14}{args.output}")
    return 0
